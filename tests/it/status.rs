//! `dxmirror status` as the binary prints it: the table and the JSON of three projects in
//! different states (snapshots), `--files` with its filters, `--check`'s exit codes, and the
//! JSON error object when there is no journal.
#![allow(clippy::unwrap_used)]

use dxmirror::model::ProjectId;
use dxmirror::sandbox::{FaultConfig, FileSpec, ProjectSpec, Sandbox};
use dxmirror::sync::{ProgressMode, SyncOptions};

use crate::support::*;

/// One sync of `projects` in this process.
async fn sync_only(env: &Env, projects: &[&ProjectId]) {
    let cfg = env.config();
    let _lock = dxmirror::lock::WriterLock::acquire(&cfg.state_dir, &cfg.mirror_root).unwrap();
    // The outcome is the journal's to tell: a project that fails still records why.
    let _ = dxmirror::sync::run(
        &cfg,
        SyncOptions {
            projects: projects.iter().map(|p| (*p).clone()).collect(),
            progress: ProgressMode::Quiet,
        },
    )
    .await;
}

/// Three projects: `complete` (mirrored, with a skipped archived file, access far off),
/// `damaged` (its file always arrives damaged: corrupt), `revoked` (inaccessible from the
/// start).
struct Three {
    _sandbox: Sandbox,
    env: Env,
    complete: ProjectId,
    damaged: ProjectId,
}

async fn three_projects() -> Three {
    let sandbox = empty_sandbox().await;
    let complete = sandbox
        .add_project(
            ProjectSpec::new("SJC-DT-0101")
                .file(FileSpec::new("/", "SAMPLE_INFO.txt", 1_000))
                .file(FileSpec::new("/restricted/bam", "a.bam", 200_000))
                .file(FileSpec::new("/restricted/bam", "old.bam", 5_000).archival("archived")),
        )
        .unwrap();
    let damaged = sandbox
        .add_project(ProjectSpec::new("SJC-DT-0102").file(FileSpec::new(
            "/restricted/gVCF",
            "b.g.vcf.gz",
            30_000,
        )))
        .unwrap();
    let revoked = sandbox
        .add_project(ProjectSpec::new("SJC-DT-0103").file(FileSpec::new(
            "/restricted/gVCF",
            "c.g.vcf.gz",
            10_000,
        )))
        .unwrap();
    let env = Env::for_sandbox(
        &sandbox,
        Vec::new(),
        format!(
            "max-verify-retries = 1\n\
             [[project]]\nid = \"{complete}\"\naccess-expires = \"2099-12-31\"\n\
             [[project]]\nid = \"{damaged}\"\n\
             [[project]]\nid = \"{revoked}\"\n"
        ),
    );
    sync_only(&env, &[&complete]).await;
    sandbox.set_faults(FaultConfig::parse("flip=1.0,seed=3").unwrap());
    sync_only(&env, &[&damaged]).await;
    sandbox.set_faults(FaultConfig::default());
    sandbox.set_revoked(&revoked, true);
    sync_only(&env, &[&revoked]).await;
    Three {
        _sandbox: sandbox,
        env,
        complete,
        damaged,
    }
}

