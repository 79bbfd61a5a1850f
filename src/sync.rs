//! `dxmirror sync`: one pass over each project of a run (the command line's, else the
//! config's `[[project]]` list), the summary, and the exit status; progress is shown while it
//! runs.
//!
//! The caller holds the writer lock (`lock::WriterLock`). The pass itself is
//! [`crate::pass::project_pass`], which the daemon runs too; this module re-exports the pass
//! types its own results carry (`SyncError`, `ProjectSummary`, `FileProblem`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::info;

use crate::config::Config;
use crate::journal::{FileState, Journal, JournalError, JournalReader};
use crate::model::ProjectId;
use crate::pass::{client_for, preview_project, project_pass, PassContext, PassOptions};
use crate::transfer::Progress;
use crate::units::human_bytes;

pub use crate::pass::{FileProblem, ProjectPreview, ProjectSummary, SyncError};

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

/// The result of a sync.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SyncSummary {
    /// Per project (those finished before an interruption).
    pub projects: Vec<ProjectSummary>,
    /// Wall time.
    pub elapsed: Duration,
    /// Bytes written in this run.
    pub bytes: u64,
    /// Set when the run was stopped before its end: what is left of its projects.
    pub interrupted: Option<Remaining>,
}

/// What an interrupted run leaves to fetch, from the journal, over the run's projects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Remaining {
    /// Files listed, eligible and not yet mirrored.
    pub files: u64,
    /// Their bytes not yet on disk.
    pub bytes: u64,
    /// Projects of the run not listed yet (their files are not counted).
    pub projects_unlisted: usize,
}

impl SyncSummary {
    /// True when every project is ok and the run was not interrupted: the exit status is 0
    /// only then.
    pub fn is_ok(&self) -> bool {
        self.interrupted.is_none() && self.projects.iter().all(ProjectSummary::is_ok)
    }
}

/// Runs one sync pass. The caller must hold the writer lock.
pub async fn run(cfg: &Config, opts: SyncOptions) -> Result<SyncSummary, SyncError> {
    run_until(cfg, opts, std::future::pending()).await
}

/// Runs one sync pass until `stop` resolves. A stop abandons the transfers in flight (what
/// they wrote and synced is journaled, so the next run resumes from there), records the run
/// `interrupted` and returns what is left. The caller must hold the writer lock.
pub async fn run_until(
    cfg: &Config,
    opts: SyncOptions,
    stop: impl std::future::Future<Output = ()>,
) -> Result<SyncSummary, SyncError> {
    let projects = if opts.projects.is_empty() {
        cfg.projects.clone()
    } else {
        opts.projects.clone()
    };
    if projects.is_empty() {
        return Err(SyncError::NoProjects(cfg.source.clone()));
    }
    let journal = Journal::open(&cfg.state_dir)?;
    let bandwidth = crate::pass::bandwidth_for(cfg, Arc::new(crate::clock::SystemClock));
    let ctx = PassContext::new(cfg.clone(), journal.clone(), bandwidth)?;
    let run_id = journal.start_run("sync").await?;
    let started = Instant::now();
    let display = spawn_display(ctx.engine.progress(), opts.progress);

    let mut summaries = Vec::new();
    let mut fatal = None;
    let mut interrupted = false;
    tokio::pin!(stop);
    let pass_opts = PassOptions::default();
    for project in &projects {
        // Dropping the pass aborts its file tasks: each has journaled only synced bytes.
        let result = tokio::select! {
            r = project_pass(&ctx, project, &pass_opts) => r,
            () = &mut stop => {
                interrupted = true;
                break;
            }
        };
        match result {
            Ok(s) => summaries.push(s),
            Err(e) => {
                fatal = Some(e);
                break;
            }
        }
    }
    display.abort();
    let outcome = match &fatal {
        None if interrupted => "interrupted",
        None if summaries.iter().all(ProjectSummary::is_ok) => "ok",
        None => "incomplete",
        Some(_) => "error",
    };
    let bytes = ctx.engine.progress().snapshot().bytes_done;
    drop(ctx);
    journal.end_run(run_id, outcome).await?;
    let remaining = if interrupted {
        Some(remaining(&journal, &projects)?)
    } else {
        None
    };
    journal.close().await?;
    if let Some(e) = fatal {
        return Err(e);
    }
    let bytes = if interrupted {
        bytes
    } else {
        summaries.iter().map(|s| s.bytes_now).sum()
    };
    Ok(SyncSummary {
        projects: summaries,
        elapsed: started.elapsed(),
        bytes,
        interrupted: remaining,
    })
}

