//! Log lines as the binary writes them: `info` carries state changes, never a line per chunk
//! (the same file in 2 or 32 chunks logs the same lines); under systemd (`JOURNAL_STREAM`)
//! every line starts with its syslog priority, without colour or time; `--log-format json`
//! writes one object per line with the structured fields.
#![allow(clippy::unwrap_used)]

use std::process::Command;

use dxmirror::model::ProjectId;
use dxmirror::sandbox::{FileSpec, ProjectSpec, Sandbox};

use crate::support::*;

/// A sandbox with one 2 MiB file, and a revoked project (an error line) if `revoked`.
async fn one_file(chunk: &str, revoked: bool) -> (Sandbox, Env) {
    let sandbox = empty_sandbox().await;
    let p = sandbox
        .add_project(ProjectSpec::new("SJC-DT-0201").file(FileSpec::new(
            "/restricted/bam",
            "a.bam",
            2 << 20,
        )))
        .unwrap();
    let mut projects: Vec<ProjectId> = vec![p];
    if revoked {
        let r = sandbox
            .add_project(ProjectSpec::new("SJC-DT-0202").file(FileSpec::new("/", "b.txt", 10)))
            .unwrap();
        sandbox.set_revoked(&r, true);
        projects.push(r);
    }
    let env = Env::for_sandbox(
        &sandbox,
        projects,
        format!("chunk-size = \"{chunk}\"\nprogress-step = \"64KiB\"\n"),
    );
    (sandbox, env)
}

/// `dxmirror sync` of `env` with the logging environment cleared, then `vars` set; its stderr.
async fn sync_stderr(env: &Env, args: &[&str], vars: &[(&str, &str)]) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dxmirror"));
    cmd.arg("sync")
        .args(args)
        .arg("--config")
        .arg(&env.config_path);
    for v in [
        "DX_API_TOKEN",
        "DX_SECURITY_CONTEXT",
        "RUST_LOG",
        "JOURNAL_STREAM",
        "NO_COLOR",
        "DXMIRROR_LOG_FORMAT",
    ] {
        cmd.env_remove(v);
    }
    cmd.envs(vars.iter().copied());
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    String::from_utf8(out.stderr).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_lines_do_not_grow_with_the_chunks_of_a_file() {
    let (_s2, two) = one_file("1MiB", false).await;
    let (_s32, many) = one_file("64KiB", false).await;
    let few = sync_stderr(&two, &[], &[]).await;
    let lots = sync_stderr(&many, &[], &[]).await;
    let plan = |e: &Env| {
        let r = e.reader().unwrap();
        let p = &r.projects().unwrap()[0];
        let f = &r.files(&p.id).unwrap()[0];
        assert_eq!(f.state, dxmirror::journal::FileState::Verified);
        r.load_plan(&f.key()).unwrap().unwrap().chunk_done.len()
    };
    assert_eq!((plan(&two), plan(&many)), (2, 32));
    assert!(!lots.is_empty());
    assert_eq!(
        few.lines().count(),
        lots.lines().count(),
        "2 chunks:\n{few}\n32 chunks:\n{lots}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_journald_each_line_starts_with_its_priority_without_time_or_colour() {
    let (_s, env) = one_file("1MiB", true).await;
    let text = sync_stderr(&env, &[], &[("JOURNAL_STREAM", "8:12345")]).await;
    assert!(!text.contains('\x1b'), "{text}");
    let mut seen = std::collections::BTreeSet::new();
    for line in text.lines() {
        let rest = ["<3>", "<4>", "<6>", "<7>"]
            .iter()
            .find_map(|p| line.strip_prefix(p).map(|r| (*p, r)));
        let (prefix, rest) = rest.unwrap_or_else(|| panic!("no priority: {line:?}\n{text}"));
        seen.insert(prefix);
        // No timestamp: journald adds its own.
        assert!(!rest.starts_with(|c: char| c.is_ascii_digit()), "{line:?}");
    }
    assert!(seen.contains("<6>"), "{text}");
    assert!(
        seen.contains("<3>") || seen.contains("<4>"),
        "the revoked project logs a warning or an error: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines_carry_the_structured_fields() {
    let (_s, env) = one_file("1MiB", false).await;
    let text = sync_stderr(&env, &["--log-format", "json"], &[]).await;
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    assert!(!lines.is_empty());
    for l in &lines {
        assert!(l["timestamp"].is_string() && l["level"].is_string(), "{l}");
        assert!(l["message"].is_string(), "{l}");
    }
    let project = env.reader().unwrap().projects().unwrap()[0].id.to_string();
    let names_project = |l: &serde_json::Value| {
        l["project_id"] == project.as_str()
            || l["spans"]
                .as_array()
                .is_some_and(|s| s.iter().any(|s| s["project_id"] == project.as_str()))
    };
    assert!(lines.iter().any(names_project), "{text}");
    // The same under journald: no timestamp, a priority before the object.
    let text = sync_stderr(
        &env,
        &["--log-format", "json"],
        &[("JOURNAL_STREAM", "8:1")],
    )
    .await;
    for line in text.lines() {
        let obj = line
            .strip_prefix("<6>")
            .or_else(|| line.strip_prefix("<4>"));
        let v: serde_json::Value = serde_json::from_str(obj.unwrap_or(line)).unwrap();
        assert!(v["timestamp"].is_null(), "{line}");
    }
}
