//! The SQLite journal: the durable record of what is known about every project, file,
//! checksum segment and fetch chunk, plus a bounded event history and the runs.
//!
//! It owns the file `<state-dir>/journal.sqlite3` and all SQL in the crate. It must not do
//! network or data-file IO, decide what to fetch, or know about local paths beyond storing the
//! `rel_path`/`dir_name` strings other modules decided.
//!
//! # Schema
//!
//! The DDL lives in `journal/schema.rs` as an append-only migration list, applied on
//! `PRAGMA user_version`. Tables (all `STRICT`):
//!
//! - `projects(id PK, name, dir_name UNIQUE NULL, download_restricted, state, reason,
//!   first_seen_ms, last_listed_ms)`: `dir_name` is the local directory, decided once and
//!   never changed by [`Journal::upsert_project`]. `state` is a [`ProjectState`].
//! - `files(project_id FK, file_id, folder, name, size, remote_state, archival_state,
//!   created_ms, modified_ms, parts_json, drive, md5, checksum_type, kind, rel_path, state,
//!   reason, attempts, sha256, done_ms, updated_ms, last_seen_ms)`, keyed by
//!   `(project_id, file_id)` ([`FileKey`]): the platform description (enough to rebuild the
//!   [`RemoteFile`] and re-plan), the local path relative to the project directory, and the
//!   [`FileState`]. Indexed by `(project_id, state)` and `(state, updated_ms)`. The same
//!   file id listed in several projects (a DNAnexus clone, or one St. Jude file vended into
//!   several data requests) has one independent row per project: each project's copy is
//!   mirrored, tracked and verified on its own.
//! - `segments(project_id, file_id, seg_idx, offset, len, part_index, expect, verified)`: the
//!   checksum ranges of the current plan; `expect` is `ALGO:hex` ([`Digest::to_tagged`]).
//! - `chunks(project_id, file_id, chunk_idx, seg_idx, offset, len, done_bytes, crc32c)`: the
//!   fetch units and their progress; `crc32c` is the CRC32C of the first `done_bytes` bytes of
//!   the chunk.
//! - `events(id, ts_ms, level, project_id, file_id, message)`: the newest
//!   [`MAX_EVENTS`] events; older ones are deleted as new ones are written.
//! - `runs(id, started_ms, ended_ms, version, command, pid, outcome)`.
//! - `audit(id, ts_ms, action, project_id, file_id, identity, size, sha256, detail)`:
//!   append-only (triggers refuse `UPDATE` and `DELETE`, and it is never pruned); one
//!   [`AuditRow`] per act a data-use agreement may ask about (the words are
//!   [`AuditAction`]'s, `crate::audit::Action`: a file fetched, repaired or quarantined, a
//!   project purged; rows written before the word `purged` say `purge`). No foreign key: a
//!   record outlives the project it names.
//! - `daemon(id = 1, pid, started_ms, updated_ms, state, status, last_discovery_ms,
//!   last_error, last_error_ms, stopped_ms, bytes_per_s)`: the one row the daemon keeps current
//!   ([`DaemonRow`]; `state` is a [`DaemonState`]), for `status`.
//! - `requests(project_id, file_id, ts_ms)`: work dropped in the daemon's inbox, a whole
//!   project (`file_id` empty) or single files; it survives restarts.
//!
//! # Locking
//!
//! One process writes at a time (the `lock` module ensures it); inside it, every write goes
//! through one dedicated writer thread that owns the read-write connection. The writer takes
//! whatever commands are queued (at most [`MAX_BATCH`] or about 20 ms worth), applies each in
//! its own savepoint inside one `BEGIN IMMEDIATE` transaction, commits, and only then acks
//! each caller. Reads use a second, read-only connection behind a mutex. [`JournalReader`]
//! opens the file read-only and works while a writer process runs (WAL). Every connection
//! has a `busy_timeout`. The journal must live on a local file system: WAL needs shared memory,
//! so [`Journal::open`] refuses a state directory on a network one (`fscheck.rs`).
//! A batch of one command runs without a savepoint (its failure rolls back the transaction),
//! which spares a large listing the statement journal.
//! A read-only open needs the `-shm` file to exist (a writer is running) or the directory
//! to be writable by the reader, as SQLite requires for read-only WAL databases.
//!
//! # Compatibility
//!
//! `PRAGMA user_version` is the schema version. A writer migrates older journals forward in
//! one EXCLUSIVE transaction; a journal newer than this build is refused by writer and
//! reader alike, naming both versions. A reader refuses an older journal rather than migrate
//! it (it never writes). The schema is an IPC boundary: other modules use the typed
//! functions here, never SQL.
//!
//! # Durability
//!
//! WAL with `synchronous=NORMAL`: a commit survives a process crash; a power loss may drop
//! the last commits, which only loses *claims* (the engine syncs bytes to disk before it
//! reports a chunk, so a lost claim means bytes are fetched again, never that missing bytes
//! are counted). A caller counts a write done only when its future resolves `Ok`, which
//! happens after the commit.

