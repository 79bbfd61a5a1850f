//! The `dxmirror` binary: parses the command line (`cli`), sets up logging and the runtime,
//! and dispatches to one subcommand of `commands/`, which calls the library.
//! `anyhow` lives in the binary only (here, `cli` and `commands/`), adding context on the
//! way up.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use cli::{Cli, Command};
use commands::progress_mode;
use dxmirror::ipc::Request;

mod cli;
mod commands;

/// jemalloc, configured (`.cargo/config.toml`) to return freed pages at once: with glibc's
/// malloc, whose large-allocation threshold rises after the first big buffer is freed, peak RSS
/// grew with the number of files in flight (86 MiB on the mixed benchmark, 62 on large) where
/// jemalloc keeps it at the buffers in use (63 and 48 MiB), at the same speed.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    commands::exit::quiet_on_closed_stdout();
    let cli = Cli::parse();
    let log_format = match dxmirror::telemetry::LogFormat::chosen(cli.log_format) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    dxmirror::telemetry::init(cli.verbose, cli.quiet, log_format);
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
    let result = runtime.block_on(dispatch(cli));
    // Blocking work still running now is read-only (a scheduled verification): abandon it
    // rather than hold up the exit (a dropped runtime would wait for it however long).
    runtime.shutdown_timeout(Duration::from_secs(10));
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", commands::error_text(&e));
            ExitCode::FAILURE
        }
    }
}

/// Runs the subcommand; its exit status, or the error to print.
async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Sync {
            config,
            dry_run,
            projects,
        } => commands::sync::run(config, projects, dry_run, progress_mode(cli.quiet)).await,
        Command::Daemon { config } => commands::daemon::run(config).await,
        Command::Status {
            config,
            project,
            json,
            check,
            files,
            failed,
            state,
        } => {
            commands::status::run(commands::status::StatusArgs {
                config,
                project,
                json,
                check,
                files,
                failed,
                state,
            })
            .await
        }
        Command::Audit {
            config,
            since,
            json,
        } => commands::audit::run(config, since, json),
        Command::Verify {
            config,
            project: Some(project),
            queue: true,
            ..
        } => {
            let project = project.to_string();
            commands::control::run(config, Request::Verify { project }).await
        }
        Command::Verify {
            config,
            project,
            repair,
            json,
            queue: _,
        } => commands::verify::run(config, project, repair, json, progress_mode(cli.quiet)).await,
        Command::Pause {
            config,
            all: _,
            project,
        } => {
            let project = project.map(|p| p.to_string());
            commands::control::run(config, Request::Pause { project }).await
        }
        Command::Resume {
            config,
            all: _,
            project,
        } => {
            let project = project.map(|p| p.to_string());
            commands::control::run(config, Request::Resume { project }).await
        }
        Command::Bwlimit { config, rate } => {
            commands::control::run(config, Request::Bwlimit { rate }).await
        }
        Command::Relist { config, project } => {
            let project = project.to_string();
            commands::control::run(config, Request::Relist { project }).await
        }
        Command::CheckConfig { config, online } => {
            commands::check_config::run(config, online).await
        }
        Command::Purge {
            config,
            yes,
            project,
        } => commands::purge::run(config, yes, project).await,
        Command::Sandbox(args) => commands::sandbox::run(args).await,
        Command::Demo { dir } => commands::demo::run(&dir, progress_mode(cli.quiet)).await,
        Command::Export {
            config,
            format,
            project,
        } => commands::export::run(config, project, format),
        Command::Completions { shell } => commands::docs::completions(shell),
        Command::Man => commands::docs::man(),
    }
}
