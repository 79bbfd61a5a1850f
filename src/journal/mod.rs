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
//!   reason, attempts, sha256, done_ms, updated_ms, last_seen_ms, etag)`, keyed by
//!   `(project_id, file_id)` ([`FileKey`]): the platform description (enough to rebuild the
//!   [`RemoteFile`](crate::model::RemoteFile) and re-plan), the local path relative to the
//!   project directory, and the [`FileState`]. Indexed by `(project_id, state)` and
//!   `(state, updated_ms)`. The same file id listed in several projects (a DNAnexus clone,
//!   or one St. Jude file vended into several data requests) has one independent row per
//!   project: each project's copy is mirrored, tracked and verified on its own.
//! - `segments(project_id, file_id, seg_idx, offset, len, part_index, expect, verified)`: the
//!   checksum ranges of the current plan; `expect` is `ALGO:hex`
//!   ([`Digest::to_tagged`](crate::model::Digest::to_tagged)).
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
//!   last_error, last_error_ms, stopped_ms, bytes_per_s, live)`: the one row the daemon keeps
//!   current ([`DaemonRow`]; `state` is a [`DaemonState`]), for `status`; `live` is one JSON
//!   object ([`DaemonLive`]: per-project rates and other figures that need no column).
//! - `requests(project_id, file_id, ts_ms)`: work dropped in the daemon's inbox, a whole
//!   project (`file_id` empty) or single files; it survives restarts.
//! - `notifications(id, ts_ms, kind, project_id, body)`, `outbox(event_id, sink, seq,
//!   attempts, next_ms, last_error)` and `notify_sinks(sink, delivered, dropped)`: the
//!   notification outbox (`outbox.rs`): an event is recorded with one delivery row per sink
//!   before it is sent, and the row is deleted once the sink took it.
//! - `paused(project_id PK, ts_ms, by_user)`: projects paused through the control socket
//!   (`dxmirror pause`; `*` for `--all`), with who paused them ([`PausedRow`]); they stay
//!   paused across a restart until `dxmirror resume`.
//!
//! # Layout
//!
//! - `rows.rs`: the stored words (`text_enum!`s such as [`FileState`]) and the row structs.
//! - `handle.rs`: [`Journal`], the write handle: typed requests to the writer thread, and
//!   reads on its own read-only connection.
//! - `writer/`: the writer thread (`mod.rs`: the loop, the batch and one typed reply per
//!   command; `sql.rs`: the statements that write).
//! - `reader/`: [`JournalReader`] (`mod.rs`) and the `SELECT`s that it and [`Journal`] share
//!   (`sql.rs`).
//! - `schema.rs`: the migrations and connection set-up; `fscheck.rs`: the local file system
//!   check.
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
mod handle;
pub(crate) mod outbox;
mod reader;
mod rows;
mod schema;
mod writer;

pub use fscheck::{fs_type, require_local_state_dir, FsCheckError};
pub use handle::Journal;
pub use outbox::{NewNotification, OutboxRow, OutboxWrite, SinkCounts, MAX_NOTIFICATIONS};
pub use reader::JournalReader;
pub use rows::{
    AuditAction, AuditRow, DaemonLive, DaemonRow, DaemonState, DeletedRows, EventLevel, EventRow,
    FileKey, FileListing, FileRow, FileState, ListingDiff, NewAudit, PausedRow, ProjectRow,
    ProjectState, ProjectTotals, RunRow, StoredPlan, UnknownState,
};
pub use writer::WriterStats;

use std::path::PathBuf;

use crate::model::ProjectId;

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

/// Checked conversion for SQLite's signed integers.
pub(crate) fn sql_u64(v: u64) -> Result<i64, JournalError> {
    i64::try_from(v).map_err(|_| JournalError::TooLarge(v))
}
