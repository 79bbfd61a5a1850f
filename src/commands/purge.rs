//! `dxmirror purge PROJECT`: without `--yes` shows what would be deleted and refuses; with it
//! deletes the project's local copy and journal rows and prints the audit record written.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use dxmirror::config::Config;
use dxmirror::model::ProjectId;

use super::config_path;

/// Runs `dxmirror purge PROJECT [--yes]`.
pub(crate) async fn run(
    config: Option<PathBuf>,
    yes: bool,
    project: ProjectId,
) -> anyhow::Result<ExitCode> {
    let path = config_path(config);
    let cfg = Config::load(&path)?;
    if !yes {
        let plan = dxmirror::purge::plan(&cfg, &project)?;
        print!("would delete:\n{plan}");
        println!("refusing without --yes: nothing was deleted");
        return Ok(ExitCode::from(super::exit::INCOMPLETE));
    }
    super::owner::refuse_root_over_service_files(
        &cfg,
        &format!("purge --yes --config {} {project}", path.display()),
    )?;
    let outcome = dxmirror::purge::purge(&cfg, &project)
        .await
        .context("purge failed")?;
    print!("deleted:\n{}", outcome.plan);
    if let Some(a) = &outcome.audit {
        println!(
            "audit record {}: {} {} by {} at {}: {}",
            a.id,
            a.action,
            a.project_id,
            a.identity.as_deref().unwrap_or("an unknown user"),
            dxmirror::clock::local_iso(a.ts_ms),
            a.detail
        );
    }
    Ok(ExitCode::SUCCESS)
}
