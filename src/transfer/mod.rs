//! The transfer engine: fetches one file's chunks in parallel into its staging file, checks
//! each segment as soon as its bytes are in, reads the whole file back once, and publishes it.
//!
//! Concurrency: a global semaphore caps open connections across all files; each file runs at
//! most `max_connections_per_file` chunk tasks. Bytes are written at their offsets with
//! positioned writes from a bounded buffer per connection, so memory does not grow with file
//! size. CPU-heavy hashing runs on a dedicated rayon pool, never on the async runtime.
//!
//! Durability rule (the resume invariant): a chunk's progress is sent to the journal only after
//! the bytes it claims have been written and `fdatasync`ed, and the engine counts progress as
//! durable only after the journal acknowledges the commit. A kill therefore loses at most the
//! unsynced step of each connection, never bytes the journal claims.
//!
//! Small files (at most one chunk of at most one progress step) take a shorter road: no hash
//! cursor threads and no journaling on the way. The chunk is fetched, the file `fdatasync`ed
//! once, read back on the same blocking thread (every platform checksum, the chunk's CRC32C
//! against the one computed on arrival, the SHA-256), published, and only then is its chunk
//! journaled, with the file's end, in one commit (`Journal::finish_file`). A kill loses at
//! most that one step, as for any chunk. Blocking file-system work (creating the staging
//! file, syncing, publishing) runs off the async runtime.
//!
//! This module decides *what to do* on each answer through `platform`'s retry table; it does
//! not itself know HTTP or JSON, and it never decides paths (that is `store`).
//!
//! This file holds the engine's types and [`Engine::run_file`], which runs one file through
//! the steps the other files own:
//! - `resume.rs`: the plan (the journal's or a new one), a file already at its final path,
//!   the staging file and its reconcile with the journal;
//! - `space.rs`: waiting until the file's bytes fit on disk, and the shared reservation;
//! - `prefetch.rs`: download URLs asked for ahead of their file's turn;
//! - `small.rs`: the short road of a small file;
//! - `segmented.rs`: the chunk tasks and the hash cursor of every other file;
//! - `chunk.rs`: one chunk's fetch loop; `cursor.rs`: the read-back behind the chunks;
//! - `patience.rs`: a file that moves no byte for `file-patience` fails;
//! - `publish.rs`: the rename into place and the journal's record of the end;
//! - `decide.rs`: every decision of the above that is a pure function of what is known;
//! - `progress.rs`: live counters.

mod chunk;
mod cursor;
mod decide;
mod patience;
mod prefetch;
mod progress;
mod publish;
mod resume;
mod segmented;
mod small;
mod space;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tracing::{info, warn};

use crate::audit::{self, Action};
use crate::journal::{FileKey, FileState, Journal, JournalError, NewAudit, StoredPlan};
use crate::model::{FileId, ProjectId, RemoteFile};
use crate::planner::FilePlan;
use crate::platform::{Backoff, DxClient};
use crate::readback;
use crate::store::{ProjectStore, RelPath, StoreError};

pub use progress::{Progress, ProgressSnapshot};

use chunk::ChunkCtx;

