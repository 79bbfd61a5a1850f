//! `dxmirror status`: what the journal knows, as a table, as JSON (`schema_version`
//! [`SCHEMA_VERSION`], documented in `docs/status-json.md`) or as a monitoring check (the
//! Nagios plugin convention, [`Health`]).
//!
//! It opens the journal read-only through `JournalReader` (never writes, takes no lock), so it
//! works while a sync or the daemon runs and when none does. Every output comes from the same
//! row structs: the text, the JSON and the check. It decides nothing about the mirror.
//!
//! Adding a field: add it to [`ProjectLine`] or [`DaemonLine`] (each derives `Default`, so no
//! other constructor changes), set it in [`report_inner`], and print it in `render_text`; JSON
//! gains it by itself. Fields are only ever added to the JSON: renaming or removing one
//! bumps [`SCHEMA_VERSION`].

use std::fmt::Write as _;
use std::path::Path;

use crate::access::access_notice;
use crate::clock::Date;
use crate::config::Config;
use crate::journal::{DaemonState, FileState, JournalError, JournalReader, ProjectState};
use crate::model::ProjectId;
use crate::units::human_bytes;

/// The version of the JSON documents (`status --json`, `status PROJECT --files --json`).
pub const SCHEMA_VERSION: u32 = 1;

/// A daemon that says it runs but has not updated its row for this long is stale.
const STALE_AFTER_MS: i64 = 60_000;

/// Work pending and no byte arriving for this long is reported as stalled, without a config
/// (with one, its `[notify] stalled-after`).
const STALLED_AFTER_MS: i64 = 3_600_000;

/// Everything `status` shows.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct StatusReport {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// When the report was made, ms since the epoch.
    pub generated_ms: i64,
    /// The verdict `status --check` prints and exits with.
    pub health: Health,
    /// The daemon, if one ever ran on this journal.
    pub daemon: Option<DaemonLine>,
    /// The last run, if any.
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

/// The daemon's state as it last recorded it, and whether its process is still there.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DaemonLine {
    /// What it is doing: its recorded state (`starting`, `running`, `bad-token`,
    /// `waiting-for-mirror-root`, `stopped`), or `down` when its process is gone while the
    /// row says it runs.
    pub state: String,
    /// The state its row records.
    pub recorded_state: String,
    /// Its process id.
    pub pid: u32,
    /// Running since, ms since the epoch.
    pub started_ms: i64,
    /// Last update of its row (last seen), ms since the epoch.
    pub updated_ms: i64,
    /// True when a daemon that says it runs has not updated its row for a minute.
    pub stale: bool,
    /// True when the row says it runs but its process is gone (or another process has its pid).
    pub down: bool,
    /// `ok`, `refused`.
    pub token: String,
    /// Its progress summary.
    pub status: Option<String>,
    /// Last successful discovery, ms since the epoch.
    pub last_discovery_ms: Option<i64>,
    /// Last error.
    pub last_error: Option<String>,
    /// When, ms since the epoch.
    pub last_error_ms: Option<i64>,
    /// Download rate over the last few seconds, bytes per second (a live daemon only).
    pub bytes_per_s: Option<u64>,
    /// Estimated seconds to mirror what is known and left, at that rate.
    pub eta_s: Option<u64>,
    /// Files waiting for disk space.
    pub disk_waits: u64,
    /// When bytes last arrived, ms since the epoch.
    pub last_progress_ms: Option<i64>,
    /// Seconds spent waiting as the platform's `Retry-After` told, since the daemon started.
    pub throttled_s: u64,
    /// Throttled over its last status interval (a live daemon only).
    pub throttled: bool,
}

impl DaemonLine {
    /// True when the daemon is there and answering: its figures are current.
    pub fn live(&self) -> bool {
        !self.down && !self.stale && self.recorded_state != DaemonState::Stopped.as_str()
    }
}

/// One run of a writer.
#[derive(Debug, Clone, Default, serde::Serialize)]
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
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ProjectLine {
    /// Project id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Local directory name.
    pub dir: Option<String>,
    /// Project state as the journal records it (`active`, `inaccessible`, `gone`,
    /// `restricted`).
    pub state: String,
    /// What the table shows: `state` for a project that is not active, else `complete`
    /// (every eligible file mirrored), `mirroring` (bytes arriving) or `pending`.
    pub shown_state: String,
    /// Why, for a state other than active.
    pub reason: Option<String>,
    /// Files listed.
    pub files_total: u64,
    /// Files mirrored (verified and unverified).
    pub files_done: u64,
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
    /// This project's download rate, bytes per second (a live daemon passing it only).
    pub bytes_per_s: Option<u64>,
    /// Estimated seconds to mirror what is left, at that rate.
    pub eta_s: Option<u64>,
    /// The last listing (the last pass), ms since the epoch.
    pub last_pass_ms: Option<i64>,
    /// Files waiting for disk space.
    pub disk_waits: u64,
    /// `access-expires` from the config (`YYYY-MM-DD`), if set.
    pub access_expires: Option<String>,
    /// Whole days left until `access_expires` (negative once passed).
    pub access_days_left: Option<i64>,
    /// `expired`, `expires in N days` (within 30 days), or none.
    pub access_warning: Option<String>,
    /// `on-access-expired` for this project (`warn`, `hold`, `purge`), when the config
    /// names an `access-expires`.
    pub on_access_expired: Option<String>,
    /// With `purge`, once access expired: the day the local copy is deleted (`YYYY-MM-DD`).
    pub purge_on: Option<String>,
}

