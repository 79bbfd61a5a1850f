//! The daemon's control socket (`<state-dir>/control.sock`) over a real Unix socket: pause,
//! resume, relist, bwlimit and `verify --queue` from the binary and from `ipc::ask`, each one
//! audited with the caller's peer credentials; a pause that outlives a restart; and clients
//! that send nothing, garbage or a huge frame while the daemon keeps answering.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::time::Duration;

use dxmirror::daemon::Notifier;
use dxmirror::ipc::{self, LiveStatus, Request, Response};
use dxmirror::model::ByteRange;
use dxmirror::sandbox::{FileSpec, ProjectSpec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::support::{all_verified, wait_for, wait_for_async, Mirrored, Running};

const T: Duration = Duration::from_secs(20);

fn spec() -> ProjectSpec {
    ProjectSpec::new("SJC-DT-CTL")
        .file(FileSpec::new("/restricted/bam", "c.bam", 300_000))
        .file(FileSpec::new("/", "SAMPLE_INFO.txt", 2_000))
}

async fn ask(m: &Mirrored, request: Request) -> Response {
    ipc::ask(&ipc::socket_path(&m.env.state()), &request)
        .await
        .unwrap()
}

async fn live(m: &Mirrored) -> LiveStatus {
    match ask(m, Request::Status).await {
        Response::Status(s) => s,
        other => panic!("status answered {other:?}"),
    }
}

fn done(r: Response) -> String {
    match r {
        Response::Done { message } => message,
        other => panic!("refused: {other:?}"),
    }
}

fn refused(r: Response) -> String {
    match r {
        Response::Error { message } => message,
        other => panic!("accepted: {other:?}"),
    }
}

/// The current user as the daemon writes it: `uid N (name)` or `uid N`.
fn me() -> String {
    format!("uid {}", rustix::process::getuid().as_raw())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resume_relist_bwlimit_and_verify_queue_over_the_socket_are_audited() {
    let m = Mirrored::start(spec(), "[relist]\ninterval = \"1h\"\n", "").await;
    let p = m.project.clone();
    let sock = ipc::socket_path(&m.env.state());
    let meta = std::fs::symlink_metadata(&sock).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);

    // Paused by the binary: a pass queued by `relist` waits for `resume`.
    let out = m.env.bin_async(&["pause", p.as_str()]).await;
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("paused"));
    assert_eq!(live(&m).await.paused, vec![p.to_string()]);
    let added = m
        .sandbox
        .add_files(&p, vec![FileSpec::new("/restricted/bam", "d.bam", 10_000)])
        .unwrap();
    let msg = done(
        ask(
            &m,
            Request::Relist {
                project: p.to_string(),
            },
        )
        .await,
    );
    assert!(msg.contains("it is paused"), "{msg}");
    let s = live(&m).await;
    assert!(
        s.queued.contains(&p.to_string()) && s.running.is_empty(),
        "{s:?}"
    );
    // `dxmirror status` shows the live figures after the journal's.
    let out = m.env.bin_async(&["status"]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("live (from the daemon)"), "{text}");
    assert!(text.contains(&format!("paused: {p}")), "{text}");

    let out = m.env.bin_async(&["resume", p.as_str()]).await;
    assert!(out.status.success(), "{out:?}");
    wait_for("the added file to be mirrored", T, || {
        all_verified(&m.env, &p, 3)
    })
    .await;
    assert_eq!(added.len(), 1);
    assert!(refused(
        ask(
            &m,
            Request::Resume {
                project: Some(p.to_string())
            }
        )
        .await
    )
    .contains("not paused"));

    // A rate until the next entry or reload; a bare number is refused, as in the config.
    let msg = done(
        ask(
            &m,
            Request::Bwlimit {
                rate: "1MiB".into(),
            },
        )
        .await,
    );
    assert!(msg.contains("until"), "{msg}");
    assert_eq!(live(&m).await.limit_bytes_per_s, Some(1 << 20));
    let why = refused(ask(&m, Request::Bwlimit { rate: "512".into() }).await);
    assert!(why.contains("unit"), "{why}");
    assert!(refused(
        ask(
            &m,
            Request::Relist {
                project: "project-0000000000000000000000ff".into()
            }
        )
        .await
    )
    .contains("not a project this daemon knows"));

    // `verify --queue` finds and heals bit rot, in the background.
    let file = m
        .sandbox
        .files(&p)
        .into_iter()
        .find(|f| f.name == "c.bam")
        .unwrap();
    let path = m.dir.join("restricted/bam/c.bam");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[1_000] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    let out = m.env.bin_async(&["verify", p.as_str(), "--queue"]).await;
    assert!(out.status.success(), "{out:?}");
    let truth = m.sandbox.content(&file.id, ByteRange::new(0, file.size));
    wait_for("the queued verification to heal the file", T, || {
        (std::fs::read(&path).ok()? == truth).then_some(())
    })
    .await;

    // Every action, with the caller's uid, in the audit trail.
    let audit = m.env.reader().unwrap().audit_since(0).unwrap();
    let control: Vec<(String, String)> = audit
        .iter()
        .filter(|a| a.action == "control")
        .map(|a| (a.detail.clone(), a.identity.clone().unwrap_or_default()))
        .collect();
    for what in [
        "pause",
        "relist",
        "resume",
        "bwlimit 1MiB",
        "verify --queue",
    ] {
        assert!(
            control
                .iter()
                .any(|(d, who)| d == what && who.starts_with(&me())),
            "{what} not audited with {}: {control:?}",
            me()
        );
    }
    assert!(audit.iter().any(|a| a.action == "repaired"), "{audit:?}");
    m.running.stop().await.unwrap();

    // Without a daemon, `--queue` is an error and says so.
    let out = m.env.bin_async(&["verify", p.as_str(), "--queue"]).await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no daemon is running"),
        "{out:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_project_stays_paused_across_a_restart() {
    let m = Mirrored::start(spec(), "[relist]\ninterval = \"100ms\"\n", "").await;
    let p = m.project.clone();
    done(
        ask(
            &m,
            Request::Pause {
                project: Some(p.to_string()),
            },
        )
        .await,
    );
    let Mirrored {
        sandbox,
        env,
        running,
        ..
    } = m;
    running.stop().await.unwrap();
    let rows = env.reader().unwrap().paused().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].project.as_ref(), Some(&p));
    assert!(rows[0].by.starts_with(&me()), "{rows:?}");

    let running = Running::start(&env, Notifier::disabled());
    let sock = ipc::socket_path(&env.state());
    let s = wait_for_async("the restarted daemon to answer", T, async || {
        ipc::ask(&sock, &Request::Status).await.ok()
    })
    .await;
    match s {
        Response::Status(s) => assert_eq!(s.paused, vec![p.to_string()]),
        other => panic!("{other:?}"),
    }
    // Still paused: no pass runs for a file added upstream until resumed; then it arrives.
    sandbox
        .add_files(&p, vec![FileSpec::new("/", "late.txt", 500)])
        .unwrap();
    let r = ipc::ask(&sock, &Request::Status).await.unwrap();
    assert!(
        matches!(r, Response::Status(ref s) if s.running.is_empty()),
        "{r:?}"
    );
    done(
        ipc::ask(
            &sock,
            &Request::Resume {
                project: Some(p.to_string()),
            },
        )
        .await
        .unwrap(),
    );
    wait_for("the late file after resume", T, || {
        all_verified(&env, &p, 3)
    })
    .await;
    assert!(env.reader().unwrap().paused().unwrap().is_empty());
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_garbage_and_huge_frame_clients_never_block_the_daemon() {
    let m = Mirrored::start(spec(), "[relist]\ninterval = \"1h\"\n", "").await;
    let sock = ipc::socket_path(&m.env.state());
    // Clients that connect and send nothing, held open throughout.
    let mut silent = Vec::new();
    for _ in 0..4 {
        silent.push(UnixStream::connect(&sock).await.unwrap());
    }
    // Half a length prefix, then nothing.
    let mut half = UnixStream::connect(&sock).await.unwrap();
    half.write_all(&[0, 0]).await.unwrap();

    // Garbage gets a clear error.
    let mut g = UnixStream::connect(&sock).await.unwrap();
    let junk = b"GET / HTTP/1.1\r\n\r\n";
    g.write_all(junk).await.unwrap();
    let answer: Response = ipc::read_message(&mut g).await.unwrap();
    let why = refused(answer);
    assert!(why.starts_with("bad request"), "{why}");

    // A frame announced at 1 GiB is refused before it is read.
    let mut h = UnixStream::connect(&sock).await.unwrap();
    h.write_all(&(1u32 << 30).to_be_bytes()).await.unwrap();
    let why = refused(ipc::read_message(&mut h).await.unwrap());
    assert!(why.contains("refused"), "{why}");
    // An unknown request and another version, well framed.
    for json in [
        r#"{"version":1,"request":"format-disk"}"#,
        r#"{"version":9,"request":"status"}"#,
    ] {
        let mut c = UnixStream::connect(&sock).await.unwrap();
        c.write_all(&(json.len() as u32).to_be_bytes())
            .await
            .unwrap();
        c.write_all(json.as_bytes()).await.unwrap();
        let why = refused(ipc::read_message(&mut c).await.unwrap());
        assert!(why.starts_with("bad request"), "{why}");
    }

    // Meanwhile the daemon answers and mirrors.
    let s = live(&m).await;
    assert!(!s.paused_all);
    done(
        ask(
            &m,
            Request::Relist {
                project: m.project.to_string(),
            },
        )
        .await,
    );
    m.sandbox
        .add_files(&m.project, vec![FileSpec::new("/", "x.txt", 100)])
        .unwrap();
    done(
        ask(
            &m,
            Request::Relist {
                project: m.project.to_string(),
            },
        )
        .await,
    );
    wait_for("the new file while silent clients wait", T, || {
        all_verified(&m.env, &m.project, 3)
    })
    .await;
    // The silent clients are dropped by the daemon (EOF), not served forever.
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(T, silent[0].read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0);
    m.running.stop().await.unwrap();
}
