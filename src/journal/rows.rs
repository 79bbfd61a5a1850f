//! The journal's rows: the words it stores for states and actions (`text_enum!`: each value
//! is a fixed word, its `ToSql`/`FromSql` that word), the row structs its callers read and
//! write, and the JSON form of a file's platform parts (`files.parts_json`).
//!
//! Pure data: nothing here touches a connection.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};

use crate::clock::now_ms;
use crate::model::{
    ArchivalState, ChecksumType, Digest, FileId, ProjectId, RemoteFile, RemotePart, RemoteState,
    Stated,
};
use crate::planner::{FileKind, FilePlan};

macro_rules! text_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $text:literal,)* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)*
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            /// The stored text form.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)*
                }
            }
        }

        impl FromStr for $name {
            type Err = UnknownState;
            fn from_str(s: &str) -> Result<Self, UnknownState> {
                match s {
                    $($text => Ok($name::$variant),)*
                    _ => Err(UnknownState {
                        kind: stringify!($name),
                        value: s.chars().take(40).collect(),
                    }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(self.as_str()))
            }
        }

        impl FromSql for $name {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                value
                    .as_str()?
                    .parse()
                    .map_err(|e| FromSqlError::Other(Box::new(e)))
            }
        }
    };
}

/// A state text the journal does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} {value:?}")]
pub struct UnknownState {
    /// Which enum.
    pub kind: &'static str,
    /// The rejected text.
    pub value: String,
}

text_enum!(
    /// Where a file is in the mirroring lifecycle.
    FileState {
        /// Known, not started.
        Pending => "pending",
        /// Not downloadable now (open, archived, ...); `reason` says why.
        Skipped => "skipped",
        /// Chunks being fetched.
        Fetching => "fetching",
        /// All bytes on disk, not yet verified.
        Fetched => "fetched",
        /// Mirrored and every platform checksum matched.
        Verified => "verified",
        /// Mirrored, but the platform gave no checksum to check against.
        Unverified => "unverified",
        /// Mirrored bytes do not match the platform checksums after the refetch budget.
        Corrupt => "corrupt",
        /// Gave up (permanent error or retries exhausted); `reason` says why.
        Failed => "failed",
        /// No longer in the platform listing.
        Gone => "gone",
    }
);

impl FileState {
    /// True for the states whose bytes are all on local disk.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            FileState::Fetched | FileState::Verified | FileState::Unverified
        )
    }
}

text_enum!(
    /// What the journal knows about a project's reachability.
    ProjectState {
        /// Listed and downloadable.
        Active => "active",
        /// The token cannot see it (any more); `reason` says why.
        Inaccessible => "inaccessible",
        /// The platform says it no longer exists.
        Gone => "gone",
        /// Downloads are forbidden by the project (`downloadRestricted`).
        Restricted => "restricted",
    }
);

text_enum!(
    /// Severity of a journal event.
    EventLevel {
        /// Routine state change.
        Info => "info",
        /// Retried or degraded.
        Warn => "warn",
        /// Needs a human.
        Error => "error",
    }
);

text_enum!(
    /// What the daemon is doing, as its journal row says (`status` shows it).
    DaemonState {
        /// Started; the API token not checked yet.
        Starting => "starting",
        /// Mirroring.
        Running => "running",
        /// The API refused the token: no pass runs, the token is tried again with a backoff.
        BadToken => "bad-token",
        /// The mirror root is not usable yet: no pass or verification runs.
        WaitingForMirrorRoot => "waiting-for-mirror-root",
        /// Stopped cleanly.
        Stopped => "stopped",
    }
);

// `text_enum!` fixes the derives, so the default (for `DaemonRow::default`) is written out.
#[allow(clippy::derivable_impls)]
impl Default for DaemonState {
    fn default() -> DaemonState {
        DaemonState::Starting
    }
}

text_enum!(
    /// What an audit record says was done: the `action` column's words (re-exported as
    /// `crate::audit::Action`, whose module documents them).
    AuditAction {
        /// A file was published.
        Fetched => "fetched",
        /// `verify --repair` put a damaged file back into staging.
        Repaired => "repaired",
        /// A file ended corrupt.
        Quarantined => "quarantined",
        /// A project was purged.
        Purged => "purged",
        /// The backing object of a drive-backed file changed under a transfer (`412` to its
        /// pinned GETs): the staged bytes were discarded and the file failed.
        ObjectChanged => "object-changed",
        /// An operator's request through the control socket (`dxmirror pause`, `resume`,
        /// `bwlimit`, `relist`, `verify --queue`), with the local user as the identity.
        Control => "control",
    }
);

// `ProjectId` and `FileId` are columns as their text: their `ToSql`/`FromSql` live in
// `dxmirror-model` (feature `rusqlite`), since the orphan rule forbids them here.

