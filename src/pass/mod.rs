//! One pass over one project, shared by `dxmirror sync` and the daemon: describe the project,
//! resume what a previous run was in the middle of, list, mirror `SAMPLE_INFO.txt` first,
//! select, journal the listing, run every selected file not yet mirrored (small first), record
//! replaced files, rewrite the SHA-256 manifest from the journal, and summarise.
//!
//! [`project_pass`] is that phase sequence; each phase lives in a file of its own: `project`
//! (describe, the project directory, project-level failures), `resume` (the early resume of
//! interrupted files), `listing` (list, local paths, the recorded listing), `sample_info`
//! (`SAMPLE_INFO.txt` first, then the selection), `work` (pure: which rows become jobs and which
//! listed file replaces which mirrored one), `jobs` (running jobs with their download URLs asked
//! for ahead), `finish` (replaced files, the manifest, the summary).
//!
//! The caller holds the writer lock. A pass holds no state of its own between passes (the
//! journal is the truth) and must not schedule, sleep or loop: the daemon decides when passes
//! run.

mod finish;
mod jobs;
mod listing;
mod preview;
mod project;
mod resume;
mod sample_info;
mod work;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use tracing::{instrument, warn};

use crate::bandwidth::Bandwidth;
use crate::config::Config;
use crate::counters::Counters;
use crate::journal::{EventLevel, Journal, JournalError};
use crate::model::{ApiToken, FileId, ProjectId};
use crate::platform::{DxClient, PlatformConfig, PlatformError};
use crate::store::StoreError;
use crate::transfer::{Engine, EngineConfig, TransferError};

pub use preview::{preview_project, ProjectPreview};

/// A run that could not proceed at all.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// Nothing to do.
    #[error("no projects to sync: name project ids on the command line or add [[project]] entries to {0}")]
    NoProjects(PathBuf),
    /// The token is missing or unusable.
    #[error(transparent)]
    Token(#[from] crate::config::ConfigError),
    /// The API rejected the token.
    #[error("the DNAnexus API rejected the token: {0}")]
    BadToken(String),
    /// The platform client could not be built.
    #[error("platform: {0}")]
    Platform(#[from] PlatformError),
    /// The journal failed.
    #[error("journal: {0}")]
    Journal(JournalError),
    /// The store failed.
    #[error("local store: {0}")]
    Store(#[from] StoreError),
    /// The engine stopped the run.
    #[error(transparent)]
    Transfer(#[from] TransferError),
    /// The state directory is on a file system the journal cannot use.
    #[error(transparent)]
    StateDir(#[from] crate::journal::FsCheckError),
}

impl From<JournalError> for SyncError {
    /// `Journal::open`'s refusal of the state directory is said as it is, not as a journal error.
    fn from(e: JournalError) -> SyncError {
        match e {
            JournalError::StateDirFs(e) => SyncError::StateDir(e),
            e => SyncError::Journal(e),
        }
    }
}

/// One file that did not end published.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FileProblem {
    /// Local path relative to the project directory.
    pub path: String,
    /// The file id.
    pub file_id: String,
    /// `skipped`, `failed`, `corrupt`, `gone`.
    pub state: String,
    /// Why.
    pub reason: String,
}

/// The result for one project.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProjectSummary {
    /// Project id.
    pub id: String,
    /// Project name.
    pub name: String,
    /// Local project directory, when one was decided.
    pub dir: Option<PathBuf>,
    /// The manifest path, when written.
    pub manifest: Option<PathBuf>,
    /// A reason the project as a whole could not be mirrored.
    pub error: Option<String>,
    /// Files verified against platform checksums (all runs).
    pub verified: usize,
    /// Files mirrored without a platform checksum (all runs).
    pub unverified: usize,
    /// Files published in this run.
    pub fetched_now: usize,
    /// Bytes written in this run.
    pub bytes_now: u64,
    /// Files listed upstream no longer (kept locally).
    pub removed_upstream: usize,
    /// Files skipped, failed, corrupt or gone.
    pub problems: Vec<FileProblem>,
}

impl ProjectSummary {
    /// True when every eligible file is published and the project had no error.
    pub fn is_ok(&self) -> bool {
        self.error.is_none() && self.problems.iter().all(|p| p.state == "skipped")
    }

    /// A project that could not be mirrored as a whole.
    fn failed(id: &ProjectId, error: String) -> ProjectSummary {
        ProjectSummary {
            id: id.to_string(),
            name: String::new(),
            dir: None,
            manifest: None,
            error: Some(error),
            verified: 0,
            unverified: 0,
            fetched_now: 0,
            bytes_now: 0,
            removed_upstream: 0,
            problems: Vec::new(),
        }
    }
}

/// True when the project lists files but the filters leave out every one of them (its
/// `SAMPLE_INFO.txt`, always kept, aside).
fn selects_nothing(
    remote: &[crate::model::RemoteFile],
    excluded: &std::collections::HashMap<FileId, String>,
) -> bool {
    let data = remote
        .iter()
        .filter(|f| !crate::selection::is_sample_info(f));
    let mut any = false;
    for f in data {
        if !excluded.contains_key(&f.id) {
            return false;
        }
        any = true;
    }
    any
}

/// Builds the platform client from the config and a token.
pub fn client_for(
    cfg: &Config,
    token: ApiToken,
    counters: Arc<Counters>,
) -> Result<DxClient, PlatformError> {
    DxClient::new(platform_config(cfg, token, counters))
}

/// The platform client's settings from the config and a token.
pub fn platform_config(cfg: &Config, token: ApiToken, counters: Arc<Counters>) -> PlatformConfig {
    PlatformConfig {
        api_url: cfg.api_url.clone(),
        token,
        ca_file: cfg.ca_file.clone(),
        stall_timeout: cfg.stall_timeout,
        retry_after_budget: cfg.throttle_budget,
        counters,
        ..PlatformConfig::default()
    }
}

/// The rate limiters of `cfg`'s `bwlimit`s, on `clock`.
pub fn bandwidth_for(cfg: &Config, clock: Arc<dyn crate::clock::Clock>) -> Arc<Bandwidth> {
    Arc::new(Bandwidth::new(
        clock,
        cfg.bwlimit.clone(),
        &cfg.project_bwlimits(),
    ))
}

/// Engine settings from the config, with the run's rate limiters.
pub fn engine_config(cfg: &Config, bandwidth: Arc<Bandwidth>) -> EngineConfig {
    EngineConfig {
        max_connections: cfg.max_connections,
        max_connections_per_file: cfg.max_connections_per_file,
        chunk_size: cfg.chunk_size,
        progress_step: cfg.progress_step,
        file_patience: cfg.file_patience,
        max_verify_retries: cfg.max_verify_retries,
        disk_reserve: cfg.disk_reserve,
        disk_poll: cfg.disk_poll,
        audit_log: cfg.audit_log.clone(),
        bandwidth,
        ..EngineConfig::default()
    }
}

/// What one project pass shares with the others of its run (the daemon builds one per
/// config generation).
pub struct PassContext {
    /// The config in force.
    pub cfg: Config,
    /// The platform client.
    pub client: DxClient,
    /// The journal.
    pub journal: Journal,
    /// The transfer engine (its connection semaphore is shared by every pass).
    pub engine: Arc<Engine>,
}

impl std::fmt::Debug for PassContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PassContext")
            .field("config", &self.cfg.source)
            .finish_non_exhaustive()
    }
}