pub mod fscheck;
mod read;
mod schema;
mod writer;

pub use fscheck::{require_local_state_dir, FsCheckError};

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use crate::clock::now_ms;
use crate::model::{
    ArchivalState, ChecksumType, Digest, FileId, ProjectId, RemoteFile, RemotePart, RemoteState,
    Stated,
};
use crate::planner::{FileKind, FilePlan};

use writer::{Command, Op, Reply};

/// Name of the journal file inside the state directory.
pub const JOURNAL_FILE: &str = "journal.sqlite3";
/// How many events the journal keeps (the newest).
pub const MAX_EVENTS: i64 = 10_000;
/// The most commands the writer applies in one transaction.
pub const MAX_BATCH: usize = 512;

/// Everything that can go wrong with the journal.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The state directory cannot be used or created.
    #[error(transparent)]
    StateDir(#[from] crate::dirs::DirError),
    /// The state directory is on a file system the journal cannot use (a network one).
    #[error(transparent)]
    StateDirFs(#[from] FsCheckError),
    /// The writer thread could not be started.
    #[error("cannot start the journal writer thread: {0}")]
    SpawnWriter(std::io::Error),
    /// A reader was pointed at a state directory without a journal.
    #[error("no journal at {0}")]
    Missing(PathBuf),
    /// The file exists but is not a (healthy) SQLite database.
    #[error(
        "{path} is not a usable dxmirror journal (not a SQLite database, or damaged): {detail}; \
         to recover, move it aside and run `dxmirror sync` again: files already in the mirror \
         are re-verified against the platform's checksums and adopted without downloading them again"
    )]
    NotADatabase {
        /// The journal file.
        path: PathBuf,
        /// What SQLite said.
        detail: String,
    },
    /// The journal was written by a newer dxmirror.
    #[error("journal {path} has schema version {found}, newer than version {supported} known to this dxmirror; upgrade dxmirror")]
    TooNew {
        /// The journal file.
        path: PathBuf,
        /// Its `user_version`.
        found: i64,
        /// The version this build knows.
        supported: i64,
    },
    /// A read-only open found a journal older than this build (it must be migrated first).
    #[error("journal {path} has schema version {found}, older than version {supported}; run a writing dxmirror command once to migrate it")]
    TooOld {
        /// The journal file.
        path: PathBuf,
        /// Its `user_version`.
        found: i64,
        /// The version this build knows.
        supported: i64,
    },
    /// An SQLite call failed.
    #[error("journal error while {op}: {source}")]
    Sqlite {
        /// What was being done.
        op: &'static str,
        /// The cause.
        source: rusqlite::Error,
    },
    /// The batch a write belonged to could not be committed.
    #[error("journal commit failed: {0}")]
    CommitFailed(String),
    /// A file row refers to a project the journal does not know.
    #[error("unknown project {0}")]
    UnknownProject(ProjectId),
    /// No such file (in that project) in the journal.
    #[error("unknown file {0}")]
    UnknownFile(FileKey),
    /// The file has no such chunk in its stored plan.
    #[error("file {file} has no chunk {chunk_idx}")]
    UnknownChunk {
        /// The file.
        file: FileKey,
        /// The chunk index.
        chunk_idx: u32,
    },
    /// The file has no such segment in its stored plan.
    #[error("file {file} has no segment {seg_idx}")]
    UnknownSegment {
        /// The file.
        file: FileKey,
        /// The segment index.
        seg_idx: u32,
    },
    /// Progress larger than the chunk.
    #[error(
        "progress of {done_bytes} bytes exceeds chunk {chunk_idx} of file {file} ({len} bytes)"
    )]
    ProgressBeyondChunk {
        /// The file.
        file: FileKey,
        /// The chunk index.
        chunk_idx: u32,
        /// The claimed progress.
        done_bytes: u64,
        /// The chunk length.
        len: u64,
    },
    /// The local directory name is already taken by another project.
    #[error("directory name {dir_name:?} is already used by project {owner}")]
    DirNameTaken {
        /// The contested name.
        dir_name: String,
        /// The project that has it.
        owner: ProjectId,
    },
    /// `mark_done` was given a state that is not a finished one.
    #[error("{0} is not a finished file state (expected verified or unverified)")]
    NotFinished(FileState),
    /// A number does not fit SQLite's signed 64-bit integers.
    #[error("value {0} is too large for the journal")]
    TooLarge(u64),
    /// A stored row could not be understood.
    #[error("invalid {table} row {key}: {detail}")]
    BadRow {
        /// The table.
        table: &'static str,
        /// The row's key.
        key: String,
        /// What is wrong.
        detail: String,
    },
    /// The writer answered a command with the wrong kind of reply (a bug).
    #[error("the journal writer gave an unexpected reply")]
    WrongReply,
    /// The writer thread has stopped (after `close`, or it died).
    #[error("the journal writer has stopped")]
    Closed,
}