/// The JSON with what varies from run to run replaced: every `*_ms` time, pids and the days
/// left until a fixed date.
fn redact_json(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, x) in map.iter_mut() {
                if (k.ends_with("_ms") || k == "pid" || k == "access_days_left") && !x.is_null() {
                    *x = serde_json::Value::String(format!("<{k}>"));
                } else {
                    redact_json(x);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(redact_json),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_projects_as_a_table_as_json_and_as_a_check() {
    let t = three_projects().await;
    let tmp = t.env.dir.path().to_str().unwrap().to_owned();

    // The table (the days left depend on today).
    let out = t.env.bin_async(&["status"]).await;
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(!text.contains('\x1b'), "no colour when not a terminal");
    let text = redact(&text, &[(&tmp, "<tmp>")]);
    let text = numbers_after(&text, "2099-12-31 (", "<n>");
    assert_snapshot("status_three_projects.txt", &text);

    // The JSON, against its snapshot (the schema documented in docs/status-json.md).
    let out = t.env.bin_async(&["status", "--json"]).await;
    assert!(out.status.success(), "{out:?}");
    let mut v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["schema_version"], dxmirror::status::SCHEMA_VERSION);
    redact_json(&mut v);
    let json = format!("{v:#}\n").replace(&tmp, "<tmp>");
    assert_snapshot("status_json_three_projects.json", &json);

    // The check: corrupt files and expired access are critical; the summary comes first.
    let out = t.env.bin_async(&["status", "--check"]).await;
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.starts_with("DXMIRROR CRITICAL - 1 failed or corrupt file ("),
        "{text}"
    );
    assert!(
        text.contains("WARNING: ") && text.contains("project inaccessible"),
        "{text}"
    );

    // Plain status of one project keeps exit 0 whatever the verdict.
    let out = t.env.bin_async(&["status", &t.complete.to_string()]).await;
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("complete"), "{text}");
    assert!(!text.contains(&t.damaged.to_string()), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_of_a_project_with_their_filters() {
    let t = three_projects().await;
    let files = |args: Vec<String>| {
        let env = &t.env;
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = env.bin_async(&args).await;
            assert!(out.status.success(), "{out:?}");
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(v["schema_version"], dxmirror::status::SCHEMA_VERSION);
            v["files"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| {
                    format!(
                        "{} {} {}/{}",
                        f["state"].as_str().unwrap(),
                        f["path"].as_str().unwrap(),
                        f["bytes_done"],
                        f["size"]
                    )
                })
                .collect::<Vec<_>>()
        }
    };
    let c = t.complete.to_string();
    let all = files(vec![
        "status".into(),
        c.clone(),
        "--files".into(),
        "--json".into(),
    ])
    .await;
    assert_eq!(
        all,
        [
            "verified SAMPLE_INFO.txt 1000/1000",
            "verified restricted/bam/a.bam 200000/200000",
            "skipped restricted/bam/old.bam 0/5000",
        ]
    );
    let skipped = files(vec![
        "status".into(),
        c.clone(),
        "--files".into(),
        "--state".into(),
        "skipped".into(),
        "--json".into(),
    ])
    .await;
    assert_eq!(skipped, ["skipped restricted/bam/old.bam 0/5000"]);
    let failed = files(vec![
        "status".into(),
        c,
        "--files".into(),
        "--failed".into(),
        "--json".into(),
    ])
    .await;
    assert!(failed.is_empty(), "{failed:?}");
    let d = t.damaged.to_string();
    let out = t
        .env
        .bin_async(&["status", &d, "--files", "--failed"])
        .await;
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].ends_with("\"SJC-DT-0102\": 1 files"), "{text}");
    assert!(lines[1].starts_with("STATE "), "{text}");
    assert!(
        lines[2].starts_with("corrupt ") && lines[2].contains("restricted/gVCF/b.g.vcf.gz"),
        "{text}"
    );
    assert!(lines[2].contains("still wrong after 1 re-fetch"), "{text}");

    // A state that does not exist is a usage error.
    let out = t
        .env
        .bin_async(&["status", &d, "--files", "--state", "nope"])
        .await;
    assert!(!out.status.success());
}

#[test]
fn without_a_journal_json_is_an_error_object_and_the_check_unknown() {
    let env = Env::new(EnvOptions {
        api_url: "http://127.0.0.1:9".into(),
        token: "t".into(),
        projects: Vec::new(),
        extra: String::new(),
    });
    let out = env.bin(&["status", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["schema_version"], dxmirror::status::SCHEMA_VERSION);
    assert_eq!(v["error"]["kind"], "no-journal");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("journal"),
        "{v}"
    );

    let out = env.bin(&["status", "--check"]);
    assert_eq!(out.status.code(), Some(3));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("DXMIRROR UNKNOWN - "), "{text}");
    assert_eq!(text.lines().count(), 1, "{text}");

    // An unreadable config is unknown too.
    std::fs::write(&env.config_path, "no-such-key = 1\n").unwrap();
    let out = env.bin(&["status", "--check"]);
    assert_eq!(out.status.code(), Some(3));
    let out = env.bin(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error"]["kind"], "config");
    // Plain status without a journal is an error on stderr with exit 1.
    std::fs::remove_file(&env.config_path).unwrap();
    let out = env.bin(&["status"]);
    assert_eq!(out.status.code(), Some(1));
}
