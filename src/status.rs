//! `dxmirror status`: renders what the journal knows, as a table or as JSON.
//!
//! It opens the journal read-only through `JournalReader` (never writes, takes no lock), so it
//! works while a sync or the daemon runs and when none does. Both outputs come from the same
//! row structs.

use std::fmt::Write as _;
use std::path::Path;

use crate::access::access_notice;
use crate::clock::Date;
use crate::config::Config;
use crate::journal::{DaemonState, FileState, JournalError, JournalReader};
use crate::units::human_bytes;

/// Everything `status` shows.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StatusReport {
    /// The daemon, if one ever ran on this journal.
    pub daemon: Option<DaemonLine>,
    /// The last run, if any: (command, started ms, ended ms, outcome).
    pub last_run: Option<RunLine>,
    /// Per project.
    pub projects: Vec<ProjectLine>,
    /// Files that need attention.
    pub problems: Vec<ProblemLine>,
    /// The global bandwidth limit the config puts in force now (when the config is known and
    /// sets one).
    pub bandwidth: Option<BandwidthLine>,
}

/// The global `bwlimit` in force and its next change.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BandwidthLine {
    /// The limit now, bytes per second; `None`: no limit.
    pub limit_bytes_per_s: Option<u64>,
    /// When the limit next changes, ms since the epoch; `None`: never.
    pub next_change_ms: Option<i64>,
    /// The limit from then on, bytes per second; `None`: no limit.
    pub next_limit_bytes_per_s: Option<u64>,
    /// The timetable as configured (rclone's `--bwlimit` syntax).
    pub timetable: String,
}

impl BandwidthLine {
    /// What `bwlimit` puts in force at `ms` (local time, `offset_s` east of UTC).
    pub fn at(table: &crate::bandwidth::Timetable, ms: i64, offset_s: i32) -> BandwidthLine {
        let f = table.in_force(ms, offset_s);
        BandwidthLine {
            limit_bytes_per_s: f.rate.bytes_per_sec(),
            next_change_ms: f.next.map(|(at, _)| at),
            next_limit_bytes_per_s: f.next.and_then(|(_, r)| r.bytes_per_sec()),
            timetable: table.to_string(),
        }
    }
}

/// The daemon's state as it last recorded it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DaemonLine {
    /// `starting`, `running`, `bad-token`, `stopped`.
    pub state: String,
    /// Its process id.
    pub pid: u32,
    /// Running since, ms since the epoch.
    pub started_ms: i64,
    /// Last update of its row, ms since the epoch.
    pub updated_ms: i64,
    /// True when a daemon that says it runs has not updated its row for a minute (it died).
    pub stale: bool,
    /// Its progress summary.
    pub status: Option<String>,
    /// Last successful discovery, ms since the epoch.
    pub last_discovery_ms: Option<i64>,
    /// Last error.
    pub last_error: Option<String>,
    /// When, ms since the epoch.
    pub last_error_ms: Option<i64>,
    /// Download rate over the last few seconds, bytes per second.
    pub bytes_per_s: Option<i64>,
    /// Estimated seconds to mirror what is known and left, at that rate.
    pub eta_s: Option<u64>,
}

/// One run of a writer.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunLine {
    /// `sync`, `daemon`, ...
    pub command: String,
    /// Start, ms since the epoch.
    pub started_ms: i64,
    /// End, ms since the epoch (none while running or after a crash).
    pub ended_ms: Option<i64>,
    /// `ok`, `incomplete`, `error`, or none.
    pub outcome: Option<String>,
}

/// One project's totals.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProjectLine {
    /// Project id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Local directory name.
    pub dir: Option<String>,
    /// Project state (`active`, `inaccessible`, `gone`, `restricted`).
    pub state: String,
    /// Why, for a state other than active.
    pub reason: Option<String>,
    /// Files listed.
    pub files_total: u64,
    /// Files verified.
    pub files_verified: u64,
    /// Files mirrored without a platform checksum.
    pub files_unverified: u64,
    /// Files skipped (archived, open).
    pub files_skipped: u64,
    /// Files failed or corrupt.
    pub files_failed: u64,
    /// Bytes of all eligible files.
    pub bytes_total: u64,
    /// Bytes on disk and journaled.
    pub bytes_done: u64,
    /// `access-expires` from the config (`YYYY-MM-DD`), if set.
    pub access_expires: Option<String>,
    /// `expired`, `expires in N days` (within 30 days), or none.
    pub access_warning: Option<String>,
}