/// Adds the operation to an SQLite error.
pub(crate) trait SqlContext<T> {
    /// Wraps the error as [`JournalError::Sqlite`] naming `op`.
    fn sql_ctx(self, op: &'static str) -> Result<T, JournalError>;
}

impl<T> SqlContext<T> for Result<T, rusqlite::Error> {
    fn sql_ctx(self, op: &'static str) -> Result<T, JournalError> {
        self.map_err(|source| JournalError::Sqlite { op, source })
    }
}

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

/// An audit record to append ([`Journal::append_audit`], [`Journal::delete_project`]).
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

/// What [`Journal::delete_project`] removed.
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

/// Counters of the writer thread (for tests, benches and `status`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Transactions committed.
    pub commits: u64,
    /// Commands applied (successfully or not).
    pub commands: u64,
}

#[derive(Default)]
pub(crate) struct StatCounters {
    commits: AtomicU64,
    commands: AtomicU64,
}

/// The read-write journal of a writing process. Cheap to clone; all clones share one writer
/// thread. Dropping the last clone stops the writer after the commands already queued.
#[derive(Clone)]
pub struct Journal {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    tx: Option<mpsc::Sender<Command>>,
    reader: Mutex<Connection>,
    thread: Mutex<Option<JoinHandle<()>>>,
    stats: Arc<StatCounters>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the channel ends the writer loop once the queue is drained; joining makes
        // sure its connection is closed before a reopen in the same process.
        drop(self.tx.take());
        let handle = self
            .thread
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(handle) = handle {
            if handle.join().is_err() {
                tracing::error!("journal writer thread panicked");
            }
        }
    }
}

impl fmt::Debug for Journal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Journal")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

impl Journal {
    /// Refuses a `state_dir` on a network file system ([`require_local_state_dir`]: SQLite's
    /// WAL needs a local one), then opens (creating the directory's last component with mode
    /// 0750 and the file if missing) and migrates the journal in it, and starts the writer
    /// thread.
    pub fn open(state_dir: &Path) -> Result<Journal, JournalError> {
        require_local_state_dir(state_dir)?;
        crate::dirs::ensure_state_dir(state_dir)?;
        let path = state_dir.join(JOURNAL_FILE);
        let conn = schema::open_writer(&path)?;
        let reader = schema::open_reader(&path)?;
        let (tx, rx) = mpsc::channel(4 * MAX_BATCH);
        let stats = Arc::new(StatCounters::default());
        let thread_stats = Arc::clone(&stats);
        let thread = std::thread::Builder::new()
            .name("journal-writer".into())
            .spawn(move || writer::run(conn, rx, &thread_stats))
            .map_err(JournalError::SpawnWriter)?;
        tracing::debug!(path = %path.display(), "journal opened");
        Ok(Journal {
            inner: Arc::new(Inner {
                path,
                tx: Some(tx),
                reader: Mutex::new(reader),
                thread: Mutex::new(Some(thread)),
                stats,
            }),
        })
    }

    /// The journal file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Writer counters so far.
    pub fn stats(&self) -> WriterStats {
        WriterStats {
            commits: self.inner.stats.commits.load(Ordering::Relaxed),
            commands: self.inner.stats.commands.load(Ordering::Relaxed),
        }
    }

    async fn send(&self, op: Op) -> Result<Reply, JournalError> {
        let tx = self.inner.tx.as_ref().ok_or(JournalError::Closed)?;
        let (ack, done) = oneshot::channel();
        tx.send(Command { op, ack })
            .await
            .map_err(|_| JournalError::Closed)?;
        done.await.map_err(|_| JournalError::Closed)?
    }

    async fn send_unit(&self, op: Op) -> Result<(), JournalError> {
        self.send(op).await.map(|_| ())
    }

    fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, JournalError>,
    ) -> Result<T, JournalError> {
        // A panic while holding the lock cannot leave the read-only connection inconsistent.
        let conn = self
            .inner
            .reader
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        f(&conn)
    }

    /// Flushes the queued writes and stops the writer. Later writes fail with
    /// [`JournalError::Closed`]; reads keep working.
    pub async fn close(&self) -> Result<(), JournalError> {
        let res = match self.send(Op::Close).await {
            Ok(_) | Err(JournalError::Closed) => Ok(()),
            Err(e) => Err(e),
        };
        let handle = self
            .inner
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(handle) = handle {
            let joined = tokio::task::spawn_blocking(move || handle.join()).await;
            if !matches!(joined, Ok(Ok(()))) {
                tracing::error!("journal writer thread panicked");
            }
        }
        res
    }

    /// Inserts or updates a project. An existing `dir_name` is kept (never changed once set);
    /// `first_seen_ms` is kept from the first insert; `last_listed_ms` is kept when `None`.
    pub async fn upsert_project(&self, row: ProjectRow) -> Result<(), JournalError> {
        self.send_unit(Op::UpsertProject(row)).await
    }

    /// One project.
    pub fn project(&self, id: &ProjectId) -> Result<Option<ProjectRow>, JournalError> {
        self.read(|c| read::project(c, id))
    }

    /// All projects, by id.
    pub fn projects(&self) -> Result<Vec<ProjectRow>, JournalError> {
        self.read(read::projects)
    }

    /// Records a complete listing of `project` (which must be known) in one transaction.
    /// New ids are inserted `Pending` (or `Skipped` with the reason); known ids get remote
    /// metadata, `rel_path` and `last_seen_ms` updated without touching their progress or a
    /// finished state (a `Skipped` or `Gone` file that became downloadable goes back to
    /// `Pending`, a `Pending` or `Gone` one that is listed but not downloadable becomes
    /// `Skipped`). Known ids absent
    /// from the listing are reported as removed, not deleted.
    pub async fn record_listing(
        &self,
        project: &ProjectId,
        files: Vec<FileListing>,
    ) -> Result<ListingDiff, JournalError> {
        match self
            .send(Op::RecordListing {
                project: project.clone(),
                files,
            })
            .await?
        {
            Reply::Diff(diff) => Ok(diff),
            _ => Err(JournalError::WrongReply),
        }
    }

    /// The files of a project, by `rel_path`.
    pub fn files(&self, project: &ProjectId) -> Result<Vec<FileRow>, JournalError> {
        self.read(|c| read::files(c, project))
    }

    /// One file of one project.
    pub fn file(&self, key: &FileKey) -> Result<Option<FileRow>, JournalError> {
        self.read(|c| read::file(c, key))
    }

    /// Sets a file's state and reason.
    pub async fn set_file_state(
        &self,
        key: &FileKey,
        state: FileState,
        reason: Option<String>,
    ) -> Result<(), JournalError> {
        self.send_unit(Op::SetFileState {
            key: key.clone(),
            state,
            reason,
        })
        .await
    }

    /// Counts one more attempt; returns the new count.
    pub async fn add_attempt(&self, key: &FileKey) -> Result<u32, JournalError> {
        match self.send(Op::AddAttempt(key.clone())).await? {
            Reply::Attempts(n) => Ok(n),
            _ => Err(JournalError::WrongReply),
        }
    }

    /// Starts an attempt at a file in one commit: counts the attempt, sets the state
    /// `Fetching` with no reason and, for a file planned now, stores `plan` (as
    /// [`Journal::put_plan`]). Returns the attempt count.
    pub async fn start_file(
        &self,
        key: &FileKey,
        plan: Option<&FilePlan>,
    ) -> Result<u32, JournalError> {
        match self
            .send(Op::StartFile {
                key: key.clone(),
                plan: plan.cloned(),
            })
            .await?
        {
            Reply::Attempts(n) => Ok(n),
            _ => Err(JournalError::WrongReply),
        }
    }

    /// Marks a file mirrored: `state` must be `Verified` or `Unverified`; records the
    /// SHA-256 and `done_ms`, clears the reason.
    pub async fn mark_done(
        &self,
        key: &FileKey,
        state: FileState,
        sha256_hex: String,
    ) -> Result<(), JournalError> {
        if !matches!(state, FileState::Verified | FileState::Unverified) {
            return Err(JournalError::NotFinished(state));
        }
        self.send_unit(Op::MarkDone {
            key: key.clone(),
            state,
            sha256: sha256_hex,
        })
        .await
    }

    /// Replaces the file's stored plan (segments and chunks, all progress 0) and sets its kind.
    pub async fn put_plan(&self, key: &FileKey, plan: &FilePlan) -> Result<(), JournalError> {
        self.send_unit(Op::PutPlan {
            key: key.clone(),
            plan: plan.clone(),
        })
        .await
    }

    /// The stored plan and progress; `None` when the file is unknown or has no plan.
    pub fn load_plan(&self, key: &FileKey) -> Result<Option<StoredPlan>, JournalError> {
        self.read(|c| read::load_plan(c, key))
    }

    /// Records that the first `done_bytes` bytes of a chunk are on disk (synced) with the
    /// given CRC32C.
    pub async fn record_chunk_progress(
        &self,
        key: &FileKey,
        chunk_idx: u32,
        done_bytes: u64,
        crc32c: u32,
    ) -> Result<(), JournalError> {
        self.send_unit(Op::ChunkProgress {
            key: key.clone(),
            chunk_idx,
            done_bytes,
            crc32c,
        })
        .await
    }

    /// Forgets the progress of some chunks (done 0, crc 0) and un-verifies their segments.
    pub async fn reset_chunks(
        &self,
        key: &FileKey,
        chunk_idxs: Vec<u32>,
    ) -> Result<(), JournalError> {
        self.send_unit(Op::ResetChunks {
            key: key.clone(),
            chunk_idxs,
        })
        .await
    }

    /// Records whether a segment's checksum was verified.
    pub async fn set_segment_verified(
        &self,
        key: &FileKey,
        seg_idx: u32,
        verified: bool,
    ) -> Result<(), JournalError> {
        self.send_unit(Op::SetSegmentVerified {
            key: key.clone(),
            seg_idx,
            verified,
        })
        .await
    }

    /// Appends an event (the oldest beyond [`MAX_EVENTS`] are deleted).
    pub async fn record_event(
        &self,
        level: EventLevel,
        project: Option<&ProjectId>,
        file: Option<&FileId>,
        message: String,
    ) -> Result<(), JournalError> {
        self.send_unit(Op::Event {
            level,
            project: project.cloned(),
            file: file.cloned(),
            message,
        })
        .await
    }

    /// Records the start of a run of `command` by this process; returns its id.
    pub async fn start_run(&self, command: &str) -> Result<i64, JournalError> {
        match self
            .send(Op::StartRun {
                command: command.to_owned(),
            })
            .await?
        {
            Reply::Run(id) => Ok(id),
            _ => Err(JournalError::WrongReply),
        }
    }

    /// Records the end of a run.
    pub async fn end_run(&self, run: i64, outcome: &str) -> Result<(), JournalError> {
        self.send_unit(Op::EndRun {
            run,
            outcome: outcome.to_owned(),
        })
        .await
    }

    /// Per-project totals (see [`JournalReader::project_totals`]).
    pub fn project_totals(&self) -> Result<Vec<ProjectTotals>, JournalError> {
        self.read(read::project_totals)
    }

    /// Appends an audit record; returns it as stored (id and time set by the journal).
    pub async fn append_audit(&self, record: NewAudit) -> Result<AuditRow, JournalError> {
        match self.send(Op::AppendAudit(record)).await? {
            Reply::Audit(row) => Ok(row),
            _ => Err(JournalError::WrongReply),
        }
    }

    /// [`Journal::mark_done`] and the audit record saying so, in one transaction: either
    /// both are committed or neither. Returns the record as stored.
    pub async fn mark_done_audited(
        &self,
        key: &FileKey,
        state: FileState,
        sha256_hex: String,
        audit: NewAudit,
    ) -> Result<AuditRow, JournalError> {
        if !matches!(state, FileState::Verified | FileState::Unverified) {
            return Err(JournalError::NotFinished(state));
        }
        match self
            .send(Op::MarkDoneAudited {
                key: key.clone(),
                state,
                sha256: sha256_hex,
                audit,
            })
            .await?
        {
            Reply::Audit(row) => Ok(row),
            _ => Err(JournalError::WrongReply),
        }
    }

    /// [`Journal::mark_done_audited`] for a file whose chunk progress was not journaled while
    /// it was fetched (a small file, made durable whole before publishing): records each
    /// chunk's `(chunk_idx, done_bytes, crc32c)`, marks the segments that have a platform
    /// checksum verified when `state` is `Verified`, marks the file done and appends the
    /// audit record, all in one transaction. The caller must have synced the bytes and
    /// published the file first.
    pub async fn finish_file(
        &self,
        key: &FileKey,
        state: FileState,
        sha256_hex: String,
        chunks: Vec<(u32, u64, u32)>,
        audit: NewAudit,
    ) -> Result<AuditRow, JournalError> {
        if !matches!(state, FileState::Verified | FileState::Unverified) {
            return Err(JournalError::NotFinished(state));
        }
        match self
            .send(Op::FinishFile {
                key: key.clone(),
                state,
                sha256: sha256_hex,
                chunks,
                audit,
            })
            .await?
        {
            Reply::Audit(row) => Ok(row),
            _ => Err(JournalError::WrongReply),
        }
    }

    /// Deletes a project and everything the journal holds about it (chunks, segments, files,
    /// its events, the project row) and appends `audit`, in one transaction: either all of
    /// it is committed or none. An unknown project is an error (and nothing is written).
    pub async fn delete_project(
        &self,
        project: &ProjectId,
        audit: NewAudit,
    ) -> Result<DeletedRows, JournalError> {
        match self
            .send(Op::DeleteProject {
                project: project.clone(),
                audit,
            })
            .await?
        {
            Reply::Deleted(d) => Ok(d),
            _ => Err(JournalError::WrongReply),
        }
    }

    /// Audit records at or after `since_ms` (ms since the epoch), oldest first.
    pub fn audit_since(&self, since_ms: i64) -> Result<Vec<AuditRow>, JournalError> {
        self.read(|c| read::audit(c, since_ms))
    }

    /// Changes a file's local path (e.g. when a replaced version is kept under another name).
    pub async fn set_rel_path(&self, key: &FileKey, rel_path: String) -> Result<(), JournalError> {
        self.send_unit(Op::SetRelPath {
            key: key.clone(),
            rel_path,
        })
        .await
    }

    /// Records work dropped in the daemon's inbox: whole projects (`None`) or single files.
    /// Already recorded requests are kept as they are.
    pub async fn add_requests(
        &self,
        requests: Vec<(ProjectId, Option<FileId>)>,
    ) -> Result<(), JournalError> {
        self.send_unit(Op::AddRequests(requests)).await
    }

    /// The inbox requests recorded so far, by project.
    pub fn requests(&self) -> Result<Vec<(ProjectId, Option<FileId>)>, JournalError> {
        self.read(read::requests)
    }

    /// Records the daemon's state (the one `daemon` row; `updated_ms` is set to now).
    pub async fn put_daemon(&self, row: DaemonRow) -> Result<(), JournalError> {
        self.send_unit(Op::PutDaemon(row)).await
    }

    /// The daemon's state, if a daemon ever ran.
    pub fn daemon(&self) -> Result<Option<DaemonRow>, JournalError> {
        self.read(read::daemon)
    }
}