impl PassContext {
    /// Builds the client and the engine for `cfg` around an open journal; every downloaded
    /// byte passes `bandwidth` (kept across reloads by the daemon).
    pub fn new(
        cfg: Config,
        journal: Journal,
        bandwidth: Arc<Bandwidth>,
    ) -> Result<PassContext, SyncError> {
        PassContext::with_counters(cfg, journal, bandwidth, Arc::default())
    }

    /// [`PassContext::new`] counting into `counters` (the daemon's, which outlive a reload).
    pub fn with_counters(
        cfg: Config,
        journal: Journal,
        bandwidth: Arc<Bandwidth>,
        counters: Arc<Counters>,
    ) -> Result<PassContext, SyncError> {
        let (token, _origin) = cfg.token()?;
        let client = client_for(&cfg, token, counters)?;
        let engine = Arc::new(
            Engine::new(
                client.clone(),
                journal.clone(),
                engine_config(&cfg, bandwidth),
            )
            .map_err(|e| SyncError::Transfer(TransferError::Io(e.to_string())))?,
        );
        Ok(PassContext {
            cfg,
            client,
            journal,
            engine,
        })
    }

    /// Asks `/system/whoami` who the token belongs to and gives the answer to the engine for
    /// its audit records. A failure is logged and leaves the identity unknown (`None`); it
    /// never fails the run (a refused token shows up again in the first real call).
    /// [`project_pass`] calls it while the identity is unknown.
    pub async fn learn_identity(&self) {
        match self.client.whoami().await {
            Ok(id) => self.engine.set_identity(Some(id)),
            Err(e) => {
                warn!(error = %e, "cannot ask the platform who the token belongs to; audit records will carry no identity");
                self.engine.set_identity(None);
            }
        }
    }
}

/// Settings of one project pass.
#[derive(Debug, Clone, Default)]
pub struct PassOptions {
    /// Files run at once in this pass (0: `max-connections`). The daemon lowers it so
    /// concurrent projects share the connections.
    pub max_files: usize,
    /// Files to mirror even if the project's filters exclude them (dropped in the inbox).
    pub force: HashSet<FileId>,
    /// When set, only these files (and `SAMPLE_INFO.txt`) are mirrored: the project is known
    /// only through file ids dropped in the inbox. The others are recorded as skipped.
    pub only: Option<HashSet<FileId>>,
}

impl PassOptions {
    /// Files run at once: `max_files`, or `max-connections` when it is 0.
    fn files_at_once(&self, cfg: &Config) -> usize {
        if self.max_files == 0 {
            cfg.max_connections.max(1)
        } else {
            self.max_files
        }
    }
}