/// Engine settings (from the config).
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Connections open at once across all files.
    pub max_connections: usize,
    /// Connections open at once for one file.
    pub max_connections_per_file: usize,
    /// Largest chunk, when planning a file for the first time.
    pub chunk_size: u64,
    /// Progress inside a chunk is synced and journaled at this step.
    pub progress_step: u64,
    /// A file with no progress for this long fails with its last error.
    pub file_patience: Duration,
    /// How many times a segment failing its checksum is fetched again.
    pub max_verify_retries: u32,
    /// Backoff between retries of a range.
    pub backoff: Backoff,
    /// Size of each connection's write buffer.
    pub write_buffer: usize,
    /// Free space kept on the mirror's filesystem: a file starts only when its remaining
    /// bytes fit in the free space minus this reserve minus what files in progress still
    /// have to write.
    pub disk_reserve: u64,
    /// How often a file waiting for disk space (before it starts, or paused by a full disk)
    /// checks again.
    pub disk_poll: Duration,
    /// The JSON-lines copy of the audit trail (`audit-log`), if any.
    pub audit_log: Option<std::path::PathBuf>,
    /// The rate limiters every downloaded byte passes (`bwlimit`), shared by every engine of
    /// a run so that a reload changes the rate of transfers already running.
    pub bandwidth: Arc<crate::bandwidth::Bandwidth>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_connections: 16,
            max_connections_per_file: 8,
            chunk_size: 16 << 20,
            progress_step: 4 << 20,
            file_patience: Duration::from_secs(30 * 60),
            max_verify_retries: 3,
            backoff: Backoff::default(),
            write_buffer: 256 << 10,
            disk_reserve: 1 << 30,
            disk_poll: Duration::from_secs(10),
            audit_log: None,
            bandwidth: Arc::new(crate::bandwidth::Bandwidth::unlimited()),
        }
    }
}

/// One file to mirror.
#[derive(Debug, Clone)]
pub struct FileJob {
    /// The project it is listed in.
    pub project: ProjectId,
    /// The platform's description.
    pub remote: RemoteFile,
    /// Where it goes, relative to the project directory.
    pub rel_path: RelPath,
    /// The project's local store.
    pub store: Arc<ProjectStore>,
    /// Set when this file replaces, at `rel_path`, an older version no longer listed: the
    /// older file is kept under this name once the new one is verified.
    pub replaces: Option<RelPath>,
}

impl FileJob {
    /// The journal key of this file in this project.
    pub fn key(&self) -> FileKey {
        FileKey::new(&self.project, &self.remote.id)
    }
}

/// How a file ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileOutcome {
    /// Every platform checksum matched; published with this SHA-256.
    Verified {
        /// SHA-256 of the published file.
        sha256: [u8; 32],
    },
    /// The platform gives no checksum: published with this SHA-256, unverified.
    Unverified {
        /// SHA-256 of the published file.
        sha256: [u8; 32],
    },
    /// Not downloadable (archived, open, ...).
    Skipped {
        /// Why.
        reason: String,
    },
    /// The platform no longer has it.
    Gone {
        /// Why.
        reason: String,
    },
    /// Checksums kept failing after the bounded number of re-fetches.
    Corrupt {
        /// The evidence.
        reason: String,
    },
    /// Could not be finished.
    Failed {
        /// The last error.
        reason: String,
    },
    /// A pinned GET was refused (`412`): the backing object of a drive-backed file changed
    /// since its describe. Its staged progress is discarded and it ends failed; a later
    /// listing with a new describe starts it again.
    ObjectChanged {
        /// What happened, for the journal, the audit trail and `status`.
        reason: String,
    },
}

impl FileOutcome {
    /// True for a published file.
    pub fn is_done(&self) -> bool {
        matches!(
            self,
            FileOutcome::Verified { .. } | FileOutcome::Unverified { .. }
        )
    }
}

