//! [`Journal`], the write handle of a writing process: it opens the journal, starts the
//! writer thread, and turns each write into an [`Op`] carrying its own typed reply channel,
//! answered after the commit. Reads go to a read-only connection of its own (the `SELECT`s of
//! `reader/sql.rs`), so they never wait behind the writer's batch.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::reader::sql;
use super::writer::{self, Ack, Op, StatCounters};
use super::{
    require_local_state_dir, schema, AuditRow, DaemonRow, DeletedRows, EventLevel, FileKey,
    FileListing, FileRow, FileState, JournalError, ListingDiff, NewAudit, OutboxRow, OutboxWrite,
    PausedRow, ProjectRow, ProjectTotals, SinkCounts, StoredPlan, WriterStats, JOURNAL_FILE,
    MAX_BATCH,
};
use crate::model::{FileId, ProjectId};
use crate::planner::FilePlan;

/// The read-write journal of a writing process. Cheap to clone; all clones share one writer
/// thread. Dropping the last clone stops the writer after the commands already queued.
#[derive(Clone)]
pub struct Journal {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    tx: Option<mpsc::Sender<Op>>,
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
        self.inner.stats.snapshot()
    }

    /// Sends the op `make` builds around its reply channel, and waits for the reply (which
    /// comes after the commit).
    async fn call<T>(&self, make: impl FnOnce(Ack<T>) -> Op) -> Result<T, JournalError> {
        let tx = self.inner.tx.as_ref().ok_or(JournalError::Closed)?;
        let (ack, done) = oneshot::channel();
        tx.send(make(ack)).await.map_err(|_| JournalError::Closed)?;
        done.await.map_err(|_| JournalError::Closed)?
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
        let res = match self.call(Op::Close).await {
            Ok(()) | Err(JournalError::Closed) => Ok(()),
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
        self.call(|ack| Op::UpsertProject(row, ack)).await
    }

    /// One project.
    pub fn project(&self, id: &ProjectId) -> Result<Option<ProjectRow>, JournalError> {
        self.read(|c| sql::project(c, id))
    }

    /// All projects, by id.
    pub fn projects(&self) -> Result<Vec<ProjectRow>, JournalError> {
        self.read(sql::projects)
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
        self.call(|ack| Op::RecordListing {
            project: project.clone(),
            files,
            ack,
        })
        .await
    }

    /// The files of a project, by `rel_path`.
    pub fn files(&self, project: &ProjectId) -> Result<Vec<FileRow>, JournalError> {
        self.read(|c| sql::files(c, project))
    }

    /// One file of one project.
    pub fn file(&self, key: &FileKey) -> Result<Option<FileRow>, JournalError> {
        self.read(|c| sql::file(c, key))
    }

    /// Sets a file's state and reason.
    pub async fn set_file_state(
        &self,
        key: &FileKey,
        state: FileState,
        reason: Option<String>,
    ) -> Result<(), JournalError> {
        self.call(|ack| Op::SetFileState {
            key: key.clone(),
            state,
            reason,
            ack,
        })
        .await
    }

    /// Counts one more attempt; returns the new count.
    pub async fn add_attempt(&self, key: &FileKey) -> Result<u32, JournalError> {
        self.call(|ack| Op::AddAttempt(key.clone(), ack)).await
    }

    /// Starts an attempt at a file in one commit: counts the attempt, sets the state
    /// `Fetching` with no reason and, for a file planned now, stores `plan` (as
    /// [`Journal::put_plan`]). Returns the attempt count.
    pub async fn start_file(
        &self,
        key: &FileKey,
        plan: Option<&FilePlan>,
    ) -> Result<u32, JournalError> {
        self.call(|ack| Op::StartFile {
            key: key.clone(),
            plan: plan.cloned(),
            ack,
        })
        .await
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
        self.call(|ack| Op::MarkDone {
            key: key.clone(),
            state,
            sha256: sha256_hex,
            ack,
        })
        .await
    }

    /// Replaces the file's stored plan (segments and chunks, all progress 0) and sets its kind.
    pub async fn put_plan(&self, key: &FileKey, plan: &FilePlan) -> Result<(), JournalError> {
        self.call(|ack| Op::PutPlan {
            key: key.clone(),
            plan: plan.clone(),
            ack,
        })
        .await
    }

    /// The stored plan and progress; `None` when the file is unknown or has no plan.
    pub fn load_plan(&self, key: &FileKey) -> Result<Option<StoredPlan>, JournalError> {
        self.read(|c| sql::load_plan(c, key))
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
        self.call(|ack| Op::ChunkProgress {
            key: key.clone(),
            chunk_idx,
            done_bytes,
            crc32c,
            ack,
        })
        .await
    }

    /// Forgets the progress of some chunks (done 0, crc 0) and un-verifies their segments.
    pub async fn reset_chunks(
        &self,
        key: &FileKey,
        chunk_idxs: Vec<u32>,
    ) -> Result<(), JournalError> {
        self.call(|ack| Op::ResetChunks {
            key: key.clone(),
            chunk_idxs,
            ack,
        })
        .await
    }

    /// Forgets a file's plan and all its progress: its next run plans again from its listed
    /// describe and fetches every byte (the staged bytes were of another version).
    pub async fn forget_plan(&self, key: &FileKey) -> Result<(), JournalError> {
        self.call(|ack| Op::ForgetPlan {
            key: key.clone(),
            ack,
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
        self.call(|ack| Op::SetSegmentVerified {
            key: key.clone(),
            seg_idx,
            verified,
            ack,
        })
        .await
    }

    /// Appends an event (the oldest beyond [`MAX_EVENTS`](super::MAX_EVENTS) are deleted).
    pub async fn record_event(
        &self,
        level: EventLevel,
        project: Option<&ProjectId>,
        file: Option<&FileId>,
        message: String,
    ) -> Result<(), JournalError> {
        self.call(|ack| Op::Event {
            level,
            project: project.cloned(),
            file: file.cloned(),
            message,
            ack,
        })
        .await
    }

    /// Records the start of a run of `command` by this process; returns its id.
    pub async fn start_run(&self, command: &str) -> Result<i64, JournalError> {
        self.call(|ack| Op::StartRun {
            command: command.to_owned(),
            ack,
        })
        .await
    }

    /// Records the end of a run.
    pub async fn end_run(&self, run: i64, outcome: &str) -> Result<(), JournalError> {
        self.call(|ack| Op::EndRun {
            run,
            outcome: outcome.to_owned(),
            ack,
        })
        .await
    }

    /// Per-project totals (see
    /// [`JournalReader::project_totals`](super::JournalReader::project_totals)).
    pub fn project_totals(&self) -> Result<Vec<ProjectTotals>, JournalError> {
        self.read(sql::project_totals)
    }

    /// Appends an audit record; returns it as stored (id and time set by the journal).
    pub async fn append_audit(&self, record: NewAudit) -> Result<AuditRow, JournalError> {
        self.call(|ack| Op::AppendAudit(record, ack)).await
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
        self.call(|ack| Op::MarkDoneAudited {
            key: key.clone(),
            state,
            sha256: sha256_hex,
            audit,
            ack,
        })
        .await
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
        self.call(|ack| Op::FinishFile {
            key: key.clone(),
            state,
            sha256: sha256_hex,
            chunks,
            audit,
            ack,
        })
        .await
    }

    /// Deletes a project and everything the journal holds about it (chunks, segments, files,
    /// its events, the project row) and appends `audit`, in one transaction: either all of
    /// it is committed or none. An unknown project is an error (and nothing is written).
    pub async fn delete_project(
        &self,
        project: &ProjectId,
        audit: NewAudit,
    ) -> Result<DeletedRows, JournalError> {
        self.call(|ack| Op::DeleteProject {
            project: project.clone(),
            audit,
            ack,
        })
        .await
    }

    /// Audit records at or after `since_ms` (ms since the epoch), oldest first.
    pub fn audit_since(&self, since_ms: i64) -> Result<Vec<AuditRow>, JournalError> {
        self.read(|c| sql::audit(c, since_ms))
    }

    /// Changes a file's local path (e.g. when a replaced version is kept under another name).
    pub async fn set_rel_path(&self, key: &FileKey, rel_path: String) -> Result<(), JournalError> {
        self.call(|ack| Op::SetRelPath {
            key: key.clone(),
            rel_path,
            ack,
        })
        .await
    }

    /// Records work dropped in the daemon's inbox: whole projects (`None`) or single files.
    /// Already recorded requests are kept as they are.
    pub async fn add_requests(
        &self,
        requests: Vec<(ProjectId, Option<FileId>)>,
    ) -> Result<(), JournalError> {
        self.call(|ack| Op::AddRequests(requests, ack)).await
    }

    /// The inbox requests recorded so far, by project.
    pub fn requests(&self) -> Result<Vec<(ProjectId, Option<FileId>)>, JournalError> {
        self.read(sql::requests)
    }

    /// Records that `project` (`None`: every project) is paused by `by`, or, with `by`
    /// `None`, no longer paused (resuming every project ends every pause).
    pub async fn set_paused(
        &self,
        project: Option<ProjectId>,
        by: Option<String>,
    ) -> Result<(), JournalError> {
        self.call(|ack| Op::SetPaused { project, by, ack }).await
    }

    /// The pauses recorded (`dxmirror pause`), which outlive a restart.
    pub fn paused(&self) -> Result<Vec<PausedRow>, JournalError> {
        self.read(sql::paused)
    }

    /// Records the daemon's state (the one `daemon` row; `updated_ms` is set to now).
    pub async fn put_daemon(&self, row: DaemonRow) -> Result<(), JournalError> {
        self.call(|ack| Op::PutDaemon(row, ack)).await
    }

    /// The daemon's state, if a daemon ever ran.
    pub fn daemon(&self) -> Result<Option<DaemonRow>, JournalError> {
        self.read(sql::daemon)
    }

    /// Writes to the notification outbox (an event with its deliveries, a delivery done or
    /// to be tried again); answered after the commit.
    pub async fn outbox(&self, w: OutboxWrite) -> Result<(), JournalError> {
        self.call(|ack| Op::Outbox(w, ack)).await
    }

    /// The oldest `limit` deliveries of `sink`, in delivery order.
    pub fn outbox_head(&self, sink: &str, limit: u32) -> Result<Vec<OutboxRow>, JournalError> {
        self.read(|c| super::outbox::head(c, sink, limit))
    }

    /// Every sink's delivered, dropped and pending counts.
    pub fn outbox_counts(&self) -> Result<Vec<SinkCounts>, JournalError> {
        self.read(super::outbox::counts)
    }

    /// Every recorded notification (id, kind, JSON body), oldest first.
    pub fn notifications(&self) -> Result<Vec<(String, String, String)>, JournalError> {
        self.read(super::outbox::notifications)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{AuditAction, JournalReader, ProjectState};
    use crate::model::testing::RemoteFileBuilder;
    use crate::model::{RemoteFile, Stated};

    fn remote(project: &ProjectId, n: u32) -> RemoteFile {
        RemoteFileBuilder::new(project, n).size(10).build()
    }

    #[tokio::test]
    async fn pauses_outlive_a_reopen_and_resume_all_ends_every_pause() {
        let dir = tempfile::tempdir().unwrap();
        let a: ProjectId = "project-00000000000000000000000a".parse().unwrap();
        let b: ProjectId = "project-00000000000000000000000b".parse().unwrap();
        {
            let j = Journal::open(dir.path()).unwrap();
            j.set_paused(Some(a.clone()), Some("uid 1000 (alice)".into()))
                .await
                .unwrap();
            j.set_paused(Some(b.clone()), Some("uid 0 (root)".into()))
                .await
                .unwrap();
            j.set_paused(Some(b.clone()), None).await.unwrap();
            j.close().await.unwrap();
        }
        let j = Journal::open(dir.path()).unwrap();
        let paused = j.paused().unwrap();
        assert_eq!(paused.len(), 1);
        assert_eq!(paused[0].project.as_ref(), Some(&a));
        assert_eq!(paused[0].by, "uid 1000 (alice)");
        j.set_paused(None, Some("uid 0 (root)".into()))
            .await
            .unwrap();
        let all: Vec<_> = j.paused().unwrap().into_iter().map(|p| p.project).collect();
        assert_eq!(all, vec![None, Some(a.clone())]);
        j.set_paused(None, None).await.unwrap();
        assert!(j.paused().unwrap().is_empty());
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
}