/// One file that needs attention.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProblemLine {
    /// Project id.
    pub project: String,
    /// File id.
    pub file_id: String,
    /// Local path relative to the project directory.
    pub path: String,
    /// `failed`, `corrupt`, `skipped`, `gone`.
    pub state: String,
    /// Why.
    pub reason: String,
}

/// A status that cannot be shown.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// The journal cannot be read.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// JSON encoding failed (a bug).
    #[error("cannot encode status as JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// Reads the journal under `state_dir` into a report.
pub fn report(state_dir: &Path) -> Result<StatusReport, StatusError> {
    report_inner(state_dir, None)
}

/// Like [`report`], adding what only the config knows (access expiry of its projects).
pub fn report_with_config(cfg: &Config) -> Result<StatusReport, StatusError> {
    report_inner(&cfg.state_dir, Some(cfg))
}

fn report_inner(state_dir: &Path, cfg: Option<&Config>) -> Result<StatusReport, StatusError> {
    let reader = JournalReader::open(state_dir)?;
    let now_ms = crate::clock::now_ms();
    let daemon = reader.daemon()?.map(|d| DaemonLine {
        stale: d.state != DaemonState::Stopped && now_ms - d.updated_ms > 60_000,
        state: d.state.as_str().to_owned(),
        pid: d.pid,
        started_ms: d.started_ms,
        updated_ms: d.updated_ms,
        status: d.status,
        last_discovery_ms: d.last_discovery_ms,
        last_error: d.last_error,
        last_error_ms: d.last_error_ms,
        bytes_per_s: d.bytes_per_s,
        eta_s: None,
    });
    let today = Date::today();
    let last_run = reader.last_run()?.map(|r| RunLine {
        command: r.command,
        started_ms: r.started_ms,
        ended_ms: r.ended_ms,
        outcome: r.outcome,
    });
    let mut projects = Vec::new();
    for t in reader.project_totals()? {
        let count = |s: FileState| t.files_by_state.get(&s).copied().unwrap_or(0);
        let expires = cfg.and_then(|c| c.settings(&t.project.id).access_expires);
        let access_warning = expires
            .and_then(|e| access_notice(e, today))
            .map(|n| n.status_message(&t.project.id));
        projects.push(ProjectLine {
            access_expires: expires.map(|e| e.to_string()),
            access_warning,
            id: t.project.id.to_string(),
            name: t.project.name.clone(),
            dir: t.project.dir_name.clone(),
            state: t.project.state.as_str().to_owned(),
            reason: t.project.reason.clone(),
            files_total: t.n_files,
            files_verified: count(FileState::Verified),
            files_unverified: count(FileState::Unverified),
            files_skipped: count(FileState::Skipped),
            files_failed: t.n_failed + t.n_corrupt,
            bytes_total: t.bytes_total,
            bytes_done: t.bytes_done,
        });
    }
    let problems = reader
        .problems(200)?
        .into_iter()
        .map(|f| ProblemLine {
            project: f.project_id.to_string(),
            file_id: f.file_id.to_string(),
            path: f.rel_path.clone(),
            state: f.state.as_str().to_owned(),
            reason: f.reason.clone().unwrap_or_default(),
        })
        .collect();
    let mut daemon = daemon;
    if let Some(d) = daemon.as_mut() {
        let left: u64 = projects
            .iter()
            .filter(|p| p.state == "active")
            .map(|p| p.bytes_total.saturating_sub(p.bytes_done))
            .sum();
        d.eta_s = match d.bytes_per_s {
            Some(r) if r > 0 && d.state == "running" && !d.stale => Some(left / r as u64),
            _ => None,
        };
    }
    let bandwidth = cfg.filter(|c| !c.bwlimit.is_off()).map(|c| {
        use crate::clock::Clock as _;
        BandwidthLine::at(
            &c.bwlimit,
            now_ms,
            crate::clock::SystemClock.utc_offset_s(now_ms),
        )
    });
    Ok(StatusReport {
        daemon,
        last_run,
        projects,
        problems,
        bandwidth,
    })
}

/// Renders the status as text or JSON.
pub fn render(state_dir: &Path, json: bool) -> Result<String, StatusError> {
    render_report(&report(state_dir)?, json)
}

