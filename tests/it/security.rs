//! Secrets stay secret, and a lost or damaged journal is rebuilt from the mirror without
//! downloading again.
#![allow(clippy::unwrap_used)]

use dxmirror::sandbox::{Sandbox, SandboxOptions};

use crate::support::{assert_mirrored, served_env_with, Env};

/// Every file under `dir`, recursively, as bytes.
fn all_bytes_under(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// One invariant over everything that prints or stores: the token appears in no output of any
/// command (at trace level, in errors too) and in no file of the state directory. Kept as one
/// test on purpose: the outputs are evidence only together (the check of their volume proves
/// the search saw enough), and splitting it by output would repeat its sync for each.
#[tokio::test]
async fn the_token_never_reaches_logs_errors_status_or_the_journal() {
    const TOKEN: &str = "PLANTED-SECRET-7f3a9c2e5b1d";
    let (sandbox, project, env) = served_env_with(
        SandboxOptions {
            token: TOKEN.into(),
            ..SandboxOptions::default()
        },
        "chunk-size = \"64KiB\"",
    )
    .await;
    let config = env.config_path.clone();
    let exe = env!("CARGO_BIN_EXE_dxmirror");
    // The most verbose logging there is, a sync, status in both forms, check-config, and a
    // failing run (a wrong project) whose errors are printed.
    let outputs = tokio::task::spawn_blocking(move || {
        let run = |args: &[&str]| {
            std::process::Command::new(exe)
                .args(args)
                .arg("--config")
                .arg(&config)
                .env("RUST_LOG", "trace")
                .env_remove("DX_API_TOKEN")
                .output()
                .unwrap()
        };
        vec![
            run(&["-vv", "sync"]),
            run(&["status"]),
            run(&["status", "--json"]),
            run(&["check-config"]),
            run(&["verify"]),
            run(&["-vv", "sync", "project-000000000000000000000000"]),
        ]
    })
    .await
    .unwrap();
    assert!(
        outputs[0].status.success(),
        "{}",
        String::from_utf8_lossy(&outputs[0].stderr)
    );
    assert_mirrored(&sandbox, &env, &project);
    let mut log = Vec::new();
    for out in &outputs {
        log.extend_from_slice(&out.stdout);
        log.extend_from_slice(&out.stderr);
    }
    assert!(
        log.len() > 10_000,
        "trace logging produced too little to prove anything"
    );
    assert!(
        !contains(&log, TOKEN.as_bytes()),
        "the token is in the output"
    );
    // Download URLs are logged without their signed path token or query string, and the
    // download header's value never appears.
    let text = String::from_utf8_lossy(&log);
    assert!(!text.contains("/F/D/"), "a signed download URL was logged");
    assert!(!text.contains("sig="), "a signed storage URL was logged");
    for (path, bytes) in all_bytes_under(&env.state()) {
        assert!(
            !contains(&bytes, TOKEN.as_bytes()),
            "the token is in {}",
            path.display()
        );
    }
}

#[tokio::test]
async fn a_lost_journal_is_rebuilt_from_the_mirror_without_downloading_again() {
    let sandbox = Sandbox::start(SandboxOptions::default()).await.unwrap();
    let project = sandbox.projects()[0].clone();
    let env = Env::for_sandbox(&sandbox, vec![project.clone()], "");
    assert!(env.sync().await.unwrap().is_ok());
    let served = sandbox.stats().bytes_served;

    // Damage the journal: the next run refuses it with the documented recovery.
    let journal = env.state().join("journal.sqlite3");
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(env.state().join(format!("journal.sqlite3{suffix}")));
    }
    std::fs::write(
        &journal,
        b"this is not a database, it is damage of some kind......",
    )
    .unwrap();
    let err = env.sync().await.unwrap_err().to_string();
    assert!(err.contains("move it aside"), "{err}");

    // Recovery as documented: move it aside and sync again.
    std::fs::rename(&journal, env.state().join("journal.sqlite3.damaged")).unwrap();
    let summary = env.sync().await.unwrap();
    assert!(summary.is_ok(), "{summary:#?}");
    assert_mirrored(&sandbox, &env, &project);
    assert_eq!(
        sandbox.stats().bytes_served,
        served,
        "the mirror was downloaded again"
    );
}
