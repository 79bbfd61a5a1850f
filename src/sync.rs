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
use crate::journal::Journal;
use crate::model::ProjectId;
use crate::pass::{project_pass, PassContext, PassOptions};
use crate::transfer::Progress;

pub use crate::pass::{FileProblem, ProjectSummary, SyncError};

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
    let bandwidth = crate::pass::bandwidth_for(cfg, Arc::new(crate::clock::SystemClock));
    let ctx = PassContext::new(cfg.clone(), journal.clone(), bandwidth)?;
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
