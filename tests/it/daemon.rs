//! The daemon against the sandbox: in-process with an injected shutdown for discovery,
//! re-listing, replaced files, access loss, sd_notify and the single-writer rule; the real
//! binary for SIGTERM in mid-transfer, SIGHUP with a bad config and a restart; the systemd
//! unit's flags (and, with `DXMIRROR_TEST_SYSTEMD=1`, `systemd-analyze`).
//!
//! The access scenarios start from one shared state (`support::Mirrored`: a project mirrored
//! by a running daemon). `status` with a refused token, an inaccessible project and an expired
//! agreement is compared whole with `snapshots/status_bad_token_inaccessible_expired.txt`;
//! after an intended change of that output, rewrite the file with
//! `DXMIRROR_UPDATE_SNAPSHOTS=1 cargo test --test it daemon::status_` and review its diff.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use dxmirror::daemon::{self, DaemonError, Notifier};
use dxmirror::journal::{DaemonState, FileState, ProjectState};
use dxmirror::model::{ByteRange, ProjectId};
use dxmirror::sandbox::{FileSpec, ProjectSpec, Sandbox, SandboxOptions, ServeStats};
use tokio::sync::mpsc;

use crate::support::{
    all_verified, assert_snapshot, empty_sandbox, files_under, numbers_after, redact, wait_for,
    Env, Gate, Mirrored, Running, SandboxProcess,
};

const T: Duration = Duration::from_secs(20);

