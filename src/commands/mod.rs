//! One file per subcommand, each with a `run` that the dispatch in `main.rs` calls and that
//! returns the exit status; here, what several of them share: where the config file is, how
//! progress is shown, and the summary a sync prints.
//!
//! The binary's code: `anyhow` adds context on the way up, and the library is only called.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use dxmirror::sync::{ProgressMode, SyncSummary};
use dxmirror::units::human_bytes;

pub(crate) mod audit;
pub(crate) mod check_config;
pub(crate) mod control;
pub(crate) mod daemon;
pub(crate) mod demo;
pub(crate) mod docs;
pub(crate) mod exit;
pub(crate) mod export;
pub(crate) mod owner;
pub(crate) mod purge;
pub(crate) mod sandbox;
pub(crate) mod status;
pub(crate) mod sync;
pub(crate) mod verify;

/// The config file: the one given, else `$DXMIRROR_CONFIG`, else `/etc/dxmirror/config.toml`.
pub(crate) fn config_path(explicit: Option<PathBuf>) -> PathBuf {
    explicit
        .or_else(|| std::env::var_os("DXMIRROR_CONFIG").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/etc/dxmirror/config.toml"))
}

/// How a sync shows its progress: a bar on a terminal (with `--quiet` too), else a line
/// every 10 s, or nothing with `--quiet`.
pub(crate) fn progress_mode(quiet: bool) -> ProgressMode {
    if std::io::stderr().is_terminal() {
        // -q keeps the bar; the log drops to warnings (telemetry).
        ProgressMode::Bar
    } else if quiet {
        ProgressMode::Quiet
    } else {
        ProgressMode::Lines(Duration::from_secs(10))
    }
}

/// What a skip reason is summarised under: a file the platform cannot serve now (open or
/// archived), or the filter rule that left it out (its scope and kind, without the file's own
/// values).
fn skip_group(reason: &str) -> (bool, String) {
    if reason.starts_with("file is ") {
        return (false, String::new());
    }
    let reason = reason
        .strip_prefix("excluded by filter: ")
        .unwrap_or(reason);
    let (scope, rule) = reason.split_once(": ").unwrap_or(("filter", reason));
    let kind = if let Some(glob) = rule.strip_prefix("matches exclude glob ") {
        format!("exclude {glob}")
    } else if rule.starts_with("matches no include glob") {
        "include".to_owned()
    } else if rule.starts_with("file type ") {
        "file-types".to_owned()
    } else if rule.contains("SAMPLE_INFO.txt") {
        "sample-info".to_owned()
    } else {
        rule.to_owned()
    };
    (true, format!("{scope} {kind}"))
}

/// The skipped files of project `id`, summarised: one line for those the filters left out
/// (counted by rule), one for those the platform cannot serve now; each says how to list them.
pub(crate) fn skipped_summary<'a>(id: &str, reasons: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut by_rule: std::collections::BTreeMap<String, u64> = Default::default();
    let (mut filtered, mut unavailable) = (0u64, 0u64);
    for reason in reasons {
        match skip_group(reason) {
            (true, rule) => {
                filtered += 1;
                *by_rule.entry(rule).or_default() += 1;
            }
            (false, _) => unavailable += 1,
        }
    }
    let list = format!("dxmirror status {id} --files --state skipped lists them");
    let mut out = Vec::new();
    if filtered > 0 {
        let rules: Vec<String> = by_rule.iter().map(|(r, n)| format!("{r}: {n}")).collect();
        out.push(format!(
            "{} left out by filters ({}); {list}",
            plural(filtered, "file"),
            rules.join(", ")
        ));
    }
    if unavailable > 0 {
        out.push(format!(
            "{} not downloadable now (open or archived; fetched once they are); {list}",
            plural(unavailable, "file")
        ));
    }
    out
}

/// The error and its causes, `: `-separated, each said once: a cause whose text the message
/// above it already contains (a `{source}` in a thiserror message) is not repeated.
pub(crate) fn error_text(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// `n` and the noun, plural unless `n` is 1: `1 file`, `3 files`.
pub(crate) fn plural(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("{n} {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// Prints what a sync did, project by project, and whether every eligible file is mirrored.
pub(crate) fn print_summary(summary: &SyncSummary) {
    let secs = summary.elapsed.as_secs_f64().max(0.001);
    for p in &summary.projects {
        println!(
            "project {} {:?}: {} verified, {} unverified (no platform checksum), {} fetched now",
            p.id, p.name, p.verified, p.unverified, p.fetched_now
        );
        if let Some(err) = &p.error {
            println!("  ERROR: {err}");
        }
        let (skipped, attention): (Vec<_>, Vec<_>) =
            p.problems.iter().partition(|prob| prob.state == "skipped");
        for prob in attention {
            println!(
                "  {:<8} {} ({}): {}",
                prob.state, prob.path, prob.file_id, prob.reason
            );
        }
        for line in skipped_summary(&p.id, skipped.iter().map(|prob| prob.reason.as_str())) {
            println!("  {line}");
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
        "{} in {:.1}s ({}/s); {}",
        human_bytes(summary.bytes),
        secs,
        human_bytes((summary.bytes as f64 / secs) as u64),
        if summary.is_ok() {
            "every eligible file is mirrored"
        } else {
            "NOT every eligible file is mirrored"
        }
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot create {path}: {source}")]
    struct Create {
        path: String,
        source: std::io::Error,
    }

    #[test]
    fn each_os_error_is_said_once() {
        let io = std::io::Error::from_raw_os_error(17);
        let e = anyhow::Error::new(Create {
            path: "/srv/m/x".into(),
            source: io,
        })
        .context("sync failed");
        let text = error_text(&e);
        assert_eq!(text.matches("os error 17").count(), 1, "{text}");
        assert!(
            text.starts_with("sync failed: cannot create /srv/m/x: "),
            "{text}"
        );
        // Causes that add something are kept.
        let e = anyhow::anyhow!("inner").context("outer");
        assert_eq!(error_text(&e), "outer: inner");
    }

    #[test]
    fn skipped_files_are_summarised_by_rule_not_listed_one_by_one() {
        let reasons = [
            "excluded by filter: [filter]: matches exclude glob \"restricted/bam/**\"",
            "excluded by filter: [filter]: matches exclude glob \"restricted/bam/**\"",
            "excluded by filter: [[project]] project-A: file type BAM is not in file-types (gVCF)",
            "excluded by filter: [[project]] project-A: file type CNV is not in file-types (gVCF)",
            "excluded by filter: [filter]: SAMPLE_INFO.txt sample_type = \"Germline\" is not one of [\"Diagnosis\"]",
            "file is open (not closed)",
        ];
        assert_eq!(
            skipped_summary("project-A", reasons.into_iter()),
            vec![
                "5 files left out by filters ([[project]] project-A file-types: 2, [filter] exclude \"restricted/bam/**\": 2, [filter] sample-info: 1); dxmirror status project-A --files --state skipped lists them".to_owned(),
                "1 file not downloadable now (open or archived; fetched once they are); dxmirror status project-A --files --state skipped lists them".to_owned(),
            ]
        );
        assert!(skipped_summary("p", std::iter::empty()).is_empty());
    }

    #[test]
    fn plurals() {
        assert_eq!(plural(1, "file"), "1 file");
        assert_eq!(plural(0, "file"), "0 files");
        assert_eq!(plural(3, "project"), "3 projects");
    }
}
