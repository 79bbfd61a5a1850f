//! One synchronisation pass over a set of projects: describe, list, journal the listing, run
//! every file that is not yet mirrored through the transfer engine, rewrite each project's
//! SHA-256 manifest from the journal, and summarise.
//!
//! The caller holds the writer lock (`lock::WriterLock`); this module only orchestrates the
//! other modules and holds no state of its own between runs: the journal is the truth.
//! [`project_pass`] is the per-project pass shared by `dxmirror sync` ([`run`]) and the
//! daemon; it must not schedule, sleep or loop (the daemon decides when passes run).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tracing::{debug, error, info, warn};

use crate::config::Config;
use crate::journal::{
    EventLevel, FileKey, FileListing, FileRow, FileState, Journal, JournalError, ProjectRow,
    ProjectState,
};
use crate::model::{ApiToken, FileId, ProjectId, RemoteFile};
use crate::planner::plan_file;
use crate::platform::{ApiDisposition, DxClient, PlatformConfig, PlatformError};
use crate::selection::{self, SampleInfo, SelectionRules};
use crate::store::{self, ProjectStore, RelPath, StoreError};
use crate::transfer::{Engine, EngineConfig, FileJob, Progress, TransferError};

/// How progress is shown while a sync runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// An interactive bar on stderr.
    Bar,
    /// A log line at this interval.
    Lines(Duration),
    /// Nothing.
    Quiet,
}

/// What to sync.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// Projects to sync; empty means the config's `[[project]]` list.
    pub projects: Vec<ProjectId>,
    /// Progress display.
    pub progress: ProgressMode,
}

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
}

/// The result of a sync.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SyncSummary {
    /// Per project.
    pub projects: Vec<ProjectSummary>,
    /// Wall time.
    pub elapsed: Duration,
    /// Bytes written in this run.
    pub bytes: u64,
}

impl SyncSummary {
    /// True when every project is ok: the exit status is 0 only then.
    pub fn is_ok(&self) -> bool {
        self.projects.iter().all(ProjectSummary::is_ok)
    }
}

/// Builds the platform client from the config and a token.
pub fn client_for(cfg: &Config, token: ApiToken) -> Result<DxClient, PlatformError> {
    DxClient::new(PlatformConfig {
        api_url: cfg.api_url.clone(),
        token,
        ca_file: cfg.ca_file.clone(),
        stall_timeout: cfg.stall_timeout,
        ..PlatformConfig::default()
    })
}

/// Engine settings from the config.
pub fn engine_config(cfg: &Config) -> EngineConfig {
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
    /// Builds the client and the engine for `cfg` around an open journal.
    pub fn new(cfg: Config, journal: Journal) -> Result<PassContext, SyncError> {
        let (token, _origin) = cfg.token()?;
        let client = client_for(&cfg, token)?;
        let engine = Arc::new(
            Engine::new(client.clone(), journal.clone(), engine_config(&cfg))
                .map_err(|e| SyncError::Transfer(TransferError::Io(e.to_string())))?,
        );
        Ok(PassContext {
            cfg,
            client,
            journal,
            engine,
        })
    }
}