/// Renders the status with the config's knowledge (access expiry) as text or JSON.
pub fn render_with_config(cfg: &Config, json: bool) -> Result<String, StatusError> {
    render_report(&report_with_config(cfg)?, json)
}

fn render_report(r: &StatusReport, json: bool) -> Result<String, StatusError> {
    if json {
        return Ok(serde_json::to_string_pretty(&r)? + "\n");
    }
    let mut out = String::new();
    if let Some(d) = &r.daemon {
        let _ = writeln!(
            out,
            "daemon: {}{} (pid {}, running since {}, updated {})",
            d.state,
            if d.stale {
                ", NOT RESPONDING (no update for over a minute)"
            } else {
                ""
            },
            d.pid,
            fmt_ms(d.started_ms),
            fmt_ms(d.updated_ms)
        );
        if let Some(s) = &d.status {
            let _ = writeln!(out, "  {s}");
        }
        if let Some(rate) = d.bytes_per_s.filter(|_| d.state == "running" && !d.stale) {
            let _ = writeln!(
                out,
                "  rate: {}/s{}",
                human_bytes(rate.max(0) as u64),
                d.eta_s
                    .map(|e| format!(
                        ", about {} left",
                        humantime::format_duration(std::time::Duration::from_secs(e))
                    ))
                    .unwrap_or_default()
            );
        }
        let _ = writeln!(
            out,
            "  last discovery: {}",
            d.last_discovery_ms
                .map_or_else(|| "never".to_owned(), fmt_ms)
        );
        if let Some(e) = &d.last_error {
            let _ = writeln!(
                out,
                "  last error ({}): {e}",
                d.last_error_ms.map_or_else(String::new, fmt_ms)
            );
        }
    }
    if let Some(b) = &r.bandwidth {
        let rate = |r: Option<u64>| {
            r.map_or_else(|| "off".to_owned(), |n| format!("{}/s", human_bytes(n)))
        };
        let _ = writeln!(
            out,
            "bandwidth limit: {}{}",
            rate(b.limit_bytes_per_s),
            b.next_change_ms
                .map(|at| format!(
                    " until {}, then {}",
                    fmt_ms(at),
                    rate(b.next_limit_bytes_per_s)
                ))
                .unwrap_or_default()
        );
    }
    match &r.last_run {
        Some(run) => {
            let _ = writeln!(
                out,
                "last run: {} started {} {}",
                run.command,
                fmt_ms(run.started_ms),
                match (&run.ended_ms, &run.outcome) {
                    (Some(end), Some(o)) => format!("ended {} ({o})", fmt_ms(*end)),
                    _ => "(running, or ended without saying so)".to_owned(),
                }
            );
        }
        None => out.push_str("no run recorded yet\n"),
    }
    for p in &r.projects {
        let pct = if p.bytes_total == 0 {
            100.0
        } else {
            p.bytes_done as f64 * 100.0 / p.bytes_total as f64
        };
        let _ = writeln!(
            out,
            "{} {:?} [{}]{}\n  files: {} listed, {} verified, {} unverified, {} skipped, {} failed\n  bytes: {} of {} ({pct:.1}%)",
            p.id,
            p.name,
            p.state,
            p.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default(),
            p.files_total,
            p.files_verified,
            p.files_unverified,
            p.files_skipped,
            p.files_failed,
            human_bytes(p.bytes_done),
            human_bytes(p.bytes_total),
        );
        if let Some(e) = &p.access_expires {
            let _ = writeln!(
                out,
                "  access expires: {e}{}",
                p.access_warning
                    .as_deref()
                    .map(|w| format!(" -- WARNING: {w}"))
                    .unwrap_or_default()
            );
        }
    }
    if !r.problems.is_empty() {
        out.push_str("files needing attention:\n");
        for f in &r.problems {
            let _ = writeln!(
                out,
                "  {:<8} {} {} ({}): {}",
                f.state, f.project, f.path, f.file_id, f.reason
            );
        }
    }
    Ok(out)
}