/// A read-only view of a journal, for `status` and other commands that never write. It
/// works while a writing process runs.
pub struct JournalReader {
    path: PathBuf,
    conn: Connection,
}

impl fmt::Debug for JournalReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JournalReader")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl JournalReader {
    /// Opens the journal in `state_dir` read-only; an error naming the path if there is none.
    pub fn open(state_dir: &Path) -> Result<JournalReader, JournalError> {
        let path = state_dir.join(JOURNAL_FILE);
        if !path.is_file() {
            return Err(JournalError::Missing(path));
        }
        let conn = schema::open_reader(&path)?;
        Ok(JournalReader { path, conn })
    }

    /// The journal file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// All projects, by id.
    pub fn projects(&self) -> Result<Vec<ProjectRow>, JournalError> {
        read::projects(&self.conn)
    }

    /// One project.
    pub fn project(&self, id: &ProjectId) -> Result<Option<ProjectRow>, JournalError> {
        read::project(&self.conn, id)
    }

    /// The files of a project, by `rel_path`.
    pub fn files(&self, project: &ProjectId) -> Result<Vec<FileRow>, JournalError> {
        read::files(&self.conn, project)
    }

    /// One file of one project.
    pub fn file(&self, key: &FileKey) -> Result<Option<FileRow>, JournalError> {
        read::file(&self.conn, key)
    }

    /// The stored plan and progress of a file.
    pub fn load_plan(&self, key: &FileKey) -> Result<Option<StoredPlan>, JournalError> {
        read::load_plan(&self.conn, key)
    }

    /// Per project (every known project, by id): files by state, bytes to mirror and done,
    /// failures. Bytes done are the finished files' sizes plus the chunk progress of the rest.
    pub fn project_totals(&self) -> Result<Vec<ProjectTotals>, JournalError> {
        read::project_totals(&self.conn)
    }

    /// Files that need attention (`Failed`, then `Corrupt`, then `Skipped`), newest first
    /// within each state, at most `limit`.
    pub fn problems(&self, limit: usize) -> Result<Vec<FileRow>, JournalError> {
        read::problems(&self.conn, limit)
    }

    /// The newest events, newest first, at most `limit`.
    pub fn recent_events(&self, limit: usize) -> Result<Vec<EventRow>, JournalError> {
        read::recent_events(&self.conn, limit)
    }

    /// The latest run, if any.
    pub fn last_run(&self) -> Result<Option<RunRow>, JournalError> {
        read::last_run(&self.conn)
    }

    /// Audit records at or after `since_ms` (ms since the epoch; 0 for all), oldest first.
    pub fn audit_since(&self, since_ms: i64) -> Result<Vec<AuditRow>, JournalError> {
        read::audit(&self.conn, since_ms)
    }

    /// The daemon's state, if a daemon ever ran.
    pub fn daemon(&self) -> Result<Option<DaemonRow>, JournalError> {
        read::daemon(&self.conn)
    }

    /// The inbox requests recorded so far, by project.
    pub fn requests(&self) -> Result<Vec<(ProjectId, Option<FileId>)>, JournalError> {
        read::requests(&self.conn)
    }
}