impl PassContext {
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

/// Runs one sync pass. The caller must hold the writer lock.
pub async fn run(cfg: &Config, opts: SyncOptions) -> Result<SyncSummary, SyncError> {
    let projects = if opts.projects.is_empty() {
        cfg.projects.clone()
    } else {
        opts.projects.clone()
    };
    if projects.is_empty() {
        return Err(SyncError::NoProjects(cfg.source.clone()));
    }
    let journal = Journal::open(&cfg.state_dir)?;
    let ctx = PassContext::new(cfg.clone(), journal.clone())?;
    let run_id = journal.start_run("sync").await?;
    let started = Instant::now();
    let display = spawn_display(ctx.engine.progress(), opts.progress);

    let mut summaries = Vec::new();
    let mut fatal = None;
    for project in &projects {
        match project_pass(&ctx, project, &PassOptions::default()).await {
            Ok(s) => summaries.push(s),
            Err(e) => {
                fatal = Some(e);
                break;
            }
        }
    }
    display.abort();
    let outcome = match &fatal {
        None if summaries.iter().all(ProjectSummary::is_ok) => "ok",
        None => "incomplete",
        Some(_) => "error",
    };
    journal.end_run(run_id, outcome).await?;
    drop(ctx);
    journal.close().await?;
    if let Some(e) = fatal {
        return Err(e);
    }
    let bytes = summaries.iter().map(|s| s.bytes_now).sum();
    Ok(SyncSummary {
        projects: summaries,
        elapsed: started.elapsed(),
        bytes,
    })
}

impl ProjectSummary {
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

/// One pass over one project, shared by `sync` and the daemon: describe, list, select,
/// journal the listing, mirror `SAMPLE_INFO.txt` first, then every selected file not yet
/// mirrored (small first), handle replaced files, and rewrite the manifest. A project the
/// token may not read is recorded `inaccessible` and summarised, not an error; only
/// run-wide failures (bad token, journal, disk full) are errors.
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
    match sync_project(ctx, project, opts).await {
        Err(SyncError::Transfer(TransferError::PermissionDenied { project, message })) => {
            error!(project_id = %project, "permission denied while mirroring; project marked inaccessible, nothing deleted");
            let mut row = ProjectRow::new(
                project.clone(),
                ProjectState::Inaccessible,
                Some(format!("permission denied: {message}")),
            );
            if let Some(known) = ctx.journal.project(&project)? {
                row.name = known.name;
            }
            ctx.journal.upsert_project(row).await?;
            Ok(ProjectSummary::failed(
                &project,
                format!("permission denied: {message}"),
            ))
        }
        other => other,
    }
}

/// What the selection decided for one project.
#[derive(Debug, Default)]
struct Selected {
    /// Files the filters exclude, with why.
    excluded: HashMap<FileId, String>,
    /// SAMPLE_INFO.txt parse errors and cross-check disagreements, reported as events.
    findings: Vec<String>,
}

/// Parses `SAMPLE_INFO.txt` (when there is one), cross-checks it against the listing and
/// applies the project's selection rules.
fn apply_selection(
    rules: &SelectionRules,
    files: &[RemoteFile],
    paths: &BTreeMap<FileId, RelPath>,
    sample_info: Option<&str>,
) -> Selected {
    let mut findings = Vec::new();
    let info = sample_info.and_then(|text| match SampleInfo::parse(text) {
        Ok(info) => Some(info),
        Err(e) => {
            findings.push(format!("SAMPLE_INFO.txt cannot be used: {e}"));
            None
        }
    });
    if let Some(info) = &info {
        findings.extend(
            selection::cross_check(info, files)
                .into_iter()
                .map(|d| format!("SAMPLE_INFO.txt: {d}")),
        );
    }
    let excluded = if rules.is_empty() {
        HashMap::new()
    } else {
        selection::select(files, paths, rules, info.as_ref())
            .excluded
            .into_iter()
            .map(|(id, why)| (id, format!("excluded by filter: {why}")))
            .collect()
    };
    Selected { excluded, findings }
}

/// Replacements in a project: a listed file whose path is that of a mirrored file no longer
/// listed (the platform replaced the file with a new id).
fn find_replacements(
    rows: &[FileRow],
    listed: &HashSet<&FileId>,
    paths: &BTreeMap<FileId, RelPath>,
) -> Vec<Replacement> {
    let by_path: HashMap<&str, &FileId> = paths.iter().map(|(id, p)| (p.as_str(), id)).collect();
    rows.iter()
        .filter(|row| {
            !listed.contains(&row.file_id)
                && matches!(row.state, FileState::Verified | FileState::Unverified)
        })
        .filter_map(|row| {
            Some(Replacement {
                old: row.key(),
                new: (*by_path.get(row.rel_path.as_str())?).clone(),
                keep_as: keep_name(&row.rel_path, &row.file_id)?,
            })
        })
        .collect()
}

/// A file whose path now belongs to a new file id upstream: the old copy is kept as
/// `<old-file-id>__<name>` once the new version is verified.
#[derive(Debug, Clone)]
struct Replacement {
    old: FileKey,
    new: FileId,
    keep_as: RelPath,
}

/// The sibling name an old version is kept under: `<old-file-id>__<name>` in the same folder.
fn keep_name(rel: &str, old: &FileId) -> Option<RelPath> {
    let (parent, name) = match rel.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, rel),
    };
    let kept = match parent {
        Some(p) => format!("{p}/{old}__{name}"),
        None => format!("{old}__{name}"),
    };
    RelPath::new(&kept).ok()
}

