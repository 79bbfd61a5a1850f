//! `dxmirror status`: prints what the journal knows, as text or JSON, or as a monitoring check
//! with the Nagios exit codes (read-only); plain `status` (and `--json`) add, when the daemon
//! answers on its control socket, its live figures (the limit in force, with a rate set by
//! `dxmirror bwlimit`; paused, running and queued projects) after the journal's.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use dxmirror::config::Config;
use dxmirror::ipc::{self, LiveStatus, Request, Response};
use dxmirror::journal::FileState;
use dxmirror::model::ProjectId;
use dxmirror::status::{self, FileFilter, Level, Style};
use dxmirror::units::human_bytes;

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
pub(crate) async fn run(args: StatusArgs) -> anyhow::Result<ExitCode> {
    match output(&args) {
        Ok((text, code)) => {
            let text = if args.check || args.files {
                text
            } else {
                with_live(&args, text).await?
            };
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

/// The report with the daemon's live figures after it (text), or under `live` (JSON: `null`
/// when no daemon answers).
async fn with_live(args: &StatusArgs, text: String) -> anyhow::Result<String> {
    let Ok(cfg) = Config::load(&config_path(args.config.clone())) else {
        return Ok(text);
    };
    let live = live(&cfg).await;
    if args.json {
        let mut v: serde_json::Value = serde_json::from_str(&text)?;
        if let serde_json::Value::Object(map) = &mut v {
            map.insert("live".into(), serde_json::to_value(&live)?);
        }
        Ok(serde_json::to_string_pretty(&v)? + "\n")
    } else {
        Ok(match &live {
            Some(l) => text + &render_live(l),
            None => text,
        })
    }
}

/// The daemon's live figures, if it runs and answers within two seconds (else the journal
/// is all there is).
async fn live(cfg: &Config) -> Option<LiveStatus> {
    let socket = ipc::socket_path(&cfg.state_dir);
    if !socket.exists() {
        return None;
    }
    match tokio::time::timeout(Duration::from_secs(2), ipc::ask(&socket, &Request::Status)).await {
        Ok(Ok(Response::Status(s))) => Some(s),
        _ => None,
    }
}

fn render_live(l: &LiveStatus) -> String {
    let rate = l
        .limit_bytes_per_s
        .map_or_else(|| "off".to_owned(), |n| format!("{}/s", human_bytes(n)));
    let until = l
        .limit_next_change_ms
        .map(|ms| {
            let t = std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
            format!(" until {}", humantime::format_rfc3339_seconds(t))
        })
        .unwrap_or_default();
    let list = |v: &[String]| {
        if v.is_empty() {
            "none".to_owned()
        } else {
            v.join(", ")
        }
    };
    let paused = if l.paused_all {
        "ALL (dxmirror resume --all)".to_owned()
    } else {
        list(&l.paused)
    };
    format!(
        "live (from the daemon):\n  bandwidth limit: {rate}{until}\n  paused: {paused}\n  running: {}\n  queued: {}\n",
        list(&l.running),
        list(&l.queued)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_figures_read_as_lines() {
        let l = LiveStatus {
            limit_bytes_per_s: Some(512 << 10),
            limit_next_change_ms: Some(1_767_607_200_000),
            paused_all: false,
            paused: vec!["project-A".into()],
            running: vec![],
            queued: vec!["project-A".into(), "project-B".into()],
        };
        assert_eq!(
            render_live(&l),
            "live (from the daemon):\n  bandwidth limit: 512.0 KiB/s until 2026-01-05T10:00:00Z\n  paused: project-A\n  running: none\n  queued: project-A, project-B\n"
        );
    }
}
