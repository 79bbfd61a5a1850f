//! The packages' definitions (`[package.metadata.deb]` and `[package.metadata.generate-rpm]`
//! in Cargo.toml) against the tree: both install exactly `packaging/expected-files.txt`, the
//! unit's `ExecStart` is the path they install the binary at, the config is a conffile in
//! both; and `dxmirror completions SHELL` and `dxmirror man` from the real binary. Building and
//! installing the packages themselves is `.ci/package` (run by `.ci/run`).
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn metadata() -> toml::Table {
    let text = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let cargo: toml::Table = toml::from_str(&text).unwrap();
    cargo["package"]["metadata"].as_table().unwrap().clone()
}

fn expected() -> Vec<String> {
    std::fs::read_to_string(root().join("packaging/expected-files.txt"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// `(source, destination)` of the .deb's assets, destinations absolute.
fn deb_assets() -> Vec<(String, String)> {
    metadata()["deb"]["assets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let a = a.as_array().unwrap();
            let src = a[0].as_str().unwrap().to_owned();
            (src, format!("/{}", a[1].as_str().unwrap()))
        })
        .collect()
}

fn rpm_assets() -> Vec<(String, String, toml::Table)> {
    metadata()["generate-rpm"]["assets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let t = a.as_table().unwrap();
            (
                t["source"].as_str().unwrap().to_owned(),
                t["dest"].as_str().unwrap().to_owned(),
                t.clone(),
            )
        })
        .collect()
}

#[test]
fn the_deb_and_the_rpm_install_the_expected_files_and_the_unit_starts_the_installed_binary() {
    let mut deb: Vec<String> = deb_assets().into_iter().map(|(_, d)| d).collect();
    let mut rpm: Vec<String> = rpm_assets().into_iter().map(|(_, d, _)| d).collect();
    deb.sort();
    rpm.sort();
    assert_eq!(deb, expected());
    assert_eq!(rpm, expected());
    // Sources in the tree exist; packaging/build/ is what .ci/package generates.
    for (src, _) in deb_assets() {
        assert!(
            src.starts_with("packaging/build/") || root().join(&src).is_file(),
            "{src} missing"
        );
    }
    let bin = deb_assets()
        .into_iter()
        .find(|(s, _)| s == "packaging/build/dxmirror")
        .unwrap()
        .1;
    let unit = std::fs::read_to_string(root().join("systemd/dxmirror.service")).unwrap();
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap();
    assert_eq!(exec.split_whitespace().next(), Some(bin.as_str()));
    // The config survives upgrades in both.
    let conf = metadata()["deb"]["conf-files"].as_array().unwrap().clone();
    assert_eq!(conf, vec![toml::Value::from("/etc/dxmirror/config.toml")]);
    let (_, _, rpm_conf) = rpm_assets()
        .into_iter()
        .find(|(_, d, _)| d == "/etc/dxmirror/config.toml")
        .unwrap();
    assert_eq!(rpm_conf["config"].as_str(), Some("noreplace"));
    // Nothing in the maintainer scripts enables or starts the service.
    for script in [
        "packaging/debian/postinst",
        "packaging/debian/prerm",
        "packaging/debian/postrm",
        "packaging/rpm/post",
        "packaging/rpm/postun",
    ] {
        let text = std::fs::read_to_string(root().join(script)).unwrap();
        for word in ["systemctl enable", "systemctl start", "--now"] {
            assert!(
                !text
                    .lines()
                    .any(|l| !l.trim_start().starts_with('#') && l.contains(word)),
                "{script} runs {word}"
            );
        }
    }
}

fn bin(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_dxmirror"))
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "dxmirror {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn completions_and_the_man_page_come_from_the_command_line_definitions() {
    let bash = bin(&["completions", "bash"]);
    assert!(bash.contains("complete -F _dxmirror"), "{bash}");
    let zsh = bin(&["completions", "zsh"]);
    assert!(zsh.starts_with("#compdef dxmirror"), "{zsh}");
    let fish = bin(&["completions", "fish"]);
    assert!(fish.contains("complete -c dxmirror"), "{fish}");
    for sub in ["sync", "daemon", "pause", "relist", "completions"] {
        assert!(
            bash.contains(sub) && zsh.contains(sub) && fish.contains(sub),
            "{sub}"
        );
    }
    let man = bin(&["man"]);
    assert!(man.contains(".TH dxmirror 1"), "{man}");
    assert!(man.contains("pause") && man.contains("verify"), "{man}");
    let out = Command::new(env!("CARGO_BIN_EXE_dxmirror"))
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}