/// A spawned task that is aborted when this guard is dropped without being awaited.
struct AbortOnDrop<T>(Option<tokio::task::JoinHandle<T>>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        if let Some(handle) = &self.0 {
            handle.abort();
        }
    }
}

/// Runs `jobs` in order, at most `max_files` at once, with the download URLs of the next
/// `max_files` jobs asked for ahead of their turn (so URL requests overlap the transfers).
async fn run_jobs(
    engine: &Arc<Engine>,
    jobs: Vec<FileJob>,
    max_files: usize,
) -> (usize, Option<TransferError>) {
    let mut fetched_now = 0usize;
    let mut set = JoinSet::new();
    let keys: Vec<FileKey> = jobs.iter().map(FileJob::key).collect();
    let wants_url: Vec<bool> = jobs
        .iter()
        .map(|j| j.remote.skip_reason().is_none())
        .collect();
    let mut pending = jobs.into_iter();
    let (mut started, mut prefetched) = (0usize, 0usize);
    let mut run_error = None;
    loop {
        // URLs for the jobs about to start.
        let ahead = (started + max_files).min(keys.len());
        while run_error.is_none() && prefetched < ahead {
            if wants_url[prefetched] {
                engine.prefetch_url(&keys[prefetched]);
            }
            prefetched += 1;
        }
        while set.len() < max_files && run_error.is_none() {
            let Some(job) = pending.next() else { break };
            started += 1;
            let engine = engine.clone();
            set.spawn(async move { engine.run_file(job).await });
        }
        let Some(joined) = set.join_next().await else {
            break;
        };
        match joined {
            Ok(Ok(outcome)) => {
                if outcome.is_done() {
                    fetched_now += 1;
                }
            }
            Ok(Err(e)) => {
                if run_error.is_none() {
                    run_error = Some(e);
                }
                set.abort_all();
            }
            Err(e) if e.is_cancelled() => {}
            Err(e) => {
                error!(error = %e, "a file task panicked");
            }
        }
    }
    // Asked for, but their files will not run (the run stopped), or ran and did not take them.
    engine.forget_prefetched(&keys[..prefetched]);
    (fetched_now, run_error)
}