/// A project as the journal holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectRow {
    /// The id.
    pub id: ProjectId,
    /// The platform name (untrusted text).
    pub name: String,
    /// The local directory name, once decided (never changed afterwards).
    pub dir_name: Option<String>,
    /// The project forbids downloads.
    pub download_restricted: bool,
    /// Reachability.
    pub state: ProjectState,
    /// Why it is not active.
    pub reason: Option<String>,
    /// When first recorded, ms since the epoch (kept from the first upsert).
    pub first_seen_ms: i64,
    /// When last listed, ms since the epoch (set by `record_listing`).
    pub last_listed_ms: Option<i64>,
}

impl ProjectRow {
    /// A row for a project seen now, in `state`, with no name or directory decided yet.
    pub fn new(id: ProjectId, state: ProjectState, reason: Option<String>) -> ProjectRow {
        ProjectRow {
            id,
            name: String::new(),
            dir_name: None,
            download_restricted: false,
            state,
            reason,
            first_seen_ms: now_ms(),
            last_listed_ms: None,
        }
    }
}

/// One file of a project listing, with the local decisions made for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileListing {
    /// The platform's description.
    pub remote: RemoteFile,
    /// Local path relative to the project directory (decided by `store`).
    pub rel_path: String,
    /// The plan kind, when already known.
    pub kind: Option<FileKind>,
    /// Why it cannot be downloaded now (stored as `Skipped` with this reason).
    pub skip_reason: Option<String>,
}

/// What a listing changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListingDiff {
    /// Ids seen for the first time.
    pub added: Vec<FileId>,
    /// Known ids whose metadata, path or skip status changed.
    pub updated: Vec<FileId>,
    /// Known ids of this project absent from the listing (rows kept, state untouched).
    pub removed: Vec<FileId>,
}

/// The key of a file row: a file id as listed in one project. The same id may be listed in
/// several projects (DNAnexus clones); each (project, file) pair is its own row, with its own
/// plan, progress and state.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileKey {
    /// The project the file is listed in.
    pub project: ProjectId,
    /// The file id.
    pub file: FileId,
}

impl FileKey {
    /// The key of `file` as listed in `project`.
    pub fn new(project: &ProjectId, file: &FileId) -> FileKey {
        FileKey {
            project: project.clone(),
            file: file.clone(),
        }
    }
}

impl fmt::Display for FileKey {
    /// `project-…:file-…`, the platform's own notation for an object in a project.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.project, self.file)
    }
}

/// A file as the journal holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRow {
    /// The id.
    pub file_id: FileId,
    /// The owning project.
    pub project_id: ProjectId,
    /// Platform folder (untrusted).
    pub folder: String,
    /// Platform name (untrusted).
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Platform lifecycle state.
    pub remote_state: RemoteState,
    /// Platform archival state.
    pub archival_state: ArchivalState,
    /// Creation time, ms since the epoch.
    pub created_ms: i64,
    /// Modification time, ms since the epoch.
    pub modified_ms: i64,
    /// Platform parts.
    pub parts: Option<Vec<RemotePart>>,
    /// Drive of a symlink file.
    pub drive: Option<String>,
    /// Whole-file md5 (symlinks), the platform's text.
    pub md5: Option<Stated<Digest>>,
    /// Algorithm of the part checksums, the platform's text.
    pub checksum_type: Option<Stated<ChecksumType>>,
    /// Plan kind, once known.
    pub kind: Option<FileKind>,
    /// Local path relative to the project directory.
    pub rel_path: String,
    /// Lifecycle state.
    pub state: FileState,
    /// Why it is skipped, corrupt, failed or gone.
    pub reason: Option<String>,
    /// Attempts so far.
    pub attempts: u32,
    /// SHA-256 of the mirrored bytes (lower-case hex), once done.
    pub sha256: Option<String>,
    /// When it was finished, ms since the epoch.
    pub done_ms: Option<i64>,
    /// Last change of this row, ms since the epoch.
    pub updated_ms: i64,
    /// Last listing that contained it, ms since the epoch.
    pub last_seen_ms: i64,
    /// The backing object's ETag of a drive-backed file, as last listed.
    pub etag: Option<String>,
}

impl FileRow {
    /// The row's key.
    pub fn key(&self) -> FileKey {
        FileKey::new(&self.project_id, &self.file_id)
    }