/// Errors that stop a whole run rather than one file.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// The API token is not accepted: nothing more can succeed.
    #[error("the DNAnexus API rejected the token ({0}); check token-file or DX_API_TOKEN")]
    BadToken(String),
    /// The project cannot be read with this token any more.
    #[error("permission denied on project {project}: {message}")]
    PermissionDenied {
        /// The project.
        project: ProjectId,
        /// The platform's message.
        message: String,
    },
    /// The journal failed: progress can no longer be recorded.
    #[error("journal: {0}")]
    Journal(#[from] JournalError),
    /// The disk is full: writing can no longer succeed.
    #[error("disk full: {0}")]
    DiskFull(String),
    /// The local store failed in a way that is not about one file.
    #[error("local store: {0}")]
    Store(#[from] StoreError),
    /// Writing or syncing a staging file failed.
    #[error("local I/O: {0}")]
    Io(String),
}

impl TransferError {
    /// Classifies a failed write or sync of a staging file.
    fn from_write(file_id: &FileId, e: std::io::Error) -> TransferError {
        if crate::store::is_disk_full(&e) {
            TransferError::DiskFull(format!("writing {file_id}: {e}"))
        } else {
            TransferError::Io(format!("writing {file_id}: {e}"))
        }
    }

    /// A store failure that is not about one file: a full disk, or the store itself.
    fn from_store(e: StoreError) -> TransferError {
        if e.is_disk_full() {
            TransferError::DiskFull(e.to_string())
        } else {
            TransferError::Store(e)
        }
    }
}

/// The shared engine: one per run.
pub struct Engine {
    client: DxClient,
    journal: Journal,
    cfg: EngineConfig,
    connections: Arc<Semaphore>,
    hash_pool: Arc<rayon::ThreadPool>,
    progress: Arc<Progress>,
    disk: Arc<space::DiskBudget>,
    /// The platform identity (`/system/whoami`) recorded in audit records.
    identity: std::sync::Mutex<Option<String>>,
    /// Download URLs asked for ahead of their file's turn ([`Engine::prefetch_url`]).
    prefetched: prefetch::Prefetched,
}

impl Engine {
    /// Builds an engine.
    pub fn new(
        client: DxClient,
        journal: Journal,
        cfg: EngineConfig,
    ) -> Result<Engine, std::io::Error> {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let hash_pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("dxmirror-hash-{i}"))
            // A panic in a hashing job is a bug: log it and let the job's caller fail that
            // one file (its result channel closes) instead of aborting the process.
            .panic_handler(|_| tracing::error!("a hashing job panicked; its file will be retried"))
            .build()
            .map_err(std::io::Error::other)?;
        Ok(Engine {
            client,
            journal,
            connections: Arc::new(Semaphore::new(cfg.max_connections)),
            cfg,
            hash_pool: Arc::new(hash_pool),
            progress: Arc::new(Progress::default()),
            disk: Arc::new(space::DiskBudget::default()),
            identity: std::sync::Mutex::new(None),
            prefetched: prefetch::Prefetched::default(),
        })
    }

    /// Sets the platform identity (the user `/system/whoami` names) that audit records of
    /// fetched and quarantined files carry; `None` when it could not be asked.
    pub fn set_identity(&self, identity: Option<String>) {
        // A poisoned lock only means a panic elsewhere while setting a string: keep going.
        let mut guard = self
            .identity
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *guard = identity;
    }

    /// The platform identity audit records carry.
    pub fn identity(&self) -> Option<String> {
        self.identity
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn new_audit(&self, job: &FileJob, action: Action, detail: String) -> NewAudit {
        NewAudit {
            action,
            project_id: job.project.clone(),
            file_id: Some(job.remote.id.clone()),
            identity: self.identity(),
            size: Some(job.remote.size),
            sha256: None,
            detail,
        }
    }

    /// Records a warning about one file in the journal's event log (what `dxmirror status`
    /// shows).
    async fn file_warning(&self, key: &FileKey, message: String) -> Result<(), TransferError> {
        self.journal
            .record_event(
                crate::journal::EventLevel::Warn,
                Some(&key.project),
                Some(&key.file),
                message,
            )
            .await?;
        Ok(())
    }

    /// The backing object of a pinned file changed under its transfer: forgets its plan and
    /// progress (journal first, so that nothing claims the staged bytes), removes the staging
    /// file, and records the event (journal, audit trail). No byte of either version is
    /// published; the file's state and reason are recorded by the caller.
    async fn object_changed(&self, job: &FileJob, reason: &str) -> Result<(), TransferError> {
        let key = job.key();
        self.journal.forget_plan(&key).await?;
        let (store, id) = (job.store.clone(), job.remote.id.clone());
        tokio::task::spawn_blocking(move || store.remove_staging(&id))
            .await
            .map_err(|e| TransferError::Io(format!("staging task failed: {e}")))?
            .map_err(TransferError::from_store)?;
        self.journal
            .record_event(
                crate::journal::EventLevel::Error,
                Some(&key.project),
                Some(&key.file),
                format!("{}: {reason}", job.rel_path),
            )
            .await?;
        let detail = format!(
            "{}: backing object changed (pinned ETag {}); staged bytes discarded",
            job.rel_path,
            job.remote.etag.as_deref().unwrap_or("?")
        );
        let row = self
            .journal
            .append_audit(self.new_audit(job, Action::ObjectChanged, detail))
            .await?;
        audit::append_logged(self.cfg.audit_log.as_deref(), &row);
        Ok(())
    }

    /// Live counters for progress display.
    pub fn progress(&self) -> Arc<Progress> {
        self.progress.clone()
    }

    /// Runs CPU-heavy work on the hashing pool and awaits its result; `None` when the job
    /// panicked (the pool's panic handler logged it).
    async fn on_pool<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.hash_pool.spawn(move || {
            let _ = tx.send(work());
        });
        rx.await.ok()
    }

    /// `readback::read_back` on the hashing pool.
    async fn read_back_on_pool(
        &self,
        path: std::path::PathBuf,
        plan: &FilePlan,
    ) -> Result<readback::ReadBack, readback::ReadBackError> {
        let plan = plan.clone();
        let shown = path.clone();
        self.on_pool(move || readback::read_back(&path, &plan))
            .await
            .unwrap_or_else(|| {
                Err(readback::ReadBackError::Io {
                    op: "read back (the hashing job panicked)",
                    path: shown,
                    source: std::io::Error::other("internal error"),
                })
            })
    }

    /// Mirrors one file to completion or to a recorded failure. Only run-wide failures (bad
    /// token, journal, disk full) are errors; everything else is an outcome.
    ///
    /// Every line logged while the file runs (its chunk tasks included) carries the file's
    /// `project_id` and `file_id` through this span. The span is at `error` level so that it
    /// is on whenever any of those lines is (`-q` still shows which file a warning is about).
    #[tracing::instrument(
        level = "error",
        skip_all,
        fields(project_id = %job.project, file_id = %job.remote.id)
    )]
    pub async fn run_file(&self, job: FileJob) -> Result<FileOutcome, TransferError> {
        let key = job.key();
        let started = Instant::now();
        let outcome = self.run_file_inner(&job).await?;
        if let FileOutcome::ObjectChanged { reason } = &outcome {
            self.object_changed(&job, reason).await?;
        }
        if let Some((state, reason)) = decide::file_end(&outcome) {
            self.journal
                .set_file_state(&key, state, Some(reason.to_owned()))
                .await?;
            warn!(state = state.as_str(), reason, "file not mirrored");
            if state == FileState::Corrupt {
                let detail = format!("{}: {reason}", job.rel_path);
                let row = self
                    .journal
                    .append_audit(self.new_audit(&job, Action::Quarantined, detail))
                    .await?;
                audit::append_logged(self.cfg.audit_log.as_deref(), &row);
            }
        } else {
            info!(path = %job.rel_path, elapsed_ms = started.elapsed().as_millis() as u64, "file mirrored");
        }
        self.progress.file_finished(outcome.is_done());
        Ok(outcome)
    }

    /// The steps of one file: plan, adopt what is already published, wait for disk space,
    /// open (and reconcile) the staging file, fetch and read back, publish.
    async fn run_file_inner(&self, job: &FileJob) -> Result<FileOutcome, TransferError> {
        let remote = &job.remote;
        if let Some(reason) = remote.skip_reason() {
            return Ok(FileOutcome::Skipped { reason });
        }
        let key = job.key();
        let (plan, mut state) = match self.start_plan(job).await? {
            resume::Start::Plan(plan, state) => (plan, state),
            resume::Start::Ended(outcome) => return Ok(outcome),
        };
        if let Some(outcome) = self.existing_final(job, &plan).await? {
            return Ok(outcome);
        }

        let journaled = state.done_bytes();
        let reservation = Arc::new(
            self.wait_for_space(job, remote.size.saturating_sub(journaled))
                .await?,
        );
        let file = self.open_staging(job, &plan, &mut state).await?;
        self.progress.add_total(remote.size);
        self.progress.add_bytes(state.done_bytes());

        let tracker = cursor::Tracker::new(&plan, &state.done);
        let small = decide::is_small(&plan, self.cfg.progress_step);
        let ctx = ChunkCtx::new(
            self.client.clone(),
            self.journal.clone(),
            key.clone(),
            remote.size,
            file.clone(),
            self.connections.clone(),
            self.progress.clone(),
            self.cfg.clone(),
            tracker.clone(),
            reservation,
        )
        .with_range_cap(decide::range_cap(remote.drive.is_some()))
        .with_pin(decide::pin(remote));
        let ctx = match self.take_prefetched(&key).await {
            Some(url) => ctx.with_url(url),
            None => ctx,
        };
        if small {
            let ctx = ctx.with_deferred_durability();
            return match self
                .fetch_small(&ctx, &plan, &file, &tracker, &mut state)
                .await?
            {
                Fetched::Ready(report) => {
                    let chunks = state.chunk_progress(&plan);
                    self.publish(job, &plan, report.sha256, Some(chunks)).await
                }
                Fetched::Ended(outcome) => Ok(outcome),
            };
        }
        let ctx = Arc::new(ctx);
        match self
            .fetch_all(&ctx, &plan, &file, &tracker, &mut state)
            .await?
        {
            Fetched::Ready(report) => self.publish(job, &plan, report.sha256, None).await,
            Fetched::Ended(outcome) => Ok(outcome),
        }
    }
}

