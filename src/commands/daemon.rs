//! `dxmirror daemon`: installs the signal handlers and runs the library's daemon until
//! SIGTERM/SIGINT (exit status 0).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use super::config_path;

/// Runs `dxmirror daemon`.
pub(crate) async fn run(config: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let path = config_path(config);
    let shutdown =
        dxmirror::daemon::signals::terminate().context("cannot install signal handlers")?;
    dxmirror::daemon::run(path, shutdown, dxmirror::daemon::Notifier::from_env())
        .await
        .context("daemon failed")?;
    Ok(ExitCode::SUCCESS)
}
