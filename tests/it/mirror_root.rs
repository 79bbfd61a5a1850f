//! The mirror root is the administrator's and is never created: a missing one (a filesystem
//! that failed to mount), a file in its place or one the user cannot write into is refused by
//! `sync` with a message saying which, and nothing is created; the daemon waits for it instead
//! of exiting, says why in `status`, and starts mirroring once it appears. The state directory
//! is created, but only its last component.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use dxmirror::daemon::Notifier;
use dxmirror::journal::{FileState, JournalReader};
use dxmirror::sandbox::{Sandbox, SandboxOptions};

use crate::support::{wait_for, Env, Running};

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn sync_refuses_a_missing_mirror_root_and_creates_nothing() {
    let sandbox = Sandbox::start(SandboxOptions::default()).await.unwrap();
    let env = Env::for_sandbox(&sandbox, vec![sandbox.projects()[0].clone()], "")
        .with_dirs("srv/stjude", "state");
    let out = env.bin_async(&["-q", "sync"]).await;
    assert!(!out.status.success());
    let root = env.dir.path().join("srv/stjude");
    assert!(
        stderr(&out).contains(&format!(
            "mirror-root {} does not exist (is the filesystem mounted?)",
            root.display()
        )),
        "{}",
        stderr(&out)
    );
    assert!(
        !env.dir.path().join("srv").exists(),
        "the mirror root's parent was created"
    );
    assert_eq!(sandbox.stats().bytes_served, 0);
}

#[tokio::test]
async fn sync_refuses_a_mirror_root_that_is_a_file() {
    let sandbox = Sandbox::start(SandboxOptions::default()).await.unwrap();
    let env = Env::for_sandbox(&sandbox, vec![sandbox.projects()[0].clone()], "")
        .with_dirs("root-file", "state");
    let root = env.dir.path().join("root-file");
    std::fs::write(&root, b"not a directory").unwrap();
    let out = env.bin_async(&["-q", "sync"]).await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(&format!(
            "mirror-root {} is not a directory",
            root.display()
        )),
        "{}",
        stderr(&out)
    );
}

/// The user cannot write into the mirror root. As root (who may write anywhere), the binary
/// runs as `nobody` through `setpriv`, with the config, the token and the state directory
/// made theirs.
#[tokio::test]
async fn sync_refuses_a_mirror_root_the_user_cannot_write_into() {
    let sandbox = Sandbox::start(SandboxOptions::default()).await.unwrap();
    let env = Env::for_sandbox(&sandbox, vec![sandbox.projects()[0].clone()], "")
        .with_dirs("readonly-root", "state");
    let root = env.dir.path().join("readonly-root");
    std::fs::create_dir(&root).unwrap();
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o555)).unwrap();
    let out = if rustix::process::geteuid().is_root() {
        let nobody = 65534;
        let dir = env.dir.path();
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::create_dir(dir.join("state")).unwrap();
        for p in [
            dir.join("state"),
            dir.join("token"),
            env.config_path.clone(),
        ] {
            rustix::fs::chown(
                &p,
                Some(rustix::process::Uid::from_raw(nobody)),
                Some(rustix::process::Gid::from_raw(nobody)),
            )
            .unwrap();
        }
        let config = env.config_path.clone();
        tokio::task::spawn_blocking(move || {
            Command::new("setpriv")
                .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
                .arg(env!("CARGO_BIN_EXE_dxmirror"))
                .args(["-q", "sync", "--config"])
                .arg(&config)
                .env_remove("DX_API_TOKEN")
                .output()
                .expect("setpriv (util-linux) runs the binary as nobody")
        })
        .await
        .unwrap()
    } else {
        env.bin_async(&["-q", "sync"]).await
    };
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "mirror-root {} is not writable by user",
            root.display()
        )),
        "{err}"
    );
    assert!(err.contains("(uid "), "{err}");
    assert_eq!(std::fs::read_dir(&root).unwrap().count(), 0);
}

#[tokio::test]
async fn the_state_dir_is_created_but_not_its_parents() {
    let sandbox = Sandbox::start(SandboxOptions::default()).await.unwrap();
    let env = Env::for_sandbox(&sandbox, vec![sandbox.projects()[0].clone()], "")
        .with_dirs("mirror", "var/lib/dxmirror");
    let out = env.bin_async(&["-q", "sync"]).await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("its parent directory"),
        "{}",
        stderr(&out)
    );
    assert!(!env.dir.path().join("var").exists());

    // With its parent there, the state directory itself is created (0750) and the sync runs.
    std::fs::create_dir_all(env.dir.path().join("var/lib")).unwrap();
    let out = env.bin_async(&["-q", "sync"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let mode = std::fs::metadata(env.dir.path().join("var/lib/dxmirror"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o027, 0, "{mode:o}");
}

fn daemon_row(state_dir: &Path) -> Option<dxmirror::journal::DaemonRow> {
    JournalReader::open(state_dir).ok()?.daemon().ok()?
}

/// The daemon started before its mirror root is mounted: it stays up, says why in its journal
/// row and in `status`, creates nothing, and mirrors the project once the root appears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_waits_for_a_mirror_root_that_appears_later() {
    let sandbox = Sandbox::start(SandboxOptions::default()).await.unwrap();
    let env = Env::for_sandbox(&sandbox, vec![sandbox.projects()[0].clone()], "")
        .with_dirs("srv/stjude", "state");
    let root = env.dir.path().join("srv/stjude");
    let running = Running::start(&env, Notifier::disabled());
    let state = env.state();
    let row = wait_for(
        "the daemon to wait for its mirror root",
        Duration::from_secs(20),
        || daemon_row(&state).filter(|d| d.state.as_str() == "waiting-for-mirror-root"),
    )
    .await;
    let error = row.last_error.unwrap_or_default();
    assert!(
        error.contains(&format!(
            "mirror-root {} does not exist (is the filesystem mounted?)",
            root.display()
        )),
        "{error}"
    );
    let status = env.bin_async(&["status"]).await;
    let text = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(text.contains("waiting-for-mirror-root"), "{text}");
    assert!(
        text.contains("does not exist (is the filesystem mounted?)"),
        "{text}"
    );
    assert!(!env.dir.path().join("srv").exists());
    assert!(
        !running.handle.is_finished(),
        "the daemon exited instead of waiting"
    );

    // The mount appears: the daemon takes it at its next look (5 s) and mirrors.
    std::fs::create_dir_all(&root).unwrap();
    let project = sandbox.projects()[0].clone();
    let n = sandbox.files(&project).len();
    wait_for(
        "the project to be mirrored",
        Duration::from_secs(60),
        || {
            let files = JournalReader::open(&state).ok()?.files(&project).ok()?;
            (files.len() == n
                && files.iter().all(|f| {
                    matches!(
                        f.state,
                        FileState::Verified | FileState::Unverified | FileState::Skipped
                    )
                }))
            .then_some(())
        },
    )
    .await;
    assert_eq!(daemon_row(&state).unwrap().state.as_str(), "running");
    assert!(root.join(".dxmirror.lock").exists());
    running.stop().await.unwrap();
}
