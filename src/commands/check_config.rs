//! `dxmirror check-config`: validates a config file and prints the resolved settings, then
//! whether the state directory and the token can be used (the token itself is never printed).
//! Exit status 0 only when both can, else the status of the check that failed (`exit`).
//!
//! [`render`] is pure, so the report is unit-tested; [`run`] gathers its inputs.

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use humantime::format_duration;

use dxmirror::config::{Config, ConfigError, TokenOrigin};
use dxmirror::journal::FsCheckError;
use dxmirror::units::human_bytes;

use super::{config_path, exit};

/// Runs `dxmirror check-config`.
pub(crate) fn run(config: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let path = config_path(config);
    let cfg = Config::load(&path)?;
    let state_dir = dxmirror::journal::require_local_state_dir(&cfg.state_dir);
    let token = cfg.token().map(|(_, origin)| origin);
    let (report, status) = render(&path, &cfg, state_dir, token);
    print!("{report}");
    Ok(ExitCode::from(status))
}

/// One line of the report: `label` in a column, then `value`.
fn row(out: &mut String, indent: usize, label: &str, value: impl Display) {
    let width = 26 - indent;
    out.push_str(&format!("{:indent$}{label:<width$} {value}\n", ""));
}

/// The report on `cfg`, loaded from `path`, given what the state-directory check and the
/// token resolution found, and the exit status: 0 when both are usable, else the status of
/// the check that failed (`exit::CHECK_DIRS`, `exit::CHECK_TOKEN`). An unusable state
/// directory ends the report before the token's line.
pub(crate) fn render(
    path: &Path,
    cfg: &Config,
    state_dir: Result<(), FsCheckError>,
    token: Result<TokenOrigin, ConfigError>,
) -> (String, u8) {
    let mut out = format!("config {} is valid\n", path.display());
    let o = &mut out;
    row(o, 2, "api-url", &cfg.api_url);
    row(o, 2, "mirror-root", cfg.mirror_root.display());
    row(o, 2, "state-dir", cfg.state_dir.display());
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
    row(o, 2, "disk-reserve", human_bytes(cfg.disk_reserve));
    row(o, 2, "filter", cfg.filter.describe());
    for p in &cfg.projects {
        let st = cfg.settings(p);
        let expires = st
            .access_expires
            .map(|d| format!(", access expires {d}"))
            .unwrap_or_default();
        row(
            o,
            2,
            "project",
            format!("{p} (priority {}{expires})", st.priority),
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
    if let Err(e) = state_dir {
        row(o, 2, "state-dir", format!("NOT USABLE: {e}"));
        return (out, exit::CHECK_DIRS);
    }
    match token {
        Ok(origin) => row(o, 2, "token", format!("from {origin} (not shown)")),
        Err(e) => {
            row(o, 2, "token", format!("NOT USABLE: {e}"));
            return (out, exit::CHECK_TOKEN);
        }
    }
    (out, exit::OK)
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

    #[test]
    fn the_report_lists_the_resolved_settings_and_the_token_origin() {
        let (text, status) = render(
            Path::new("/etc/d.toml"),
            &config(FULL),
            Ok(()),
            Ok(TokenOrigin::EnvToken),
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
  disk-reserve             1.0 GiB
  filter                   exclude ["**/*.tmp"]
  project                  project-GZ0yq4Q0fXbqfKZ3Bj0xYv7P (priority 10, access expires 2027-05-01)
    selects                file-types ["gVCF"]
  discovery                every 15m, level VIEW, tags ["t"], name "*", properties {}
  relist                   every 2h
  watch                    /var/lib/d/inbox (rescan every 1m)
  token                    from environment variable DX_API_TOKEN (not shown)
"#
        );
    }

    #[test]
    fn an_unusable_state_dir_or_token_says_why_and_fails() {
        let cfg = config("mirror-root = \"/srv/m\"\nstate-dir = \"/var/lib/d\"\n");
        let (text, status) = render(Path::new("d.toml"), &cfg, Ok(()), Err(ConfigError::NoToken));
        assert_eq!(status, exit::CHECK_TOKEN);
        assert!(text.contains("  discovery                off\n"), "{text}");
        assert!(
            text.ends_with(&format!(
                "  token                    NOT USABLE: {}\n",
                ConfigError::NoToken
            )),
            "{text}"
        );
        let network = FsCheckError::Network {
            path: "/var/lib/d".into(),
            fs: "NFS".into(),
        };
        let why = network.to_string();
        let (text, status) = render(
            Path::new("d.toml"),
            &cfg,
            Err(network),
            Ok(TokenOrigin::EnvToken),
        );
        assert_eq!(status, exit::CHECK_DIRS);
        // The state directory ends the report: no token line.
        assert!(
            text.ends_with(&format!("  state-dir                NOT USABLE: {why}\n")),
            "{text}"
        );
        assert!(!text.contains("token"), "{text}");
    }
}