/// One file that needs attention.
#[derive(Debug, Clone, Default, serde::Serialize)]
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

/// A monitoring verdict, in the Nagios plugin convention.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Nothing needs a person.
    #[default]
    Ok,
    /// Something will need a person soon, or work is held up.
    Warning,
    /// Something needs a person now.
    Critical,
    /// The state cannot be read.
    Unknown,
}

impl Level {
    /// The plugin exit code: 0, 1, 2, 3.
    pub fn exit_code(self) -> u8 {
        self as u8
    }

    /// `OK`, `WARNING`, `CRITICAL`, `UNKNOWN`.
    pub fn word(self) -> &'static str {
        match self {
            Level::Ok => "OK",
            Level::Warning => "WARNING",
            Level::Critical => "CRITICAL",
            Level::Unknown => "UNKNOWN",
        }
    }
}

/// One reason for a verdict.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    /// How bad.
    pub level: Level,
    /// What, in one line.
    pub message: String,
}

/// The verdict and its reasons, worst first.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Health {
    /// The worst level of the findings (`ok` with none).
    pub level: Level,
    /// The findings, worst first.
    pub findings: Vec<Finding>,
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
    /// `--files` of a project the journal does not know.
    #[error("the journal knows no project {0}")]
    UnknownProject(String),
}

impl StatusError {
    /// A short word for the JSON error object: `no-journal`, `journal`, `unknown-project`,
    /// `json`.
    pub fn kind(&self) -> &'static str {
        match self {
            StatusError::Journal(JournalError::Missing(_)) => "no-journal",
            StatusError::Journal(_) => "journal",
            StatusError::Json(_) => "json",
            StatusError::UnknownProject(_) => "unknown-project",
        }
    }
}

