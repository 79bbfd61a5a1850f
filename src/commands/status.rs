//! `dxmirror status`: prints what the journal knows, as text or JSON (read-only).

use std::path::PathBuf;
use std::process::ExitCode;

use dxmirror::config::Config;

use super::config_path;

/// Runs `dxmirror status [--json]`.
pub(crate) fn run(config: Option<PathBuf>, json: bool) -> anyhow::Result<ExitCode> {
    let cfg = Config::load(&config_path(config))?;
    let text = dxmirror::status::render_with_config(&cfg, json)?;
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}
