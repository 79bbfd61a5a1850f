//! `dxmirror sync`: one pass over the projects under the writer lock, then the summary; exit
//! status 0 only if every eligible file is mirrored.

use std::path::PathBuf;
use std::process::ExitCode;

use dxmirror::config::Config;
use dxmirror::lock::WriterLock;
use dxmirror::model::ProjectId;
use dxmirror::sync::{ProgressMode, SyncError, SyncOptions};

use super::{config_path, print_summary};

/// Runs `dxmirror sync [PROJECT...]`.
pub(crate) async fn run(
    config: Option<PathBuf>,
    projects: Vec<ProjectId>,
    progress: ProgressMode,
) -> anyhow::Result<ExitCode> {
    let cfg = Config::load(&config_path(config))?;
    let _lock = WriterLock::acquire(&cfg.state_dir, &cfg.mirror_root)?;
    let summary = match dxmirror::sync::run(&cfg, SyncOptions { projects, progress }).await {
        Ok(summary) => summary,
        // The state directory refused before anything ran: said as it is.
        Err(SyncError::StateDir(e)) => return Err(e.into()),
        Err(e) => return Err(anyhow::Error::new(e).context("sync failed")),
    };
    print_summary(&summary);
    Ok(if summary.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