async fn sync_project(
    ctx: &PassContext,
    project: &ProjectId,
    opts: &PassOptions,
) -> Result<ProjectSummary, SyncError> {
    let (cfg, client, journal, engine) = (&ctx.cfg, &ctx.client, &ctx.journal, &ctx.engine);
    let max_files = if opts.max_files == 0 {
        cfg.max_connections.max(1)
    } else {
        opts.max_files
    };
    let info = match client.describe_project(project).await {
        Ok(info) => info,
        Err(e) => return project_api_error(journal, project, e).await,
    };
    if info.download_restricted {
        let msg = format!(
            "project {project} ({:?}) is download-restricted: its data may not be downloaded, so it is not mirrored",
            info.name
        );
        error!(project_id = %project, "project is download-restricted; refusing to mirror it");
        let mut row = ProjectRow::new(project.clone(), ProjectState::Restricted, Some(msg.clone()));
        row.name = info.name.clone();
        row.download_restricted = true;
        journal.upsert_project(row).await?;
        let mut s = ProjectSummary::failed(project, msg);
        s.name = info.name;
        return Ok(s);
    }

    // The project directory is decided once and never changes, even if the project is renamed.
    let known = journal.project(project)?;
    let dir_name = match known.as_ref().and_then(|p| p.dir_name.clone()) {
        Some(d) => d,
        None => {
            let taken: HashSet<String> = journal
                .projects()?
                .into_iter()
                .filter(|p| &p.id != project)
                .filter_map(|p| p.dir_name)
                .collect();
            store::project_dir_name(&info.name, project, &taken)
        }
    };
    let mut row = ProjectRow::new(project.clone(), ProjectState::Active, None);
    row.name = info.name.clone();
    row.dir_name = Some(dir_name.clone());
    journal.upsert_project(row).await?;
    let pstore = Arc::new(ProjectStore::open(&cfg.mirror_root, &dir_name)?);

    // Resume what a previous run was in the middle of at once, while the project is listed:
    // those files were selected then, their plans and staged bytes are in the journal and on
    // disk, and file ids are immutable. (A file whose final path exists may be replacing it:
    // it waits for the listing, which knows.) This is what makes a restart reach its first
    // byte quickly on a project of 100 000 files.
    let early_jobs: Vec<FileJob> = journal
        .files(project)?
        .into_iter()
        .filter(|row| row.state == FileState::Fetching)
        .filter(|row| {
            opts.only
                .as_ref()
                .is_none_or(|only| only.contains(&row.file_id))
        })
        // SAMPLE_INFO.txt has its own first-of-all fetch below.
        .filter(|row| !selection::is_sample_info(&row.remote()))
        .filter_map(|row| {
            let rel = RelPath::new(&row.rel_path).ok()?;
            (!pstore.final_path(&rel).exists()).then(|| FileJob {
                project: project.clone(),
                remote: row.remote(),
                rel_path: rel,
                store: pstore.clone(),
                replaces: None,
            })
        })
        .collect();
    let early_ids: HashSet<FileId> = early_jobs.iter().map(|j| j.remote.id.clone()).collect();
    let early_before = engine.progress().snapshot();
    // Aborted if this pass ends early (an error below): no transfer outlives its pass.
    let mut early = AbortOnDrop(Some({
        let engine = engine.clone();
        tokio::spawn(async move { run_jobs(&engine, early_jobs, max_files).await })
    }));

    let t_list = Instant::now();
    let remote = match client.list_files(project).await {
        Ok(files) => files,
        Err(e) => return project_api_error(journal, project, e).await,
    };
    let list_ms = t_list.elapsed().as_millis() as u64;
    let t_plan = Instant::now();
    let paths = store::assign_paths(&remote);
    let manifest_name = store::manifest_name(paths.values());
    let listings = |excluded: &HashMap<FileId, String>| -> Vec<FileListing> {
        remote
            .iter()
            .filter_map(|f| {
                let rel = paths.get(&f.id)?;
                let skip_reason = f.skip_reason().or_else(|| {
                    excluded
                        .get(&f.id)
                        .filter(|_| !opts.force.contains(&f.id))
                        .cloned()
                });
                Some(FileListing {
                    kind: plan_file(f, cfg.chunk_size).ok().map(|p| p.kind),
                    skip_reason,
                    rel_path: rel.to_string(),
                    remote: f.clone(),
                })
            })
            .collect()
    };

    // SAMPLE_INFO.txt is mirrored first and parsed, so the selection can use its columns.
    let listed: HashSet<&FileId> = remote.iter().map(|f| &f.id).collect();
    let rules = cfg.selection_rules(project);
    let sample_infos: Vec<&RemoteFile> = remote
        .iter()
        .filter(|f| selection::is_sample_info(f))
        .collect();
    let read_sample_info = |journal: &Journal| -> Result<Option<String>, SyncError> {
        for f in &sample_infos {
            let key = FileKey::new(project, &f.id);
            let done = journal
                .file(&key)?
                .is_some_and(|r| matches!(r.state, FileState::Verified | FileState::Unverified));
            if let (true, Some(rel)) = (done, paths.get(&f.id)) {
                if let Ok(text) = std::fs::read_to_string(pstore.final_path(rel)) {
                    return Ok(Some(text));
                }
            }
        }
        Ok(None)
    };
    let mut sample_text = read_sample_info(journal)?;
    let mut fresh_sample_info = false;
    // Files first seen by the preliminary listing (recorded before SAMPLE_INFO.txt).
    let mut added_early = 0usize;
    if sample_text.is_none() && !sample_infos.is_empty() {
        added_early = journal
            .record_listing(project, listings(&HashMap::new()))
            .await?
            .added
            .len();
        let replacements = find_replacements(&journal.files(project)?, &listed, &paths);
        let jobs: Vec<FileJob> = sample_infos
            .iter()
            .filter_map(|f| {
                Some(FileJob {
                    project: project.clone(),
                    remote: (*f).clone(),
                    rel_path: paths.get(&f.id)?.clone(),
                    store: pstore.clone(),
                    replaces: replacements
                        .iter()
                        .find(|r| r.new == f.id)
                        .map(|r| r.keep_as.clone()),
                })
            })
            .collect();
        let (_, err) = run_jobs(engine, jobs, max_files).await;
        if let Some(e) = err {
            return Err(e.into());
        }
        sample_text = read_sample_info(journal)?;
        fresh_sample_info = sample_text.is_some();
    }
    if sample_text.is_none() && rules.needs_sample_info() {
        warn!(project_id = %project, "the filters use SAMPLE_INFO.txt columns but the project has no usable SAMPLE_INFO.txt; only SAMPLE_INFO.txt itself is selected");
    }
    let mut selected = apply_selection(&rules, &remote, &paths, sample_text.as_deref());
    if let Some(only) = &opts.only {
        for f in &remote {
            if !only.contains(&f.id) && !selection::is_sample_info(f) {
                selected.excluded.entry(f.id.clone()).or_insert_with(|| {
                    "not requested: only some files of this project were dropped in the inbox"
                        .to_owned()
                });
            }
        }
    }
    // Reported once, when a (new) SAMPLE_INFO.txt arrives, not at every re-listing.
    for finding in &selected.findings {
        if fresh_sample_info {
            warn!(project_id = %project, finding = %finding, "SAMPLE_INFO.txt disagrees with the listing");
            journal
                .record_event(EventLevel::Warn, Some(project), None, finding.clone())
                .await?;
        } else {
            debug!(project_id = %project, finding = %finding, "SAMPLE_INFO.txt disagreement (already reported)");
        }
    }

    let diff = journal
        .record_listing(project, listings(&selected.excluded))
        .await?;
    info!(
        project_id = %project,
        n_files = remote.len(),
        added = diff.added.len() + added_early,
        removed = diff.removed.len(),
        excluded = selected.excluded.len(),
        list_ms,
        plan_ms = t_plan.elapsed().as_millis() as u64,
        "project listed and journaled"
    );
    let removed: HashSet<&FileId> = diff.removed.iter().collect();
    for id in &diff.removed {
        warn!(project_id = %project, file_id = %id, "file no longer listed upstream; the local copy is kept");
    }

    // A listed file that takes the path of a mirrored file no longer listed: a replacement.
    let rows = journal.files(project)?;
    let replacements = find_replacements(&rows, &listed, &paths);

    // Work: everything not published, plus published files whose local copy went missing.
    let mut jobs = Vec::new();
    for row in &rows {
        if removed.contains(&row.file_id) || early_ids.contains(&row.file_id) {
            continue;
        }
        let Some(rel) = paths.get(&row.file_id) else {
            continue;
        };
        match row.state {
            FileState::Verified | FileState::Unverified => {
                if pstore.final_path(rel).exists() {
                    continue;
                }
                warn!(project_id = %project, file_id = %row.file_id, path = %rel, "published file is missing locally; fetching it again");
                journal
                    .set_file_state(&row.key(), FileState::Pending, None)
                    .await?;
            }
            FileState::Skipped => continue,
            _ => {}
        }
        let replaces = replacements
            .iter()
            .find(|r| r.new == row.file_id)
            .map(|r| r.keep_as.clone());
        jobs.push(FileJob {
            project: project.clone(),
            remote: row.remote(),
            rel_path: rel.clone(),
            store: pstore.clone(),
            replaces,
        });
    }
    // Small files first: many files finish early and the metadata table arrives first.
    jobs.sort_by_key(|j| (j.remote.size, j.remote.id.clone()));

    let (mut fetched_now, mut run_error) = run_jobs(engine, jobs, max_files).await;
    if let Some(handle) = early.0.take() {
        match handle.await {
            Ok((n, err)) => {
                fetched_now += n;
                run_error = run_error.or(err);
            }
            Err(e) => error!(error = %e, "the task resuming interrupted files failed"),
        }
    }
    let (before, after) = (early_before, engine.progress().snapshot());

    // The old version of a replaced file now lives under its kept name: say so in its row
    // (also repairs a kill between the rename and this update).
    for r in &replacements {
        let new_done = journal
            .file(&FileKey::new(project, &r.new))?
            .is_some_and(|f| matches!(f.state, FileState::Verified | FileState::Unverified));
        if new_done && pstore.final_path(&r.keep_as).exists() {
            journal.set_rel_path(&r.old, r.keep_as.to_string()).await?;
            info!(project_id = %project, file_id = %r.old.file, path = %r.keep_as, new_file_id = %r.new, "replaced upstream; previous version kept");
            journal
                .record_event(
                    EventLevel::Info,
                    Some(project),
                    Some(&r.old.file),
                    format!(
                        "replaced upstream by {}; previous version kept as {}",
                        r.new, r.keep_as
                    ),
                )
                .await?;
        }
    }

    // The manifest is rebuilt from the journal, so a crash between publishing and writing it
    // is repaired by the next run. Files no longer listed upstream stay in it under the path
    // they have locally.
    let rows = journal.files(project)?;
    let mut entries = Vec::new();
    let mut in_manifest: HashSet<String> = HashSet::new();
    for row in &rows {
        if matches!(row.state, FileState::Verified | FileState::Unverified) {
            let rel = match paths.get(&row.file_id) {
                Some(rel) => Some(rel.clone()),
                None => RelPath::new(&row.rel_path).ok(),
            };
            if let (Some(sha), Some(rel)) = (row.sha256_bytes(), rel) {
                if in_manifest.insert(rel.to_string()) && pstore.final_path(&rel).exists() {
                    entries.push((rel, sha));
                }
            }
        }
    }
    pstore.write_manifest(&entries, manifest_name)?;
    if let Some(e) = run_error {
        return Err(e.into());
    }

    let mut summary = ProjectSummary {
        id: project.to_string(),
        name: info.name.clone(),
        dir: Some(pstore.dir().to_owned()),
        manifest: Some(pstore.dir().join(manifest_name)),
        error: None,
        verified: 0,
        unverified: 0,
        fetched_now,
        bytes_now: after.bytes_done.saturating_sub(before.bytes_done),
        removed_upstream: diff.removed.len(),
        problems: Vec::new(),
    };
    for row in rows {
        if removed.contains(&row.file_id) {
            continue;
        }
        let path = paths
            .get(&row.file_id)
            .map(|p| p.to_string())
            .unwrap_or_default();
        match row.state {
            FileState::Verified => summary.verified += 1,
            FileState::Unverified => summary.unverified += 1,
            FileState::Skipped | FileState::Failed | FileState::Corrupt | FileState::Gone => {
                summary.problems.push(FileProblem {
                    path,
                    file_id: row.file_id.to_string(),
                    state: row.state.as_str().to_owned(),
                    reason: row.reason.clone().unwrap_or_default(),
                })
            }
            other => summary.problems.push(FileProblem {
                path,
                file_id: row.file_id.to_string(),
                state: "failed".into(),
                reason: format!("left in state {}", other.as_str()),
            }),
        }
    }
    Ok(summary)
}