fn fmt_ms(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// 2026-01-05T10:00:00Z.
    const T0: i64 = 1_767_607_200_000;

    // Snapshots of the text, written out in full: an intended change of the output shows here
    // as a diff to review.

    /// A report exercising every line: a running daemon with a rate, its last error, a finished
    /// run, an active project near its expiry, an inaccessible one, and a failed file.
    fn report() -> StatusReport {
        StatusReport {
            daemon: Some(DaemonLine {
                state: "running".into(),
                pid: 4242,
                started_ms: T0,
                updated_ms: T0 + 65_000,
                stale: false,
                status: Some("2 projects (1 running, 0 queued); 3/5 files done".into()),
                last_discovery_ms: Some(T0 + 1_000),
                last_error: Some("listing project-B: connection reset".into()),
                last_error_ms: Some(T0 + 2_000),
                bytes_per_s: Some(3 << 20),
                eta_s: Some(125),
            }),
            last_run: Some(RunLine {
                command: "daemon".into(),
                started_ms: T0,
                ended_ms: Some(T0 + 3_600_000),
                outcome: Some("stopped".into()),
            }),
            projects: vec![
                ProjectLine {
                    id: "project-A".into(),
                    name: "SJ Data Request 2026-001".into(),
                    dir: Some("SJ_Data_Request_2026-001".into()),
                    state: "active".into(),
                    reason: None,
                    files_total: 4,
                    files_verified: 2,
                    files_unverified: 1,
                    files_skipped: 0,
                    files_failed: 1,
                    bytes_total: 10 << 20,
                    bytes_done: 5 << 20,
                    access_expires: Some("2026-01-20".into()),
                    access_warning: Some("access to project-A expires in 15 days".into()),
                },
                ProjectLine {
                    id: "project-B".into(),
                    name: "revoked".into(),
                    dir: None,
                    state: "inaccessible".into(),
                    reason: Some("VIEW permission required".into()),
                    files_total: 0,
                    files_verified: 0,
                    files_unverified: 0,
                    files_skipped: 0,
                    files_failed: 0,
                    bytes_total: 0,
                    bytes_done: 0,
                    access_expires: None,
                    access_warning: None,
                },
            ],
            problems: vec![ProblemLine {
                project: "project-A".into(),
                file_id: "file-X".into(),
                path: "restricted/bam/x.bam".into(),
                state: "failed".into(),
                reason: "no byte for 10m".into(),
            }],
            bandwidth: Some(BandwidthLine::at(
                &crate::bandwidth::Timetable::parse("08:00,512KiB 12:00,10MiB 23:00,off").unwrap(),
                T0,
                0,
            )),
        }
    }

    #[test]
    fn the_text_of_a_full_report() {
        let text = render_report(&report(), false).unwrap();
        assert_eq!(
            text,
            r#"daemon: running (pid 4242, running since 2026-01-05T10:00:00Z, updated 2026-01-05T10:01:05Z)
  2 projects (1 running, 0 queued); 3/5 files done
  rate: 3.0 MiB/s, about 2m 5s left
  last discovery: 2026-01-05T10:00:01Z
  last error (2026-01-05T10:00:02Z): listing project-B: connection reset
bandwidth limit: 512.0 KiB/s until 2026-01-05T12:00:00Z, then 10.0 MiB/s
last run: daemon started 2026-01-05T10:00:00Z ended 2026-01-05T11:00:00Z (stopped)
project-A "SJ Data Request 2026-001" [active]
  files: 4 listed, 2 verified, 1 unverified, 0 skipped, 1 failed
  bytes: 5.0 MiB of 10.0 MiB (50.0%)
  access expires: 2026-01-20 -- WARNING: access to project-A expires in 15 days
project-B "revoked" [inaccessible]: VIEW permission required
  files: 0 listed, 0 verified, 0 unverified, 0 skipped, 0 failed
  bytes: 0 B of 0 B (100.0%)
files needing attention:
  failed   project-A restricted/bam/x.bam (file-X): no byte for 10m
"#
        );
    }

    #[test]
    fn the_text_of_a_stale_daemon_and_no_run() {
        let mut r = report();
        let d = r.daemon.as_mut().unwrap();
        d.stale = true;
        d.status = None;
        d.last_discovery_ms = None;
        d.last_error = None;
        r.last_run = None;
        r.projects.clear();
        r.problems.clear();
        r.bandwidth = None;
        // No rate for a daemon that does not answer.
        let text = render_report(&r, false).unwrap();
        assert_eq!(
            text,
            r#"daemon: running, NOT RESPONDING (no update for over a minute) (pid 4242, running since 2026-01-05T10:00:00Z, updated 2026-01-05T10:01:05Z)
  last discovery: never
no run recorded yet
"#
        );
    }
}