/// Checked conversion for SQLite's signed integers.
pub(crate) fn sql_u64(v: u64) -> Result<i64, JournalError> {
    i64::try_from(v).map_err(|_| JournalError::TooLarge(v))
}

/// Parses a stored `ALGO:hex` digest.
pub(crate) fn parse_tagged(s: &str) -> Result<Digest, crate::model::DigestError> {
    Digest::from_tagged(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::testing::RemoteFileBuilder;

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

    fn remote(project: &ProjectId, n: u32) -> RemoteFile {
        RemoteFileBuilder::new(project, n).size(10).build()
    }

    #[tokio::test]
    async fn delete_project_removes_only_its_rows_and_audits_append_only() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        let a: ProjectId = "project-00000000000000000000000a".parse().unwrap();
        let b: ProjectId = "project-00000000000000000000000b".parse().unwrap();
        for p in [&a, &b] {
            j.upsert_project(ProjectRow::new(p.clone(), ProjectState::Active, None))
                .await
                .unwrap();
            let files = (1..=3)
                .map(|n| FileListing {
                    remote: remote(p, n),
                    rel_path: format!("f{n}"),
                    kind: None,
                    skip_reason: None,
                })
                .collect();
            j.record_listing(p, files).await.unwrap();
            j.record_event(EventLevel::Info, Some(p), None, "listed".into())
                .await
                .unwrap();
            j.add_requests(vec![(p.clone(), None)]).await.unwrap();
        }
        let audit = |action: AuditAction| NewAudit {
            action,
            project_id: a.clone(),
            file_id: None,
            identity: Some("uid 0 (root)".into()),
            size: Some(30),
            sha256: None,
            detail: "deleted /m/a".into(),
        };
        let deleted = j
            .delete_project(&a, audit(AuditAction::Purged))
            .await
            .unwrap();
        assert_eq!((deleted.files, deleted.events), (3, 1));
        assert!(j.project(&a).unwrap().is_none());
        assert!(j.files(&a).unwrap().is_empty());
        assert_eq!(j.files(&b).unwrap().len(), 3);
        assert!(j.project(&b).unwrap().is_some());
        assert_eq!(j.requests().unwrap(), vec![(b.clone(), None)]);
        // Deleting it again is an error and writes no second record.
        assert!(matches!(
            j.delete_project(&a, audit(AuditAction::Purged)).await,
            Err(JournalError::UnknownProject(_))
        ));
        let id2 = j.append_audit(audit(AuditAction::Purged)).await.unwrap().id;
        assert!(id2 > deleted.audit_id);
        j.close().await.unwrap();

        let reader = JournalReader::open(dir.path()).unwrap();
        let rows = reader.audit_since(0).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].action, "purged");
        assert_eq!(rows[0].project_id, a);
        assert_eq!(rows[0].size, Some(30));
        assert_eq!(rows[0].identity.as_deref(), Some("uid 0 (root)"));
        assert!(reader.audit_since(rows[1].ts_ms + 1).unwrap().is_empty());
        // The table refuses changes even from a raw connection.
        let raw = Connection::open(dir.path().join(JOURNAL_FILE)).unwrap();
        let err = raw.execute("DELETE FROM audit", []).unwrap_err();
        assert!(err.to_string().contains("append-only"), "{err}");
        assert!(raw.execute("UPDATE audit SET detail = 'x'", []).is_err());
    }

    #[tokio::test]
    async fn mark_done_audited_writes_both_or_neither() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        let p: ProjectId = "project-00000000000000000000000a".parse().unwrap();
        j.upsert_project(ProjectRow::new(p.clone(), ProjectState::Active, None))
            .await
            .unwrap();
        let listing = vec![FileListing {
            remote: remote(&p, 1),
            rel_path: "f1".into(),
            kind: None,
            skip_reason: None,
        }];
        j.record_listing(&p, listing).await.unwrap();
        let known = remote(&p, 1).id;
        let unknown = remote(&p, 2).id;
        let audit = |file: &FileId| NewAudit {
            action: AuditAction::Fetched,
            project_id: p.clone(),
            file_id: Some(file.clone()),
            identity: Some("user-x".into()),
            size: Some(10),
            sha256: Some("ab".repeat(32)),
            detail: "verified f1".into(),
        };
        let sha = "ab".repeat(32);
        // An unknown file: an error, and no audit record.
        assert!(j
            .mark_done_audited(
                &FileKey::new(&p, &unknown),
                FileState::Verified,
                sha.clone(),
                audit(&unknown)
            )
            .await
            .is_err());
        assert!(j.audit_since(0).unwrap().is_empty());
        // Not a finished state: refused before anything is sent.
        assert!(matches!(
            j.mark_done_audited(
                &FileKey::new(&p, &known),
                FileState::Failed,
                sha.clone(),
                audit(&known)
            )
            .await,
            Err(JournalError::NotFinished(_))
        ));
        let row = j
            .mark_done_audited(
                &FileKey::new(&p, &known),
                FileState::Verified,
                sha.clone(),
                audit(&known),
            )
            .await
            .unwrap();
        let f = j.file(&FileKey::new(&p, &known)).unwrap().unwrap();
        assert_eq!(f.state, FileState::Verified);
        assert_eq!(f.sha256.as_deref(), Some(sha.as_str()));
        assert_eq!(j.audit_since(0).unwrap(), vec![row.clone()]);
        assert_eq!(row.identity.as_deref(), Some("user-x"));
        let again = j.append_audit(audit(&known)).await.unwrap();
        assert!(again.id > row.id);
        j.close().await.unwrap();
    }

    #[tokio::test]
    async fn start_file_and_finish_file_commit_everything_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        let p: ProjectId = "project-00000000000000000000000a".parse().unwrap();
        j.upsert_project(ProjectRow::new(p.clone(), ProjectState::Active, None))
            .await
            .unwrap();
        let mut r = remote(&p, 1);
        r.md5 = Some(Stated::md5("0123456789abcdef0123456789abcdef"));
        r.drive = Some("drive-x".into());
        let listing = vec![FileListing {
            remote: r.clone(),
            rel_path: "f1".into(),
            kind: None,
            skip_reason: None,
        }];
        j.record_listing(&p, listing).await.unwrap();
        let key = FileKey::new(&p, &r.id);
        let plan = crate::planner::plan_file(&r, 1 << 20).unwrap();
        assert_eq!(plan.chunks.len(), 1);
        j.set_file_state(&key, FileState::Failed, Some("earlier".into()))
            .await
            .unwrap();

        // A new plan: the attempt, the state (reason cleared) and the plan in one command.
        assert_eq!(j.start_file(&key, Some(&plan)).await.unwrap(), 1);
        let f = j.file(&key).unwrap().unwrap();
        assert_eq!(
            (f.state, f.reason.as_deref(), f.attempts),
            (FileState::Fetching, None, 1)
        );
        let stored = j.load_plan(&key).unwrap().unwrap();
        assert_eq!(stored.plan.chunks.len(), 1);
        assert_eq!(stored.chunk_done, vec![(0, 0)]);
        // A known plan is kept as it is, progress included.
        j.record_chunk_progress(&key, 0, 4, 77).await.unwrap();
        assert_eq!(j.start_file(&key, None).await.unwrap(), 2);
        assert_eq!(
            j.load_plan(&key).unwrap().unwrap().chunk_done,
            vec![(4, 77)]
        );
        // An unknown file is an error.
        let unknown = FileKey::new(&p, &remote(&p, 2).id);
        assert!(j.start_file(&unknown, Some(&plan)).await.is_err());

        let audit = NewAudit {
            action: AuditAction::Fetched,
            project_id: p.clone(),
            file_id: Some(r.id.clone()),
            identity: None,
            size: Some(10),
            sha256: Some("cd".repeat(32)),
            detail: "verified f1".into(),
        };
        // Progress beyond the chunk: nothing of the finish is committed.
        assert!(j
            .finish_file(
                &key,
                FileState::Verified,
                "cd".repeat(32),
                vec![(0, 11, 5)],
                audit.clone()
            )
            .await
            .is_err());
        assert_eq!(j.file(&key).unwrap().unwrap().state, FileState::Fetching);
        assert!(j.audit_since(0).unwrap().is_empty());
        let row = j
            .finish_file(
                &key,
                FileState::Verified,
                "cd".repeat(32),
                vec![(0, 10, 99)],
                audit,
            )
            .await
            .unwrap();
        let f = j.file(&key).unwrap().unwrap();
        assert_eq!(f.state, FileState::Verified);
        assert_eq!(f.sha256.as_deref(), Some("cd".repeat(32).as_str()));
        let stored = j.load_plan(&key).unwrap().unwrap();
        assert_eq!(stored.chunk_done, vec![(10, 99)]);
        assert_eq!(stored.segment_verified, vec![true]);
        assert_eq!(j.audit_since(0).unwrap(), vec![row]);
        j.close().await.unwrap();
    }

    #[test]
    fn bad_stored_rows_are_errors_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(JOURNAL_FILE);
        let conn = schema::open_writer(&path).unwrap();
        conn.execute_batch(
            "INSERT INTO projects (id, name, state, first_seen_ms) \
                 VALUES ('project-000000000000000000000001', 'p', 'exploded', 0);",
        )
        .unwrap();
        let err = read::projects(&conn).unwrap_err();
        assert!(err.to_string().contains("exploded"), "{err}");
    }
}
