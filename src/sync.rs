//! One synchronisation pass over a set of projects: describe, list, journal the listing, run
//! every file that is not yet mirrored through the transfer engine, rewrite each project's
//! SHA-256 manifest from the journal, and summarise.
//!
//! The caller holds the writer lock (`lock::WriterLock`); this module only orchestrates the
//! other modules and holds no state of its own between runs: the journal is the truth.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tracing::{error, info, warn};

use crate::config::Config;
use crate::journal::{FileListing, FileState, Journal, JournalError, ProjectRow, ProjectState};
use crate::model::{ApiToken, ProjectId};
use crate::planner::plan_file;
use crate::platform::{ApiDisposition, DxClient, PlatformConfig, PlatformError};
use crate::store::{self, ProjectStore, StoreError};
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
    Journal(#[from] JournalError),
    /// The store failed.
    #[error("local store: {0}")]
    Store(#[from] StoreError),
    /// The engine stopped the run.
    #[error(transparent)]
    Transfer(#[from] TransferError),
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
        ..EngineConfig::default()
    }
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
    let (token, _origin) = cfg.token()?;
    let client = client_for(cfg, token)?;
    let journal = Journal::open(&cfg.state_dir)?;
    let run_id = journal.start_run("sync").await?;
    let started = Instant::now();
    let engine = Arc::new(
        Engine::new(client.clone(), journal.clone(), engine_config(cfg))
            .map_err(|e| SyncError::Transfer(TransferError::Io(e.to_string())))?,
    );
    let display = spawn_display(engine.progress(), opts.progress);

    let mut summaries = Vec::new();
    let mut fatal = None;
    for project in &projects {
        match sync_project(cfg, &client, &journal, &engine, project).await {
            Ok(s) => summaries.push(s),
            Err(SyncError::Transfer(TransferError::PermissionDenied { project, message })) => {
                journal
                    .upsert_project(ProjectRow::new(
                        project.clone(),
                        ProjectState::Inaccessible,
                        Some(message.clone()),
                    ))
                    .await?;
                summaries.push(ProjectSummary::failed(
                    &project,
                    format!("permission denied: {message}"),
                ));
            }
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

async fn sync_project(
    cfg: &Config,
    client: &DxClient,
    journal: &Journal,
    engine: &Arc<Engine>,
    project: &ProjectId,
) -> Result<ProjectSummary, SyncError> {
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

    let t_list = Instant::now();
    let remote = match client.list_files(project).await {
        Ok(files) => files,
        Err(e) => return project_api_error(journal, project, e).await,
    };
    let list_ms = t_list.elapsed().as_millis() as u64;
    let t_plan = Instant::now();
    let paths = store::assign_paths(&remote);
    let manifest_name = store::manifest_name(paths.values());
    let listings: Vec<FileListing> = remote
        .iter()
        .filter_map(|f| {
            let rel = paths.get(&f.id)?;
            Some(FileListing {
                kind: plan_file(f, cfg.chunk_size).ok().map(|p| p.kind),
                skip_reason: f.skip_reason(),
                rel_path: rel.to_string(),
                remote: f.clone(),
            })
        })
        .collect();
    let diff = journal.record_listing(project, listings).await?;
    info!(
        project_id = %project,
        n_files = remote.len(),
        added = diff.added.len(),
        removed = diff.removed.len(),
        list_ms,
        plan_ms = t_plan.elapsed().as_millis() as u64,
        "project listed and journaled"
    );
    for id in &diff.removed {
        warn!(project_id = %project, file_id = %id, "file no longer listed upstream; the local copy is kept");
    }

    // Work: everything not published, plus published files whose local copy went missing.
    let mut jobs = Vec::new();
    for row in journal.files(project)? {
        if diff.removed.contains(&row.file_id) {
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
            FileState::Skipped if row.remote().skip_reason().is_some() => continue,
            _ => {}
        }
        jobs.push(FileJob {
            project: project.clone(),
            remote: row.remote(),
            rel_path: rel.clone(),
            store: pstore.clone(),
        });
    }
    // Small files first: many files finish early and the metadata table arrives first.
    jobs.sort_by_key(|j| (j.remote.size, j.remote.id.clone()));

    let before = engine.progress().snapshot();
    let mut fetched_now = 0usize;
    let mut set = JoinSet::new();
    let mut pending = jobs.into_iter();
    let max_files = cfg.max_connections.max(1);
    let mut run_error = None;
    loop {
        while set.len() < max_files && run_error.is_none() {
            let Some(job) = pending.next() else { break };
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
    let after = engine.progress().snapshot();

    // The manifest is rebuilt from the journal, so a crash between publishing and writing it
    // is repaired by the next run.
    let rows = journal.files(project)?;
    let mut entries = Vec::new();
    for row in &rows {
        if matches!(row.state, FileState::Verified | FileState::Unverified) {
            if let (Some(sha), Some(rel)) = (row.sha256_bytes(), paths.get(&row.file_id)) {
                entries.push((rel.clone(), sha));
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
        if diff.removed.contains(&row.file_id) {
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
