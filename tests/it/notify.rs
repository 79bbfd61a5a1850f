//! Notifications from the in-process daemon to receivers on loopback started by each test:
//! a signed webhook, a healthchecks-style ping and a command, each event kind the test can
//! make happen (`file-flagged` has no emitter yet), a receiver that is down and then up,
//! a command that fails and one that hangs, a flapping token, and `[notify]` keys on reload.
//! Bodies are checked field by field against the documented schema (`docs/notifications.md`).
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dxmirror::daemon::Notifier;
use dxmirror::model::ProjectId;
use dxmirror::notifications::signature;
use dxmirror::sandbox::{FileSpec, ProjectSpec, Sandbox};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::metrics::free_port;
use crate::support::{all_verified, empty_sandbox, wait_for, Env, Running};

const T: Duration = Duration::from_secs(30);

/// One request a receiver got.
#[derive(Debug, Clone)]
struct Got {
    path: String,
    headers: HashMap<String, String>,
    body: String,
}

impl Got {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }

    fn kind(&self) -> String {
        self.json()["kind"].as_str().unwrap().to_owned()
    }
}

/// An HTTP receiver on loopback that records every request and answers 200.
struct Receiver {
    port: u16,
    got: Arc<Mutex<Vec<Got>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    async fn on(port: u16) -> Receiver {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = got.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                let sink = sink.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    let (head_len, path, headers) = loop {
                        let n = s.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        let mut h = [httparse::EMPTY_HEADER; 32];
                        let mut req = httparse::Request::new(&mut h);
                        if let Ok(httparse::Status::Complete(len)) = req.parse(&buf) {
                            let headers: HashMap<String, String> = req
                                .headers
                                .iter()
                                .map(|h| {
                                    (
                                        h.name.to_ascii_lowercase(),
                                        String::from_utf8_lossy(h.value).into_owned(),
                                    )
                                })
                                .collect();
                            break (len, req.path.unwrap().to_owned(), headers);
                        }
                    };
                    let want: usize = headers
                        .get("content-length")
                        .map_or(0, |v| v.parse().unwrap());
                    while buf.len() < head_len + want {
                        let n = s.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                    }
                    let body =
                        String::from_utf8_lossy(&buf[head_len..head_len + want]).into_owned();
                    sink.lock().unwrap().push(Got {
                        path,
                        headers,
                        body,
                    });
                    let _ = s
                        .write_all(
                            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                        )
                        .await;
                });
            }
        });
        Receiver { port, got, task }
    }

    async fn start() -> Receiver {
        Receiver::on(0).await
    }

    fn got(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }

    /// The requests on `prefix` whose body has kind `kind`.
    fn of(&self, prefix: &str, kind: &str) -> Vec<Got> {
        self.got()
            .into_iter()
            .filter(|g| g.path.starts_with(prefix) && g.kind() == kind)
            .collect()
    }

    /// Waits for a request on `prefix` of kind `kind`.
    async fn wait(&self, prefix: &str, kind: &str) -> Got {
        wait_for(&format!("a {kind} notification on {prefix}"), T, || {
            self.of(prefix, kind).into_iter().next()
        })
        .await
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

/// A project of two files in `sandbox`.
fn two_files(sandbox: &Sandbox, name: &str) -> ProjectId {
    sandbox
        .add_project(
            ProjectSpec::new(name)
                .file(FileSpec::new("/", "SAMPLE_INFO.txt", 2_000))
                .file(FileSpec::new("/data", "a.bam", 200_000)),
        )
        .unwrap()
}

fn webhook(r: &Receiver, secret: Option<&Path>) -> String {
    let mut s = format!("[[notify.webhook]]\nurl = \"{}\"\n", r.url("/hook"));
    if let Some(p) = secret {
        s.push_str(&format!("secret-file = \"{}\"\n", p.display()));
    }
    s
}

/// Checks the fields every body has, whatever its kind.
fn check_schema(v: &Value) {
    let o = v.as_object().unwrap();
    for k in [
        "schema_version",
        "id",
        "kind",
        "time_ms",
        "host",
        "project_id",
        "project_name",
        "file_id",
        "files_done",
        "files_total",
        "files_failed",
        "bytes_done",
        "bytes_total",
        "mirror_path",
        "ok",
        "message",
    ] {
        assert!(o.contains_key(k), "no {k} in {v}");
    }
    assert_eq!(o.len(), 16, "{v}");
    assert_eq!(v["schema_version"], 1);
    assert_eq!(v["id"].as_str().unwrap().len(), 32);
}

fn today_plus(days: i64) -> String {
    let d = dxmirror::clock::Date {
        days: dxmirror::clock::Date::today().days + days,
    };
    d.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirrored_project_is_told_to_a_signed_webhook_a_ping_and_a_command() {
    let sandbox = empty_sandbox().await;
    let p = two_files(&sandbox, "SJC-DT-notify");
    let r = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "s3cret\n").unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let expiring = today_plus(10);
    let env = Env::for_sandbox(
        &sandbox,
        Vec::new(),
        // The command writes its output aside and renames it: the test never reads it half-written.
        format!(
            "[notify]\n{}[[notify.webhook]]\nping-url = \"{}\"\n\
             [[notify.command]]\nargv = ['/bin/sh', '-c', 'env | grep ^DXMIRROR_ | sort > \"$0/.part\" && mv \"$0/.part\" \"$0/$DXMIRROR_EVENT.$DXMIRROR_EVENT_ID\"', '{}']\n\
             [[project]]\nid = \"{p}\"\naccess-expires = \"{expiring}\"\n",
            webhook(&r, Some(&secret)),
            r.url("/ping/check-1"),
            out.display()
        ),
    );
    let running = Running::start(&env, Notifier::disabled());
    wait_for("the project to be mirrored", T, || {
        all_verified(&env, &p, 2)
    })
    .await;
    let done = r.wait("/hook", "project-complete").await;

    // The webhook: signed body, headers naming the event, every field of the schema.
    let v = done.json();
    check_schema(&v);
    assert_eq!(
        done.headers["x-dxmirror-signature"],
        signature(b"s3cret", done.body.as_bytes())
    );
    assert_eq!(done.headers["x-dxmirror-event"], "project-complete");
    assert_eq!(
        done.headers["x-dxmirror-event-id"],
        v["id"].as_str().unwrap()
    );
    assert_eq!(done.headers["content-type"], "application/json");
    assert_eq!(v["project_id"], p.to_string());
    assert_eq!(v["project_name"], "SJC-DT-notify");
    assert_eq!(v["files_done"], 2);
    assert_eq!(v["files_total"], 2);
    assert_eq!(v["files_failed"], 0);
    assert_eq!(v["bytes_done"], 202_000);
    assert_eq!(v["bytes_total"], 202_000);
    assert_eq!(v["mirror_path"], env.project_dir(&p).display().to_string());
    // The daily access check at start: expiring in 10 days.
    let exp = r.wait("/hook", "access-expiring").await.json();
    check_schema(&exp);
    assert_eq!(exp["project_id"], p.to_string());
    assert!(
        exp["message"].as_str().unwrap().contains(&expiring),
        "{exp}"
    );

    // The ping: /start then the URL itself (a clean pass); no other kind reaches it.
    let pings = wait_for("the pings", T, || {
        let g: Vec<String> = r
            .got()
            .into_iter()
            .filter(|g| g.path.starts_with("/ping"))
            .map(|g| g.path)
            .collect();
        (g.len() >= 2).then_some(g)
    })
    .await;
    assert_eq!(pings[..2], ["/ping/check-1/start", "/ping/check-1"]);
    assert!(
        r.of("/hook", "pass-start").is_empty(),
        "pass events are for pings only"
    );
    assert!(r.of("/ping", "project-complete").is_empty());

    // The command: run without a shell of ours, the event in DXMIRROR_* variables.
    let id = v["id"].as_str().unwrap();
    let file = out.join(format!("project-complete.{id}"));
    let vars = wait_for("the command's output", T, || {
        std::fs::read_to_string(&file).ok()
    })
    .await;
    for want in [
        "DXMIRROR_EVENT=project-complete".to_owned(),
        format!("DXMIRROR_EVENT_ID={id}"),
        format!("DXMIRROR_PROJECT_ID={p}"),
        "DXMIRROR_PROJECT_NAME=SJC-DT-notify".to_owned(),
        "DXMIRROR_FILES_DONE=2".to_owned(),
        "DXMIRROR_BYTES_TOTAL=202000".to_owned(),
        format!("DXMIRROR_MIRROR_PATH={}", env.project_dir(&p).display()),
    ] {
        assert!(vars.lines().any(|l| l == want), "no {want} in\n{vars}");
    }
    // Every sink empties its queue (the last pings and commands may still be on their way).
    let counts = wait_for("an empty outbox", T, || {
        let c = env.reader()?.outbox_counts().ok()?;
        (c.len() == 3 && c.iter().all(|c| c.pending == 0)).then_some(c)
    })
    .await;
    running.stop().await.unwrap();
    // Sent once each; nothing dropped.
    assert_eq!(r.of("/hook", "project-complete").len(), 1);
    assert!(
        counts.iter().all(|c| c.dropped == 0 && c.delivered > 0),
        "{counts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_down_then_up_gets_every_event_with_its_recorded_id() {
    let sandbox = empty_sandbox().await;
    let p = two_files(&sandbox, "SJC-DT-down");
    let port = free_port();
    let env = Env::for_sandbox(
        &sandbox,
        vec![p.clone()],
        format!("[notify]\n[[notify.webhook]]\nurl = \"http://127.0.0.1:{port}/hook\"\n"),
    );
    let running = Running::start(&env, Notifier::disabled());
    wait_for("the project to be mirrored", T, || {
        all_verified(&env, &p, 2)
    })
    .await;
    // Nothing listens: the event stays in the outbox and its failure is reported once.
    wait_for("a failed delivery", T, || {
        let r = env.reader()?;
        let c = r.outbox_counts().ok()?;
        let events = r.recent_events(100).ok()?;
        (c.iter().any(|c| c.pending > 0)
            && events.iter().any(|e| e.message.contains("not delivered")))
        .then_some(())
    })
    .await;
    let recorded = env.reader().unwrap().notifications().unwrap();
    let complete: Vec<_> = recorded
        .iter()
        .filter(|(_, k, _)| k == "project-complete")
        .collect();
    assert_eq!(complete.len(), 1);
    // The receiver comes up: the same event arrives, with the id recorded before sending.
    let r = Receiver::on(port).await;
    let got = r.wait("/hook", "project-complete").await;
    assert_eq!(got.json()["id"], complete[0].0.as_str());
    assert_eq!(got.body, complete[0].2);
    wait_for("an empty outbox", T, || {
        let c = env.reader()?.outbox_counts().ok()?;
        c.iter().all(|c| c.pending == 0).then_some(())
    })
    .await;
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_and_a_hanging_command_are_reported_and_the_hang_is_killed() {
    let sandbox = empty_sandbox().await;
    let p = two_files(&sandbox, "SJC-DT-cmd");
    let r = Receiver::start().await;
    let env = Env::for_sandbox(
        &sandbox,
        vec![p.clone()],
        format!(
            "[notify]\n{}[[notify.command]]\nargv = ['/bin/sh', '-c', 'echo broken receiver >&2; exit 3']\n\
             [[notify.command]]\nargv = ['/bin/sleep', '600']\ntimeout = \"300ms\"\n",
            webhook(&r, None)
        ),
    );
    let running = Running::start(&env, Notifier::disabled());
    // The webhook is not held up by the commands.
    r.wait("/hook", "project-complete").await;
    let events = wait_for("both commands reported", T, || {
        let ev = env.reader()?.recent_events(200).ok()?;
        let failed = ev.iter().any(|e| {
            e.message
                .contains("failed (exit status: 3): broken receiver")
        });
        let killed = ev.iter().any(|e| {
            e.message
                .contains("/bin/sleep did not finish within 0.3s and was killed")
        });
        (failed && killed).then_some(ev)
    })
    .await;
    // Reported once per event, not once per retry.
    let n = events
        .iter()
        .filter(|e| e.message.contains("broken receiver") && e.message.contains("project-complete"))
        .count();
    assert_eq!(n, 1);
    // No sleep is left running.
    let sleeping = std::process::Command::new("pgrep")
        .args(["-f", "^/bin/sleep 600$"])
        .output()
        .unwrap();
    assert!(
        sleeping.stdout.is_empty(),
        "a hung command survived: {:?}",
        String::from_utf8_lossy(&sleeping.stdout)
    );
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flapping_token_and_a_revoked_project_are_one_notification_per_change() {
    let sandbox = empty_sandbox().await;
    let p = two_files(&sandbox, "SJC-DT-flap");
    let r = Receiver::start().await;
    let env = Env::for_sandbox(
        &sandbox,
        vec![p.clone()],
        format!(
            "[relist]\ninterval = \"150ms\"\n[notify]\n{}",
            webhook(&r, None)
        ),
    );
    let running = Running::start(&env, Notifier::disabled());
    r.wait("/hook", "project-complete").await;
    let token = sandbox.token();
    for round in 1..=2 {
        sandbox.set_token("not-the-daemons-token");
        wait_for("the token refused", T, || {
            (r.of("/hook", "token-refused").len() == round).then_some(())
        })
        .await;
        sandbox.set_token(&token);
        // A reload tries the token again at once.
        running.reload.send(()).await.unwrap();
        wait_for("the token accepted", T, || {
            (r.of("/hook", "token-accepted").len() == round).then_some(())
        })
        .await;
    }
    // The project is revoked: several re-listings find it inaccessible, one notification.
    sandbox.set_revoked(&p, true);
    let lost = r.wait("/hook", "project-inaccessible").await.json();
    check_schema(&lost);
    assert_eq!(lost["project_id"], p.to_string());
    let relists_before = sandbox.stats().requests("/project-xxxx/describe");
    wait_for("more re-listings", T, || {
        (sandbox.stats().requests("/project-xxxx/describe") >= relists_before + 3).then_some(())
    })
    .await;
    running.stop().await.unwrap();
    assert_eq!(r.of("/hook", "token-refused").len(), 2);
    assert_eq!(r.of("/hook", "token-accepted").len(), 2);
    assert_eq!(r.of("/hook", "project-inaccessible").len(), 1);
}

/// Every event at `prefix`, by kind, counted.
fn kinds(r: &Receiver, prefix: &str) -> HashMap<String, usize> {
    let mut n = HashMap::new();
    for g in r.got().into_iter().filter(|g| g.path.starts_with(prefix)) {
        *n.entry(g.kind()).or_default() += 1;
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_wait_stall_expiry_and_a_gone_project_are_told_once_and_a_disabled_kind_never() {
    let sandbox = empty_sandbox().await;
    let p = two_files(&sandbox, "SJC-DT-wait");
    let expired = two_files(&sandbox, "SJC-DT-expired");
    let expiring = two_files(&sandbox, "SJC-DT-expiring");
    // Never on the platform: its describe is a 404.
    let gone = "project-000000000000000000000009";
    let r = Receiver::start().await;
    let env = Env::for_sandbox(
        &sandbox,
        vec![p.clone()],
        format!(
            "disk-reserve = \"1024TiB\"\ndisk-poll = \"20ms\"\n\
             [relist]\ninterval = \"150ms\"\n\
             [notify]\nstalled-after = \"1s\"\ndisabled = [\"access-expiring\"]\n{}\
             [[project]]\nid = \"{expired}\"\naccess-expires = \"{}\"\n\
             [[project]]\nid = \"{expiring}\"\naccess-expires = \"{}\"\n\
             [[project]]\nid = \"{gone}\"\n",
            webhook(&r, None),
            today_plus(-1),
            today_plus(10),
        ),
    );
    let running = Running::start(&env, Notifier::disabled());
    let wait = r.wait("/hook", "disk-wait").await.json();
    check_schema(&wait);
    assert!(
        wait["message"]
            .as_str()
            .unwrap()
            .contains("wait for disk space"),
        "{wait}"
    );
    let stalled = r.wait("/hook", "stalled").await.json();
    check_schema(&stalled);
    assert!(
        stalled["message"]
            .as_str()
            .unwrap()
            .contains("no byte arrived for 1s"),
        "{stalled}"
    );
    let exp = r.wait("/hook", "access-expired").await.json();
    assert_eq!(exp["project_id"], expired.to_string());
    let g = r.wait("/hook", "project-gone").await.json();
    check_schema(&g);
    assert_eq!(g["project_id"], gone);
    // The conditions hold through more re-listings and status ticks: still one each.
    let relists = sandbox.stats().requests("/project-xxxx/describe");
    wait_for("more re-listings", T, || {
        (sandbox.stats().requests("/project-xxxx/describe") >= relists + 3).then_some(())
    })
    .await;
    let before = env.reader().unwrap().daemon().unwrap().unwrap().updated_ms;
    wait_for("two more status ticks", T, || {
        let now = env.reader()?.daemon().ok()??.updated_ms;
        (now > before + 5_000).then_some(())
    })
    .await;
    running.stop().await.unwrap();
    let n = kinds(&r, "/hook");
    for k in ["disk-wait", "stalled", "access-expired", "project-gone"] {
        assert_eq!(n.get(k), Some(&1), "{k}: {n:?}");
    }
    // Switched off: not sent, not even recorded.
    assert_eq!(n.get("access-expiring"), None, "{n:?}");
    let recorded = env.reader().unwrap().notifications().unwrap();
    assert!(
        recorded.iter().all(|(_, k, _)| k != "access-expiring"),
        "{recorded:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_files_and_long_throttling_are_told() {
    let sandbox = empty_sandbox().await;
    let p = two_files(&sandbox, "SJC-DT-corrupt");
    sandbox.set_faults(dxmirror::sandbox::FaultConfig::parse("flip=1.0,seed=3").unwrap());
    let r = Receiver::start().await;
    let env = Env::for_sandbox(
        &sandbox,
        vec![p.clone()],
        format!(
            "max-verify-retries = 1\n[relist]\ninterval = \"150ms\"\n\
             [notify]\nthrottled-after = \"1s\"\n{}",
            webhook(&r, None)
        ),
    );
    let running = Running::start(&env, Notifier::disabled());
    let corrupt = wait_for("both files told corrupt", T, || {
        let g = r.of("/hook", "file-corrupt");
        (g.len() == 2).then_some(g)
    })
    .await;
    let files: Vec<String> = sandbox
        .files(&p)
        .into_iter()
        .map(|f| f.id.to_string())
        .collect();
    for g in &corrupt {
        let v = g.json();
        check_schema(&v);
        assert_eq!(v["project_id"], p.to_string());
        assert!(
            files.contains(&v["file_id"].as_str().unwrap().to_owned()),
            "{v}"
        );
        assert!(
            v["mirror_path"]
                .as_str()
                .unwrap()
                .starts_with(&env.project_dir(&p).display().to_string()),
            "{v}"
        );
        assert!(
            v["message"].as_str().unwrap().starts_with("corrupt "),
            "{v}"
        );
    }
    // Every API call is now throttled (429 with Retry-After): told once it lasts 1s.
    sandbox.set_faults(dxmirror::sandbox::FaultConfig::parse("api429=1.0").unwrap());
    let t = r.wait("/hook", "throttled").await.json();
    check_schema(&t);
    running.stop().await.unwrap();
    let n = kinds(&r, "/hook");
    // The files stay corrupt through the re-listings: told once each, not per pass.
    assert_eq!(n.get("file-corrupt"), Some(&2), "{n:?}");
    assert_eq!(n.get("throttled"), Some(&1), "{n:?}");
    assert_eq!(n.get("project-complete"), None, "{n:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_findings_are_told() {
    let sandbox = empty_sandbox().await;
    let p = two_files(&sandbox, "SJC-DT-rot");
    let r = Receiver::start().await;
    let env = Env::for_sandbox(
        &sandbox,
        vec![p.clone()],
        format!(
            "chunk-size = \"64KiB\"\n[relist]\ninterval = \"1h\"\n[verify]\ninterval = \"300ms\"\n[notify]\n{}",
            webhook(&r, None)
        ),
    );
    let running = Running::start(&env, Notifier::disabled());
    r.wait("/hook", "project-complete").await;
    let path = env.project_dir(&p).join("data/a.bam");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[150_000] ^= 0x08;
    std::fs::write(&path, &bytes).unwrap();
    let v = r.wait("/hook", "verify-findings").await.json();
    check_schema(&v);
    assert_eq!(v["files_failed"], 1, "{v}");
    assert_eq!(v["project_id"], p.to_string());
    let a_bam = sandbox
        .files(&p)
        .into_iter()
        .find(|f| f.name == "a.bam")
        .unwrap();
    assert_eq!(v["file_id"], a_bam.id.to_string());
    assert!(
        v["message"].as_str().unwrap().contains("1 damaged file(s)"),
        "{v}"
    );
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_drops_the_oldest_event_counts_and_reports_it() {
    let sandbox = empty_sandbox().await;
    let p = two_files(&sandbox, "SJC-DT-full");
    let port = free_port();
    let env = Env::for_sandbox(
        &sandbox,
        Vec::new(),
        format!(
            "[notify]\nqueue-limit = 1\n[[notify.webhook]]\nurl = \"http://127.0.0.1:{port}/hook\"\n\
             [[project]]\nid = \"{p}\"\naccess-expires = \"{}\"\n",
            today_plus(10)
        ),
    );
    let running = Running::start(&env, Notifier::disabled());
    // access-expiring (at start) then project-complete: the first is dropped for the second.
    let events = wait_for("the drop reported", T, || {
        let r = env.reader()?;
        let ev = r.recent_events(100).ok()?;
        ev.iter()
            .any(|e| e.message.contains("1 undelivered notification(s) dropped"))
            .then_some(r.outbox_counts().ok()?)
    })
    .await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!((events[0].dropped, events[0].pending), (1, 1), "{events:?}");
    let r = Receiver::on(port).await;
    r.wait("/hook", "project-complete").await;
    running.stop().await.unwrap();
    assert_eq!(kinds(&r, "/hook").get("access-expiring"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_keys_apply_on_reload() {
    let sandbox = empty_sandbox().await;
    let (a, b) = (Receiver::start().await, Receiver::start().await);
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "k2").unwrap();
    let env = Env::for_sandbox(
        &sandbox,
        Vec::new(),
        format!(
            "[notify]\ndisabled = [\"token-refused\"]\n{}",
            webhook(&a, None)
        ),
    );
    let running = Running::start(&env, Notifier::disabled());
    let token = sandbox.token();
    let bad_token = || async {
        wait_for("the token refused", T, || {
            (env.reader()?.daemon().ok()??.state == dxmirror::journal::DaemonState::BadToken)
                .then_some(())
        })
        .await
    };
    // disabled: the refusal is not told, its end is.
    sandbox.set_token("not-the-daemons-token");
    running.reload.send(()).await.unwrap();
    bad_token().await;
    sandbox.set_token(&token);
    running.reload.send(()).await.unwrap();
    a.wait("/hook", "token-accepted").await;
    assert!(a.of("/hook", "token-refused").is_empty());

    // url, secret-file, disabled and a command's timeout, all changed by one reload.
    let text = std::fs::read_to_string(&env.config_path).unwrap();
    let changed = text
        .replace("disabled = [\"token-refused\"]\n", "")
        .replace(&webhook(&a, None), &webhook(&b, Some(&secret)))
        + "[[notify.command]]\nargv = ['/bin/sleep', '600']\ntimeout = \"200ms\"\n";
    assert_ne!(changed, text);
    std::fs::write(&env.config_path, &changed).unwrap();
    running.reload.send(()).await.unwrap();
    // The new sinks are in force before the token goes bad (else a call of the old config
    // still in flight could find it refused first, and tell the old sinks).
    wait_for("the third reload", T, || {
        let n = env
            .reader()?
            .recent_events(100)
            .ok()?
            .iter()
            .filter(|e| e.message == "config reloaded")
            .count();
        (n == 3).then_some(())
    })
    .await;
    sandbox.set_token("not-the-daemons-token");
    running.reload.send(()).await.unwrap();
    let got = b.wait("/hook", "token-refused").await;
    assert_eq!(
        got.headers["x-dxmirror-signature"],
        signature(b"k2", got.body.as_bytes())
    );
    wait_for("the command killed after 0.2s", T, || {
        env.reader()?
            .recent_events(100)
            .ok()?
            .iter()
            .any(|e| e.message.contains("/bin/sleep did not finish within 0.2s"))
            .then_some(())
    })
    .await;
    assert!(
        a.of("/hook", "token-refused").is_empty(),
        "the old url got it"
    );

    // A secret that cannot be read: the reload is refused, the previous sinks stay.
    std::fs::remove_file(&secret).unwrap();
    std::fs::write(
        &env.config_path,
        changed.replace(&b.url("/hook"), &a.url("/hook")),
    )
    .unwrap();
    running.reload.send(()).await.unwrap();
    sandbox.set_token(&token);
    running.reload.send(()).await.unwrap();
    b.wait("/hook", "token-accepted").await;
    assert!(a.of("/hook", "token-accepted").len() == 1, "{:?}", a.got());
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_project_held_then_purged_is_told_before_and_after() {
    let sandbox = empty_sandbox().await;
    let p = two_files(&sandbox, "SJC-DT-purge");
    let r = Receiver::start().await;
    let env = Env::for_sandbox(
        &sandbox,
        Vec::new(),
        format!(
            "[relist]\ninterval = \"150ms\"\n[notify]\n{}\
             [[project]]\nid = \"{p}\"\naccess-expires = \"{}\"\non-access-expired = \"hold\"\n",
            webhook(&r, None),
            today_plus(-1)
        ),
    );
    let edit = |from: &str, to: &str| {
        let text = std::fs::read_to_string(&env.config_path).unwrap();
        assert!(text.contains(from), "{text}");
        std::fs::write(&env.config_path, text.replacen(from, to, 1)).unwrap();
    };
    let running = Running::start(&env, Notifier::disabled());
    let held = r.wait("/hook", "access-held").await.json();
    check_schema(&held);
    assert_eq!(held["project_id"], p.to_string());
    assert!(
        held["message"]
            .as_str()
            .unwrap()
            .starts_with("access held: "),
        "{held}"
    );
    // Mirrored under `warn`, then purged with no grace: told after the deletion.
    edit(
        "on-access-expired = \"hold\"",
        "on-access-expired = \"warn\"",
    );
    running.reload.send(()).await.unwrap();
    wait_for("the project to be mirrored", T, || {
        all_verified(&env, &p, 2)
    })
    .await;
    let dir = env.project_dir(&p);
    edit(
        "on-access-expired = \"warn\"",
        "on-access-expired = \"purge\"",
    );
    let text = std::fs::read_to_string(&env.config_path).unwrap();
    std::fs::write(
        &env.config_path,
        format!("access-purge-grace = \"0s\"\n{text}"),
    )
    .unwrap();
    running.reload.send(()).await.unwrap();
    let purged = r.wait("/hook", "access-purged").await.json();
    check_schema(&purged);
    assert_eq!(purged["project_id"], p.to_string());
    assert!(
        purged["message"].as_str().unwrap().contains("audit record"),
        "{purged}"
    );
    assert!(!dir.exists(), "the copy is deleted before it is told");
    running.stop().await.unwrap();
    let n = kinds(&r, "/hook");
    assert_eq!(n.get("access-held"), Some(&1), "{n:?}");
    assert_eq!(n.get("access-purged"), Some(&1), "{n:?}");
    assert_eq!(n.get("access-purge-failed"), None, "{n:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_failed_is_told_once_with_its_file() {
    use dxmirror::sandbox::FileSpecKind;
    const MIB: u64 = 1 << 20;
    let sandbox = empty_sandbox().await;
    let p = sandbox
        .add_project(
            ProjectSpec::new("SJC-DT-failed").file(
                FileSpec::new("/restricted/bam", "pinned.bam", 12 * MIB)
                    .kind(FileSpecKind::SymlinkWholeMd5)
                    .pinned(),
            ),
        )
        .unwrap();
    let file = sandbox.files(&p).remove(0);
    // Its object is overwritten behind the platform's back mid-transfer: a 412 fails it.
    sandbox.overwrite_object_after(&file.id, 4 * MIB);
    let r = Receiver::start().await;
    let env = Env::for_sandbox(
        &sandbox,
        vec![p.clone()],
        format!(
            "chunk-size = \"64MiB\"\nprogress-step = \"1MiB\"\n[notify]\n{}",
            webhook(&r, None)
        ),
    );
    let running = Running::start(&env, Notifier::disabled());
    let v = r.wait("/hook", "file-failed").await.json();
    check_schema(&v);
    assert_eq!(v["project_id"], p.to_string());
    assert_eq!(v["file_id"], file.id.to_string());
    assert_eq!(v["files_failed"], 1, "{v}");
    assert!(v["message"].as_str().unwrap().contains("412"), "{v}");
    running.stop().await.unwrap();
    assert_eq!(kinds(&r, "/hook").get("file-failed"), Some(&1));
}
