//! `dxmirror status`: prints what the journal knows, as text or JSON, or as a monitoring check
//! with the Nagios exit codes (read-only).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use dxmirror::config::Config;
use dxmirror::journal::FileState;
use dxmirror::model::ProjectId;
use dxmirror::status::{self, FileFilter, Level, Style};

use super::config_path;

/// The command line of `dxmirror status`.
pub(crate) struct StatusArgs {
    pub(crate) config: Option<PathBuf>,
    pub(crate) project: Option<ProjectId>,
    pub(crate) json: bool,
    pub(crate) check: bool,
    pub(crate) files: bool,
    pub(crate) failed: bool,
    pub(crate) state: Option<String>,
}

/// Runs `dxmirror status [PROJECT] [--json] [--check] [--files [--failed] [--state S]]`.
///
/// Plain `status` exits 0 whenever it can report; `--check` exits with its verdict, and 3
/// (UNKNOWN) when there is no config or journal to read. With `--json`, a failure is printed as
/// a JSON error object (`status::error_json`) rather than text.
pub(crate) fn run(args: StatusArgs) -> anyhow::Result<ExitCode> {
    match output(&args) {
        Ok((text, code)) => {
            print!("{text}");
            Ok(ExitCode::from(code))
        }
        Err((kind, err)) if args.check => {
            let message = format!("{err:#}");
            if args.json {
                print!("{}", status::error_json(kind, &message));
            } else {
                print!("{}", status::unknown_check(&message));
            }
            Ok(ExitCode::from(Level::Unknown.exit_code()))
        }
        Err((kind, err)) if args.json => {
            print!("{}", status::error_json(kind, &format!("{err:#}")));
            Ok(ExitCode::FAILURE)
        }
        Err((_, err)) => Err(err),
    }
}

/// The text to print and the exit code, or what went wrong with a word for its kind.
fn output(args: &StatusArgs) -> Result<(String, u8), (&'static str, anyhow::Error)> {
    let cfg = Config::load(&config_path(args.config.clone())).map_err(|e| ("config", e.into()))?;
    let fail = |e: status::StatusError| (e.kind(), anyhow::Error::new(e));
    let style = if args.json {
        Style::default()
    } else {
        Style::for_stdout()
    };
    if args.files {
        let Some(project) = &args.project else {
            return Err(("usage", anyhow::anyhow!("--files needs a PROJECT")));
        };
        let state = args
            .state
            .as_deref()
            .map(|s| s.parse::<FileState>())
            .transpose()
            .map_err(|e| ("usage", anyhow::Error::new(e)))
            .map_err(|(k, e)| (k, e.context("--state")))?;
        let filter = FileFilter {
            failed: args.failed,
            state,
        };
        let report = status::files_report(&cfg.state_dir, project, &filter).map_err(fail)?;
        let text = status::render_files(&report, args.json, style).map_err(fail)?;
        return Ok((text, 0));
    }
    let mut report = status::report_with_config(&cfg).map_err(fail)?;
    if let Some(project) = &args.project {
        let id = project.to_string();
        report.projects.retain(|p| p.id == id);
        report.problems.retain(|p| p.project == id);
        if report.projects.is_empty() {
            return Err(fail(status::StatusError::UnknownProject(id)));
        }
    }
    if args.check {
        let code = report.health.level.exit_code();
        let text = if args.json {
            serde_json::to_string_pretty(&report)
                .context("encoding the status")
                .map_err(|e| ("json", e))?
                + "\n"
        } else {
            status::render_check(&report)
        };
        return Ok((text, code));
    }
    let text = status::render_report(&report, args.json, style).map_err(fail)?;
    Ok((text, 0))
}
