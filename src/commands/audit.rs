//! `dxmirror audit`: prints the audit trail, as a table or JSON (read-only).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use dxmirror::config::Config;

use super::config_path;

/// Runs `dxmirror audit [--since WHEN] [--json]`.
pub(crate) fn run(
    config: Option<PathBuf>,
    since: Option<String>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let cfg = Config::load(&config_path(config))?;
    let since_ms = match since {
        Some(s) => dxmirror::audit::parse_since(&s)?,
        None => 0,
    };
    let text = dxmirror::audit::report(&cfg.state_dir, since_ms, json)
        .context("cannot read the audit trail")?;
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}