/// How a file's fetch and read-back ended, short of a run-wide error.
enum Fetched {
    /// Every byte is in and the read-back verified them: publish.
    Ready(readback::ReadBack),
    /// The file ended with this outcome.
    Ended(FileOutcome),
}

/// What one file's run knows of its chunks and segments.
struct FileRunState {
    /// Bytes done of each chunk, from its start.
    done: Vec<u64>,
    /// CRC32C of each chunk's done bytes, computed as they arrived.
    crc: Vec<u32>,
    /// Segments whose platform checksum verified (and is journaled so).
    seg_verified: Vec<bool>,
    /// Checksum failures of each segment so far.
    seg_retries: Vec<u32>,
    /// The file's last error, for the reason of a file that runs out of patience.
    last_error: Option<String>,
}

impl FileRunState {
    /// A file starting from nothing.
    fn fresh(plan: &FilePlan) -> FileRunState {
        let (n, s) = (plan.chunks.len(), plan.segments.len());
        FileRunState {
            done: vec![0; n],
            crc: vec![0; n],
            seg_verified: vec![false; s],
            seg_retries: vec![0; s],
            last_error: None,
        }
    }

    /// A file resuming from the journal's progress.
    fn resumed(stored: StoredPlan) -> (FilePlan, FileRunState) {
        let (done, crc): (Vec<u64>, Vec<u32>) = stored.chunk_done.into_iter().unzip();
        let state = FileRunState {
            done,
            crc,
            seg_verified: stored.segment_verified,
            seg_retries: vec![0; stored.plan.segments.len()],
            last_error: None,
        };
        (stored.plan, state)
    }

    /// Bytes done over all chunks.
    fn done_bytes(&self) -> u64 {
        self.done.iter().sum()
    }

    /// Forgets all progress.
    fn discard_all(&mut self) {
        self.done.iter_mut().for_each(|d| *d = 0);
        self.crc.iter_mut().for_each(|c| *c = 0);
        self.seg_verified.iter_mut().for_each(|v| *v = false);
    }

    /// Each chunk's (index, done bytes, CRC32C), as the journal records them.
    fn chunk_progress(&self, plan: &FilePlan) -> Vec<(u32, u64, u32)> {
        plan.chunks
            .iter()
            .map(|c| (c.idx, self.done[c.idx as usize], self.crc[c.idx as usize]))
            .collect()
    }
}