/// What the journal says is left of `projects`: files neither mirrored nor left out (skipped,
/// gone), and their bytes not on disk.
fn remaining(journal: &Journal, projects: &[ProjectId]) -> Result<Remaining, SyncError> {
    let totals = journal.project_totals()?;
    let mut left = Remaining {
        files: 0,
        bytes: 0,
        projects_unlisted: 0,
    };
    for project in projects {
        let Some(t) = totals.iter().find(|t| &t.project.id == project) else {
            left.projects_unlisted += 1;
            continue;
        };
        if t.n_files == 0 {
            left.projects_unlisted += 1;
        }
        left.files += t
            .files_by_state
            .iter()
            .filter(|(s, _)| !s.is_finished() && !matches!(s, FileState::Skipped | FileState::Gone))
            .map(|(_, n)| n)
            .sum::<u64>();
        left.bytes += t.bytes_total.saturating_sub(t.bytes_done);
    }
    Ok(left)
}

/// What `sync --dry-run` found, per project, against the room on the mirror's filesystem.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DryRun {
    /// Per project.
    pub projects: Vec<ProjectPreview>,
    /// Free bytes on the mirror root's filesystem.
    pub free: u64,
    /// `disk-reserve`.
    pub reserve: u64,
}

impl DryRun {
    /// Bytes the run would fetch.
    pub fn bytes_to_fetch(&self) -> u64 {
        self.projects.iter().map(|p| p.bytes_to_fetch).sum()
    }

    /// True when what it would fetch fits in the free space minus `disk-reserve`.
    pub fn fits(&self) -> bool {
        self.bytes_to_fetch() <= self.free.saturating_sub(self.reserve)
    }
}

/// `sync --dry-run`: what a sync of `projects` (else the config's list) would fetch. Writes
/// nothing and takes no lock; reads the journal, when there is one, read-only.
pub async fn dry_run(cfg: &Config, projects: &[ProjectId]) -> Result<DryRun, SyncError> {
    let projects = if projects.is_empty() {
        cfg.projects.clone()
    } else {
        projects.to_vec()
    };
    if projects.is_empty() {
        return Err(SyncError::NoProjects(cfg.source.clone()));
    }
    let free = crate::store::free_space(&cfg.mirror_root)?;
    let journal = match JournalReader::open(&cfg.state_dir) {
        Ok(j) => Some(j),
        Err(JournalError::Missing(_)) => None,
        Err(e) => return Err(e.into()),
    };
    let (token, _) = cfg.token()?;
    let client = client_for(cfg, token, Default::default())?;
    let mut previews = Vec::new();
    for project in &projects {
        previews.push(preview_project(cfg, &client, journal.as_ref(), project).await?);
    }
    Ok(DryRun {
        projects: previews,
        free,
        reserve: cfg.disk_reserve,
    })
}

