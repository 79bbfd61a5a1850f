//! The `dxmirror` binary: parses the command line, sets up logging, and calls the library.
//! `anyhow` lives here only, adding context on the way up.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use dxmirror::config::Config;
use dxmirror::lock::WriterLock;
use dxmirror::model::ProjectId;
use dxmirror::sync::{ProgressMode, SyncError, SyncOptions, SyncSummary};
use dxmirror::units::human_bytes;

/// Mirror St. Jude Cloud data vended through DNAnexus: resumable, verified, unattended.
#[derive(Debug, Parser)]
#[command(name = "dxmirror", version, about)]
struct Cli {
    /// More logging (-v debug, -vv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Only warnings and errors.
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Mirror projects once, verify every file, and exit (0 only if every eligible file is mirrored).
    Sync {
        /// Config file (else $DXMIRROR_CONFIG, else /etc/dxmirror/config.toml).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Projects to mirror (default: the config's [[project]] list).
        projects: Vec<ProjectId>,
    },
    /// Run unattended: discover projects, re-list them, mirror what is new, watch the inbox
    /// (SIGHUP reloads the config; SIGTERM/SIGINT stop cleanly with exit status 0).
    Daemon {
        /// Config file (else $DXMIRROR_CONFIG, else /etc/dxmirror/config.toml).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Show what the journal knows: projects, files, bytes, failures (read-only).
    Status {
        /// Config file (else $DXMIRROR_CONFIG, else /etc/dxmirror/config.toml).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Re-hash mirrored files against platform checksums, journaled chunk digests and recorded
    /// SHA-256s; exits non-zero on any finding. --repair re-fetches only what is damaged.
    Verify {
        /// Config file (else $DXMIRROR_CONFIG, else /etc/dxmirror/config.toml).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Only this project.
        project: Option<ProjectId>,
        /// Put damaged files back into staging and fetch their damaged chunks again (takes the
        /// writer lock).
        #[arg(long)]
        repair: bool,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Print the audit trail: every file fetched, repaired, quarantined, and every project
    /// purged, with when, which platform identity, size and SHA-256 (read-only).
    Audit {
        /// Config file (else $DXMIRROR_CONFIG, else /etc/dxmirror/config.toml).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Only records at or after this date: YYYY-MM-DD (UTC) or RFC 3339.
        #[arg(long)]
        since: Option<String>,
        /// A JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Validate a config file and show the resolved settings (the token is never printed).
    CheckConfig {
        /// Config file (else $DXMIRROR_CONFIG, else /etc/dxmirror/config.toml).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Delete a project's local copy and its journal rows, and write an audit record
    /// (end of a data-use agreement). Without --yes, only shows what would be deleted.
    Purge {
        /// Config file (else $DXMIRROR_CONFIG, else /etc/dxmirror/config.toml).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Really delete.
        #[arg(long)]
        yes: bool,
        /// The project to purge.
        project: ProjectId,
    },
    /// Serve a DNAnexus-compatible sandbox on loopback (for tests, demos and benchmarks).
    Sandbox(dxmirror::sandbox::SandboxArgs),
    /// Mirror the built-in sandbox project into ./dxmirror-demo/ and verify it (no account needed).
    Demo {
        /// Where to put the demo's config, journal and mirror.
        #[arg(long, default_value = "dxmirror-demo")]
        dir: PathBuf,
    },
}

fn config_path(explicit: Option<PathBuf>) -> PathBuf {
    explicit
        .or_else(|| std::env::var_os("DXMIRROR_CONFIG").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/etc/dxmirror/config.toml"))
}

fn progress_mode(quiet: bool) -> ProgressMode {
    if quiet {
        ProgressMode::Quiet
    } else if std::io::stderr().is_terminal() {
        ProgressMode::Bar
    } else {
        ProgressMode::Lines(Duration::from_secs(10))
    }
}

/// jemalloc, configured (`.cargo/config.toml`) to return freed pages at once: with glibc's
/// malloc, whose large-allocation threshold rises after the first big buffer is freed, peak RSS
/// grew with the number of files in flight (86 MiB on the mixed benchmark, 62 on large) where
/// jemalloc keeps it at the buffers in use (63 and 48 MiB), at the same speed.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    dxmirror::telemetry::init(cli.verbose, cli.quiet);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli));
    // Blocking work still running now is read-only (a scheduled verification): abandon it
    // rather than hold up the exit (a dropped runtime would wait for it however long).
    runtime.shutdown_timeout(Duration::from_secs(10));
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Sync { config, projects } => {
            let path = config_path(config);
            let cfg = Config::load(&path)?;
            let _lock = WriterLock::acquire(&cfg.state_dir, &cfg.mirror_root)?;
            let summary = match dxmirror::sync::run(
                &cfg,
                SyncOptions {
                    projects,
                    progress: progress_mode(cli.quiet),
                },
            )
            .await
            {
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
        Command::Daemon { config } => {
            let path = config_path(config);
            let shutdown =
                dxmirror::daemon::signals::terminate().context("cannot install signal handlers")?;
            dxmirror::daemon::run(path, shutdown, dxmirror::daemon::Notifier::from_env())
                .await
                .context("daemon failed")?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { config, json } => {
            let path = config_path(config);
            let cfg = Config::load(&path)?;
            let text = dxmirror::status::render_with_config(&cfg, json)?;
            print!("{text}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit {
            config,
            since,
            json,
        } => {
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
        Command::Verify {
            config,
            project,
            repair,
            json,
        } => {
            let cfg = Config::load(&config_path(config))?;
            verify_command(&cfg, project, repair, json, progress_mode(cli.quiet)).await
        }
        Command::CheckConfig { config } => {
            let path = config_path(config);
            let cfg = Config::load(&path)?;
            println!("config {} is valid", path.display());
            println!("  api-url                  {}", cfg.api_url);
            println!("  mirror-root              {}", cfg.mirror_root.display());
            println!("  state-dir                {}", cfg.state_dir.display());
            if let Some(ca) = &cfg.ca_file {
                println!("  ca-file                  {}", ca.display());
            }
            println!("  max-connections          {}", cfg.max_connections);
            println!(
                "  max-connections-per-file {}",
                cfg.max_connections_per_file
            );
            println!("  chunk-size               {}", human_bytes(cfg.chunk_size));
            println!(
                "  progress-step            {}",
                human_bytes(cfg.progress_step)
            );
            println!(
                "  stall-timeout            {}",
                humantime::format_duration(cfg.stall_timeout)
            );
            println!(
                "  file-patience            {}",
                humantime::format_duration(cfg.file_patience)
            );
            println!(
                "  disk-reserve             {}",
                human_bytes(cfg.disk_reserve)
            );
            println!("  filter                   {}", cfg.filter.describe());
            for p in &cfg.projects {
                let st = cfg.settings(p);
                println!(
                    "  project                  {p} (priority {}{})",
                    st.priority,
                    st.access_expires
                        .map(|d| format!(", access expires {d}"))
                        .unwrap_or_default()
                );
                if let Some(f) = cfg.project_filters.get(p) {
                    println!("    selects                {}", f.describe());
                }
            }
            let d = &cfg.discovery;
            if d.enabled {
                println!(
                    "  discovery                every {}, level {}, tags {:?}, name {:?}, properties {:?}",
                    humantime::format_duration(d.interval),
                    d.level,
                    d.tags,
                    d.name.as_deref().unwrap_or("*"),
                    d.properties
                );
            } else {
                println!("  discovery                off");
            }
            println!(
                "  relist                   every {}",
                humantime::format_duration(cfg.relist_interval)
            );
            if let Some(w) = &cfg.watch {
                println!(
                    "  watch                    {} (rescan every {})",
                    w.dir.display(),
                    humantime::format_duration(w.rescan)
                );
            }
            if let Err(e) = dxmirror::journal::require_local_state_dir(&cfg.state_dir) {
                println!("  state-dir                NOT USABLE: {e}");
                return Ok(ExitCode::FAILURE);
            }
            match cfg.token() {
                Ok((_, origin)) => println!("  token                    from {origin} (not shown)"),
                Err(e) => {
                    println!("  token                    NOT USABLE: {e}");
                    return Ok(ExitCode::FAILURE);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Purge {
            config,
            yes,
            project,
        } => {
            let path = config_path(config);
            let cfg = Config::load(&path)?;
            if !yes {
                let plan = dxmirror::purge::plan(&cfg, &project)?;
                print!("would delete:\n{plan}");
                println!("refusing without --yes: nothing was deleted");
                return Ok(ExitCode::FAILURE);
            }
            let outcome = dxmirror::purge::purge(&cfg, &project)
                .await
                .context("purge failed")?;
            print!("deleted:\n{}", outcome.plan);
            if let Some(a) = &outcome.audit {
                println!(
                    "audit record {}: {} {} by {} at {} ms: {}",
                    a.id,
                    a.action,
                    a.project_id,
                    a.identity.as_deref().unwrap_or("unknown"),
                    a.ts_ms,
                    a.detail
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Sandbox(args) => {
            dxmirror::sandbox::serve(args)
                .await
                .context("sandbox failed")?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo { dir } => {
            let report = dxmirror::demo::run(&dir, progress_mode(cli.quiet))
                .await
                .context("demo failed")?;
            print_summary(&report.summary);
            println!("{report}");
            Ok(if report.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

/// `dxmirror verify`: check, and with `--repair` put damaged files back and fetch again.
async fn verify_command(
    cfg: &Config,
    project: Option<ProjectId>,
    repair: bool,
    json: bool,
    progress: ProgressMode,
) -> anyhow::Result<ExitCode> {
    let started = std::time::Instant::now();
    // A repair writes: it takes the lock before looking, so nothing changes underneath it.
    let lock = if repair {
        Some(WriterLock::acquire(&cfg.state_dir, &cfg.mirror_root)?)
    } else {
        None
    };
    let mut report = dxmirror::verify::check(&cfg.state_dir, &cfg.mirror_root, project.as_ref())
        .context("verify failed")?;
    let secs = started.elapsed().as_secs_f64().max(0.001);
    let mut healed = true;
    if repair && !report.is_clean() {
        let journal = dxmirror::journal::Journal::open(&cfg.state_dir)?;
        let projects = dxmirror::verify::repair_for_refetch(
            &journal,
            &cfg.mirror_root,
            cfg.audit_log.as_deref(),
            &mut report,
            &std::collections::HashSet::new(),
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
        healed = summary.is_ok();
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
            "verified {} files and {} staged files, {} in {:.1}s ({:.0} MB/s): {}",
            report.files_checked,
            report.staged_checked,
            human_bytes(report.bytes_checked),
            secs,
            report.bytes_checked as f64 / secs / 1e6,
            match (report.findings.len(), repair) {
                (0, _) => "no findings".to_owned(),
                (n, false) =>
                    format!("{n} FINDINGS (run with --repair to fetch the damaged parts again)"),
                (n, true) if healed => format!("{n} findings, all repaired"),
                (n, true) => format!("{n} findings, NOT all repaired"),
            }
        );
    }
    Ok(if report.is_clean() || (repair && healed) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_summary(summary: &SyncSummary) {
    let secs = summary.elapsed.as_secs_f64().max(0.001);
    for p in &summary.projects {
        println!(
            "project {} {:?}: {} verified, {} unverified (no platform checksum), {} fetched now",
            p.id, p.name, p.verified, p.unverified, p.fetched_now
        );
        if let Some(err) = &p.error {
            println!("  ERROR: {err}");
        }
        for prob in &p.problems {
            println!(
                "  {:<8} {} ({}): {}",
                prob.state, prob.path, prob.file_id, prob.reason
            );
        }
        if p.removed_upstream > 0 {
            println!(
                "  {} files no longer listed upstream (kept locally)",
                p.removed_upstream
            );
        }
        if let Some(m) = &p.manifest {
            println!("  manifest: {}", m.display());
        }
    }
    println!(
        "{} in {:.1}s ({:.1} MB/s); {}",
        human_bytes(summary.bytes),
        secs,
        summary.bytes as f64 / secs / 1e6,
        if summary.is_ok() {
            "every eligible file is mirrored"
        } else {
            "NOT every eligible file is mirrored"
        }
    );
}
