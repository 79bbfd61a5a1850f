//! Waiting on conditions with a deadline, never a bare sleep: polls of something the test
//! cannot be told about, the real `sync` binary started and killed at a point of progress,
//! and run to its end.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dxmirror::sandbox::ServeStats;

use super::{Env, SandboxProcess};

/// Polls `check` (every 25 ms) until it returns `Some`, or panics naming `what` after
/// `timeout`. For conditions the test cannot be told about; never a bare sleep.
pub async fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// [`wait_for`] with an asynchronous `check` (an HTTP request to a sandbox, say), polled
/// every 10 ms: the counters of a sandbox serving at tens of MiB/s move fast.
pub async fn wait_for_async<T>(
    what: &str,
    timeout: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Starts `dxmirror sync` on `env`'s config, quietly.
pub fn spawn_sync(env: &Env) -> Child {
    Command::new(env!("CARGO_BIN_EXE_dxmirror"))
        .args(["-q", "sync", "--config"])
        .arg(&env.config_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Runs `dxmirror sync` to the end and requires success.
pub fn sync_to_the_end(env: &Env) {
    let out = Command::new(env!("CARGO_BIN_EXE_dxmirror"))
        .args(["-q", "sync", "--config"])
        .arg(&env.config_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "final run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits until the sandbox has served `target` bytes, then SIGKILLs `child`, and returns the
/// sandbox's counters once it has counted every response it had begun (it notices the closed
/// connections when its next write fails).
pub async fn kill_when_served(
    sandbox: &SandboxProcess,
    mut child: Child,
    target: u64,
) -> ServeStats {
    wait_for_async(
        &format!("progress towards {target} bytes served"),
        Duration::from_secs(60),
        async || {
            if sandbox.stats().await.bytes_served >= target {
                return Some(());
            }
            assert!(
                child.try_wait().unwrap().is_none(),
                "sync ended before the kill point"
            );
            None
        },
    )
    .await;
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    wait_for_async(
        "the sandbox to count the killed responses",
        Duration::from_secs(10),
        async || {
            let stats = sandbox.stats().await;
            (stats.responses_in_flight == 0).then_some(stats)
        },
    )
    .await
}
