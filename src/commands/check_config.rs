//! `dxmirror check-config [--online]`: validates a config file and prints the settings in
//! force, then checks what a run needs: the state directory and the mirror root (exists, a
//! directory, writable, owner, file system, free space against `disk-reserve`) and the token
//! (the token itself is never printed). With `--online` it also asks the API who the token
//! is (`/system/whoami`) and describes every configured project (name, permission level,
//! download-restricted, files listed, selected and to fetch). It writes nothing.
//!
//! Exit status 0 only when every check passes, else the status of the first that failed, in
//! the report's order (`exit`: `CHECK_DIRS`, `CHECK_TOKEN`, `CHECK_API`, `CHECK_PROJECT`).
//!
//! [`render`] is pure, so the report is unit-tested; [`run`] gathers its inputs.

use std::fmt::Display;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use humantime::format_duration;

use dxmirror::config::{Config, ConfigError, TokenOrigin};
use dxmirror::journal::{JournalError, JournalReader};
use dxmirror::platform::{ApiDisposition, DxClient};
use dxmirror::sync::ProjectPreview;
use dxmirror::units::human_bytes;

use super::{config_path, exit, plural};

/// Runs `dxmirror check-config [--online]`.
pub(crate) async fn run(config: Option<PathBuf>, online: bool) -> anyhow::Result<ExitCode> {
    let path = config_path(config);
    let cfg = Config::load(&path)?;
    let token = cfg.token();
    let online = match (&token, online) {
        (Ok((token, _)), true) => Some(check_online(&cfg, token.clone()).await),
        _ => None,
    };
    let checks = Checks {
        state_dir: state_dir_facts(&cfg.state_dir),
        mirror_root: mirror_root_facts(&cfg.mirror_root),
        token: token.map(|(_, origin)| origin),
        online,
    };
    let (report, status) = render(&path, &cfg, &checks);
    print!("{report}");
    Ok(ExitCode::from(status))
}

/// What was found of one directory.
#[derive(Debug, Default)]
pub(crate) struct DirFacts {
    /// Why it cannot be used, when it cannot.
    pub(crate) problem: Option<String>,
    /// It does not exist yet and the first run creates it (the state directory).
    pub(crate) created_by_sync: bool,
    /// Its owner, as `name (uid N)`.
    pub(crate) owner: Option<String>,
    /// Its permission bits.
    pub(crate) mode: Option<u32>,
    /// The file system type holding it (or its nearest existing ancestor).
    pub(crate) fs: Option<String>,
    /// Free bytes on that file system.
    pub(crate) free: Option<u64>,
    /// The user this check runs as, who was found able (or not) to write it.
    pub(crate) user: String,
}

/// What the API said, with `--online`.
#[derive(Debug)]
pub(crate) struct Online {
    /// The API's base URL.
    pub(crate) api_url: String,
    /// `/system/whoami`: the user id, or why not (refused: the token; else the API).
    pub(crate) whoami: Result<String, (bool, String)>,
    /// Every configured project, when the token was accepted.
    pub(crate) projects: Vec<ProjectPreview>,
}

/// Everything `render` reports beyond the settings.
#[derive(Debug)]
pub(crate) struct Checks {
    pub(crate) state_dir: DirFacts,
    pub(crate) mirror_root: DirFacts,
    pub(crate) token: Result<TokenOrigin, ConfigError>,
    pub(crate) online: Option<Online>,
}

/// Owner, mode, file system and free space of the directory at `path` (or, when it is
/// missing, of its nearest existing ancestor for the file system).
fn facts_of(path: &Path) -> DirFacts {
    let mut f = DirFacts {
        user: dxmirror::dirs::current_user(),
        ..DirFacts::default()
    };
    if let Ok(meta) = std::fs::metadata(path) {
        f.owner = Some(dxmirror::dirs::user_name(meta.uid()));
        f.mode = Some(meta.mode() & 0o7777);
    }
    let mut probe = path.to_owned();
    while !probe.exists() {
        match probe.parent() {
            Some(p) if !p.as_os_str().is_empty() => probe = p.to_owned(),
            _ => break,
        }
    }
    f.fs = dxmirror::journal::fs_type(&probe);
    f.free = dxmirror::store::free_space(&probe).ok();
    f
}