/// The JSON object printed instead of a report when there is none: `schema_version`, and
/// `error` with `kind` and `message`.
pub fn error_json(kind: &str, message: &str) -> String {
    let v = serde_json::json!({
        "schema_version": SCHEMA_VERSION,
        "error": { "kind": kind, "message": message },
    });
    format!("{v:#}\n")
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
    let disk_waits = reader.disk_waits()?;
    let daemon = reader.daemon()?.map(|d| {
        let says_running = d.state != DaemonState::Stopped;
        let down = says_running && process_is_gone(d.pid, d.started_ms);
        DaemonLine {
            state: if down { "down" } else { d.state.as_str() }.to_owned(),
            recorded_state: d.state.as_str().to_owned(),
            pid: d.pid,
            started_ms: d.started_ms,
            updated_ms: d.updated_ms,
            stale: says_running && !down && now_ms - d.updated_ms > STALE_AFTER_MS,
            down,
            token: if d.state == DaemonState::BadToken {
                "refused"
            } else {
                "ok"
            }
            .to_owned(),
            status: d.status,
            last_discovery_ms: d.last_discovery_ms,
            last_error: d.last_error,
            last_error_ms: d.last_error_ms,
            bytes_per_s: d.bytes_per_s.map(|r| r.max(0) as u64),
            eta_s: None,
            disk_waits: disk_waits.values().sum(),
            last_progress_ms: d.live.last_progress_ms,
            throttled_s: d.live.throttled_ms / 1000,
            throttled: d.live.throttled_now,
        }
    });
    let live_rates = reader
        .daemon()?
        .map(|d| d.live.project_bytes_per_s)
        .filter(|_| daemon.as_ref().is_some_and(DaemonLine::live))
        .unwrap_or_default();
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
        let settings = cfg.map(|c| c.settings(&t.project.id));
        let expires = settings.as_ref().and_then(|s| s.access_expires);
        let action = match (cfg, &settings) {
            (Some(c), Some(s)) => crate::access::expiry_action(
                expires,
                today,
                s.on_access_expired,
                c.access_purge_grace_days,
            ),
            _ => crate::access::ExpiryAction::Mirror,
        };
        let purge_on = match action {
            crate::access::ExpiryAction::PurgeOn { on } => Some(on.to_string()),
            crate::access::ExpiryAction::PurgeNow => Some(today.to_string()),
            _ => None,
        };
        let notice = expires.and_then(|e| access_notice(e, today));
        let id = t.project.id.to_string();
        let bytes_per_s = live_rates.get(&id).copied();
        let left = t.bytes_total.saturating_sub(t.bytes_done);
        let files_done = count(FileState::Verified) + count(FileState::Unverified);
        let eligible = t.n_files - count(FileState::Skipped) - count(FileState::Gone);
        let shown_state = if t.project.state != ProjectState::Active {
            t.project.state.as_str()
        } else if action.holds() {
            "held"
        } else if files_done == eligible && left == 0 {
            "complete"
        } else if bytes_per_s.is_some_and(|r| r > 0) {
            "mirroring"
        } else if t.n_failed + t.n_corrupt > 0 && files_done + t.n_failed + t.n_corrupt >= eligible
        {
            // Nothing left to try but failed or corrupt files (a person is needed).
            "failed"
        } else {
            "pending"
        };
        projects.push(ProjectLine {
            access_expires: expires.map(|e| e.to_string()),
            access_days_left: expires.map(|e| e.days - today.days),
            access_warning: notice.map(|n| n.status_message(&t.project.id)),
            on_access_expired: expires
                .and(settings.as_ref())
                .map(|s| s.on_access_expired.as_str().to_owned()),
            purge_on,
            shown_state: shown_state.to_owned(),
            bytes_per_s,
            eta_s: bytes_per_s.filter(|r| *r > 0).map(|r| left.div_ceil(r)),
            last_pass_ms: t.project.last_listed_ms,
            disk_waits: disk_waits.get(&t.project.id).copied().unwrap_or(0),
            id,
            name: t.project.name.clone(),
            dir: t.project.dir_name.clone(),
            state: t.project.state.as_str().to_owned(),
            reason: t.project.reason.clone(),
            files_total: t.n_files,
            files_done,
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
        if !d.live() {
            d.bytes_per_s = None;
            d.throttled = false;
        }
        let left: u64 = projects
            .iter()
            .filter(|p| p.state == "active")
            .map(|p| p.bytes_total.saturating_sub(p.bytes_done))
            .sum();
        d.eta_s = match d.bytes_per_s {
            Some(r) if r > 0 && d.state == "running" => Some(left.div_ceil(r)),
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
    let mut report = StatusReport {
        schema_version: SCHEMA_VERSION,
        generated_ms: now_ms,
        health: Health::default(),
        daemon,
        last_run,
        projects,
        problems,
        bandwidth,
    };
    let stalled_after_ms = cfg.map_or(STALLED_AFTER_MS, |c| {
        c.notify.stalled_after.as_millis().min(i64::MAX as u128) as i64
    });
    report.health = health(&report, now_ms, stalled_after_ms);
    Ok(report)
}

/// Whether the process `pid`, which recorded `started_ms` as its start, is gone: no such
/// process, or one that started after that (the pid was reused). Unknown (no `/proc`) counts
/// as there, so that staleness decides.
fn process_is_gone(pid: u32, started_ms: i64) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Path::new("/proc/self/stat").exists();
    };
    match process_start_ms(&stat) {
        // The daemon records its start after its process started; a process that started
        // later is another one. The slack covers clock steps and rounding.
        Some(start) => start > started_ms + 5_000,
        None => false,
    }
}

/// The start time of the process whose `/proc/PID/stat` is `stat`, ms since the epoch.
fn process_start_ms(stat: &str) -> Option<i64> {
    // The command name (field 2) is in parentheses and may hold spaces: fields after the
    // last `)` are plain; `starttime` is field 22, the 20th after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    let ticks: i64 = rest.split_whitespace().nth(19)?.parse().ok()?;
    let btime: i64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    let hz = rustix::param::clock_ticks_per_second() as i64;
    (hz > 0).then(|| btime * 1000 + ticks * 1000 / hz)
}

/// The verdict for `status --check`: critical for failed or corrupt files, a refused token,
/// expired access, and a daemon that should run but is down or stale; warning for access
/// expiring, unreadable projects, waits for disk or for the mirror root, and stalled work.
fn health(r: &StatusReport, now_ms: i64, stalled_after_ms: i64) -> Health {
    let mut findings = Vec::new();
    let mut add = |level, message: String| findings.push(Finding { level, message });
    let failed: u64 = r.projects.iter().map(|p| p.files_failed).sum();
    if failed > 0 {
        let names: Vec<&str> = r
            .projects
            .iter()
            .filter(|p| p.files_failed > 0)
            .map(|p| p.id.as_str())
            .collect();
        add(
            Level::Critical,
            format!(
                "{failed} failed or corrupt file{} ({})",
                plural(failed),
                names.join(", ")
            ),
        );
    }
    if let Some(d) = &r.daemon {
        if d.down {
            add(
                Level::Critical,
                format!(
                    "daemon down: pid {} is gone, last seen {}",
                    d.pid,
                    fmt_ms(d.updated_ms)
                ),
            );
        } else if d.stale {
            add(
                Level::Critical,
                format!(
                    "daemon not responding: no update since {}",
                    fmt_ms(d.updated_ms)
                ),
            );
        } else if d.token == "refused" {
            add(Level::Critical, "the API token is refused".to_owned());
        } else if d.recorded_state == DaemonState::WaitingForMirrorRoot.as_str() {
            add(
                Level::Warning,
                "daemon waiting for the mirror root".to_owned(),
            );
        }
        let pending = r.projects.iter().any(|p| p.shown_state == "pending");
        let quiet_since = d.last_progress_ms.unwrap_or(d.started_ms);
        if d.live() && pending && now_ms - quiet_since > stalled_after_ms {
            add(
                Level::Warning,
                format!(
                    "stalled: work pending and no byte since {}",
                    fmt_ms(quiet_since)
                ),
            );
        }
        if d.throttled {
            add(
                Level::Warning,
                format!(
                    "throttled by the platform ({}s of waits since the daemon started)",
                    d.throttled_s
                ),
            );
        }
        if d.disk_waits > 0 {
            add(
                Level::Warning,
                format!(
                    "{} file{} waiting for disk space",
                    d.disk_waits,
                    plural(d.disk_waits)
                ),
            );
        }
    }
    for p in &r.projects {
        match (&p.access_expires, p.access_days_left) {
            (Some(on), Some(left)) if left < 0 => {
                add(Level::Critical, format!("{}: access expired on {on}", p.id));
            }
            (Some(on), Some(left)) if left <= crate::access::EXPIRY_WARN_DAYS => {
                add(
                    Level::Warning,
                    format!("{}: access expires on {on} ({left} days left)", p.id),
                );
            }
            _ => {}
        }
        if p.state == "inaccessible" || p.state == "gone" {
            add(Level::Warning, format!("{}: project {}", p.id, p.state));
        }
    }
    findings.sort_by_key(|f| std::cmp::Reverse(f.level));
    Health {
        level: findings.first().map_or(Level::Ok, |f| f.level),
        findings,
    }
}

fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// How the text is drawn: with ANSI colours or without (not a terminal, or `NO_COLOR`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Style {
    /// Colour the states and warnings.
    pub colour: bool,
}