    /// The SHA-256 as raw bytes, once done.
    pub fn sha256_bytes(&self) -> Option<[u8; 32]> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(self.sha256.as_deref()?, &mut out).ok()?;
        Some(out)
    }

    /// True when the platform, as last listed, lets the file be downloaded now (closed and
    /// live): [`RemoteFile::is_downloadable`] without building the description.
    pub fn is_downloadable(&self) -> bool {
        self.remote_state == RemoteState::Closed && self.archival_state == ArchivalState::Live
    }

    /// The platform's description as it was last listed.
    pub fn remote(&self) -> RemoteFile {
        RemoteFile {
            id: self.file_id.clone(),
            project: self.project_id.clone(),
            name: self.name.clone(),
            folder: self.folder.clone(),
            size: self.size,
            state: self.remote_state.clone(),
            archival_state: self.archival_state.clone(),
            created_ms: self.created_ms,
            modified_ms: self.modified_ms,
            parts: self.parts.clone(),
            drive: self.drive.clone(),
            md5: self.md5.clone(),
            checksum_type: self.checksum_type.clone(),
            etag: self.etag.clone(),
        }
    }
}

/// A plan and its progress, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPlan {
    /// The plan (its kind comes from `files.kind`).
    pub plan: FilePlan,
    /// Per chunk, in index order: bytes done from the chunk start, and their CRC32C.
    pub chunk_done: Vec<(u64, u32)>,
    /// Per segment, in index order: its checksum was verified.
    pub segment_verified: Vec<bool>,
}

/// One journal event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRow {
    /// Increasing id.
    pub id: i64,
    /// When, ms since the epoch.
    pub ts_ms: i64,
    /// Severity.
    pub level: EventLevel,
    /// The project concerned.
    pub project_id: Option<ProjectId>,
    /// The file concerned.
    pub file_id: Option<FileId>,
    /// What happened.
    pub message: String,
}

/// One run of a writing command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRow {
    /// Id.
    pub id: i64,
    /// Start, ms since the epoch.
    pub started_ms: i64,
    /// End, ms since the epoch, if it ended cleanly.
    pub ended_ms: Option<i64>,
    /// dxmirror version.
    pub version: String,
    /// The command (`daemon`, `sync`, ...).
    pub command: String,
    /// Process id.
    pub pid: u32,
    /// How it ended.
    pub outcome: Option<String>,
}

/// A pause recorded by `dxmirror pause`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PausedRow {
    /// The project paused; `None`: every project (`--all`).
    pub project: Option<ProjectId>,
    /// Who paused it (the local user of the control socket).
    pub by: String,
    /// Since when, ms since the epoch.
    pub since_ms: i64,
}

/// An audit record to append ([`Journal::append_audit`](super::Journal::append_audit),
/// [`Journal::delete_project`](super::Journal::delete_project)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAudit {
    /// What was done.
    pub action: AuditAction,
    /// The project concerned.
    pub project_id: ProjectId,
    /// The file concerned, for per-file actions.
    pub file_id: Option<FileId>,
    /// Who did it (e.g. `uid 1000 (alice)`), when known.
    pub identity: Option<String>,
    /// Bytes concerned.
    pub size: Option<u64>,
    /// SHA-256 (hex) of the file concerned.
    pub sha256: Option<String>,
    /// Human-readable details (paths, counts).
    pub detail: String,
}

/// A stored audit record.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AuditRow {
    /// Increasing id.
    pub id: i64,
    /// When, ms since the epoch.
    pub ts_ms: i64,
    /// What was done.
    pub action: String,
    /// The project concerned.
    pub project_id: ProjectId,
    /// The file concerned.
    pub file_id: Option<FileId>,
    /// Who did it.
    pub identity: Option<String>,
    /// Bytes concerned.
    pub size: Option<u64>,
    /// SHA-256 (hex).
    pub sha256: Option<String>,
    /// Details.
    pub detail: String,
}

/// What [`Journal::delete_project`](super::Journal::delete_project) removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeletedRows {
    /// File rows.
    pub files: u64,
    /// Segment rows.
    pub segments: u64,
    /// Chunk rows.
    pub chunks: u64,
    /// Event rows naming the project.
    pub events: u64,
    /// Id of the audit record written in the same transaction.
    pub audit_id: i64,
}

/// The daemon's state as it last recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DaemonRow {
    /// Process id.
    pub pid: u32,
    /// When this daemon started, ms since the epoch.
    pub started_ms: i64,
    /// When the row was last written (set by the journal).
    pub updated_ms: i64,
    /// What it is doing.
    pub state: DaemonState,
    /// A one-line summary of progress.
    pub status: Option<String>,
    /// Last successful discovery, ms since the epoch.
    pub last_discovery_ms: Option<i64>,
    /// The last error (never a token).
    pub last_error: Option<String>,
    /// When it happened, ms since the epoch.
    pub last_error_ms: Option<i64>,
    /// When the daemon stopped cleanly, ms since the epoch.
    pub stopped_ms: Option<i64>,
    /// Download rate over the last few seconds, bytes per second.
    pub bytes_per_s: Option<i64>,
    /// The live figures beyond these columns (stored as one JSON object).
    pub live: DaemonLive,
}

