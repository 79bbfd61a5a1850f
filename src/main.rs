//! The `dxmirror` binary: parses the command line, sets up logging, and calls the library.
//! `anyhow` lives here only, adding context on the way up.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use dxmirror::config::{human_bytes, Config};
use dxmirror::lock::WriterLock;
use dxmirror::model::ProjectId;
use dxmirror::sync::{ProgressMode, SyncOptions, SyncSummary};

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
    /// Validate a config file and show the resolved settings (the token is never printed).
    CheckConfig {
        /// Config file (else $DXMIRROR_CONFIG, else /etc/dxmirror/config.toml).
        #[arg(long, short)]
        config: Option<PathBuf>,
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
    match runtime.block_on(run(cli)) {
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
            dxmirror::daemon::fscheck::require_local_state_dir(&cfg.state_dir)?;
            let _lock = WriterLock::acquire(&cfg.state_dir, &cfg.mirror_root)?;
            let summary = dxmirror::sync::run(
                &cfg,
                SyncOptions {
                    projects,
                    progress: progress_mode(cli.quiet),
                },
            )
            .await
            .context("sync failed")?;
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
            for p in &cfg.projects {
                let st = cfg.settings(p);
                println!(
                    "  project                  {p} (priority {}{})",
                    st.priority,
                    st.access_expires
                        .map(|d| format!(", access expires {d}"))
                        .unwrap_or_default()
                );
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
            if let Err(e) = dxmirror::daemon::fscheck::require_local_state_dir(&cfg.state_dir) {
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
