//! `dxmirror sync`: one pass over the projects under the writer lock, then the summary; exit
//! status 0 only if every eligible file is mirrored. The first SIGINT/SIGTERM stops the run
//! cleanly (exit 130/143, what is synced is kept), a second exits at once. `--dry-run` says
//! what a sync would fetch against the free space and writes nothing.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use dxmirror::config::Config;
use dxmirror::lock::WriterLock;
use dxmirror::model::ProjectId;
use dxmirror::sync::{DryRun, ProgressMode, SyncError, SyncOptions};
use dxmirror::units::human_bytes;

use super::exit::{self, stop_signals};
use super::{config_path, plural, print_summary};

/// Runs `dxmirror sync [--dry-run] [PROJECT...]`.
pub(crate) async fn run(
    config: Option<PathBuf>,
    projects: Vec<ProjectId>,
    dry_run: bool,
    progress: ProgressMode,
) -> anyhow::Result<ExitCode> {
    let path = config_path(config);
    let cfg = Config::load(&path)?;
    if dry_run {
        let report = dxmirror::sync::dry_run(&cfg, &projects)
            .await
            .context("dry run failed")?;
        print!("{}", render_dry_run(&report));
        return Ok(ExitCode::from(if report.fits() {
            exit::OK
        } else {
            exit::INCOMPLETE
        }));
    }
    super::owner::refuse_root_over_service_files(
        &cfg,
        &format!("sync --config {}", path.display()),
    )?;
    let _lock = WriterLock::acquire(&cfg.state_dir, &cfg.mirror_root)?;
    let mut stop = stop_signals().context("cannot install signal handlers")?;
    let mut signal = None;
    let stopped = async {
        if let Ok(s) = (&mut stop).await {
            signal = Some(s);
        } else {
            std::future::pending::<()>().await;
        }
    };
    let result = dxmirror::sync::run_until(&cfg, SyncOptions { projects, progress }, stopped).await;
    let summary = match result {
        Ok(summary) => summary,
        // The state directory refused before anything ran: said as it is.
        Err(SyncError::StateDir(e)) => return Err(e.into()),
        Err(e) => return Err(anyhow::Error::new(e).context("sync failed")),
    };
    if let Some(left) = summary.interrupted {
        let unlisted = if left.projects_unlisted > 0 {
            format!(
                "; {} not listed yet",
                plural(left.projects_unlisted as u64, "project")
            )
        } else {
            String::new()
        };
        eprintln!(
            "interrupted; run again to resume ({}, {} still to fetch{unlisted})",
            plural(left.files, "file"),
            human_bytes(left.bytes)
        );
        return Ok(signal.map_or(ExitCode::from(exit::ERROR), |s| s.exit_code()));
    }
    print_summary(&summary);
    Ok(ExitCode::from(if summary.is_ok() {
        exit::OK
    } else {
        exit::INCOMPLETE
    }))
}

/// The dry run's report: per project what it would fetch, then the total against the room.
fn render_dry_run(r: &DryRun) -> String {
    let mut out = String::new();
    for p in &r.projects {
        let name = if p.name.is_empty() {
            String::new()
        } else {
            format!(" {:?}", p.name)
        };
        match &p.error {
            Some(e) => out.push_str(&format!("project {}{name}: NOT MIRRORED: {e}\n", p.id)),
            None => {
                out.push_str(&format!(
                    "project {}{name}: would fetch {} ({}) of {} listed",
                    p.id,
                    plural(p.files_to_fetch as u64, "file"),
                    human_bytes(p.bytes_to_fetch),
                    plural(p.files_listed as u64, "file"),
                ));
                if p.files_filtered > 0 {
                    out.push_str(&format!("; {} left out by filters", p.files_filtered));
                }
                if p.files_unavailable > 0 {
                    out.push_str(&format!(
                        "; {} not downloadable now (open or archived)",
                        p.files_unavailable
                    ));
                }
                out.push('\n');
                if p.selects_nothing() {
                    out.push_str("  WARNING: the filters select no file of this project\n");
                }
                if p.sample_info_missing {
                    out.push_str("  note: the filters use SAMPLE_INFO.txt columns and none is mirrored yet; counted without them\n");
                }
            }
        }
    }
    let room = r.free.saturating_sub(r.reserve);
    out.push_str(&format!(
        "total: {} to fetch; {} free, {} reserve (disk-reserve), {} usable: {}\n",
        human_bytes(r.bytes_to_fetch()),
        human_bytes(r.free),
        human_bytes(r.reserve),
        human_bytes(room),
        if r.fits() {
            "it fits"
        } else {
            "IT DOES NOT FIT"
        }
    ));
    out
}