fn daemon_state(env: &Env) -> Option<String> {
    env.reader()?
        .daemon()
        .ok()?
        .map(|d| d.state.as_str().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_mirrors_tagged_projects_only_and_records_restricted_ones() {
    let sandbox = empty_sandbox().await;
    let env = Env::for_sandbox(
        &sandbox,
        Vec::new(),
        "[discovery]\nenabled = true\ninterval = \"100ms\"\ntags = [\"sjcp-project-data\"]\n\
         [relist]\ninterval = \"150ms\"\n",
    );
    let running = Running::start(&env, Notifier::disabled());
    wait_for("the daemon to run", T, || {
        (daemon_state(&env)? == "running").then_some(())
    })
    .await;

    // A project vended later (and one without the tag, and a download-restricted one).
    let p = sandbox
        .add_project(sj001().tag("sjcp-project-data"))
        .unwrap();
    let untagged = sandbox
        .add_project(ProjectSpec::new("Unrelated").file(FileSpec::new("/", "x.bam", 1_000)))
        .unwrap();
    let mut spec = ProjectSpec::new("SJC-DT-restricted")
        .tag("sjcp-project-data")
        .file(FileSpec::new("/", "y.bam", 1_000));
    spec.download_restricted = true;
    let restricted = sandbox.add_project(spec).unwrap();

    wait_for("the discovered project to be mirrored", T, || {
        all_verified(&env, &p, 2)
    })
    .await;
    wait_for("the restricted project to be recorded", T, || {
        let row = env.reader()?.project(&restricted).ok()??;
        (row.state == ProjectState::Restricted).then_some(())
    })
    .await;
    running.stop().await.unwrap();
    let r = env.reader().unwrap();
    assert!(
        r.project(&untagged).unwrap().is_none(),
        "untagged project mirrored"
    );
    assert!(r.project(&restricted).unwrap().unwrap().dir_name.is_none());
}

/// A daemon running on an empty sandbox, with nothing configured.
async fn idle_daemon() -> (Sandbox, Env, Running) {
    let sandbox = empty_sandbox().await;
    let env = Env::for_sandbox(&sandbox, Vec::new(), "");
    let running = Running::start(&env, Notifier::disabled());
    wait_for("the daemon to run", T, || {
        (daemon_state(&env)? == "running").then_some(())
    })
    .await;
    (sandbox, env, running)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_daemon_records_stopped_in_its_row_and_its_run() {
    let (_sandbox, env, running) = idle_daemon().await;
    running.stop().await.unwrap();
    let r = env.reader().unwrap();
    assert_eq!(r.daemon().unwrap().unwrap().state.as_str(), "stopped");
    assert_eq!(
        r.last_run().unwrap().unwrap().outcome.as_deref(),
        Some("stopped")
    );
}

/// A data request of a gVCF and its `SAMPLE_INFO.txt`.
fn sj001() -> ProjectSpec {
    ProjectSpec::new("SJC-DT-0001")
        .file(FileSpec::new("/restricted/gVCF", "SJ001.g.vcf.gz", 300_000))
        .file(FileSpec::new("/", "SAMPLE_INFO.txt", 2_000))
}

/// [`sj001`] mirrored by a daemon that re-lists it every 150 ms.
async fn sj001_mirrored() -> Mirrored {
    Mirrored::start(sj001(), "[relist]\ninterval = \"150ms\"\n", "").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_added_upstream_is_mirrored_at_the_next_listing() {
    let m = sj001_mirrored().await;
    let (sandbox, env, p, dir) = (&m.sandbox, &m.env, &m.project, &m.dir);
    // A file added later (an extension addendum).
    let added = sandbox
        .add_files(
            p,
            vec![FileSpec::new("/restricted/CNV", "SJ001.cnv", 50_000)],
        )
        .unwrap();
    wait_for("the added file to be mirrored", T, || {
        all_verified(env, p, 3)
    })
    .await;
    assert_eq!(
        std::fs::read(dir.join("restricted/CNV/SJ001.cnv")).unwrap(),
        sandbox.content(&added[0], ByteRange::new(0, 50_000))
    );
    wait_for("the manifest to list the added file", T, || {
        let manifest = std::fs::read_to_string(dir.join("SHA256SUMS")).ok()?;
        manifest.contains("restricted/CNV/SJ001.cnv").then_some(())
    })
    .await;
    m.running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_file_takes_its_path_and_the_old_version_is_kept_beside_it() {
    let m = sj001_mirrored().await;
    let (sandbox, env, p, dir) = (&m.sandbox, &m.env, &m.project, &m.dir);
    // A path whose file id changes upstream: the new version takes the path, the old one
    // is kept beside it as <old-id>__<name>, and its journal row says so.
    let old_row = env
        .reader()
        .unwrap()
        .files(p)
        .unwrap()
        .into_iter()
        .find(|f| f.name == "SJ001.g.vcf.gz")
        .unwrap();
    let old_bytes = std::fs::read(dir.join("restricted/gVCF/SJ001.g.vcf.gz")).unwrap();
    let new_id = sandbox
        .replace_file(
            p,
            FileSpec::new("/restricted/gVCF", "SJ001.g.vcf.gz", 120_000),
        )
        .unwrap();
    let kept = format!("restricted/gVCF/{}__SJ001.g.vcf.gz", old_row.file_id);
    wait_for("the replaced file to be handled", T, || {
        let r = env.reader()?;
        let new = r.files(p).ok()?.into_iter().find(|f| f.file_id == new_id)?;
        let old = r
            .files(p)
            .ok()?
            .into_iter()
            .find(|f| f.file_id == old_row.file_id)?;
        (new.state == FileState::Verified && old.rel_path == kept).then_some(())
    })
    .await;
    assert_eq!(
        std::fs::read(dir.join("restricted/gVCF/SJ001.g.vcf.gz")).unwrap(),
        sandbox.content(&new_id, ByteRange::new(0, 120_000))
    );
    assert_eq!(std::fs::read(dir.join(&kept)).unwrap(), old_bytes);
    // The manifest is rewritten at the end of the pass that recorded the kept name.
    wait_for("the manifest to list the kept version", T, || {
        let manifest = std::fs::read_to_string(dir.join("SHA256SUMS")).ok()?;
        manifest.contains(&kept).then_some(())
    })
    .await;
    m.running.stop().await.unwrap();
}

/// A project whose agreement has already ended (`access-expires` passed) but whose
/// `on-access-expired` is `warn` (it is mirrored on), mirrored by a daemon that re-lists it
/// every 100 ms: the access scenarios start here.
async fn mirrored_with_expired_access() -> Mirrored {
    Mirrored::start(
        ProjectSpec::new("SJC-DT-0002")
            .file(FileSpec::new("/restricted/bam", "a.bam", 200_000))
            .file(FileSpec::new("/", "b.txt", 3_000)),
        "[relist]\ninterval = \"100ms\"\n",
        "access-expires = \"2020-01-01\"\non-access-expired = \"warn\"\n",
    )
    .await
}

/// Waits for a journal event of `project` whose message starts with `prefix`.
async fn event_starting(m: &Mirrored, prefix: &str) -> String {
    wait_for(prefix, T, || {
        let events = m.env.reader()?.recent_events(500).ok()?;
        events
            .into_iter()
            .find(|e| e.project_id.as_ref() == Some(&m.project) && e.message.starts_with(prefix))
            .map(|e| e.message)
    })
    .await
}

/// Rewrites the config file: `from` becomes `to`.
fn edit_config(m: &Mirrored, from: &str, to: &str) {
    let text = std::fs::read_to_string(&m.env.config_path).unwrap();
    assert!(text.contains(from), "{text}");
    std::fs::write(&m.env.config_path, text.replacen(from, to, 1)).unwrap();
}

/// `on-access-expired` and `access-purge-grace` apply on SIGHUP: `warn` mirrors on; `hold`
/// stops the passes and keeps the copy (status says `held`); `purge` with 30 days of grace
/// announces the day; with no grace the copy is deleted with a `purged` audit record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_access_is_held_then_purged_after_the_grace_period_on_reload() {
    // Access ended yesterday: the grace period runs from today.
    let today = dxmirror::clock::Date::today();
    let yesterday = dxmirror::clock::Date {
        days: today.days - 1,
    };
    let m = Mirrored::start(
        ProjectSpec::new("SJC-DT-0002")
            .file(FileSpec::new("/restricted/bam", "a.bam", 200_000))
            .file(FileSpec::new("/", "b.txt", 3_000)),
        "[relist]\ninterval = \"100ms\"\n",
        &format!("access-expires = \"{yesterday}\"\non-access-expired = \"warn\"\n"),
    )
    .await;
    let listed = |m: &Mirrored| {
        m.env
            .reader()
            .and_then(|r| r.project(&m.project).ok().flatten())
            .and_then(|p| p.last_listed_ms)
    };

    edit_config(
        &m,
        "on-access-expired = \"warn\"",
        "on-access-expired = \"hold\"",
    );
    m.running.reload.send(()).await.unwrap();
    event_starting(&m, "access held: ").await;
    // Held: no pass re-lists it any more (it was re-listed every 100 ms); a pass already
    // running when the policy changed is given time to end first.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = listed(&m);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(listed(&m), before, "a held project is not re-listed");
    assert_eq!(files_under(&m.dir), m.files, "hold keeps the copy");
    let out = m.env.bin_async(&["status", "--json"]).await;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["projects"][0]["shown_state"], "held", "{v}");
    assert_eq!(v["projects"][0]["on_access_expired"], "hold", "{v}");

    edit_config(
        &m,
        "on-access-expired = \"hold\"",
        "on-access-expired = \"purge\"",
    );
    let text = std::fs::read_to_string(&m.env.config_path).unwrap();
    std::fs::write(
        &m.env.config_path,
        format!("access-purge-grace = \"30days\"\n{text}"),
    )
    .unwrap();
    m.running.reload.send(()).await.unwrap();
    let due = event_starting(&m, "access purge due: ").await;
    let purge_day = dxmirror::clock::Date {
        days: today.days + 30,
    };
    assert!(due.contains(&format!("deleted on {purge_day}")), "{due}");
    let out = m.env.bin_async(&["status", "--json"]).await;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["projects"][0]["purge_on"], purge_day.to_string(), "{v}");
    assert_eq!(
        files_under(&m.dir),
        m.files,
        "not before the grace period ends"
    );

    edit_config(
        &m,
        "access-purge-grace = \"30days\"",
        "access-purge-grace = \"0s\"",
    );
    m.running.reload.send(()).await.unwrap();
    let purged = event_starting(&m, "access purged: ").await;
    assert!(purged.contains("audit record"), "{purged}");
    assert!(!m.dir.exists(), "the local copy is deleted");
    let audit = m.env.reader().unwrap().audit_since(0).unwrap();
    assert!(
        audit
            .iter()
            .any(|a| a.project_id == m.project && a.action == "purged"),
        "{audit:?}"
    );
    m.running.stop().await.unwrap();
}

/// The platform revokes the project; waits until the daemon has marked it inaccessible.
async fn revoke(m: &Mirrored) {
    m.sandbox.set_revoked(&m.project, true);
    wait_for("the project to be marked inaccessible", T, || {
        let row = m.env.reader()?.project(&m.project).ok()??;
        (row.state == ProjectState::Inaccessible).then_some(())
    })
    .await;
}

/// The token the platform accepts after [`rotate_token`].
const ROTATED: &str = "a-rotated-token-the-daemon-does-not-have";

/// The platform stops accepting the daemon's token; waits until the daemon reports it.
async fn rotate_token(m: &Mirrored) {
    m.sandbox.set_token(ROTATED);
    wait_for("the daemon to report the bad token", T, || {
        let d = m.env.reader()?.daemon().ok()??;
        (d.state == DaemonState::BadToken && d.last_error?.contains("token")).then_some(())
    })
    .await;
}

/// [`mirrored_with_expired_access`], then the project revoked and the token rotated.
async fn access_lost() -> Mirrored {
    let m = mirrored_with_expired_access().await;
    revoke(&m).await;
    rotate_token(&m).await;
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_access_is_reported_in_status_and_events() {
    let m = mirrored_with_expired_access().await;
    wait_for("the expiry to be recorded as an event", T, || {
        let events = m.env.reader()?.recent_events(200).ok()?;
        events
            .iter()
            .any(|e| e.message.contains("access expired on 2020-01-01"))
            .then_some(())
    })
    .await;
    let status = m.env.bin_async(&["status"]).await;
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{text}");
    assert!(text.contains("access expired on 2020-01-01"), "{text}");
    let json = m.env.bin_async(&["status", "--json"]).await;
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["projects"][0]["access_expires"], "2020-01-01");
    m.running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_project_is_inaccessible_and_nothing_is_deleted() {
    let m = mirrored_with_expired_access().await;
    revoke(&m).await;
    assert_eq!(files_under(&m.dir), m.files, "nothing may be deleted");
    let files = m.env.reader().unwrap().files(&m.project).unwrap();
    assert!(files.iter().all(|f| f.state == FileState::Verified));
    m.running.stop().await.unwrap();
    assert_eq!(files_under(&m.dir), m.files, "nothing may be deleted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_token_pauses_the_daemon_which_stays_up() {
    let m = mirrored_with_expired_access().await;
    rotate_token(&m).await;
    assert!(!m.running.handle.is_finished(), "the daemon stays up");
    m.running.stop().await.unwrap();
}

/// `dxmirror status` with a refused token, an inaccessible project and an expired agreement:
/// the whole text against `tests/it/snapshots/status_bad_token_inaccessible_expired.txt`
/// (times, pids and addresses redacted; after an intended change of the output, rewrite it
/// with `DXMIRROR_UPDATE_SNAPSHOTS=1`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_bad_token_inaccessible_and_expired() {
    let m = access_lost().await;
    // The progress line is rewritten just after the refusal is recorded.
    wait_for("the progress line to name the refused token", T, || {
        let d = m.env.reader()?.daemon().ok()??;
        d.status?.contains("API TOKEN REFUSED").then_some(())
    })
    .await;
    let status = m.env.bin_async(&["status"]).await;
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{text}");
    assert!(
        !text.contains(&m.sandbox.token()) && !text.contains(ROTATED),
        "status must not print a token"
    );
    let tmp = m.env.dir.path().to_str().unwrap();
    let text = redact(&text, &[(tmp, "<tmp>"), (&m.sandbox.api_url(), "<api>")]);
    // How many passes run or wait at this instant depends on timing.
    let text = numbers_after(&text, "projects (", "<n>");
    let text = numbers_after(&text, " running, ", "<n>");
    assert_snapshot("status_bad_token_inaccessible_expired.txt", &text);
    let json = m.env.bin_async(&["status", "--json"]).await;
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["daemon"]["state"], "bad-token");
    assert_eq!(v["projects"][0]["state"], "inaccessible");
    assert_eq!(v["projects"][0]["access_expires"], "2020-01-01");
    m.running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_with_the_new_token_resumes() {
    let m = access_lost().await;
    // The operator installs the new token and reloads: the daemon resumes at once, and the
    // project, readable again, is active.
    std::fs::write(m.env.dir.path().join("token"), ROTATED).unwrap();
    m.sandbox.set_revoked(&m.project, false);
    m.running.reload.send(()).await.unwrap();
    wait_for("the daemon to resume with the new token", T, || {
        let r = m.env.reader()?;
        let d = r.daemon().ok()??;
        let row = r.project(&m.project).ok()??;
        (d.state == DaemonState::Running && row.state == ProjectState::Active).then_some(())
    })
    .await;
    m.running.stop().await.unwrap();
    assert_eq!(files_under(&m.dir), m.files, "nothing may be deleted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_refuses_an_invalid_config_and_applies_a_valid_one() {
    let sandbox = empty_sandbox().await;
    let a = sandbox
        .add_project(ProjectSpec::new("SJC-A").file(FileSpec::new("/", "a.txt", 5_000)))
        .unwrap();
    let b = sandbox
        .add_project(ProjectSpec::new("SJC-B").file(FileSpec::new("/", "b.txt", 7_000)))
        .unwrap();
    let env = Env::for_sandbox(&sandbox, vec![a.clone()], "");
    let good = std::fs::read_to_string(&env.config_path).unwrap();
    let running = Running::start(&env, Notifier::disabled());
    wait_for("A mirrored", T, || all_verified(&env, &a, 1)).await;

    std::fs::write(&env.config_path, format!("{good}max-connections = 0\n")).unwrap();
    running.reload.send(()).await.unwrap();
    wait_for("the reload to be refused", T, || {
        let d = env.reader()?.daemon().ok()??;
        d.last_error?
            .contains("config reload refused")
            .then_some(())
    })
    .await;
    assert!(!running.handle.is_finished(), "the daemon keeps running");

    std::fs::write(
        &env.config_path,
        format!("{good}[[project]]\nid = \"{b}\"\n"),
    )
    .unwrap();
    running.reload.send(()).await.unwrap();
    wait_for("B mirrored after the reload", T, || {
        all_verified(&env, &b, 1)
    })
    .await;
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_socket_gets_ready_status_watchdog_and_stopping() {
    let sandbox = empty_sandbox().await;
    let p = sandbox
        .add_project(ProjectSpec::new("SJC-N").file(FileSpec::new("/", "n.txt", 10_000)))
        .unwrap();
    let env = Env::for_sandbox(&sandbox, vec![p], "");
    let sock_path = env.dir.path().join("notify.sock");
    let sock = tokio::net::UnixDatagram::bind(&sock_path).unwrap();
    let path = sock_path.to_str().unwrap().to_owned();
    let notifier = Notifier::from_vars(&|k| match k {
        "NOTIFY_SOCKET" => Some(path.clone()),
        "WATCHDOG_USEC" => Some("200000".into()),
        _ => None,
    });
    let running = Running::start(&env, notifier);
    let (mut ready, mut status, mut watchdog) = (false, false, 0);
    let mut buf = vec![0u8; 4096];
    while !(ready && status && watchdog >= 2) {
        let n = tokio::time::timeout(T, sock.recv(&mut buf))
            .await
            .expect("notifications arrive")
            .unwrap();
        let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
        ready |= msg.lines().any(|l| l == "READY=1");
        status |= msg
            .lines()
            .any(|l| l.starts_with("STATUS=") && l.contains("projects"));
        watchdog += usize::from(msg.lines().any(|l| l == "WATCHDOG=1"));
    }
    running.stop().await.unwrap();
    let mut stopping = false;
    while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(2), sock.recv(&mut buf)).await {
        stopping |= String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1");
        if stopping {
            break;
        }
    }
    assert!(stopping, "STOPPING=1 is sent on shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_writer_is_refused_while_the_daemon_runs() {
    let (_sandbox, env, running) = idle_daemon().await;
    let (_tx, rx) = mpsc::channel(1);
    let second = daemon::run_with(
        env.config_path.clone(),
        std::future::ready(()),
        rx,
        Notifier::disabled(),
    )
    .await;
    assert!(matches!(second, Err(DaemonError::Lock(_))), "{second:?}");
    let sync = env.bin(&["sync"]);
    assert!(!sync.status.success());
    let err = String::from_utf8_lossy(&sync.stderr);
    assert!(err.contains("already holds"), "{err}");
    running.stop().await.unwrap();
}

fn signal(child: &Child, sig: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, sig).unwrap();
}

fn spawn_daemon(env: &Env, log: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_dxmirror"))
        .args(["daemon", "--config"])
        .arg(&env.config_path)
        .env_remove("DX_API_TOKEN")
        .env_remove("DX_SECURITY_CONTEXT")
        .env_remove("NOTIFY_SOCKET")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

async fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    wait_for("the daemon to exit", Duration::from_secs(10), || {
        child.try_wait().unwrap()
    })
    .await
}

/// `dxmirror sandbox` serving 3 MB at 1 MB/s, and a mirror set-up for it whose chunks and
/// progress steps are small, so that a daemon is caught in mid-transfer.
fn slow_sandbox() -> (SandboxProcess, Env) {
    let sp = SandboxProcess::start(&["--dataset", "large:3M", "--bandwidth", "1M"]);
    let env = Env::for_process(
        &sp,
        sp.projects.clone(),
        "chunk-size = \"256KiB\"\nprogress-step = \"64KiB\"\n",
    );
    (sp, env)
}

/// Waits until the daemon has journaled some bytes (it is in mid-transfer).
async fn some_bytes_journaled(env: &Env) {
    wait_for("some bytes journaled", T, || {
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

/// A daemon in mid-transfer shows its project's own rate and ETA; killed, it is shown `down`
/// with when it was last seen (never as running), and `status --check` is critical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_a_project_rate_and_a_killed_daemon_as_down() {
    let sp = SandboxProcess::start(&["--dataset", "large:12M", "--bandwidth", "1M"]);
    let env = Env::for_process(
        &sp,
        sp.projects.clone(),
        "chunk-size = \"256KiB\"\nprogress-step = \"64KiB\"\n",
    );
    let mut child = spawn_daemon(&env, &env.dir.path().join("daemon.log"));
    let project = sp.projects[0].to_string();
    // Two status samples (5 s apart) give the project a rate.
    let v = wait_for(
        "a project rate in status --json",
        Duration::from_secs(40),
        || {
            let out = env.bin(&["status", "--json"]);
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            (v["projects"][0]["bytes_per_s"].as_u64()? > 0).then_some(v)
        },
    )
    .await;
    let p = &v["projects"][0];
    assert_eq!(p["id"], project.as_str());
    assert_eq!(p["shown_state"], "mirroring");
    // 1 MB/s shaped: the rate is of that order, and the ETA is what is left at that rate.
    let rate = p["bytes_per_s"].as_u64().unwrap();
    assert!((100_000..4_000_000).contains(&rate), "{rate}");
    let left = p["bytes_total"].as_u64().unwrap() - p["bytes_done"].as_u64().unwrap();
    assert_eq!(p["eta_s"].as_u64().unwrap(), left.div_ceil(rate));
    assert_eq!(v["daemon"]["state"], "running");
    assert_eq!(v["daemon"]["down"], false);

    signal(&child, rustix::process::Signal::KILL);
    wait_exit(&mut child).await;
    let out = env.bin_async(&["status"]).await;
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("daemon: "))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.starts_with(&format!(
            "daemon: down (pid {} is gone; it recorded running), last seen ",
            child.id()
        )),
        "{text}"
    );
    assert!(
        !text.contains("MiB/s"),
        "no rate from a dead daemon: {text}"
    );
    let out = env.bin_async(&["status", "--json"]).await;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["daemon"]["state"], "down");
    assert_eq!(v["daemon"]["recorded_state"], "running");
    assert!(v["projects"][0]["bytes_per_s"].is_null());
    let out = env.bin_async(&["status", "--check"]).await;
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.starts_with("DXMIRROR CRITICAL - daemon down: pid "),
        "{text}"
    );
}

/// The platform answers half the API calls with 429 and `Retry-After`: the daemon's line in
/// `status` says how long it has been throttled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_the_platform_throttling_the_daemon() {
    let sandbox = empty_sandbox().await;
    let p = sandbox
        .add_project(ProjectSpec::new("SJC-DT-0003").file(FileSpec::new("/", "a.txt", 1_000)))
        .unwrap();
    sandbox.set_faults(dxmirror::sandbox::FaultConfig::parse("api429=0.5,seed=5").unwrap());
    let env = Env::for_sandbox(&sandbox, vec![p], "[relist]\ninterval = \"100ms\"\n");
    let running = Running::start(&env, Notifier::disabled());
    let v = wait_for("status to count throttled time", T * 2, || {
        let out = env.bin(&["status", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        (v["daemon"]["throttled_s"].as_u64()? > 0).then_some(v)
    })
    .await;
    assert!(v["daemon"]["throttled"].is_boolean(), "{v}");
    let out = env.bin_async(&["status"]).await;
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with("  token: ok;") && l.contains("s in all)")),
        "{text}"
    );
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_with_a_bad_config_is_refused_and_the_daemon_keeps_going() {
    let (_sp, env) = slow_sandbox();
    let good_config = std::fs::read_to_string(&env.config_path).unwrap();
    let log = env.dir.path().join("daemon.log");
    let mut child = spawn_daemon(&env, &log);
    some_bytes_journaled(&env).await;

    // SIGHUP with an invalid config: refused, logged, the daemon keeps going.
    std::fs::write(
        &env.config_path,
        format!("{good_config}\nno-such-key = 1\n"),
    )
    .unwrap();
    signal(&child, rustix::process::Signal::HUP);
    wait_for("the refused reload to be logged", T, || {
        let text = std::fs::read_to_string(&log).ok()?;
        text.contains("config reload refused").then_some(())
    })
    .await;
    assert!(child.try_wait().unwrap().is_none(), "still running");
    signal(&child, rustix::process::Signal::TERM);
    wait_exit(&mut child).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_transfer_exits_0_and_a_restart_finishes_fetching_no_finished_byte_twice() {
    let (sp, env) = slow_sandbox();
    let mut child = spawn_daemon(&env, &env.dir.path().join("daemon1.log"));
    some_bytes_journaled(&env).await;

    // SIGTERM in mid-transfer: a clean stop with exit status 0.
    signal(&child, rustix::process::Signal::TERM);
    let status = wait_exit(&mut child).await;
    assert!(status.success(), "exit status {status:?}");
    let first = sp.stats().await;
    let p = &sp.projects[0];
    let n_files = env.reader().unwrap().files(p).unwrap().len();
    assert!(
        all_verified(&env, p, n_files).is_none(),
        "the stop should come in mid-transfer"
    );
    let journaled = journaled_ranges(&env, p);
    assert!(
        journaled.values().flatten().any(|r| r.len > 0),
        "some bytes were journaled before the stop"
    );

    // Restart: it finishes, fetching no finished byte twice.
    let mut child = spawn_daemon(&env, &env.dir.path().join("daemon2.log"));
    wait_for("the restart to finish", Duration::from_secs(30), || {
        all_verified(&env, p, n_files)
    })
    .await;
    signal(&child, rustix::process::Signal::TERM);
    assert!(wait_exit(&mut child).await.success());
    let second = sp.stats().await;
    assert_eq!(refetched_journaled(&journaled, &first, &second), 0);
}

/// Per file id, the byte ranges the journal claims are on disk: every byte of a verified file,
/// else each chunk's journaled prefix.
fn journaled_ranges(
    env: &Env,
    p: &ProjectId,
) -> std::collections::BTreeMap<String, Vec<ByteRange>> {
    let reader = env.reader().unwrap();
    let mut out = std::collections::BTreeMap::new();
    for f in reader.files(p).unwrap() {
        let ranges = if f.state == FileState::Verified {
            vec![ByteRange::new(0, f.size)]
        } else {
            let key = dxmirror::journal::FileKey::new(p, &f.file_id);
            match reader.load_plan(&key).unwrap() {
                Some(stored) => stored
                    .plan
                    .chunks
                    .iter()
                    .zip(&stored.chunk_done)
                    .map(|(c, &(done, _))| ByteRange::new(c.range.offset, done))
                    .collect(),
                None => Vec::new(),
            }
        };
        out.insert(f.file_id.to_string(), ranges);
    }
    out
}

/// Bytes served after `earlier` that lie inside what the journal claimed was on disk then: the
/// resume invariant says there are none (served-but-unread bytes of the first run do not count,
/// however much the sockets held when it stopped).
fn refetched_journaled(
    journaled: &std::collections::BTreeMap<String, Vec<ByteRange>>,
    earlier: &ServeStats,
    later: &ServeStats,
) -> u64 {
    let mut bad = 0;
    for (file, served) in &later.files {
        let old = earlier.files.get(file).map_or(0, |v| v.len());
        for s in &served[old..] {
            for r in journaled.get(file).map_or(&[][..], |v| &v[..]) {
                let lo = s.offset.max(r.offset);
                let hi = (s.offset + s.len).min(r.offset + r.len);
                bad += hi.saturating_sub(lo);
            }
        }
    }
    bad
}

/// `ExecStart=` and `ExecReload=` of the shipped unit, as written.
fn unit_lines(key: &str) -> Vec<String> {
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/dxmirror.service"),
    )
    .unwrap();
    unit.lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_units_exec_start_uses_flags_the_binary_has() {
    let starts = unit_lines("ExecStart");
    assert_eq!(starts.len(), 1, "{starts:?}");
    let words: Vec<&str> = starts[0].split_whitespace().collect();
    assert!(words[0].ends_with("/dxmirror"), "{words:?}");
    let sub = words[1];
    let help = Command::new(env!("CARGO_BIN_EXE_dxmirror"))
        .args([sub, "--help"])
        .output()
        .unwrap();
    assert!(help.status.success(), "dxmirror {sub} --help fails");
    let text = String::from_utf8_lossy(&help.stdout);
    for flag in words.iter().filter(|w| w.starts_with('-')) {
        let name = flag.split('=').next().unwrap();
        assert!(text.contains(name), "dxmirror {sub} has no {name}:\n{text}");
    }
    let reload = unit_lines("ExecReload");
    assert_eq!(reload, vec!["/bin/kill -HUP $MAINPID".to_owned()]);
    assert_eq!(unit_lines("Type"), vec!["notify".to_owned()]);
    assert_eq!(unit_lines("StateDirectory"), vec!["dxmirror".to_owned()]);
    assert_eq!(unit_lines("StateDirectoryMode"), vec!["0750".to_owned()]);
}

fn systemd_analyze(args: &[&str]) -> std::process::Output {
    Command::new("systemd-analyze")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("DXMIRROR_TEST_SYSTEMD=1 but systemd-analyze cannot run: {e}"))
}

#[test]
fn systemd_analyze_verify_reports_only_the_absent_binary() {
    if !Gate::Systemd.enabled("daemon::systemd_analyze_verify_reports_only_the_absent_binary") {
        return;
    }
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/dxmirror.service");
    let out = systemd_analyze(&["verify", "--man=no", unit.to_str().unwrap()]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            line.contains("/usr/bin/dxmirror"),
            "systemd-analyze verify complains about more than the absent binary: {line}\n{text}"
        );
    }
}

#[test]
fn systemd_analyze_security_exposure_is_printed() {
    if !Gate::Systemd.enabled("daemon::systemd_analyze_security_exposure_is_printed") {
        return;
    }
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/dxmirror.service");
    let out = systemd_analyze(&["security", "--offline=yes", unit.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    let exposure = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| {
            panic!(
                "no exposure level in:\n{text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    println!("systemd-analyze security: {}", exposure.trim());
    let score: f64 = exposure
        .split_whitespace()
        .find_map(|w| w.parse().ok())
        .expect("a score");
    assert!(score <= 3.0, "exposure too high: {exposure}");
}

/// Names of the files of `project` in `state`, sorted.
fn names_in_state(env: &Env, project: &ProjectId, state: FileState) -> Vec<String> {
    let mut v: Vec<String> = env
        .reader()
        .unwrap()
        .files(project)
        .unwrap()
        .into_iter()
        .filter(|f| f.state == state)
        .map(|f| f.name)
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pass_applies_path_type_and_sample_info_filters_exactly() {
    let sandbox = Sandbox::start(SandboxOptions::default()).await.unwrap();
    let p = sandbox.projects()[0].clone();
    let cases: [(&str, &[&str]); 2] = [
        (
            "sample-info = { sequencing_type = [\"RNA-Seq\"] }",
            &["SAMPLE_INFO.txt", "SJOS001101_D1.RNA-Seq.bam"],
        ),
        (
            "include = [\"restricted/**\"]\nexclude = [\"restricted/bam\"]\nfile-types = [\"gVCF\", \"index\"]",
            &[
                "SAMPLE_INFO.txt",
                "SJBALL020073_G1.gvcf.gz",
                "SJBALL020073_G1.gvcf.gz.tbi",
                "SJOS001101_G1.gvcf.gz",
            ],
        ),
    ];
    for (rules, expected) in cases {
        let env = Env::for_sandbox(
            &sandbox,
            Vec::new(),
            format!("[[project]]\nid = \"{p}\"\n{rules}\n"),
        );
        let summary = env.sync().await.unwrap();
        assert!(summary.is_ok(), "{summary:#?}");
        let mut done = names_in_state(&env, &p, FileState::Verified);
        done.extend(names_in_state(&env, &p, FileState::Unverified));
        done.sort();
        done.dedup();
        assert_eq!(done, expected, "{rules}");
        let rows = env.reader().unwrap().files(&p).unwrap();
        for f in rows.iter().filter(|f| f.state == FileState::Skipped) {
            let why = f.reason.clone().unwrap_or_default();
            assert!(
                why.starts_with("excluded by filter") || why.starts_with("file is"),
                "{}: {why}",
                f.name
            );
        }
        let dir = env.project_dir(&p);
        let local: Vec<String> = files_under(&dir)
            .into_iter()
            .filter(|f| !f.starts_with(".dxmirror") && f.as_os_str() != "SHA256SUMS")
            .filter_map(|f| f.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        let mut local = local;
        local.sort();
        local.dedup();
        assert_eq!(local, expected, "only the selected files are on disk");
    }
}

fn age(path: &Path) {
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_modified(std::time::SystemTime::now() - Duration::from_secs(60))
        .unwrap();
}

/// A daemon on `sandbox` watching an inbox in the test's directory, rescanned every 200 ms.
async fn watching_an_inbox(sandbox: &Sandbox) -> (Env, PathBuf, Running) {
    let env = Env::for_sandbox(
        sandbox,
        Vec::new(),
        "[watch]\ndir = \"INBOX\"\nrescan = \"200ms\"\n",
    );
    // The inbox lives in the test's directory.
    let inbox = env.dir.path().join("inbox");
    let text = std::fs::read_to_string(&env.config_path)
        .unwrap()
        .replace("\"INBOX\"", &format!("{:?}", inbox));
    std::fs::write(&env.config_path, text).unwrap();
    let running = Running::start(&env, Notifier::disabled());
    wait_for("the inbox to be created", T, || {
        inbox.is_dir().then_some(())
    })
    .await;
    (env, inbox, running)
}

/// Writes `bytes` to `inbox/name` with an mtime a minute ago (a drop the daemon takes as
/// complete).
fn drop_in(inbox: &Path, name: &str, bytes: &[u8]) {
    std::fs::write(inbox.join(name), bytes).unwrap();
    age(&inbox.join(name));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_project_id_list_queues_the_whole_project() {
    let sandbox = empty_sandbox().await;
    let whole = sandbox
        .add_project(
            ProjectSpec::new("SJC-inbox-whole")
                .file(FileSpec::new("/", "w1.txt", 4_000))
                .file(FileSpec::new("/restricted/bam", "w2.bam", 9_000)),
        )
        .unwrap();
    let (env, inbox, running) = watching_an_inbox(&sandbox).await;
    drop_in(
        &inbox,
        "request.txt",
        format!("# data request 7\n{whole}\n").as_bytes(),
    );
    wait_for("the whole project to be mirrored", T, || {
        all_verified(&env, &whole, 2)
    })
    .await;
    assert!(inbox.join("accepted/request.txt").is_file());
    running.stop().await.unwrap();
    // The request is recorded, so a restart keeps it.
    let requests = env.reader().unwrap().requests().unwrap();
    assert!(requests.contains(&(whole.clone(), None)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_manifest_mirrors_only_the_files_it_names() {
    let sandbox = empty_sandbox().await;
    let partial = sandbox
        .add_project(
            ProjectSpec::new("SJC-inbox-files")
                .file(FileSpec::new("/restricted/CNV", "a.cnv", 3_000))
                .file(FileSpec::new("/restricted/CNV", "b.cnv", 5_000))
                .file(FileSpec::new("/restricted/bam", "c.bam", 7_000)),
        )
        .unwrap();
    let wanted = sandbox
        .files(&partial)
        .into_iter()
        .find(|f| f.name == "b.cnv")
        .unwrap();
    let (env, inbox, running) = watching_an_inbox(&sandbox).await;
    let manifest = serde_json::json!({
        partial.to_string(): [{"id": wanted.id.to_string(), "name": "b.cnv", "folder": "/restricted/CNV"}]
    });
    let path = inbox.join("manifest.json.bz2");
    dxmirror::inbox::write_bzip2(&path, manifest.to_string().as_bytes()).unwrap();
    age(&path);
    wait_for("the requested file to be mirrored", T, || {
        let f = env
            .reader()?
            .files(&partial)
            .ok()?
            .into_iter()
            .find(|f| f.file_id == wanted.id)?;
        (f.state == FileState::Verified).then_some(())
    })
    .await;
    // Only the requested file of the partial project.
    assert_eq!(
        names_in_state(&env, &partial, FileState::Verified),
        ["b.cnv"]
    );
    let others = env.reader().unwrap().files(&partial).unwrap();
    for f in others.iter().filter(|f| f.file_id != wanted.id) {
        assert_eq!(f.state, FileState::Skipped, "{}", f.name);
        assert!(f.reason.as_deref().unwrap_or("").contains("not requested"));
    }
    assert!(inbox.join("accepted/manifest.json.bz2").is_file());
    running.stop().await.unwrap();
    // After a restart the partial project is still limited to its requested file.
    let requests = env.reader().unwrap().requests().unwrap();
    assert!(requests.contains(&(partial.clone(), Some(wanted.id.clone()))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_drop_is_rejected_with_a_reason() {
    let sandbox = empty_sandbox().await;
    let (_env, inbox, running) = watching_an_inbox(&sandbox).await;
    drop_in(&inbox, "junk.txt", b"hello, please mirror everything\n");
    // The reason file is written after the move: wait for its whole line.
    let reason = wait_for("the drop to be rejected", T, || {
        let text = std::fs::read_to_string(inbox.join("rejected/junk.txt.reason")).ok()?;
        text.ends_with('\n').then_some(text)
    })
    .await;
    assert!(!reason.trim().is_empty());
    assert!(inbox.join("rejected/junk.txt").is_file());
    running.stop().await.unwrap();
}

#[tokio::test]
async fn scheduled_verification_finds_bit_rot_and_the_daemon_heals_only_the_damaged_chunk() {
    let sandbox = empty_sandbox().await;
    let p = sandbox
        .add_project(ProjectSpec::new("SJC-DT-ROT").file(FileSpec::new(
            "/restricted/bam",
            "r.bam",
            400_000,
        )))
        .unwrap();
    let env = Env::for_sandbox(
        &sandbox,
        vec![p.clone()],
        "chunk-size = \"64KiB\"\n[relist]\ninterval = \"1h\"\n[verify]\ninterval = \"300ms\"\n",
    );
    let running = Running::start(&env, Notifier::disabled());
    wait_for("the project to be mirrored", T, || {
        all_verified(&env, &p, 1)
    })
    .await;
    let file = sandbox.files(&p).remove(0);
    let path = env.project_dir(&p).join("restricted/bam/r.bam");
    let served_before = sandbox.stats().bytes_served(file.id.as_str());

    // Bit rot in the finished file, inside chunk 2.
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[150_000] ^= 0x08;
    std::fs::write(&path, &bytes).unwrap();

    let truth = sandbox.content(&file.id, ByteRange::new(0, file.size));
    wait_for("the damage to be found and healed", T, || {
        let healed = std::fs::read(&path).ok()? == truth;
        let reported = env
            .reader()?
            .recent_events(100)
            .ok()?
            .iter()
            .any(|e| e.message.starts_with("verify:") && e.message.contains("chunk 2"));
        (healed && reported).then_some(())
    })
    .await;
    // Only that 64 KiB chunk was fetched again.
    let again = sandbox.stats().bytes_served(file.id.as_str()) - served_before;
    assert_eq!(again, 64 << 10, "{again} bytes fetched again");
    let audit = env.reader().unwrap().audit_since(0).unwrap();
    assert!(audit.iter().any(|a| a.action == "repaired"), "{audit:?}");
    running.stop().await.unwrap();
}
