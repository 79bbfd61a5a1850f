//! [`JournalReader`]: a read-only view of the journal for commands that never write
//! (`status`, `audit`), which works while a writing process runs (WAL).
//!
//! `sql.rs` holds the `SELECT`s, shared with [`Journal`](super::Journal)'s own read
//! connection; nothing under `reader/` writes.

pub(super) mod sql;

use std::fmt;
use std::path::{Path, PathBuf};

use rusqlite::Connection;

use super::{
    schema, AuditRow, DaemonRow, EventRow, FileKey, FileRow, JournalError, PausedRow, ProjectRow,
    ProjectTotals, RunRow, StoredPlan, JOURNAL_FILE,
};
use crate::model::{FileId, ProjectId};

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

    /// Every recorded notification (id, kind, JSON body), oldest first.
    pub fn notifications(&self) -> Result<Vec<(String, String, String)>, JournalError> {
        crate::journal::outbox::notifications(&self.conn)
    }

    /// Every notification sink's delivered, dropped and pending counts.
    pub fn outbox_counts(&self) -> Result<Vec<crate::journal::SinkCounts>, JournalError> {
        crate::journal::outbox::counts(&self.conn)
    }

    /// All projects, by id.
    pub fn projects(&self) -> Result<Vec<ProjectRow>, JournalError> {
        sql::projects(&self.conn)
    }

    /// One project.
    pub fn project(&self, id: &ProjectId) -> Result<Option<ProjectRow>, JournalError> {
        sql::project(&self.conn, id)
    }

    /// The files of a project, by `rel_path`.
    pub fn files(&self, project: &ProjectId) -> Result<Vec<FileRow>, JournalError> {
        sql::files(&self.conn, project)
    }

    /// One file of one project.
    pub fn file(&self, key: &FileKey) -> Result<Option<FileRow>, JournalError> {
        sql::file(&self.conn, key)
    }

    /// The stored plan and progress of a file.
    pub fn load_plan(&self, key: &FileKey) -> Result<Option<StoredPlan>, JournalError> {
        sql::load_plan(&self.conn, key)
    }

    /// Per project (every known project, by id): files by state, bytes to mirror and done,
    /// failures. Bytes done are the finished files' sizes plus the chunk progress of the rest.
    pub fn project_totals(&self) -> Result<Vec<ProjectTotals>, JournalError> {
        sql::project_totals(&self.conn)
    }

    /// Files that need attention (`Failed`, then `Corrupt`, then `Skipped`), newest first
    /// within each state, at most `limit`.
    pub fn problems(&self, limit: usize) -> Result<Vec<FileRow>, JournalError> {
        sql::problems(&self.conn, limit)
    }

    /// The newest events, newest first, at most `limit`.
    pub fn recent_events(&self, limit: usize) -> Result<Vec<EventRow>, JournalError> {
        sql::recent_events(&self.conn, limit)
    }

    /// The latest run, if any.
    pub fn last_run(&self) -> Result<Option<RunRow>, JournalError> {
        sql::last_run(&self.conn)
    }

    /// Audit records at or after `since_ms` (ms since the epoch; 0 for all), oldest first.
    pub fn audit_since(&self, since_ms: i64) -> Result<Vec<AuditRow>, JournalError> {
        sql::audit(&self.conn, since_ms)
    }

    /// The daemon's state, if a daemon ever ran.
    pub fn daemon(&self) -> Result<Option<DaemonRow>, JournalError> {
        sql::daemon(&self.conn)
    }

    /// Journaled bytes of a project's unfinished files (their chunk progress), by file.
    pub fn file_progress(
        &self,
        project: &ProjectId,
    ) -> Result<std::collections::BTreeMap<FileId, u64>, JournalError> {
        sql::file_progress(&self.conn, project)
    }

    /// How many files wait for disk space, by project (none absent).
    pub fn disk_waits(&self) -> Result<std::collections::BTreeMap<ProjectId, u64>, JournalError> {
        sql::disk_waits(&self.conn)
    }

    /// The inbox requests recorded so far, by project.
    pub fn requests(&self) -> Result<Vec<(ProjectId, Option<FileId>)>, JournalError> {
        sql::requests(&self.conn)
    }

    /// The pauses recorded by `dxmirror pause` (they outlive a restart).
    pub fn paused(&self) -> Result<Vec<PausedRow>, JournalError> {
        sql::paused(&self.conn)
    }
}