/// A failed project-level API call: a bad token stops the run; anything else is recorded
/// on the project and the run goes on with the other projects.
async fn project_api_error(
    journal: &Journal,
    project: &ProjectId,
    e: PlatformError,
) -> Result<ProjectSummary, SyncError> {
    let (state, msg) = match e.api_disposition() {
        ApiDisposition::BadToken => return Err(SyncError::BadToken(e.to_string())),
        ApiDisposition::PermissionDenied => (
            ProjectState::Inaccessible,
            format!("permission denied: {e}"),
        ),
        ApiDisposition::NotFound => (ProjectState::Gone, format!("project not found: {e}")),
        _ => (
            ProjectState::Active,
            format!("cannot list the project: {e}"),
        ),
    };
    error!(project_id = %project, error = %e, "project cannot be mirrored");
    journal
        .upsert_project(ProjectRow::new(project.clone(), state, Some(msg.clone())))
        .await?;
    Ok(ProjectSummary::failed(project, msg))
}

/// Shows progress until aborted.
fn spawn_display(progress: Arc<Progress>, mode: ProgressMode) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        match mode {
            ProgressMode::Quiet => {}
            ProgressMode::Bar => {
                let bar = indicatif::ProgressBar::new(0);
                bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {msg}",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
                loop {
                    let s = progress.snapshot();
                    bar.set_length(s.bytes_total.max(s.bytes_done));
                    bar.set_position(s.bytes_done);
                    bar.set_message(format!("{} files done", s.files_done));
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            ProgressMode::Lines(every) => {
                let started = Instant::now();
                loop {
                    tokio::time::sleep(every).await;
                    let s = progress.snapshot();
                    let secs = started.elapsed().as_secs_f64().max(0.001);
                    info!(
                        bytes_done = s.bytes_done,
                        bytes_total = s.bytes_total,
                        files_done = s.files_done,
                        files_failed = s.files_failed,
                        mb_per_s = format!("{:.1}", s.bytes_done as f64 / secs / 1e6),
                        "progress"
                    );
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::{Dataset, Sandbox, SandboxOptions};
    use std::os::unix::fs::PermissionsExt as _;

    /// Download URLs asked for ahead of their file's turn are the ones the files use: each
    /// file's URL is asked for exactly once, and every file is mirrored.
    #[tokio::test]
    async fn prefetched_download_urls_are_used_once_each() {
        let sandbox = Sandbox::start(SandboxOptions {
            dataset: Dataset::many_files("prefetch", 60, 3000),
            ..SandboxOptions::default()
        })
        .await
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, sandbox.token()).unwrap();
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
        let project = sandbox.projects()[0].clone();
        std::fs::create_dir(dir.path().join("mirror")).unwrap();
        let config = dir.path().join("config.toml");
        std::fs::write(
            &config,
            format!(
                "api-url = {:?}\ntoken-file = {:?}\nmirror-root = {:?}\nstate-dir = {:?}\n\
                 max-connections = 4\nmax-connections-per-file = 2\n\
                 [[project]]\nid = \"{project}\"\n",
                sandbox.api_url(),
                token,
                dir.path().join("mirror"),
                dir.path().join("state"),
            ),
        )
        .unwrap();
        let cfg = Config::load(&config).unwrap();
        let summary = {
            let _lock = crate::lock::WriterLock::acquire(&cfg.state_dir, &cfg.mirror_root).unwrap();
            run(
                &cfg,
                SyncOptions {
                    projects: Vec::new(),
                    progress: ProgressMode::Quiet,
                },
            )
            .await
            .unwrap()
        };
        assert!(summary.is_ok(), "{summary:?}");
        assert_eq!(summary.projects[0].fetched_now, 60);
        let stats = sandbox.stats();
        assert_eq!(stats.requests("/file-xxxx/download"), 60);
        assert_eq!(stats.requests("GET download"), 60);
    }
}
