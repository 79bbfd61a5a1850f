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

mod chunk;
mod cursor;
mod progress;
mod space;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::audit::{self, Action};
use crate::journal::{FileKey, FileState, Journal, JournalError, NewAudit};
use crate::model::{FileId, ProjectId, RemoteFile};
use crate::planner::{plan_file, FileKind, FilePlan};
use crate::platform::{Backoff, DownloadUrl, DxClient};
use crate::readback;
use crate::store::{ProjectStore, RelPath, StoreError};

pub use progress::Progress;

use chunk::{ChunkCtx, ChunkFailure, ChunkResult};

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
    prefetched: std::sync::Mutex<HashMap<FileKey, tokio::sync::oneshot::Receiver<DownloadUrl>>>,
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
            prefetched: std::sync::Mutex::new(HashMap::new()),
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

    /// Asks for the download URL of a file that will run soon, in the background, so that it
    /// is ready when the file starts (URL requests are pipelined ahead of the transfers
    /// instead of each preceding its file's first byte). Only an optimisation: a failed
    /// request is dropped and the file asks again, through the retry table, when it starts.
    /// The caller bounds how many are outstanding and calls [`Engine::forget_prefetched`]
    /// for files it will not run.
    pub fn prefetch_url(&self, key: &FileKey) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let client = self.client.clone();
        let (file, project) = (key.file.clone(), key.project.clone());
        tokio::spawn(async move {
            match client.download_url(&file, &project).await {
                Ok(url) => {
                    let _ = tx.send(url);
                }
                Err(e) => {
                    debug!(project_id = %project, file_id = %file, error = %e, "download URL asked ahead failed; the file will ask again");
                }
            }
        });
        self.prefetched
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(key.clone(), rx);
    }

    /// Drops the URLs asked for ahead of files that will not run.
    pub fn forget_prefetched<'k>(&self, keys: impl IntoIterator<Item = &'k FileKey>) {
        let mut map = self
            .prefetched
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for key in keys {
            map.remove(key);
        }
    }

    /// The URL asked for ahead of this file, waiting for the request if it is still out;
    /// `None` when none was asked for or the request failed.
    async fn take_prefetched(&self, key: &FileKey) -> Option<DownloadUrl> {
        let rx = self
            .prefetched
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(key)?;
        rx.await.ok()
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
    pub async fn run_file(&self, job: FileJob) -> Result<FileOutcome, TransferError> {
        let key = job.key();
        let started = Instant::now();
        let outcome = self.run_file_inner(&job).await?;
        let (state, reason) = match &outcome {
            FileOutcome::Verified { .. } | FileOutcome::Unverified { .. } => (None, None),
            FileOutcome::Skipped { reason } => (Some(FileState::Skipped), Some(reason.clone())),
            FileOutcome::Gone { reason } => (Some(FileState::Gone), Some(reason.clone())),
            FileOutcome::Corrupt { reason } => (Some(FileState::Corrupt), Some(reason.clone())),
            FileOutcome::Failed { reason } => (Some(FileState::Failed), Some(reason.clone())),
        };
        if let Some(state) = state {
            self.journal
                .set_file_state(&key, state, reason.clone())
                .await?;
            warn!(project_id = %key.project, file_id = %key.file, state = state.as_str(), reason = reason.as_deref().unwrap_or(""), "file not mirrored");
            if state == FileState::Corrupt {
                let detail = format!("{}: {}", job.rel_path, reason.as_deref().unwrap_or(""));
                let row = self
                    .journal
                    .append_audit(self.new_audit(&job, Action::Quarantined, detail))
                    .await?;
                audit::append_logged(self.cfg.audit_log.as_deref(), &row);
            }
        } else {
            info!(project_id = %key.project, file_id = %key.file, path = %job.rel_path, elapsed_ms = started.elapsed().as_millis() as u64, "file mirrored");
        }
        self.progress.file_finished(outcome.is_done());
        Ok(outcome)
    }

    async fn run_file_inner(&self, job: &FileJob) -> Result<FileOutcome, TransferError> {
        let remote = &job.remote;
        if let Some(reason) = remote.skip_reason() {
            return Ok(FileOutcome::Skipped { reason });
        }
        let key = job.key();

        // The journal's plan is authoritative for a file in progress (the chunk size may
        // have changed in the config since); a new file is planned now. The attempt, the
        // state and a new plan go to the journal in one commit.
        let stored = self.journal.load_plan(&key)?;
        let (plan, mut chunk_done, mut chunk_crc, mut seg_verified) = match stored {
            Some(s) if s.plan.size == remote.size => {
                self.journal.start_file(&key, None).await?;
                let (done, crc): (Vec<u64>, Vec<u32>) = s.chunk_done.into_iter().unzip();
                (s.plan, done, crc, s.segment_verified)
            }
            _ => {
                let plan = match plan_file(remote, self.cfg.chunk_size) {
                    Ok(p) => p,
                    Err(e) => {
                        self.journal.start_file(&key, None).await?;
                        return Ok(FileOutcome::Failed {
                            reason: format!("cannot plan the file: {e}"),
                        });
                    }
                };
                self.journal.start_file(&key, Some(&plan)).await?;
                let n = plan.chunks.len();
                let s = plan.segments.len();
                (plan, vec![0; n], vec![0; n], vec![false; s])
            }
        };

        // A previous run may have published the file and died before the journal said so:
        // re-verify what is at the final path instead of fetching again.
        let final_path = job.store.final_path(&job.rel_path);
        let staging_path = job.store.staging_path(&remote.id);
        if !staging_path.exists() && final_path.exists() {
            if job.replaces.is_some() {
                // Usually the old version, which stays until the new one is verified; the
                // new one only if a previous run published it and died before the journal.
                if let Some(outcome) = self.adopt_if_verified(job, &plan).await? {
                    return Ok(outcome);
                }
            } else if let Some(outcome) = self.adopt_existing(job, &plan).await? {
                return Ok(outcome);
            }
        }

        let journaled: u64 = chunk_done.iter().sum();
        let reservation = Arc::new(
            self.wait_for_space(job, remote.size.saturating_sub(journaled))
                .await?,
        );

        // Creating a file is a metadata operation that can take milliseconds: off the runtime.
        let (store, id, size) = (job.store.clone(), remote.id.clone(), remote.size);
        let (file, created) =
            tokio::task::spawn_blocking(move || match store.open_staging(&id, size) {
                Err(StoreError::StagingSize { .. }) => {
                    store.remove_staging(&id)?;
                    store.open_staging(&id, size)
                }
                other => other,
            })
            .await
            .map_err(|e| TransferError::Io(format!("staging task failed: {e}")))?
            .map_err(store_fatal)?;
        let file = Arc::new(file);
        if created && chunk_done.iter().any(|d| *d > 0) {
            // The staging file vanished: nothing the journal claims is there any more.
            warn!(project_id = %key.project, file_id = %key.file, "staging file missing; its journaled progress is discarded");
            let all: Vec<u32> = (0..plan.chunks.len() as u32).collect();
            self.journal.reset_chunks(&key, all).await?;
            chunk_done.iter_mut().for_each(|d| *d = 0);
            chunk_crc.iter_mut().for_each(|c| *c = 0);
            seg_verified.iter_mut().for_each(|v| *v = false);
        } else if !created {
            self.reconcile(
                &key,
                &plan,
                &file,
                &mut chunk_done,
                &mut chunk_crc,
                &seg_verified,
            )
            .await?;
        }
        let already: u64 = chunk_done.iter().sum();
        self.progress.add_total(remote.size);
        self.progress.add_bytes(already);

        let mut state = FileRunState {
            done: chunk_done,
            crc: chunk_crc,
            seg_verified,
            seg_retries: vec![0; plan.segments.len()],
            last_error: None,
        };
        let tracker = cursor::Tracker::new(&plan, &state.done);
        // A small file (one chunk of at most one progress step) skips the hash cursor and the
        // per-chunk journaling: it is fetched, made durable once, read back on the hashing
        // pool and journaled with its end, in one commit.
        let small = plan.chunks.len() <= 1 && plan.size <= self.cfg.progress_step;
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
        // Drive-backed files redirect to storage (Azure for St. Jude Cloud), which states the
        // MD5 of ranges up to 4 MiB: fetched in such ranges, each is checked as it arrives.
        .with_range_cap(if remote.drive.is_some() {
            crate::platform::RANGE_MD5_MAX
        } else {
            u64::MAX
        });
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
                Ok(report) => {
                    let chunks = plan
                        .chunks
                        .iter()
                        .map(|c| (c.idx, state.done[c.idx as usize], state.crc[c.idx as usize]))
                        .collect();
                    self.publish(job, &plan, report.sha256, Some(chunks)).await
                }
                Err(outcome) => Ok(outcome),
            };
        }
        let ctx = Arc::new(ctx);
        match self
            .fetch_all(&ctx, &plan, &file, &tracker, &mut state)
            .await?
        {
            Ok(report) => self.publish(job, &plan, report.sha256, None).await,
            Err(outcome) => Ok(outcome),
        }
    }

    /// A small file (at most one chunk, at most one progress step): fetches its chunk without
    /// syncing or journaling on the way, makes the file durable, reads it back once on the
    /// hashing pool (every platform checksum, the chunk's CRC32C against the one computed on
    /// arrival, the SHA-256) and fetches it again, bounded, while that fails. Returns the
    /// read-back, or the outcome that ended the file. Nothing of it is journaled here: the
    /// caller journals the chunk with the file's end, after publishing.
    async fn fetch_small(
        &self,
        ctx: &ChunkCtx,
        plan: &FilePlan,
        file: &Arc<std::fs::File>,
        tracker: &Arc<cursor::Tracker>,
        state: &mut FileRunState,
    ) -> Result<Result<readback::ReadBack, FileOutcome>, TransferError> {
        let key = ctx.key().clone();
        let mut retries = 0u32;
        loop {
            if let Some(&c) = plan.chunks.first() {
                let idx = c.idx as usize;
                if state.done[idx] < c.range.len {
                    match self
                        .with_patience(ctx, state, ctx.fetch(c, state.done[idx], state.crc[idx]))
                        .await
                    {
                        Err(outcome) => return Ok(Err(outcome)),
                        Ok(Ok((bytes, crc))) => {
                            state.done[idx] = bytes;
                            state.crc[idx] = crc;
                        }
                        Ok(Err(ChunkFailure::Run(e))) => return Err(e),
                        Ok(Err(ChunkFailure::File(outcome))) => return Ok(Err(outcome)),
                    }
                }
            }
            // Durable before it is read back, published or journaled; the read-back runs on
            // the thread that synced (the file is at most one progress step).
            let plan2 = plan.clone();
            let read_back = move |f: &std::fs::File| read_back_small(f, &plan2);
            let result = match plan.chunks.first() {
                Some(&c) => ctx.sync_file_then(c, read_back).await?,
                None => {
                    let file2 = file.clone();
                    tokio::task::spawn_blocking(move || read_back(&file2))
                        .await
                        .map_err(|e| TransferError::Io(format!("read-back task failed: {e}")))?
                }
            };
            let report = match result {
                Ok(r) => r,
                Err(e) => {
                    return Ok(Err(FileOutcome::Failed {
                        reason: format!("reading the staging file back: {e}"),
                    }))
                }
            };
            let crc_differs: Vec<u32> = plan
                .chunks
                .iter()
                .filter(|c| {
                    report.chunk_crcs.get(c.idx as usize) != Some(&state.crc[c.idx as usize])
                })
                .map(|c| c.idx)
                .collect();
            if report.all_ok() && crc_differs.is_empty() {
                return Ok(Ok(report));
            }
            retries += 1;
            let evidence = if report.all_ok() {
                format!(
                    "chunk {crc_differs:?}: the bytes read back differ from the bytes that arrived (CRC32C)"
                )
            } else {
                describe_bad(plan, &report)
            };
            warn!(project_id = %key.project, file_id = %key.file, attempt = retries, "read-back mismatch");
            self.file_warning(&key, evidence.clone()).await?;
            state.last_error = Some(evidence.clone());
            if retries > self.cfg.max_verify_retries {
                return Ok(Err(FileOutcome::Corrupt {
                    reason: format!(
                        "{evidence}; still wrong after {} re-fetches",
                        self.cfg.max_verify_retries
                    ),
                }));
            }
            let all: Vec<u32> = plan.chunks.iter().map(|c| c.idx).collect();
            self.reset(&key, &all, state, tracker).await?;
        }
    }

    /// Runs `fut` (a chunk's fetch) until it ends or the file has moved no byte for
    /// `file_patience`; then the file fails with its last error.
    async fn with_patience<T>(
        &self,
        ctx: &ChunkCtx,
        state: &FileRunState,
        fut: impl std::future::Future<Output = T>,
    ) -> Result<T, FileOutcome> {
        tokio::pin!(fut);
        loop {
            let left = self
                .cfg
                .file_patience
                .saturating_sub(ctx.since_last_progress());
            tokio::select! {
                out = &mut fut => return Ok(out),
                _ = tokio::time::sleep(left) => {
                    if ctx.since_last_progress() < self.cfg.file_patience {
                        continue; // bytes moved (or the disk was waited for) meanwhile
                    }
                    let reason = format!(
                        "no progress for {}; last error: {}",
                        humantime::format_duration(self.cfg.file_patience),
                        state.last_error.as_deref().or(ctx.last_error().as_deref()).unwrap_or("none")
                    );
                    return Err(FileOutcome::Failed { reason });
                }
            }
        }
    }

    /// Waits until `need` more bytes of this file fit on the mirror's filesystem (free space
    /// minus the reserve minus what files in progress still have to write), reporting the
    /// wait once (log, journal event and the file's reason), and reserves them.
    async fn wait_for_space(
        &self,
        job: &FileJob,
        need: u64,
    ) -> Result<space::Reservation, TransferError> {
        use crate::units::human_bytes;
        let key = job.key();
        let dir = job.store.dir().to_path_buf();
        let mut waiting_since: Option<Instant> = None;
        loop {
            match self.disk.try_reserve(&dir, need, self.cfg.disk_reserve) {
                Ok(Ok(reservation)) => {
                    if let Some(since) = waiting_since {
                        info!(project_id = %key.project, file_id = %key.file, len = need, elapsed_ms = since.elapsed().as_millis() as u64, "disk space available; file starts");
                        self.journal
                            .set_file_state(&key, FileState::Fetching, None)
                            .await?;
                    }
                    return Ok(reservation);
                }
                Ok(Err(short)) => {
                    if waiting_since.is_none() {
                        waiting_since = Some(Instant::now());
                        let reason = format!(
                            "waiting for disk space: need {}, free {}, reserve {}, promised to files in progress {}",
                            human_bytes(short.need),
                            human_bytes(short.free),
                            human_bytes(short.reserve),
                            human_bytes(short.promised)
                        );
                        warn!(project_id = %key.project, file_id = %key.file, len = short.need, free = short.free, reserve = short.reserve, promised = short.promised, "waiting for disk space");
                        self.file_warning(&key, reason.clone()).await?;
                        self.journal
                            .set_file_state(&key, FileState::Fetching, Some(reason))
                            .await?;
                    }
                }
                Err(e) => {
                    // Free space unknown: start anyway; a full disk still pauses the writes.
                    warn!(project_id = %key.project, file_id = %key.file, error = %e, "cannot read free space; starting without the check");
                    return Ok(space::Reservation::none(&self.disk));
                }
            }
            tokio::time::sleep(self.cfg.disk_poll).await;
        }
    }

    /// Runs chunk fetches while the hash cursor reads the written bytes back behind them, until
    /// the cursor has read the whole file with every platform checksum matching; returns its
    /// report, or the outcome that ended the file.
    async fn fetch_all(
        &self,
        ctx: &Arc<ChunkCtx>,
        plan: &FilePlan,
        file: &Arc<std::fs::File>,
        tracker: &Arc<cursor::Tracker>,
        state: &mut FileRunState,
    ) -> Result<Result<readback::ReadBack, FileOutcome>, TransferError> {
        use cursor::CursorEvent;
        let key = ctx.key().clone();
        let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel();
        // Dropping the guard (however this function ends) stops the cursor thread.
        let _cursor = cursor::CursorGuard(tracker.clone());
        if let Err(e) = cursor::spawn(file.clone(), tracker.clone(), events_tx) {
            return Ok(Err(FileOutcome::Failed {
                reason: format!("cannot start the read-back thread: {e}"),
            }));
        }
        let mut queue: VecDeque<u32> = plan
            .chunks
            .iter()
            .filter(|c| state.done[c.idx as usize] < c.range.len)
            .map(|c| c.idx)
            .collect();
        let mut tasks: JoinSet<(u32, ChunkResult)> = JoinSet::new();
        let mut in_flight: HashSet<u32> = HashSet::new();
        // Resets waiting for chunk tasks that are still syncing the bytes being discarded.
        let mut deferred: Vec<(u32, Vec<(u32, u32)>)> = Vec::new();
        let mut finished: Option<readback::ReadBack> = None;
        let mut last_activity = Instant::now();

        loop {
            // Apply the resets whose chunks have no task any more: only then are the arrival
            // digests of all their chunks known. Fetch again only what is damaged: the chunks
            // whose bytes no longer hash to what arrived (damage on disk); if none differs (the
            // damage arrived with the bytes), every chunk of the segment.
            let mut i = 0;
            while i < deferred.len() {
                let (seg, cursor_crcs) = &deferred[i];
                if plan.chunks_of(*seg).any(|c| in_flight.contains(&c.idx)) {
                    i += 1;
                    continue;
                }
                let changed: Vec<u32> = cursor_crcs
                    .iter()
                    .filter(|(c, crc)| *crc != state.crc[*c as usize])
                    .map(|(c, _)| *c)
                    .collect();
                let chunks = if changed.is_empty() {
                    plan.chunks_of(*seg).map(|c| c.idx).collect()
                } else {
                    changed
                };
                deferred.swap_remove(i);
                self.reset(&key, &chunks, state, tracker).await?;
                queue.extend(chunks);
            }
            while in_flight.len() < self.cfg.max_connections_per_file {
                let Some(idx) = queue.pop_front() else { break };
                let c = plan.chunks[idx as usize];
                let ctx = ctx.clone();
                let (done, crc) = (state.done[idx as usize], state.crc[idx as usize]);
                tasks.spawn(async move { (idx, ctx.fetch(c, done, crc).await) });
                in_flight.insert(idx);
            }
            if tasks.is_empty() && queue.is_empty() && deferred.is_empty() {
                if let Some(report) = finished.take() {
                    return Ok(Ok(report));
                }
            }
            let patience_left = self
                .cfg
                .file_patience
                .saturating_sub(last_activity.elapsed().min(ctx.since_last_progress()));
            tokio::select! {
                Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                    last_activity = Instant::now();
                    match joined {
                        Ok((idx, Ok((bytes, crc)))) => {
                            in_flight.remove(&idx);
                            state.done[idx as usize] = bytes;
                            state.crc[idx as usize] = crc;
                        }
                        Ok((idx, Err(failure))) => {
                            tasks.abort_all();
                            debug!(project_id = %key.project, file_id = %key.file, chunk_idx = idx, "chunk failed");
                            return match failure {
                                ChunkFailure::Run(e) => Err(e),
                                ChunkFailure::File(outcome) => Ok(Err(outcome)),
                            };
                        }
                        Err(e) => {
                            // A panicking chunk task fails this file, not the run.
                            tasks.abort_all();
                            return Ok(Err(FileOutcome::Failed {
                                reason: format!("internal error in a transfer task: {e}"),
                            }));
                        }
                    }
                }
                event = events.recv() => {
                    last_activity = Instant::now();
                    let Some(event) = event else {
                        tasks.abort_all();
                        return Ok(Err(FileOutcome::Failed {
                            reason: "the read-back thread stopped unexpectedly".into(),
                        }));
                    };
                    let epoch = match &event {
                        CursorEvent::Segment { epoch, .. }
                        | CursorEvent::Finished { epoch, .. }
                        | CursorEvent::Failed { epoch, .. } => *epoch,
                    };
                    if epoch != tracker.epoch() {
                        continue; // about bytes since discarded
                    }
                    match event {
                        CursorEvent::Segment { check, chunk_crcs, .. } => {
                            let seg = check.idx;
                            if check.ok {
                                if check.expected.is_some() && !state.seg_verified[seg as usize] {
                                    state.seg_verified[seg as usize] = true;
                                    self.journal.set_segment_verified(&key, seg, true).await?;
                                }
                                continue;
                            }
                            state.seg_verified[seg as usize] = false;
                            state.seg_retries[seg as usize] += 1;
                            let evidence = format!(
                                "segment {seg} (part {:?}, {} bytes): expected {:?}, got {:?}",
                                plan.segments[seg as usize].part_index,
                                plan.segments[seg as usize].range.len,
                                check.expected,
                                check.actual
                            );
                            warn!(project_id = %key.project, file_id = %key.file, seg_idx = seg, attempt = state.seg_retries[seg as usize], "segment checksum mismatch");
                            self.file_warning(&key, evidence.clone()).await?;
                            state.last_error = Some(evidence.clone());
                            if state.seg_retries[seg as usize] > self.cfg.max_verify_retries {
                                tasks.abort_all();
                                return Ok(Err(FileOutcome::Corrupt {
                                    reason: format!(
                                        "{evidence}; still wrong after {} re-fetches",
                                        self.cfg.max_verify_retries
                                    ),
                                }));
                            }
                            deferred.push((seg, chunk_crcs));
                        }
                        CursorEvent::Finished { report, .. } => {
                            if !report.all_ok() && !deferred.is_empty() {
                                // Its bad segments are being fetched again; a new pass follows.
                                continue;
                            }
                            if !report.all_ok() {
                                tasks.abort_all();
                                return Ok(Err(FileOutcome::Corrupt {
                                    reason: describe_bad(plan, &report),
                                }));
                            }
                            finished = Some(report);
                        }
                        CursorEvent::Failed { error, .. } => {
                            tasks.abort_all();
                            return Ok(Err(FileOutcome::Failed { reason: error }));
                        }
                    }
                }
                _ = tokio::time::sleep(patience_left) => {
                    if ctx.since_last_progress() < self.cfg.file_patience {
                        continue; // bytes moved (or the disk was waited for) meanwhile
                    }
                    tasks.abort_all();
                    let reason = format!(
                        "no progress for {}; last error: {}",
                        humantime::format_duration(self.cfg.file_patience),
                        state.last_error.as_deref().or(ctx.last_error().as_deref()).unwrap_or("none")
                    );
                    return Ok(Err(FileOutcome::Failed { reason }));
                }
            }
        }
    }

    async fn reset(
        &self,
        key: &FileKey,
        chunks: &[u32],
        state: &mut FileRunState,
        tracker: &cursor::Tracker,
    ) -> Result<(), TransferError> {
        tracker.reset(chunks);
        for &c in chunks {
            let lost = state.done[c as usize];
            state.done[c as usize] = 0;
            state.crc[c as usize] = 0;
            self.progress.sub_bytes(lost);
        }
        self.journal.reset_chunks(key, chunks.to_vec()).await?;
        Ok(())
    }

    /// Start-up reconcile of a staged file with the journal: every chunk outside a verified
    /// segment must still hash to its journaled CRC32C over the bytes the journal claims.
    async fn reconcile(
        &self,
        key: &FileKey,
        plan: &FilePlan,
        file: &Arc<std::fs::File>,
        done: &mut [u64],
        crc: &mut [u32],
        seg_verified: &[bool],
    ) -> Result<(), TransferError> {
        let to_check: Vec<(u32, crate::model::ByteRange, u32)> = plan
            .chunks
            .iter()
            .filter(|c| done[c.idx as usize] > 0 && !seg_verified[c.segment as usize])
            .map(|c| {
                (
                    c.idx,
                    crate::model::ByteRange::new(c.range.offset, done[c.idx as usize]),
                    crc[c.idx as usize],
                )
            })
            .collect();
        if to_check.is_empty() {
            return Ok(());
        }
        let file2 = file.clone();
        let results = self
            .on_pool(move || {
                use rayon::prelude::*;
                to_check
                    .par_iter()
                    .map(|(idx, range, want)| {
                        (
                            *idx,
                            readback::chunk_crc(&file2, *range).map(|got| got == *want),
                        )
                    })
                    .collect::<Vec<_>>()
            })
            .await;
        let mut bad = Vec::new();
        match results {
            Some(results) => {
                for (idx, res) in results {
                    if !matches!(res, Ok(true)) {
                        bad.push(idx);
                    }
                }
            }
            // Could not check: trust nothing of this file's unverified progress.
            None => bad.extend(
                plan.chunks
                    .iter()
                    .filter(|c| done[c.idx as usize] > 0 && !seg_verified[c.segment as usize])
                    .map(|c| c.idx),
            ),
        }
        if !bad.is_empty() {
            warn!(project_id = %key.project, file_id = %key.file, n_chunks = bad.len(), "staged bytes no longer match their journaled digests; fetching them again");
            for &c in &bad {
                done[c as usize] = 0;
                crc[c as usize] = 0;
            }
            self.journal.reset_chunks(key, bad).await?;
        }
        Ok(())
    }

    /// A file already at its final path: adopt it if it verifies, otherwise leave it alone.
    async fn adopt_existing(
        &self,
        job: &FileJob,
        plan: &FilePlan,
    ) -> Result<Option<FileOutcome>, TransferError> {
        if let Some(outcome) = self.adopt_if_verified(job, plan).await? {
            info!(project_id = %job.project, file_id = %job.remote.id, path = %job.rel_path, "existing file verified; adopted without fetching");
            return Ok(Some(outcome));
        }
        Ok(Some(FileOutcome::Failed {
            reason: format!(
                "a different file already exists at {}; move it away and run again",
                job.store.final_path(&job.rel_path).display()
            ),
        }))
    }

    /// A file already at its final path: adopt it if it verifies; `None` otherwise.
    async fn adopt_if_verified(
        &self,
        job: &FileJob,
        plan: &FilePlan,
    ) -> Result<Option<FileOutcome>, TransferError> {
        let report = self
            .read_back_on_pool(job.store.final_path(&job.rel_path), plan)
            .await;
        match report {
            Ok(r) if r.all_ok() => Ok(Some(self.finish(job, plan, r.sha256, None).await?)),
            _ => Ok(None),
        }
    }

    /// Publishes a verified staging file (off the runtime: fsyncs and renames block) and
    /// journals its end. `chunks` carries the chunks' progress of a small file, which was
    /// not journaled while it was fetched: its data is already synced, and the chunks are
    /// journaled with the file's end.
    async fn publish(
        &self,
        job: &FileJob,
        plan: &FilePlan,
        sha256: [u8; 32],
        chunks: Option<Vec<(u32, u64, u32)>>,
    ) -> Result<FileOutcome, TransferError> {
        let (store, id, rel, replaces) = (
            job.store.clone(),
            job.remote.id.clone(),
            job.rel_path.clone(),
            job.replaces.clone(),
        );
        let data_synced = chunks.is_some();
        let published = tokio::task::spawn_blocking(move || match &replaces {
            Some(keep) => store.publish_replacing(&id, &rel, keep),
            None if data_synced => store.publish_synced(&id, &rel),
            None => store.publish(&id, &rel),
        })
        .await
        .map_err(|e| TransferError::Io(format!("publish task failed: {e}")))?;
        match published {
            Ok(_) => {}
            Err(StoreError::Exists { .. }) => {
                job.store.remove_staging(&job.remote.id).ok();
                return self.adopt_existing(job, plan).await.map(|o| {
                    o.unwrap_or(FileOutcome::Failed {
                        reason: "cannot publish".into(),
                    })
                });
            }
            Err(e) if e.is_disk_full() => return Err(TransferError::DiskFull(e.to_string())),
            Err(e) => {
                return Ok(FileOutcome::Failed {
                    reason: e.to_string(),
                })
            }
        }
        self.finish(job, plan, sha256, chunks).await
    }

    async fn finish(
        &self,
        job: &FileJob,
        plan: &FilePlan,
        sha256: [u8; 32],
        chunks: Option<Vec<(u32, u64, u32)>>,
    ) -> Result<FileOutcome, TransferError> {
        let (state, outcome) = if plan.kind == FileKind::Unverified {
            (FileState::Unverified, FileOutcome::Unverified { sha256 })
        } else {
            (FileState::Verified, FileOutcome::Verified { sha256 })
        };
        let sha256_hex = hex::encode(sha256);
        let mut record = self.new_audit(
            job,
            Action::Fetched,
            format!("{} {}", state.as_str(), job.rel_path),
        );
        record.sha256 = Some(sha256_hex.clone());
        let row = match chunks {
            Some(chunks) => {
                self.journal
                    .finish_file(&job.key(), state, sha256_hex, chunks, record)
                    .await?
            }
            None => {
                self.journal
                    .mark_done_audited(&job.key(), state, sha256_hex, record)
                    .await?
            }
        };
        audit::append_logged(self.cfg.audit_log.as_deref(), &row);
        Ok(outcome)
    }
}