/// The state directory: local, and a directory this user may write, or missing with a parent
/// this user may create it in. Creates nothing.
fn state_dir_facts(path: &Path) -> DirFacts {
    let mut f = facts_of(path);
    if let Err(e) = dxmirror::journal::require_local_state_dir(path) {
        f.problem = Some(e.to_string());
        return f;
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    match std::fs::metadata(path) {
        Ok(m) if !m.is_dir() => f.problem = Some(format!("{} is not a directory", path.display())),
        Ok(_) => f.problem = writable_problem(path),
        Err(_) if !parent.is_dir() => {
            f.problem = Some(format!(
                "neither it nor its parent directory {} exists (only the state directory itself is created)",
                parent.display()
            ));
        }
        Err(_) => {
            f.created_by_sync = true;
            f.problem = writable_problem(&parent).map(|p| format!("cannot be created: {p}"));
        }
    }
    f
}

/// The mirror root: an existing directory this user may write.
fn mirror_root_facts(path: &Path) -> DirFacts {
    let mut f = facts_of(path);
    f.problem = dxmirror::dirs::check_mirror_root(path)
        .err()
        .map(|e| e.to_string());
    f
}

/// Why this process may not create entries in the directory `dir`, if it may not.
fn writable_problem(dir: &Path) -> Option<String> {
    use rustix::fs::Access;
    match rustix::fs::access(dir, Access::WRITE_OK | Access::EXEC_OK) {
        Ok(()) => None,
        Err(rustix::io::Errno::ROFS) => {
            Some(format!("{} is on a read-only file system", dir.display()))
        }
        Err(_) => Some(format!(
            "{} is not writable by {}",
            dir.display(),
            dxmirror::dirs::current_user()
        )),
    }
}

/// Fewer attempts than a sync makes: a check says at once that the API cannot be reached.
const ONLINE_API_RETRIES: u32 = 2;

/// Asks the API who the token is, then describes every configured project.
async fn check_online(cfg: &Config, token: dxmirror::model::ApiToken) -> Online {
    let mut online = Online {
        api_url: cfg.api_url.clone(),
        whoami: Err((false, String::new())),
        projects: Vec::new(),
    };
    let mut pc = dxmirror::pass::platform_config(cfg, token, Default::default());
    pc.max_api_retries = ONLINE_API_RETRIES;
    let client = match DxClient::new(pc) {
        Ok(c) => c,
        Err(e) => {
            online.whoami = Err((false, e.to_string()));
            return online;
        }
    };
    online.whoami = match client.whoami().await {
        Ok(user) => Ok(user),
        Err(e) => {
            let refused = e.api_disposition() == ApiDisposition::BadToken;
            let tries = ONLINE_API_RETRIES + 1;
            let why = if refused {
                format!("the API refused the token: {e}")
            } else {
                format!(
                    "cannot reach the API at {} after {tries} attempts: {e}",
                    cfg.api_url
                )
            };
            return Online {
                whoami: Err((refused, why)),
                ..online
            };
        }
    };
    let journal = match JournalReader::open(&cfg.state_dir) {
        Ok(j) => Some(j),
        Err(JournalError::Missing(_)) => None,
        Err(_) => None,
    };
    for project in &cfg.projects {
        match dxmirror::pass::preview_project(cfg, &client, journal.as_ref(), project).await {
            Ok(p) => online.projects.push(p),
            Err(e) => {
                online.whoami = Err((true, e.to_string()));
                break;
            }
        }
    }
    online
}

/// One line of the report: `label` in a column, then `value`.
fn row(out: &mut String, indent: usize, label: &str, value: impl Display) {
    let width = 26 - indent;
    out.push_str(&format!("{:indent$}{label:<width$} {value}\n", ""));
}

/// The line of one directory, and whether it is usable. `reserve` is `disk-reserve`, said
/// against the mirror root's free space.
fn dir_line(f: &DirFacts, path: &Path, reserve: Option<u64>) -> (String, bool) {
    if let Some(p) = &f.problem {
        return (format!("NOT USABLE: {p}"), false);
    }
    let mut parts = vec![if f.created_by_sync {
        format!(
            "{} does not exist yet: the first run creates it",
            path.display()
        )
    } else {
        format!("{} is a directory", path.display())
    }];
    if let Some(owner) = &f.owner {
        let mode = f
            .mode
            .map(|m| format!(", mode {m:04o}"))
            .unwrap_or_default();
        parts.push(format!("owner {owner}{mode}"));
    }
    parts.push(format!("writable by {}", f.user));
    if let Some(fs) = &f.fs {
        parts.push(fs.clone());
    }
    if let Some(free) = f.free {
        match reserve {
            Some(r) if free < r => parts.push(format!(
                "{} free, LESS than disk-reserve {}: files wait for space",
                human_bytes(free),
                human_bytes(r)
            )),
            Some(r) => parts.push(format!(
                "{} free ({} usable above disk-reserve {})",
                human_bytes(free),
                human_bytes(free - r),
                human_bytes(r)
            )),
            None => parts.push(format!("{} free", human_bytes(free))),
        }
    }
    (parts.join(", "), true)
}

/// The line of one project, and whether it can be mirrored.
fn project_line(p: &ProjectPreview) -> (String, bool) {
    let name = if p.name.is_empty() {
        String::new()
    } else {
        format!(" {:?}", p.name)
    };
    if let Some(e) = &p.error {
        return (format!("{}{name}: NOT MIRRORABLE: {e}", p.id), false);
    }
    let level = p
        .level
        .as_deref()
        .map(|l| format!("level {l}, "))
        .unwrap_or_default();
    let mut line = format!(
        "{}{name}: {level}{} listed, {} left out by filters, {} not downloadable now, {} to fetch ({})",
        p.id,
        plural(p.files_listed as u64, "file"),
        p.files_filtered,
        p.files_unavailable,
        p.files_to_fetch,
        human_bytes(p.bytes_to_fetch)
    );
    if p.selects_nothing() {
        line.push_str("; WARNING: the filters select no file of it");
    }
    if p.sample_info_missing {
        line.push_str("; the sample-info filters apply once SAMPLE_INFO.txt is mirrored (counted without them)");
    }
    (line, true)
}

/// The report on `cfg`, loaded from `path`, given the checks' findings, and the exit status:
/// 0 when every check passes, else the status of the first that failed.
pub(crate) fn render(path: &Path, cfg: &Config, checks: &Checks) -> (String, u8) {
    let mut out = format!("config {} is valid\n", path.display());
    let o = &mut out;
    row(o, 2, "api-url", &cfg.api_url);
    row(o, 2, "mirror-root", cfg.mirror_root.display());
    row(o, 2, "state-dir", cfg.state_dir.display());
    if let Some(t) = &cfg.token_file {
        row(o, 2, "token-file", t.display());
    }
    if let Some(ca) = &cfg.ca_file {
        row(o, 2, "ca-file", ca.display());
    }
    row(o, 2, "max-connections", cfg.max_connections);
    row(
        o,
        2,
        "max-connections-per-file",
        cfg.max_connections_per_file,
    );
    row(o, 2, "chunk-size", human_bytes(cfg.chunk_size));
    row(o, 2, "progress-step", human_bytes(cfg.progress_step));
    row(o, 2, "stall-timeout", format_duration(cfg.stall_timeout));
    row(o, 2, "file-patience", format_duration(cfg.file_patience));
    row(o, 2, "max-verify-retries", cfg.max_verify_retries);
    row(o, 2, "disk-reserve", human_bytes(cfg.disk_reserve));
    row(o, 2, "disk-poll", format_duration(cfg.disk_poll));
    row(o, 2, "bwlimit", &cfg.bwlimit);
    match &cfg.audit_log {
        Some(a) => row(o, 2, "audit-log", a.display()),
        None => row(o, 2, "audit-log", "none (the journal keeps the trail)"),
    }
    row(o, 2, "filter", cfg.filter.describe());
    for p in &cfg.projects {
        let st = cfg.settings(p);
        let expires = st
            .access_expires
            .map(|d| format!(", access expires {d}"))
            .unwrap_or_default();
        let bwlimit = st
            .bwlimit
            .as_ref()
            .map(|b| format!(", bwlimit {b}"))
            .unwrap_or_default();
        row(
            o,
            2,
            "project",
            format!("{p} (priority {}{expires}{bwlimit})", st.priority),
        );
        if let Some(f) = cfg.project_filters.get(p) {
            row(o, 4, "selects", f.describe());
        }
    }
    let d = &cfg.discovery;
    if d.enabled {
        row(
            o,
            2,
            "discovery",
            format!(
                "every {}, level {}, tags {:?}, name {:?}, properties {:?}",
                format_duration(d.interval),
                d.level,
                d.tags,
                d.name.as_deref().unwrap_or("*"),
                d.properties
            ),
        );
    } else {
        row(o, 2, "discovery", "off");
    }
    row(
        o,
        2,
        "relist",
        format!("every {}", format_duration(cfg.relist_interval)),
    );
    if let Some(w) = &cfg.watch {
        row(
            o,
            2,
            "watch",
            format!(
                "{} (rescan every {})",
                w.dir.display(),
                format_duration(w.rescan)
            ),
        );
    }
    match &cfg.verify {
        Some(v) => row(
            o,
            2,
            "verify",
            format!(
                "every {}, {}",
                format_duration(v.interval),
                if v.repair { "repair" } else { "report only" }
            ),
        ),
        None => row(o, 2, "verify", "not scheduled"),
    }
    match &cfg.metrics_listen {
        Some(a) => row(o, 2, "metrics", format!("http://{a}/metrics")),
        None => row(o, 2, "metrics", "off"),
    }

    let mut status = exit::OK;
    let mut fail = |code: u8| {
        if status == exit::OK {
            status = code;
        }
    };
    out.push_str("checks\n");
    let o = &mut out;
    let (line, ok) = dir_line(&checks.state_dir, &cfg.state_dir, None);
    row(o, 2, "state-dir", line);
    if !ok {
        fail(exit::CHECK_DIRS);
    }
    let (line, ok) = dir_line(
        &checks.mirror_root,
        &cfg.mirror_root,
        Some(cfg.disk_reserve),
    );
    row(o, 2, "mirror-root", line);
    if !ok {
        fail(exit::CHECK_DIRS);
    }
    match &checks.token {
        Ok(origin) => row(o, 2, "token", format!("from {origin} (not shown)")),
        Err(e) => {
            row(o, 2, "token", format!("NOT USABLE: {e}"));
            fail(exit::CHECK_TOKEN);
        }
    }
    match &checks.online {
        None if checks.token.is_ok() => row(
            o,
            2,
            "api",
            "not asked (check-config --online asks who the token is and describes every project)",
        ),
        None => {}
        Some(online) => match &online.whoami {
            Ok(user) => {
                row(
                    o,
                    2,
                    "api",
                    format!("{}: logged in as {user}", online.api_url),
                );
                for p in &online.projects {
                    let (line, ok) = project_line(p);
                    row(o, 2, "project", line);
                    if !ok {
                        fail(exit::CHECK_PROJECT);
                    }
                }
            }
            Err((refused, why)) => {
                row(o, 2, "api", format!("NOT USABLE: {why}"));
                fail(if *refused {
                    exit::CHECK_TOKEN
                } else {
                    exit::CHECK_API
                });
            }
        },
    }
    (out, status)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn config(text: &str) -> Config {
        Config::from_toml(text, Path::new("/etc/d.toml"), &|_| None).unwrap()
    }

    const FULL: &str = r#"
mirror-root = "/srv/m"
state-dir = "/var/lib/d"
ca-file = "/etc/ca.pem"
chunk-size = "8MiB"
[filter]
exclude = ["**/*.tmp"]
[discovery]
enabled = true
interval = "15m"
level = "VIEW"
tags = ["t"]
[relist]
interval = "2h"
[watch]
dir = "/var/lib/d/inbox"
rescan = "1m"
[[project]]
id = "project-GZ0yq4Q0fXbqfKZ3Bj0xYv7P"
file-types = ["gVCF"]
priority = 10
access-expires = "2027-05-01"
"#;

    fn good_dir() -> DirFacts {
        DirFacts {
            owner: Some("dxmirror (uid 998)".into()),
            mode: Some(0o750),
            fs: Some("ext4".into()),
            free: Some(5 << 30),
            user: "dxmirror (uid 998)".into(),
            ..DirFacts::default()
        }
    }

    fn checks(token: Result<TokenOrigin, ConfigError>, online: Option<Online>) -> Checks {
        Checks {
            state_dir: good_dir(),
            mirror_root: good_dir(),
            token,
            online,
        }
    }

    fn preview(id: &str) -> ProjectPreview {
        ProjectPreview {
            id: id.into(),
            name: "SJ Data".into(),
            level: Some("VIEW".into()),
            download_restricted: false,
            error: None,
            files_listed: 12,
            files_filtered: 2,
            files_unavailable: 1,
            files_to_fetch: 9,
            bytes_to_fetch: 3 << 20,
            sample_info_missing: false,
        }
    }

    #[test]
    fn the_report_lists_every_setting_in_force_then_the_checks() {
        let (text, status) = render(
            Path::new("/etc/d.toml"),
            &config(FULL),
            &checks(Ok(TokenOrigin::EnvToken), None),
        );
        assert_eq!(status, exit::OK);
        assert_eq!(
            text,
            r#"config /etc/d.toml is valid
  api-url                  https://api.dnanexus.com
  mirror-root              /srv/m
  state-dir                /var/lib/d
  ca-file                  /etc/ca.pem
  max-connections          16
  max-connections-per-file 8
  chunk-size               8.0 MiB
  progress-step            4.0 MiB
  stall-timeout            1m
  file-patience            30m
  max-verify-retries       3
  disk-reserve             1.0 GiB
  disk-poll                10s
  bwlimit                  off
  audit-log                none (the journal keeps the trail)
  filter                   exclude ["**/*.tmp"]
  project                  project-GZ0yq4Q0fXbqfKZ3Bj0xYv7P (priority 10, access expires 2027-05-01)
    selects                file-types ["gVCF"]
  discovery                every 15m, level VIEW, tags ["t"], name "*", properties {}
  relist                   every 2h
  watch                    /var/lib/d/inbox (rescan every 1m)
  verify                   not scheduled
  metrics                  off
checks
  state-dir                /var/lib/d is a directory, owner dxmirror (uid 998), mode 0750, writable by dxmirror (uid 998), ext4, 5.0 GiB free
  mirror-root              /srv/m is a directory, owner dxmirror (uid 998), mode 0750, writable by dxmirror (uid 998), ext4, 5.0 GiB free (4.0 GiB usable above disk-reserve 1.0 GiB)
  token                    from environment variable DX_API_TOKEN (not shown)
  api                      not asked (check-config --online asks who the token is and describes every project)
"#
        );
    }

    #[test]
    fn online_the_report_says_who_the_token_is_and_describes_every_project() {
        let mut quiet = preview("project-B");
        quiet.files_filtered = quiet.files_listed;
        quiet.files_to_fetch = 0;
        quiet.bytes_to_fetch = 0;
        let online = Online {
            api_url: "http://127.0.0.1:1".into(),
            whoami: Ok("user-alice".into()),
            projects: vec![preview("project-A"), quiet],
        };
        let cfg = config(FULL);
        let (text, status) = render(
            Path::new("d.toml"),
            &cfg,
            &checks(Ok(TokenOrigin::EnvToken), Some(online)),
        );
        assert_eq!(status, exit::OK, "{text}");
        assert!(
            text.ends_with(
                "  api                      http://127.0.0.1:1: logged in as user-alice\n\
                 \x20 project                  project-A \"SJ Data\": level VIEW, 12 files listed, 2 left out by filters, 1 not downloadable now, 9 to fetch (3.0 MiB)\n\
                 \x20 project                  project-B \"SJ Data\": level VIEW, 12 files listed, 12 left out by filters, 1 not downloadable now, 0 to fetch (0 B); WARNING: the filters select no file of it\n"
            ),
            "{text}"
        );
        // A project that cannot be mirrored fails the check.
        let mut restricted = preview("project-C");
        restricted.error = Some("download-restricted: its data may not be downloaded".into());
        let online = Online {
            api_url: "u".into(),
            whoami: Ok("user-alice".into()),
            projects: vec![restricted],
        };
        let (text, status) = render(
            Path::new("d.toml"),
            &cfg,
            &checks(Ok(TokenOrigin::EnvToken), Some(online)),
        );
        assert_eq!(status, exit::CHECK_PROJECT);
        assert!(
            text.contains("project-C \"SJ Data\": NOT MIRRORABLE: download-restricted"),
            "{text}"
        );
    }

    #[test]
    fn each_failed_check_has_its_exit_status_the_first_one_wins() {
        let cfg = config("mirror-root = \"/srv/m\"\nstate-dir = \"/var/lib/d\"\n");
        let (text, status) = render(
            Path::new("d.toml"),
            &cfg,
            &checks(Err(ConfigError::NoToken), None),
        );
        assert_eq!(status, exit::CHECK_TOKEN);
        assert!(text.contains("  discovery                off\n"), "{text}");
        assert!(
            text.ends_with(&format!(
                "  token                    NOT USABLE: {}\n",
                ConfigError::NoToken
            )),
            "{text}"
        );
        for (refused, code) in [(true, exit::CHECK_TOKEN), (false, exit::CHECK_API)] {
            let online = Online {
                api_url: "u".into(),
                whoami: Err((refused, "why".into())),
                projects: Vec::new(),
            };
            let (text, status) = render(
                Path::new("d.toml"),
                &cfg,
                &checks(Ok(TokenOrigin::EnvToken), Some(online)),
            );
            assert_eq!(status, code);
            assert!(
                text.ends_with("  api                      NOT USABLE: why\n"),
                "{text}"
            );
        }
        // An unusable state directory comes first, and the rest is still reported.
        let mut c = checks(Err(ConfigError::NoToken), None);
        c.state_dir.problem = Some("state-dir /var/lib/d is on a NFS file system".into());
        c.mirror_root.free = Some(1 << 20);
        let (text, status) = render(Path::new("d.toml"), &cfg, &c);
        assert_eq!(status, exit::CHECK_DIRS);
        assert!(
            text.contains("  state-dir                NOT USABLE: state-dir /var/lib/d is on a NFS file system\n"),
            "{text}"
        );
        assert!(
            text.contains("1.0 MiB free, LESS than disk-reserve 1.0 GiB: files wait for space"),
            "{text}"
        );
        assert!(
            text.contains("  token                    NOT USABLE: "),
            "{text}"
        );
        // A state directory not created yet is fine.
        let mut c = checks(Ok(TokenOrigin::EnvToken), None);
        c.state_dir = DirFacts {
            created_by_sync: true,
            user: "root (uid 0)".into(),
            ..DirFacts::default()
        };
        let (text, status) = render(Path::new("d.toml"), &cfg, &c);
        assert_eq!(status, exit::OK);
        assert!(text.contains("/var/lib/d does not exist yet: the first run creates it, writable by root (uid 0)\n"), "{text}");
    }
}