/// Shows progress until aborted.
fn spawn_display(progress: Arc<Progress>, mode: ProgressMode) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let started = Instant::now();
        match mode {
            ProgressMode::Quiet => {}
            ProgressMode::Bar => {
                let bar = indicatif::ProgressBar::new_spinner();
                bar.set_style(
                    indicatif::ProgressStyle::with_template("{spinner} planning: {msg}")
                        .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
                );
                bar.set_message("listing and selecting the files to fetch...");
                crate::telemetry::log_above(Some(bar.clone()));
                // Dropped with the display (aborted): the log goes straight to stderr again.
                let _unhook = Unhook(bar.clone());
                let mut planned = false;
                loop {
                    let s = progress.snapshot();
                    if !planned && s.projects_planned > 0 {
                        planned = true;
                        bar.set_style(
                            indicatif::ProgressStyle::with_template(
                                "{percent:>3}% [{bar:30}] {bytes}/{total_bytes}, {msg}, {binary_bytes_per_sec}, {elapsed} elapsed, eta {eta}",
                            )
                            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                            .progress_chars("=> "),
                        );
                    }
                    if planned {
                        bar.set_length(s.total());
                        bar.set_position(s.bytes_done);
                        bar.set_message(format!(
                            "{}/{} files",
                            s.files_done,
                            s.planned_files.max(s.files_done)
                        ));
                    }
                    bar.tick();
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            ProgressMode::Lines(every) => loop {
                tokio::time::sleep(every).await;
                let s = progress.snapshot();
                info!("{}", progress_line(&s, started.elapsed()));
            },
        }
    })
}

/// Clears the bar and sends the log to stderr again when the display ends.
struct Unhook(indicatif::ProgressBar);

impl Drop for Unhook {
    fn drop(&mut self) {
        crate::telemetry::log_above(None);
        self.0.finish_and_clear();
    }
}

/// The periodic progress line without a terminal: `35.4 MiB of 64.8 MiB, 12/40 files,
/// 13.4 MiB/s, eta 3s` (`planning` before the first pass has planned).
pub fn progress_line(s: &crate::transfer::ProgressSnapshot, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(0.001);
    let rate = s.bytes_done as f64 / secs;
    let rate_text = format!("{}/s", human_bytes(rate as u64));
    if s.projects_planned == 0 {
        return format!(
            "planning: listing and selecting the files to fetch ({} fetched so far, {rate_text})",
            human_bytes(s.bytes_done)
        );
    }
    let total = s.total();
    let left = total.saturating_sub(s.bytes_done);
    let eta = if left == 0 {
        "0s".to_owned()
    } else if rate < 1.0 {
        "unknown".to_owned()
    } else {
        humantime::format_duration(Duration::from_secs((left as f64 / rate).ceil() as u64))
            .to_string()
    };
    let failed = if s.files_failed > 0 {
        format!(" ({} failed)", s.files_failed)
    } else {
        String::new()
    };
    format!(
        "{} of {}, {}/{} files{failed}, {rate_text}, eta {eta}",
        human_bytes(s.bytes_done),
        human_bytes(total),
        s.files_done,
        s.planned_files.max(s.files_done),
    )
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

    #[test]
    fn the_progress_line_is_human() {
        let mut s = crate::transfer::ProgressSnapshot {
            bytes_done: 0,
            bytes_total: 0,
            files_done: 0,
            files_failed: 0,
            planned_bytes: 0,
            planned_files: 0,
            projects_planned: 0,
        };
        assert!(progress_line(&s, Duration::from_secs(1)).starts_with("planning: "));
        s.projects_planned = 1;
        s.planned_bytes = 64 << 20;
        s.planned_files = 40;
        s.bytes_done = 32 << 20;
        s.bytes_total = 40 << 20;
        s.files_done = 12;
        assert_eq!(
            progress_line(&s, Duration::from_secs(2)),
            "32.0 MiB of 64.0 MiB, 12/40 files, 16.0 MiB/s, eta 2s"
        );
        s.files_failed = 1;
        s.bytes_done = 64 << 20;
        assert_eq!(
            progress_line(&s, Duration::from_secs(4)),
            "64.0 MiB of 64.0 MiB, 12/40 files (1 failed), 16.0 MiB/s, eta 0s"
        );
    }
}
