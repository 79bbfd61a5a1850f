//! `bwlimit` against the sandbox: the global and a project's own limit hold as upper bounds on
//! the rate (a run cannot finish sooner than its bytes at the limit, less one burst), and a
//! reload lifts a limit from transfers already running, without restarting them (every byte
//! is served once). Only upper bounds on the rate are asserted here; the accuracy of the
//! limit is a benchmark figure (`benches/bench.py bwlimit`, docs/performance.md).
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use dxmirror::bandwidth::burst_for;
use dxmirror::daemon::Notifier;
use dxmirror::model::ProjectId;
use dxmirror::sandbox::{FileSpec, ProjectSpec, Sandbox};

use crate::support::{all_verified, empty_sandbox, wait_for, Env, Running};

const KIB: u64 = 1 << 10;

/// A project of three files of `size` bytes each.
fn three_files(sandbox: &Sandbox, size: u64) -> ProjectId {
    sandbox
        .add_project(
            ProjectSpec::new("SJC-BW")
                .file(FileSpec::new("/", "a.bin", size))
                .file(FileSpec::new("/", "b.bin", size))
                .file(FileSpec::new("/", "c.bin", size)),
        )
        .unwrap()
}

/// The shortest time `bytes` can take at `rate` bytes/s: the limiter lets one burst through
/// at once, and each connection may read one network read (at most 64 KiB here) past it.
fn at_least(bytes: u64, rate: u64, connections: u64) -> Duration {
    let ahead = burst_for(rate) + connections * 64 * KIB;
    Duration::from_secs_f64(bytes.saturating_sub(ahead) as f64 / rate as f64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_global_limit_bounds_the_rate_of_a_sync() {
    let sandbox = empty_sandbox().await;
    let size = 512 * KIB;
    let p = three_files(&sandbox, size);
    let rate = 1 << 20;
    let env = Env::for_sandbox(&sandbox, vec![p.clone()], "bwlimit = \"1MiB\"\n");
    let started = Instant::now();
    let summary = env.sync().await.unwrap();
    let took = started.elapsed();
    assert_eq!(summary.projects[0].verified, 3, "{summary:?}");
    let floor = at_least(3 * size, rate, 16);
    assert!(
        took >= floor,
        "1.5 MiB at 1 MiB/s took {took:?}, less than {floor:?}: the limit did not hold"
    );
    assert_eq!(
        sandbox.stats().bytes_served,
        3 * size,
        "every byte served once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projects_own_limit_bounds_its_rate() {
    let sandbox = empty_sandbox().await;
    let size = 256 * KIB;
    let p = three_files(&sandbox, size);
    let rate = 512 * KIB;
    let env = Env::for_sandbox(
        &sandbox,
        Vec::new(),
        format!("[[project]]\nid = \"{p}\"\nbwlimit = \"512KiB\"\n"),
    );
    let started = Instant::now();
    let summary = env.sync().await.unwrap();
    let took = started.elapsed();
    assert_eq!(summary.projects[0].verified, 3, "{summary:?}");
    let floor = at_least(3 * size, rate, 16);
    assert!(
        took >= floor,
        "768 KiB at 512 KiB/s took {took:?}, less than {floor:?}: the project's limit did not hold"
    );
}

/// A daemon mirrors one 2 MiB file under a 32 KiB/s limit set by `limit` (a config fragment
/// that puts the project in too); once bytes flow, the config is rewritten without any
/// limit and reloaded. At 32 KiB/s the file would take a minute: it is verified within
/// 20 s only if the reload reached the running transfer, and served once only if that
/// transfer was not restarted.
async fn a_reload_lifts(limit: impl Fn(&ProjectId) -> String) {
    let sandbox = empty_sandbox().await;
    let size = 2 << 20;
    let p = sandbox
        .add_project(ProjectSpec::new("SJC-BW-R").file(FileSpec::new("/", "big.bin", size)))
        .unwrap();
    let base = "chunk-size = \"256KiB\"\nprogress-step = \"64KiB\"\n";
    let env = Env::for_sandbox(&sandbox, Vec::new(), format!("{base}{}", limit(&p)));
    let running = Running::start(&env, Notifier::disabled());
    wait_for("bytes to flow", Duration::from_secs(20), || {
        (sandbox.stats().bytes_served > 0).then_some(())
    })
    .await;
    assert!(all_verified(&env, &p, 1).is_none(), "still limited");
    std::fs::write(
        &env.config_path,
        std::fs::read_to_string(&env.config_path)
            .unwrap()
            .replace("bwlimit = \"32KiB\"\n", ""),
    )
    .unwrap();
    running.reload.send(()).await.unwrap();
    wait_for(
        "the file verified once the limit is lifted",
        Duration::from_secs(20),
        || all_verified(&env, &p, 1),
    )
    .await;
    running.stop().await.unwrap();
    assert_eq!(
        sandbox.stats().bytes_served,
        size,
        "no transfer was restarted: every byte served once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_lifts_the_global_limit_from_running_transfers() {
    a_reload_lifts(|p| format!("bwlimit = \"32KiB\"\n[[project]]\nid = \"{p}\"\n")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_lifts_a_projects_limit_from_running_transfers() {
    a_reload_lifts(|p| format!("[[project]]\nid = \"{p}\"\nbwlimit = \"32KiB\"\n")).await;
}