struct FileRunState {
    done: Vec<u64>,
    crc: Vec<u32>,
    seg_verified: Vec<bool>,
    seg_retries: Vec<u32>,
    last_error: Option<String>,
}

fn store_fatal(e: StoreError) -> TransferError {
    if e.is_disk_full() {
        TransferError::DiskFull(e.to_string())
    } else {
        TransferError::Store(e)
    }
}

fn describe_bad(plan: &FilePlan, report: &readback::ReadBack) -> String {
    if !report.size_ok {
        return format!(
            "size is {} bytes, expected {}",
            report.actual_size, plan.size
        );
    }
    let parts: Vec<String> = report
        .segments
        .iter()
        .filter(|s| !s.ok)
        .map(|s| {
            format!(
                "segment {}: expected {:?}, got {:?}",
                s.idx, s.expected, s.actual
            )
        })
        .collect();
    parts.join("; ")
}

/// Largest read of a small file's read-back.
const SMALL_READ_BUF: usize = 256 << 10;

/// The read-back of a small file through its open staging file, on the calling thread (a
/// hashing-pool thread): one sequential read checking every segment's platform digest and
/// every chunk's CRC32C and computing the SHA-256, without the cursor's threads.
fn read_back_small(file: &std::fs::File, plan: &FilePlan) -> std::io::Result<readback::ReadBack> {
    use std::os::unix::fs::FileExt as _;
    let mut check = readback::SequentialCheck::new(plan);
    let mut sha = crate::hashing::Sha256Hasher::new();
    let cap = usize::try_from(plan.size).map_or(SMALL_READ_BUF, |n| n.clamp(1, SMALL_READ_BUF));
    let mut buf = vec![0u8; cap];
    let mut pos = 0u64;
    while pos < plan.size {
        let want = usize::try_from(plan.size - pos).map_or(cap, |n| n.min(cap));
        file.read_exact_at(&mut buf[..want], pos)?;
        check.feed(&buf[..want]);
        sha.update(&buf[..want]);
        pos += want as u64;
    }
    Ok(check.finish(sha.finish()))
}