/// The daemon's live figures that `status` shows, stored as one JSON object in the `daemon`
/// row's `live` column.
///
/// To add a figure: add a field here with `#[serde(default)]` (old rows lack it), set it in
/// the daemon, and show it in `status`; no migration is needed. An unreadable object reads
/// as the default (the figures are advisory; the row's columns still hold the state).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct DaemonLive {
    /// Download rate per project over the last status interval, bytes per second (projects
    /// with a pass running only).
    pub project_bytes_per_s: BTreeMap<String, u64>,
    /// When bytes last arrived (journaled progress grew), ms since the epoch.
    pub last_progress_ms: Option<i64>,
    /// Milliseconds spent waiting as the platform's `Retry-After` told, since the start.
    pub throttled_ms: u64,
    /// True when that wait grew over the last status interval (throttled now).
    pub throttled_now: bool,
}

impl DaemonLive {
    /// The stored text.
    pub(crate) fn to_json(&self) -> String {
        // Serialising plain maps and numbers cannot fail.
        serde_json::to_string(self).unwrap_or_else(|_| "{}".to_owned())
    }

    /// Reads the stored text; none or an unreadable one is the default.
    pub(crate) fn from_json(text: Option<&str>) -> DaemonLive {
        text.and_then(|t| serde_json::from_str(t).ok())
            .unwrap_or_default()
    }
}

/// Per-project summary for `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectTotals {
    /// The project.
    pub project: ProjectRow,
    /// Number of files in each state (states without files are absent).
    pub files_by_state: BTreeMap<FileState, u64>,
    /// Number of files.
    pub n_files: u64,
    /// Bytes of the files to mirror (all but `Skipped` and `Gone`).
    pub bytes_total: u64,
    /// Bytes on disk: finished files' size plus the chunk progress of the others.
    pub bytes_done: u64,
    /// Bytes of `Skipped` files.
    pub bytes_skipped: u64,
    /// Files `Failed`.
    pub n_failed: u64,
    /// Files `Corrupt`.
    pub n_corrupt: u64,
}

/// The platform parts as stored in `files.parts_json`.
#[derive(serde::Deserialize)]
struct PartJson {
    index: u32,
    size: u64,
    #[serde(default)]
    md5: Option<String>,
    #[serde(default)]
    checksum: Option<String>,
}

/// The same shape, borrowed, for writing without copying the strings.
#[derive(serde::Serialize)]
struct PartJsonRef<'a> {
    index: u32,
    size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    md5: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    checksum: Option<&'a str>,
}

/// Serialises parts for `files.parts_json`.
pub(crate) fn parts_to_json(parts: &Option<Vec<RemotePart>>) -> Option<String> {
    let parts = parts.as_ref()?;
    let json: Vec<PartJsonRef<'_>> = parts
        .iter()
        .map(|p| PartJsonRef {
            index: p.index,
            size: p.size,
            md5: p.md5.as_deref(),
            checksum: p.checksum.as_deref(),
        })
        .collect();
    // Serialising plain strings and numbers cannot fail.
    serde_json::to_string(&json).ok()
}

/// Parses `files.parts_json`.
pub(crate) fn parts_from_json(text: &str) -> Result<Vec<RemotePart>, serde_json::Error> {
    let parts: Vec<PartJson> = serde_json::from_str(text)?;
    Ok(parts
        .into_iter()
        .map(|p| RemotePart {
            index: p.index,
            size: p.size,
            md5: p.md5,
            checksum: p.checksum,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_through_text() {
        for s in FileState::ALL {
            assert_eq!(s.as_str().parse::<FileState>(), Ok(*s));
        }
        for s in ProjectState::ALL {
            assert_eq!(s.as_str().parse::<ProjectState>(), Ok(*s));
        }
        for s in EventLevel::ALL {
            assert_eq!(s.as_str().parse::<EventLevel>(), Ok(*s));
        }
        for s in DaemonState::ALL {
            assert_eq!(s.as_str().parse::<DaemonState>(), Ok(*s));
        }
        for s in AuditAction::ALL {
            assert_eq!(s.as_str().parse::<AuditAction>(), Ok(*s));
        }
        let err = "Verified".parse::<FileState>().unwrap_err();
        assert_eq!(err.to_string(), "unknown FileState \"Verified\"");
    }

    #[test]
    fn finished_states() {
        let finished: Vec<_> = FileState::ALL.iter().filter(|s| s.is_finished()).collect();
        assert_eq!(
            finished,
            [
                &FileState::Fetched,
                &FileState::Verified,
                &FileState::Unverified
            ]
        );
    }
}