/// A phase's result short of a run-wide error: the pass goes on with `T`, or it ends here with
/// this summary (the project could not be mirrored, and that is recorded).
enum Step<T> {
    /// Go on.
    Next(T),
    /// The pass is over.
    End(ProjectSummary),
}

/// One pass over one project, shared by `sync` and the daemon: describe, list, select,
/// journal the listing, mirror `SAMPLE_INFO.txt` first, then every selected file not yet
/// mirrored (small first), handle replaced files, and rewrite the manifest. A project the
/// token may not read is recorded `inaccessible` and summarised, not an error; only
/// run-wide failures (bad token, journal, disk full) are errors.
// At level ERROR, so the span is enabled whenever any line inside it is (with `-q` or
// `RUST_LOG=warn` an INFO span would be filtered out, and its warnings would lose the field).
#[instrument(level = "error", skip_all, fields(project_id = %project))]
pub async fn project_pass(
    ctx: &PassContext,
    project: &ProjectId,
    opts: &PassOptions,
) -> Result<ProjectSummary, SyncError> {
    // The identity audit records carry: asked once per context, again by a later pass if
    // the platform could not answer.
    if ctx.engine.identity().is_none() {
        ctx.learn_identity().await;
    }
    match phases(ctx, project, opts).await {
        Err(SyncError::Transfer(TransferError::PermissionDenied { project, message })) => {
            project::permission_denied(&ctx.journal, &project, &message).await
        }
        other => other,
    }
}

/// The phases of [`project_pass`], in order.
async fn phases(
    ctx: &PassContext,
    project: &ProjectId,
    opts: &PassOptions,
) -> Result<ProjectSummary, SyncError> {
    let max_files = opts.files_at_once(&ctx.cfg);
    let opened = match project::open(ctx, project).await? {
        Step::Next(opened) => opened,
        Step::End(summary) => return Ok(summary),
    };
    let bytes_before = ctx.engine.progress().snapshot().bytes_done;
    // Aborted if this pass ends early (an error, or a refused listing): no transfer outlives
    // its pass.
    let early = resume::start(ctx, project, &opened.store, opts.only.as_ref(), max_files)?;
    let mut listing = match listing::list(ctx, project).await? {
        Step::Next(listing) => listing,
        Step::End(summary) => return Ok(summary),
    };
    // Owned, so that recording the listing can move the descriptions into the journal.
    let ids = listing.ids();
    let listed: HashSet<&FileId> = ids.iter().collect();
    let sample =
        sample_info::mirror_first(ctx, project, &opened.store, &listing, &listed, max_files)
            .await?;
    let excluded = sample_info::select(ctx, project, &listing, &sample, opts.only.as_ref()).await?;
    if opts.only.is_none() && selects_nothing(&listing.remote, &excluded) {
        let message = format!(
            "the filters select no file of this project ({} listed, all left out): check [filter] and its [[project]] filters (dxmirror check-config --online shows them)",
            listing.remote.len()
        );
        warn!("{message}");
        ctx.journal
            .record_event(EventLevel::Warn, Some(project), None, message)
            .await?;
    }
    let diff = listing::record(
        ctx,
        project,
        &mut listing,
        &excluded,
        opts,
        sample.added_early,
    )
    .await?;

    let rows = ctx.journal.files(project)?;
    let work = work::plan_work(&work::WorkInput {
        rows: &rows,
        listed: &listed,
        paths: &listing.paths,
        removed: &diff.removed.iter().collect(),
        running: &early.ids.iter().collect(),
        present: &jobs::present(&rows, &listing.paths, &opened.store),
    });
    jobs::republish_missing(&ctx.journal, &rows, &work.jobs).await?;
    // The whole pass's plan, before its transfers: the jobs and the files resumed early.
    let job_rows: HashSet<usize> = work.jobs.iter().map(|j| j.row).collect();
    let (plan_bytes, plan_files) = rows
        .iter()
        .enumerate()
        .filter(|(i, r)| job_rows.contains(i) || early.ids.contains(&r.file_id))
        .fold((0, 0), |(b, n), (_, r)| (b + r.size, n + 1));
    ctx.engine.progress().plan(plan_bytes, plan_files);
    let (mut fetched_now, mut run_error) = jobs::run_planned(
        &ctx.engine,
        project,
        &opened.store,
        &rows,
        work.jobs,
        max_files,
    )
    .await;
    // The manifest reads the rows afresh: two copies of every row would double the peak.
    drop(rows);
    let (resumed, early_error) = early.join().await;
    fetched_now += resumed;
    run_error = run_error.or(early_error);
    let bytes_now = ctx
        .engine
        .progress()
        .snapshot()
        .bytes_done
        .saturating_sub(bytes_before);

    finish::record_replacements(&ctx.journal, project, &opened.store, &work.replacements).await?;
    let rows = finish::write_manifest(&ctx.journal, project, &opened.store, &listing)?;
    if let Some(e) = run_error {
        return Err(e.into());
    }
    Ok(finish::summary(
        project,
        opened,
        &listing,
        &diff,
        rows,
        fetched_now,
        bytes_now,
    ))
}
