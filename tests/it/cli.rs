//! The command line as an admin meets it: the exit statuses (`--help`'s table and the
//! README's say the same), a sync stopped by SIGINT/SIGTERM (clean stop, the run recorded
//! `interrupted`, 130/143, a second signal exits at once, the next run resumes), and
//! `sync --dry-run` (what it would fetch, against the room, nothing written).
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use dxmirror::sandbox::{Dataset, Sandbox, SandboxOptions};

use crate::support::{wait_for, Env, EnvOptions, SandboxProcess};

/// `dxmirror sync` on `env`'s config, its stderr captured.
fn spawn_sync(env: &Env) -> Child {
    Command::new(env!("CARGO_BIN_EXE_dxmirror"))
        .args(["-q", "sync", "--config"])
        .arg(&env.config_path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn signal(child: &Child, sig: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, sig).unwrap();
}

/// Waits until the running sync has journaled some bytes (it is in mid-transfer).
async fn some_bytes_journaled(env: &Env) {
    wait_for("some bytes journaled", Duration::from_secs(30), || {
        let done: u64 = env
            .reader()?
            .project_totals()
            .ok()?
            .iter()
            .map(|t| t.bytes_done)
            .sum();
        (done >= 256 << 10).then_some(())
    })
    .await;
}

/// Waits for `child` to exit; its exit code and stderr.
async fn exit_of(child: Child) -> (Option<i32>, String) {
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_sync_says_what_is_left_exits_130_or_143_and_the_next_run_resumes() {
    let sp = SandboxProcess::start(&["--dataset", "large:3M", "--bandwidth", "1M"]);
    let (project, env) = sp.env("chunk-size = \"256KiB\"\nprogress-step = \"64KiB\"\n");

    // SIGTERM (a systemd timer stopping the run): a clean stop, 143.
    let child = spawn_sync(&env);
    some_bytes_journaled(&env).await;
    signal(&child, rustix::process::Signal::TERM);
    let (code, err) = exit_of(child).await;
    assert_eq!(code, Some(143), "{err}");
    // The count is the journal's: every file not mirrored yet when the run stopped.
    let left = env
        .reader()
        .unwrap()
        .files(&project)
        .unwrap()
        .iter()
        .filter(|f| !f.state.is_finished())
        .count();
    assert!(left > 0);
    assert!(
        err.contains(&format!(
            "interrupted; run again to resume ({left} file{}, ",
            if left == 1 { "" } else { "s" }
        )) && err.contains(" still to fetch)"),
        "{err}"
    );
    let run = env.reader().unwrap().last_run().unwrap().unwrap();
    assert_eq!(run.outcome.as_deref(), Some("interrupted"));
    assert!(run.ended_ms.is_some());
    let status = env.bin(&["status"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("(interrupted)"), "{text}");
    let done_at_stop: u64 = env.reader().unwrap().project_totals().unwrap()[0].bytes_done;
    assert!(done_at_stop > 0);

    // Ctrl-C: 130; a second one exits at once, whatever the first was doing.
    let child = spawn_sync(&env);
    wait_for("the second run to start", Duration::from_secs(30), || {
        let run = env.reader()?.last_run().ok()??;
        (run.ended_ms.is_none()).then_some(())
    })
    .await;
    signal(&child, rustix::process::Signal::INT);
    signal(&child, rustix::process::Signal::INT);
    let (code, err) = exit_of(child).await;
    assert_eq!(code, Some(130), "{err}");

    // The next run resumes and finishes.
    let out = env.bin(&["sync"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let totals = &env.reader().unwrap().project_totals().unwrap()[0];
    assert_eq!(totals.project.id, project);
    assert_eq!(totals.bytes_done, totals.bytes_total);
}

#[tokio::test]
async fn dry_run_says_what_sync_would_fetch_against_the_room_and_writes_nothing() {
    let sandbox = Sandbox::start(SandboxOptions {
        dataset: Dataset::many_files("dry", 12, 5000),
        ..SandboxOptions::default()
    })
    .await
    .unwrap();
    let project = sandbox.projects()[0].clone();
    let env = Env::for_sandbox(&sandbox, vec![project.clone()], "");

    let out = env.bin_async(&["sync", "--dry-run"]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains(&format!("project {project} ")) && text.contains(": would fetch 12 files ("),
        "{text}"
    );
    assert!(text.contains("it fits"), "{text}");
    // Nothing written: no state directory, an empty mirror root.
    assert!(!env.state().exists());
    assert_eq!(std::fs::read_dir(env.mirror()).unwrap().count(), 0);

    // A reserve larger than this disk: it does not fit, exit 3.
    let text = std::fs::read_to_string(&env.config_path).unwrap();
    let big = format!("disk-reserve = \"1000TiB\"\n{text}");
    std::fs::write(&env.config_path, &big).unwrap();
    let out = env.bin_async(&["sync", "--dry-run"]).await;
    let report = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{report}{err}");
    assert!(report.contains("IT DOES NOT FIT"), "{report}");
    std::fs::write(&env.config_path, &text).unwrap();

    // After a sync, nothing is left to fetch.
    assert!(env.bin_async(&["sync"]).await.status.success());
    let out = env.bin_async(&["sync", "--dry-run"]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(": would fetch 0 files (0 B) of 12 files listed"),
        "{text}"
    );
}

#[test]
fn the_exit_statuses_in_help_are_the_readmes() {
    let help = Command::new(env!("CARGO_BIN_EXE_dxmirror"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let table = help
        .split_once("Exit status:\n")
        .expect("--help has the exit status table")
        .1;
    let mut codes = 0;
    for line in table.lines() {
        let Some((code, _)) = line.trim().split_once("  ") else {
            continue;
        };
        if code.parse::<u8>().is_err() {
            continue;
        }
        codes += 1;
        assert!(
            readme.contains(&format!("| {code} |")),
            "README's exit status table has no row for {code}"
        );
    }
    assert!(codes >= 6, "{table}");
}

#[tokio::test]
async fn root_is_refused_over_the_service_users_state_dir_with_the_command_to_use() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: needs root to own files as another user");
        return;
    }
    let sandbox = Sandbox::start(SandboxOptions {
        dataset: Dataset::many_files("own", 2, 100),
        ..SandboxOptions::default()
    })
    .await
    .unwrap();
    let project = sandbox.projects()[0].clone();
    let env = Env::for_sandbox(&sandbox, vec![project.clone()], "");
    std::fs::create_dir_all(env.state()).unwrap();
    // nobody (65534) stands for the service user.
    std::os::unix::fs::chown(env.state(), Some(65534), Some(65534)).unwrap();
    for args in [
        &["sync"][..],
        &["verify", "--repair"][..],
        &["purge", "--yes", project.as_str()][..],
    ] {
        let out = env.bin_async(args).await;
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains(&format!("state-dir {} belongs to ", env.state().display()))
                && err.contains("(uid 65534)")
                && err.contains("run it as that user instead:")
                && err.contains(" -p User=")
                && err.contains(&format!(" dxmirror {} ", args[0])),
            "{args:?}: {err}"
        );
        // Nothing was written as root inside it.
        assert_eq!(
            std::fs::read_dir(env.state()).unwrap().count(),
            0,
            "{args:?}"
        );
    }
    // Given back to root, the same sync runs.
    std::os::unix::fs::chown(env.state(), Some(0), Some(0)).unwrap();
    assert!(env.bin_async(&["sync"]).await.status.success());
}

/// `check-config --online`, its stdout and exit code.
async fn check_online(env: &Env) -> (Option<i32>, String) {
    let out = env.bin_async(&["check-config", "--online"]).await;
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[tokio::test]
async fn check_config_online_says_who_the_token_is_describes_each_project_and_fails_by_check() {
    let sandbox = Sandbox::start(SandboxOptions {
        dataset: Dataset::many_files("online", 5, 1000),
        ..SandboxOptions::default()
    })
    .await
    .unwrap();
    let project = sandbox.projects()[0].clone();
    let env = Env::for_sandbox(&sandbox, vec![project.clone()], "");

    // A good token: who it is, the project described, exit 0; nothing written.
    let (code, text) = check_online(&env).await;
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains(": logged in as user-"), "{text}");
    assert!(
        text.contains(&format!(
            "  project                  {project} \"online\": level "
        )) && text.contains(
            "5 files listed, 0 left out by filters, 0 not downloadable now, 5 to fetch ("
        ),
        "{text}"
    );
    assert!(
        text.contains("  mirror-root              ") && text.contains(" is a directory, owner "),
        "{text}"
    );
    assert!(
        !env.state().exists(),
        "check-config wrote the state directory"
    );

    // Filters that select nothing: a warning, still 0.
    let none = Env::for_sandbox(
        &sandbox,
        vec![project.clone()],
        "[filter]\ninclude = [\"nothing/**\"]\n",
    );
    let (code, text) = check_online(&none).await;
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("WARNING: the filters select no file of it"),
        "{text}"
    );

    // A bad token: refused, exit 5, the token never printed.
    let bad = Env::new(EnvOptions {
        api_url: sandbox.api_url(),
        token: "not-a-valid-token".into(),
        projects: vec![project.clone()],
        extra: String::new(),
    });
    let (code, text) = check_online(&bad).await;
    assert_eq!(code, Some(5), "{text}");
    assert!(
        text.contains("  api                      NOT USABLE: the API refused the token"),
        "{text}"
    );
    assert!(!text.contains("not-a-valid-token"), "{text}");

    // A project the token cannot see: exit 7, named.
    let missing: dxmirror::model::ProjectId = "project-000000000000000000000000".parse().unwrap();
    let gone = Env::for_sandbox(&sandbox, vec![missing.clone()], "");
    let (code, text) = check_online(&gone).await;
    assert_eq!(code, Some(7), "{text}");
    assert!(
        text.contains(&format!("{missing}: NOT MIRRORABLE: ")),
        "{text}"
    );

    // An API nobody listens on: exit 6, the host and the attempts named.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let unreachable = Env::new(EnvOptions {
        api_url: dead.clone(),
        token: sandbox.token(),
        projects: vec![project],
        extra: String::new(),
    });
    let (code, text) = check_online(&unreachable).await;
    assert_eq!(code, Some(6), "{text}");
    assert!(
        text.contains(&format!(
            "cannot reach the API at {dead} after 3 attempts: "
        )),
        "{text}"
    );
    // The last error names the route and the host.
    assert!(
        text.contains(&format!("/system/whoami at {dead}")),
        "{text}"
    );
}

#[tokio::test]
async fn every_printing_command_into_a_closed_pipe_ends_quietly_with_141() {
    let sandbox = Sandbox::start(SandboxOptions {
        dataset: Dataset::many_files("pipe", 30, 200),
        ..SandboxOptions::default()
    })
    .await
    .unwrap();
    let project = sandbox.projects()[0].clone();
    let env = Env::for_sandbox(&sandbox, vec![project.clone()], "");
    assert!(env.bin_async(&["-q", "sync"]).await.status.success());
    let commands: &[&[&str]] = &[
        &["status"],
        &["status", "--json"],
        &["audit"],
        &["audit", "--json"],
        &["verify"],
        &["verify", "--json"],
        &["check-config"],
        &["check-config", "--online"],
        &["purge", project.as_str()],
        &["sync", "--dry-run"],
    ];
    for args in commands {
        // A reader already gone: the first write fails, every time.
        let config = env.config_path.clone();
        let args_owned: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let out = tokio::task::spawn_blocking(move || {
            let (reader, writer) = std::io::pipe().unwrap();
            drop(reader);
            Command::new(env!("CARGO_BIN_EXE_dxmirror"))
                .args(&args_owned)
                .arg("--config")
                .arg(&config)
                .env_remove("DX_API_TOKEN")
                .env_remove("CREDENTIALS_DIRECTORY")
                .stdout(Stdio::from(writer))
                .stderr(Stdio::piped())
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(141), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");

        // And through a real `head -1`: the first line, no panic, 0 or 141.
        let line = format!(
            "set -o pipefail; {:?} {} --config {:?} | head -1",
            env!("CARGO_BIN_EXE_dxmirror"),
            args.join(" "),
            env.config_path
        );
        let out = tokio::task::spawn_blocking(move || {
            Command::new("bash")
                .args(["-c", &line])
                .env_remove("DX_API_TOKEN")
                .env_remove("CREDENTIALS_DIRECTORY")
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(
            matches!(out.status.code(), Some(0 | 3 | 141)),
            "{args:?}: {:?} {err}",
            out.status
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).lines().count(),
            1,
            "{args:?}"
        );
    }
}

#[tokio::test]
async fn filters_that_select_nothing_warn_and_left_out_files_are_one_summary_line() {
    let sandbox = Sandbox::start(SandboxOptions {
        dataset: Dataset::many_files("filters", 6, 100),
        ..SandboxOptions::default()
    })
    .await
    .unwrap();
    let project = sandbox.projects()[0].clone();
    let env = Env::for_sandbox(
        &sandbox,
        vec![project.clone()],
        "[filter]\ninclude = [\"nothing/**\"]\n",
    );
    let out = env.bin_async(&["sync"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the filters select no file of this project (6 listed, all left out)"),
        "{stderr}"
    );
    // One line for the six, with the rule and the command that lists them; none one by one.
    assert!(
        stdout.contains(&format!(
            "  6 files left out by filters ([filter] include: 6); dxmirror status {project} --files --state skipped lists them\n"
        )),
        "{stdout}"
    );
    assert!(!stdout.contains("  skipped  "), "{stdout}");
}