impl Style {
    /// Colours for a terminal on `stdout` unless `NO_COLOR` is set (to anything but empty).
    pub fn for_stdout() -> Style {
        use std::io::IsTerminal as _;
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Style {
            colour: std::io::stdout().is_terminal() && !no_color,
        }
    }

    fn paint(self, text: &str, level: Level) -> String {
        let code = match level {
            Level::Ok => "32",
            Level::Warning => "33",
            Level::Critical => "31",
            Level::Unknown => "35",
        };
        if self.colour {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }
}

/// Renders the status as text or JSON.
pub fn render(state_dir: &Path, json: bool) -> Result<String, StatusError> {
    render_report(&report(state_dir)?, json, Style::default())
}

/// Renders the status with the config's knowledge (access expiry) as text or JSON.
pub fn render_with_config(cfg: &Config, json: bool, style: Style) -> Result<String, StatusError> {
    render_report(&report_with_config(cfg)?, json, style)
}

/// The report as pretty JSON or as the table.
pub fn render_report(r: &StatusReport, json: bool, style: Style) -> Result<String, StatusError> {
    if json {
        return Ok(serde_json::to_string_pretty(&r)? + "\n");
    }
    Ok(render_text(r, style))
}

/// `status --check`: the one-line summary first (`DXMIRROR OK - ...`), then one line per
/// finding; the exit code is [`Health::level`]'s.
pub fn render_check(r: &StatusReport) -> String {
    let h = &r.health;
    let files: u64 = r.projects.iter().map(|p| p.files_total).sum();
    let done: u64 = r.projects.iter().map(|p| p.files_done).sum();
    let summary = match h.findings.first() {
        Some(f) if h.findings.len() > 1 => {
            format!("{} (and {} more)", f.message, h.findings.len() - 1)
        }
        Some(f) => f.message.clone(),
        None => format!(
            "{} project{}, {done}/{files} files mirrored",
            r.projects.len(),
            plural(r.projects.len() as u64)
        ),
    };
    let mut out = format!("DXMIRROR {} - {}\n", h.level.word(), one_line(&summary));
    for f in &h.findings {
        let _ = writeln!(out, "{}: {}", f.level.word(), one_line(&f.message));
    }
    out
}

/// The line `status --check` prints when there is no report (no journal, no config).
pub fn unknown_check(message: &str) -> String {
    format!("DXMIRROR UNKNOWN - {}\n", one_line(message))
}

/// Text the platform or a person wrote, made safe for a terminal: control characters (an
/// ANSI escape in a project name) become `?`.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// Left-aligned columns: each padded to its widest cell (counted in characters), the last
/// one unpadded; `levels` colours whole cells after padding.
fn table(rows: &[Vec<String>], levels: &[Vec<Option<Level>>], style: Style) -> String {
    let n = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..n)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for (r, row) in rows.iter().enumerate() {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            let padded = if i + 1 == row.len() {
                cell.clone()
            } else {
                format!("{cell:<w$}  ", w = widths[i])
            };
            match levels.get(r).and_then(|l| l.get(i)).copied().flatten() {
                Some(level) => {
                    let pad = padded.len() - cell.len();
                    line.push_str(&style.paint(cell, level));
                    line.push_str(&" ".repeat(pad));
                }
                None => line.push_str(&padded),
            }
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
    out
}

fn state_level(state: &str) -> Option<Level> {
    match state {
        "complete" | "mirroring" | "running" => Some(Level::Ok),
        "pending" | "starting" | "stopped" => None,
        "inaccessible" | "gone" | "restricted" | "held" | "waiting-for-mirror-root" => {
            Some(Level::Warning)
        }
        _ => Some(Level::Critical),
    }
}

fn render_text(r: &StatusReport, style: Style) -> String {
    let mut out = String::new();
    if r.projects.is_empty() {
        out.push_str("no project known yet\n");
    } else {
        let mut rows = vec![[
            "PROJECT",
            "NAME",
            "STATE",
            "FILES",
            "BYTES",
            "RATE",
            "ETA",
            "FAILED",
            "LAST PASS",
            "ACCESS",
        ]
        .map(String::from)
        .to_vec()];
        let mut levels = vec![vec![]];
        for p in &r.projects {
            let pct = if p.bytes_total == 0 {
                100
            } else {
                (p.bytes_done as u128 * 100 / p.bytes_total as u128) as u64
            };
            let access = match (&p.access_expires, p.access_days_left) {
                (Some(on), Some(left)) if left < 0 => format!("{on} (expired)"),
                (Some(on), Some(left)) => format!("{on} ({left} days)"),
                _ => "-".to_owned(),
            };
            let access_level = match p.access_days_left {
                Some(l) if l < 0 => Some(Level::Critical),
                Some(l) if l <= crate::access::EXPIRY_WARN_DAYS => Some(Level::Warning),
                _ => None,
            };
            rows.push(vec![
                p.id.clone(),
                truncate(&one_line(&p.name), 32),
                p.shown_state.clone(),
                format!("{}/{}", p.files_done, p.files_total),
                format!(
                    "{} / {} ({pct}%)",
                    human_bytes(p.bytes_done),
                    human_bytes(p.bytes_total)
                ),
                p.bytes_per_s
                    .map_or_else(|| "-".to_owned(), |b| format!("{}/s", human_bytes(b))),
                p.eta_s.map_or_else(|| "-".to_owned(), fmt_eta),
                p.files_failed.to_string(),
                p.last_pass_ms.map_or_else(|| "never".to_owned(), fmt_ms),
                access,
            ]);
            levels.push(vec![
                None,
                None,
                state_level(&p.shown_state),
                None,
                None,
                None,
                None,
                (p.files_failed > 0).then_some(Level::Critical),
                None,
                access_level,
            ]);
        }
        out.push_str(&table(&rows, &levels, style));
        for p in &r.projects {
            if let Some(reason) = &p.reason {
                let _ = writeln!(out, "  {}: {}: {}", p.id, p.state, one_line(reason));
            }
            if p.disk_waits > 0 {
                let _ = writeln!(
                    out,
                    "  {}: {} file{} waiting for disk space",
                    p.id,
                    p.disk_waits,
                    plural(p.disk_waits)
                );
            }
            if p.shown_state == "held" {
                let _ = writeln!(
                    out,
                    "  {}: held: no fetching or re-listing, the local copy is kept{}",
                    p.id,
                    p.purge_on
                        .as_ref()
                        .map(|d| format!(" until its purge on {d} (on-access-expired = \"purge\")"))
                        .unwrap_or_default()
                );
            }
            if let Some(w) = &p.access_warning {
                let level = if p.access_days_left.is_some_and(|l| l < 0) {
                    Level::Critical
                } else {
                    Level::Warning
                };
                let _ = writeln!(out, "  {}: {}: {w}", p.id, style.paint(level.word(), level));
            }
        }
    }
    if let Some(d) = &r.daemon {
        if d.down {
            let _ = writeln!(
                out,
                "daemon: {} (pid {} is gone; it recorded {}), last seen {}",
                style.paint("down", Level::Critical),
                d.pid,
                d.recorded_state,
                fmt_ms(d.updated_ms)
            );
        } else {
            let _ = writeln!(
                out,
                "daemon: {}{} (pid {}, running since {}, updated {})",
                style.paint(&d.state, state_level(&d.state).unwrap_or(Level::Ok)),
                if d.stale {
                    ", NOT RESPONDING (no update for over a minute)"
                } else {
                    ""
                },
                d.pid,
                fmt_ms(d.started_ms),
                fmt_ms(d.updated_ms)
            );
        }
        if d.live() {
            let _ = writeln!(
                out,
                "  token: {}; last discovery: {}; waiting for disk: {} file{}; throttled: {}",
                d.token,
                d.last_discovery_ms
                    .map_or_else(|| "never".to_owned(), fmt_ms),
                d.disk_waits,
                plural(d.disk_waits),
                match (d.throttled, d.throttled_s) {
                    (true, s) => format!("now ({s}s in all)"),
                    (false, 0) => "no".to_owned(),
                    (false, s) => format!("not now ({s}s in all)"),
                }
            );
            if let Some(s) = &d.status {
                let _ = writeln!(out, "  {s}");
            }
        }
        if let Some(rate) = d.bytes_per_s {
            let _ = writeln!(
                out,
                "  rate: {}/s{}",
                human_bytes(rate),
                d.eta_s
                    .map(|e| format!(", about {} left", fmt_eta(e)))
                    .unwrap_or_default()
            );
        }
        if let Some(e) = &d.last_error {
            let _ = writeln!(
                out,
                "  last error ({}): {}",
                d.last_error_ms.map_or_else(String::new, fmt_ms),
                one_line(e)
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
    if !r.problems.is_empty() {
        out.push_str("files needing attention:\n");
        for f in &r.problems {
            let _ = writeln!(
                out,
                "  {:<8} {} {} ({}): {}",
                f.state,
                f.project,
                one_line(&f.path),
                f.file_id,
                one_line(&f.reason)
            );
        }
    }
    out
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let mut t: String = text.chars().take(max - 1).collect();
        t.push('…');
        t
    }
}

/// A remaining time to the precision a person needs: `45s`, `12m 5s`, `3h 20m`, `2d 4h`.
fn fmt_eta(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if secs < 60 {
        format!("{s}s")
    } else if secs < 3600 {
        format!("{m}m {s}s")
    } else if secs < 86_400 {
        format!("{}h {m}m", secs / 3600)
    } else {
        format!("{d}d {h}h")
    }
}

fn fmt_ms(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Which files `status PROJECT --files` lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileFilter {
    /// Only `failed` and `corrupt` files.
    pub failed: bool,
    /// Only files in this state.
    pub state: Option<FileState>,
}

impl FileFilter {
    fn keeps(&self, state: FileState) -> bool {
        (!self.failed || matches!(state, FileState::Failed | FileState::Corrupt))
            && self.state.is_none_or(|s| s == state)
    }
}

/// `status PROJECT --files`: one project's files.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct FilesReport {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The project's id.
    pub project: String,
    /// Its name.
    pub name: String,
    /// The files the filter kept, by path.
    pub files: Vec<FileLine>,
}

/// One file of [`FilesReport`].
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct FileLine {
    /// File id.
    pub file_id: String,
    /// Local path relative to the project directory.
    pub path: String,
    /// Its state (`pending`, `fetching`, `verified`, ...).
    pub state: String,
    /// Size, bytes.
    pub size: u64,
    /// Bytes on disk and journaled.
    pub bytes_done: u64,
    /// Attempts so far.
    pub attempts: u32,
    /// The last error or the reason for its state.
    pub reason: Option<String>,
    /// Last change, ms since the epoch.
    pub updated_ms: i64,
}

/// One project's files, as `filter` keeps them.
pub fn files_report(
    state_dir: &Path,
    project: &ProjectId,
    filter: &FileFilter,
) -> Result<FilesReport, StatusError> {
    let reader = JournalReader::open(state_dir)?;
    let row = reader
        .project(project)?
        .ok_or_else(|| StatusError::UnknownProject(project.to_string()))?;
    let progress = reader.file_progress(project)?;
    let files = reader
        .files(project)?
        .into_iter()
        .filter(|f| filter.keeps(f.state))
        .map(|f| FileLine {
            bytes_done: if f.state.is_finished() {
                f.size
            } else {
                progress.get(&f.file_id).copied().unwrap_or(0)
            },
            file_id: f.file_id.to_string(),
            path: f.rel_path,
            state: f.state.as_str().to_owned(),
            size: f.size,
            attempts: f.attempts,
            reason: f.reason,
            updated_ms: f.updated_ms,
        })
        .collect();
    Ok(FilesReport {
        schema_version: SCHEMA_VERSION,
        project: row.id.to_string(),
        name: row.name,
        files,
    })
}

/// The files as pretty JSON or as a table (state, size, progress, path, id, last error).
pub fn render_files(r: &FilesReport, json: bool, style: Style) -> Result<String, StatusError> {
    if json {
        return Ok(serde_json::to_string_pretty(&r)? + "\n");
    }
    let mut rows = vec![["STATE", "SIZE", "DONE", "PATH", "FILE", "LAST ERROR"]
        .map(String::from)
        .to_vec()];
    let mut levels = vec![vec![]];
    for f in &r.files {
        let pct = if f.size == 0 {
            100
        } else {
            (f.bytes_done as u128 * 100 / f.size as u128) as u64
        };
        rows.push(vec![
            f.state.clone(),
            human_bytes(f.size),
            format!("{pct}%"),
            one_line(&f.path),
            f.file_id.clone(),
            f.reason.as_deref().map_or_else(|| "-".to_owned(), one_line),
        ]);
        let level = match f.state.as_str() {
            "verified" | "unverified" => Some(Level::Ok),
            "failed" | "corrupt" => Some(Level::Critical),
            "skipped" | "gone" => Some(Level::Warning),
            _ => None,
        };
        levels.push(vec![level]);
    }
    let mut out = format!(
        "{} {:?}: {} files\n",
        r.project,
        one_line(&r.name),
        r.files.len()
    );
    out.push_str(&table(&rows, &levels, style));
    Ok(out)
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
    /// run, a project mirroring near its expiry, an inaccessible one, and a failed file.
    fn report() -> StatusReport {
        let mut r = StatusReport {
            schema_version: SCHEMA_VERSION,
            generated_ms: T0 + 66_000,
            daemon: Some(DaemonLine {
                state: "running".into(),
                recorded_state: "running".into(),
                pid: 4242,
                started_ms: T0,
                updated_ms: T0 + 65_000,
                token: "ok".into(),
                status: Some("2 projects (1 running, 0 queued); 3/5 files done".into()),
                last_discovery_ms: Some(T0 + 1_000),
                last_error: Some("listing project-B: connection reset".into()),
                last_error_ms: Some(T0 + 2_000),
                bytes_per_s: Some(3 << 20),
                eta_s: Some(125),
                disk_waits: 1,
                last_progress_ms: Some(T0 + 64_000),
                ..DaemonLine::default()
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
                    shown_state: "mirroring".into(),
                    files_total: 4,
                    files_done: 3,
                    files_verified: 2,
                    files_unverified: 1,
                    files_failed: 1,
                    bytes_total: 10 << 20,
                    bytes_done: 5 << 20,
                    bytes_per_s: Some(3 << 20),
                    eta_s: Some(2),
                    last_pass_ms: Some(T0 + 1_000),
                    disk_waits: 1,
                    access_expires: Some("2026-01-20".into()),
                    access_days_left: Some(15),
                    access_warning: Some("access to project-A expires in 15 days".into()),
                    ..ProjectLine::default()
                },
                ProjectLine {
                    id: "project-B".into(),
                    name: "revoked\x1b[31m".into(),
                    state: "inaccessible".into(),
                    shown_state: "inaccessible".into(),
                    reason: Some("VIEW permission required".into()),
                    ..ProjectLine::default()
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
            ..StatusReport::default()
        };
        r.health = health(&r, T0 + 66_000, STALLED_AFTER_MS);
        r
    }

    #[test]
    fn the_text_of_a_full_report() {
        let text = render_report(&report(), false, Style::default()).unwrap();
        assert_eq!(
            text,
            r#"PROJECT    NAME                      STATE         FILES  BYTES                     RATE       ETA  FAILED  LAST PASS             ACCESS
project-A  SJ Data Request 2026-001  mirroring     3/4    5.0 MiB / 10.0 MiB (50%)  3.0 MiB/s  2s   1       2026-01-05T10:00:01Z  2026-01-20 (15 days)
project-B  revoked?[31m              inaccessible  0/0    0 B / 0 B (100%)          -          -    0       never                 -
  project-A: 1 file waiting for disk space
  project-A: WARNING: access to project-A expires in 15 days
  project-B: inaccessible: VIEW permission required
daemon: running (pid 4242, running since 2026-01-05T10:00:00Z, updated 2026-01-05T10:01:05Z)
  token: ok; last discovery: 2026-01-05T10:00:01Z; waiting for disk: 1 file; throttled: no
  2 projects (1 running, 0 queued); 3/5 files done
  rate: 3.0 MiB/s, about 2m 5s left
  last error (2026-01-05T10:00:02Z): listing project-B: connection reset
bandwidth limit: 512.0 KiB/s until 2026-01-05T12:00:00Z, then 10.0 MiB/s
last run: daemon started 2026-01-05T10:00:00Z ended 2026-01-05T11:00:00Z (stopped)
files needing attention:
  failed   project-A restricted/bam/x.bam (file-X): no byte for 10m
"#
        );
    }

    #[test]
    fn colours_only_when_asked() {
        let plain = render_report(&report(), false, Style { colour: false }).unwrap();
        assert!(!plain.contains('\x1b'), "{plain}");
        let coloured = render_report(&report(), false, Style { colour: true }).unwrap();
        assert!(
            coloured.contains("\x1b[32mmirroring\x1b[0m     3/4"),
            "{coloured}"
        );
        // Stripped of its colours, the table is the plain one: padding ignores escapes.
        let stripped = coloured
            .replace("\x1b[31m", "")
            .replace("\x1b[32m", "")
            .replace("\x1b[33m", "")
            .replace("\x1b[0m", "");
        assert_eq!(stripped, plain);
    }

    #[test]
    fn the_text_of_a_stale_daemon_and_no_run() {
        let mut r = report();
        let d = r.daemon.as_mut().unwrap();
        d.stale = true;
        d.bytes_per_s = None;
        d.status = None;
        d.last_discovery_ms = None;
        d.last_error = None;
        r.last_run = None;
        r.projects.clear();
        r.problems.clear();
        r.bandwidth = None;
        // No rate for a daemon that does not answer.
        let text = render_report(&r, false, Style::default()).unwrap();
        assert_eq!(
            text,
            r#"no project known yet
daemon: running, NOT RESPONDING (no update for over a minute) (pid 4242, running since 2026-01-05T10:00:00Z, updated 2026-01-05T10:01:05Z)
no run recorded yet
"#
        );
    }

    #[test]
    fn a_gone_daemon_is_down_with_when_it_was_last_seen() {
        let mut r = report();
        let d = r.daemon.as_mut().unwrap();
        d.down = true;
        d.state = "down".into();
        d.bytes_per_s = None;
        r.projects.clear();
        r.problems.clear();
        r.health = health(&r, T0 + 66_000, STALLED_AFTER_MS);
        let text = render_report(&r, false, Style::default()).unwrap();
        assert!(
            text.starts_with(
                "no project known yet\ndaemon: down (pid 4242 is gone; it recorded running), last seen 2026-01-05T10:01:05Z\n"
            ),
            "{text}"
        );
        assert!(!text.contains("rate:"), "{text}");
        assert_eq!(
            render_check(&r),
            "DXMIRROR CRITICAL - daemon down: pid 4242 is gone, last seen 2026-01-05T10:01:05Z (and 1 more)\n\
             CRITICAL: daemon down: pid 4242 is gone, last seen 2026-01-05T10:01:05Z\n\
             WARNING: 1 file waiting for disk space\n"
        );
        assert_eq!(r.health.level.exit_code(), 2);
    }

    #[test]
    fn the_check_names_the_worst_first() {
        let r = report();
        assert_eq!(r.health.level, Level::Critical);
        assert_eq!(
            render_check(&r),
            "DXMIRROR CRITICAL - 1 failed or corrupt file (project-A) (and 3 more)\n\
             CRITICAL: 1 failed or corrupt file (project-A)\n\
             WARNING: 1 file waiting for disk space\n\
             WARNING: project-A: access expires on 2026-01-20 (15 days left)\n\
             WARNING: project-B: project inaccessible\n"
        );
    }

    #[test]
    fn check_levels_follow_the_plugin_convention() {
        let check = |f: &dyn Fn(&mut StatusReport)| {
            let mut r = report();
            r.projects.truncate(1);
            r.problems.clear();
            let p = &mut r.projects[0];
            (p.files_failed, p.disk_waits, p.access_days_left) = (0, 0, Some(400));
            r.daemon.as_mut().unwrap().disk_waits = 0;
            f(&mut r);
            health(&r, T0 + 66_000, STALLED_AFTER_MS).level
        };
        assert_eq!(check(&|_| {}), Level::Ok);
        assert_eq!(
            check(&|r| r.projects[0].access_days_left = Some(30)),
            Level::Warning
        );
        assert_eq!(
            check(&|r| r.projects[0].access_days_left = Some(-1)),
            Level::Critical
        );
        assert_eq!(
            check(&|r| r.daemon.as_mut().unwrap().disk_waits = 2),
            Level::Warning
        );
        assert_eq!(
            check(&|r| r.daemon.as_mut().unwrap().token = "refused".into()),
            Level::Critical
        );
        assert_eq!(
            check(&|r| r.daemon.as_mut().unwrap().throttled = true),
            Level::Warning
        );
        assert_eq!(
            check(&|r| r.daemon.as_mut().unwrap().stale = true),
            Level::Critical
        );
        // A cleanly stopped daemon is not expected to run.
        assert_eq!(
            check(&|r| r.daemon.as_mut().unwrap().recorded_state = "stopped".into()),
            Level::Ok
        );
        // Stalled: work pending and no byte for over an hour.
        let stalled = |r: &mut StatusReport| {
            r.projects[0].shown_state = "pending".into();
            r.daemon.as_mut().unwrap().last_progress_ms = Some(T0 + 66_000 - STALLED_AFTER_MS - 1);
        };
        assert_eq!(check(&stalled), Level::Warning);
        assert_eq!(
            check(&|r| {
                stalled(r);
                r.daemon.as_mut().unwrap().last_progress_ms = Some(T0);
            }),
            Level::Ok
        );
        assert_eq!(Level::Unknown.exit_code(), 3);
    }

    #[test]
    fn unknown_check_and_error_json() {
        assert_eq!(
            unknown_check("no journal at /x\nsecond line"),
            "DXMIRROR UNKNOWN - no journal at /x?second line\n"
        );
        let v: serde_json::Value =
            serde_json::from_str(&error_json("no-journal", "no journal at /x")).unwrap();
        assert_eq!(v["schema_version"], SCHEMA_VERSION);
        assert_eq!(v["error"]["kind"], "no-journal");
    }

    #[test]
    fn our_own_process_is_not_gone_and_a_later_start_is() {
        let pid = std::process::id();
        assert!(!process_is_gone(pid, crate::clock::now_ms()));
        // A daemon that recorded a start long before this process began is another one.
        assert!(process_is_gone(pid, 0));
        // No such pid (beyond the kernel's pid_max).
        assert!(process_is_gone(u32::MAX - 1, crate::clock::now_ms()));
    }

    #[test]
    fn eta_precision() {
        assert_eq!(fmt_eta(45), "45s");
        assert_eq!(fmt_eta(125), "2m 5s");
        assert_eq!(fmt_eta(3 * 3600 + 20 * 60 + 7), "3h 20m");
        assert_eq!(fmt_eta(2 * 86_400 + 4 * 3600 + 1), "2d 4h");
    }
}
