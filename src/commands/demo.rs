//! `dxmirror demo`: mirrors the built-in sandbox project into a directory and prints the sync
//! summary and the manifest check.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

use dxmirror::sync::ProgressMode;

use super::print_summary;

/// Runs `dxmirror demo [--dir DIR]`.
pub(crate) async fn run(dir: &Path, progress: ProgressMode) -> anyhow::Result<ExitCode> {
    let report = dxmirror::demo::run(dir, progress)
        .await
        .context("demo failed")?;
    print_summary(&report.summary);
    println!("{report}");
    Ok(if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(super::exit::INCOMPLETE)
    })
}
