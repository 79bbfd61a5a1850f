//! `dxmirror verify [--repair]`: re-hashes mirrored files through the library's
//! `verify::check`; with `--repair`, under the writer lock, puts the damaged files back into
//! staging (`verify::repair_for_refetch`, the flow the daemon's scheduled verification shares)
//! and runs a sync of their projects to fetch the damaged chunks again. Exit status 0 when
//! nothing was found, or when everything found was repaired.

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;

use dxmirror::config::Config;
use dxmirror::journal::Journal;
use dxmirror::lock::WriterLock;
use dxmirror::model::ProjectId;
use dxmirror::sync::{ProgressMode, SyncOptions};
use dxmirror::units::human_bytes;
use dxmirror::verify::VerifyReport;

use super::{config_path, print_summary};

/// Runs `dxmirror verify [PROJECT] [--repair] [--json]`.
pub(crate) async fn run(
    config: Option<PathBuf>,
    project: Option<ProjectId>,
    repair: bool,
    json: bool,
    progress: ProgressMode,
) -> anyhow::Result<ExitCode> {
    let path = config_path(config);
    let cfg = Config::load(&path)?;
    let started = Instant::now();
    // A repair writes: it takes the lock before looking, so nothing changes underneath it.
    let lock = if repair {
        super::owner::refuse_root_over_service_files(
            &cfg,
            &format!("verify --repair --config {}", path.display()),
        )?;
        match WriterLock::acquire(&cfg.state_dir, &cfg.mirror_root) {
            Ok(lock) => Some(lock),
            Err(e @ dxmirror::lock::LockError::Held { .. }) => {
                anyhow::bail!(
                    "{e}; while the daemon runs, ask it instead: dxmirror verify PROJECT --queue"
                )
            }
            Err(e) => return Err(e.into()),
        }
    } else {
        None
    };
    let mut report = dxmirror::verify::check(&cfg.state_dir, &cfg.mirror_root, project.as_ref())
        .context("verify failed")?;
    let secs = started.elapsed().as_secs_f64().max(0.001);
    let mut healed = true;
    if repair && !report.is_clean() {
        healed = repair_and_refetch(&cfg, &mut report, json, progress).await?;
    }
    drop(lock);
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for f in &report.findings {
            println!("{f}");
        }
        for r in &report.repaired {
            println!("repaired: {r}");
        }
        println!(
            "verified {} files and {} staged files, {} in {:.1}s ({}/s): {}",
            report.files_checked,
            report.staged_checked,
            human_bytes(report.bytes_checked),
            secs,
            human_bytes((report.bytes_checked as f64 / secs) as u64),
            verdict(report.findings.len(), repair, healed)
        );
    }
    Ok(if report.is_clean() || (repair && healed) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(super::exit::INCOMPLETE)
    })
}

/// Puts the damaged files of `report` back into staging and syncs their projects (printing
/// the sync's summary unless `json`); true when that sync mirrored every eligible file.
async fn repair_and_refetch(
    cfg: &Config,
    report: &mut VerifyReport,
    json: bool,
    progress: ProgressMode,
) -> anyhow::Result<bool> {
    let journal = Journal::open(&cfg.state_dir)?;
    let projects = dxmirror::verify::repair_for_refetch(
        &journal,
        &cfg.mirror_root,
        cfg.audit_log.as_deref(),
        report,
        &HashSet::new(),
    )
    .await
    .context("repair failed")?;
    journal.close().await?;
    let projects: Vec<ProjectId> = projects.into_iter().collect();
    let summary = dxmirror::sync::run(cfg, SyncOptions { projects, progress })
        .await
        .context("re-fetching the damaged chunks failed")?;
    if !json {
        print_summary(&summary);
    }
    Ok(summary.is_ok())
}

/// The end of the summary line: what was found and what became of it.
fn verdict(findings: usize, repair: bool, healed: bool) -> String {
    match (findings, repair) {
        (0, _) => "no findings".to_owned(),
        (n, false) => format!("{n} FINDINGS (run with --repair to fetch the damaged parts again)"),
        (n, true) if healed => format!("{n} findings, all repaired"),
        (n, true) => format!("{n} findings, NOT all repaired"),
    }
}

#[cfg(test)]
mod tests {
    use super::verdict;

    #[test]
    fn the_verdict_says_what_was_found_and_repaired() {
        assert_eq!(verdict(0, false, true), "no findings");
        assert_eq!(verdict(0, true, true), "no findings");
        assert_eq!(
            verdict(2, false, true),
            "2 FINDINGS (run with --repair to fetch the damaged parts again)"
        );
        assert_eq!(verdict(2, true, true), "2 findings, all repaired");
        assert_eq!(verdict(2, true, false), "2 findings, NOT all repaired");
    }
}
