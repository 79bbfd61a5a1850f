//! The audit trail: a sync of the sandbox demo writes one `fetched` record per mirrored file
//! (size, SHA-256 as in `SHA256SUMS`, the platform identity from `/system/whoami`), in the
//! journal and in the `audit-log` JSON-lines file; `dxmirror audit` prints them; a repair
//! writes `repaired`; a file ending corrupt writes `quarantined`.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Output;

use dxmirror::journal::{AuditRow, FileRow, FileState, JournalReader};
use dxmirror::model::ProjectId;
use dxmirror::sandbox::{
    BodyFault, Dataset, FaultConfig, FileSpec, FileSpecKind, PartSizes, ProjectSpec, Sandbox,
    SandboxOptions,
};

use crate::support::{assert_mirrored, served_env_with, Env};

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// The demo project synced once (64 KiB chunks) with an `audit-log` file: the state the audit
/// scenarios start from. Bind it whole: it owns the sandbox and the log's directory.
struct Synced {
    _sandbox: Sandbox,
    project: ProjectId,
    env: Env,
    /// The `audit-log` file.
    log: PathBuf,
    _log_dir: tempfile::TempDir,
    /// The project's directory.
    dir: PathBuf,
    /// How many files were mirrored.
    n: usize,
    /// The journal's audit records after the sync.
    rows: Vec<AuditRow>,
    /// The journal's file rows after the sync.
    files: Vec<FileRow>,
}

async fn synced_demo() -> Synced {
    let sandbox = Sandbox::start(SandboxOptions::default()).await.unwrap();
    let project = sandbox.projects()[0].clone();
    let log_dir = tempfile::tempdir().unwrap();
    let log = log_dir.path().join("audit.jsonl");
    let env = Env::for_sandbox(
        &sandbox,
        vec![project.clone()],
        format!("chunk-size = \"64KiB\"\naudit-log = {log:?}"),
    );
    let summary = env.sync().await.unwrap();
    assert!(summary.is_ok(), "{summary:#?}");
    let n = assert_mirrored(&sandbox, &env, &project);
    let reader = JournalReader::open(&env.state()).unwrap();
    let rows = reader.audit_since(0).unwrap();
    let dir = env
        .mirror()
        .join(reader.project(&project).unwrap().unwrap().dir_name.unwrap());
    let files = reader.files(&project).unwrap();
    Synced {
        _sandbox: sandbox,
        project,
        env,
        log,
        _log_dir: log_dir,
        dir,
        n,
        rows,
        files,
    }
}

#[tokio::test]
async fn a_sync_writes_one_fetched_record_per_mirrored_file() {
    let s = synced_demo().await;
    let (project, dir, rows, files) = (&s.project, &s.dir, &s.rows, &s.files);
    // One `fetched` record per mirrored file, matching the journal and SHA256SUMS.
    assert_eq!(rows.len(), s.n, "{rows:#?}");
    let sums: HashMap<String, String> = std::fs::read_to_string(dir.join("SHA256SUMS"))
        .unwrap()
        .lines()
        .map(|l| {
            let (h, p) = l.split_once("  ").unwrap();
            (p.to_owned(), h.to_owned())
        })
        .collect();
    for f in files
        .iter()
        .filter(|f| matches!(f.state, FileState::Verified | FileState::Unverified))
    {
        let recs: Vec<&AuditRow> = rows
            .iter()
            .filter(|r| r.file_id.as_ref() == Some(&f.file_id))
            .collect();
        assert_eq!(recs.len(), 1, "{}: {recs:#?}", f.rel_path);
        let r = recs[0];
        assert_eq!(r.action, "fetched");
        assert_eq!(&r.project_id, project);
        assert_eq!(r.identity.as_deref(), Some("user-sandbox"));
        assert_eq!(r.size, Some(f.size));
        assert_eq!(
            std::fs::metadata(dir.join(&f.rel_path)).unwrap().len(),
            f.size
        );
        assert_eq!(r.sha256.as_deref(), Some(sums[&f.rel_path].as_str()));
        assert_eq!(r.sha256, f.sha256);
        let which = if f.state == FileState::Verified {
            "verified "
        } else {
            "unverified "
        };
        assert!(r.detail.starts_with(which), "{}", r.detail);
    }
    assert!(rows.iter().any(|r| r.detail.starts_with("unverified ")));
}

#[tokio::test]
async fn dxmirror_audit_prints_the_records_and_selects_them_by_date() {
    let s = synced_demo().await;
    let (env, rows) = (&s.env, &s.rows);
    // `dxmirror audit --json` prints the same records.
    let printed: Vec<serde_json::Value> =
        serde_json::from_str(&stdout(&env.bin_async(&["audit", "--json"]).await)).unwrap();
    assert_eq!(printed.len(), rows.len());
    for (p, r) in printed.iter().zip(rows) {
        assert_eq!(p["id"], r.id);
        assert_eq!(p["action"], "fetched");
        assert_eq!(p["sha256"].as_str(), r.sha256.as_deref());
        assert_eq!(p["size"].as_u64(), r.size);
        assert_eq!(p["identity"], "user-sandbox");
    }
    // The text table names every file; a date in the future selects none.
    let text = stdout(&env.bin_async(&["audit"]).await);
    for r in rows {
        assert!(text.contains(&r.file_id.as_ref().unwrap().to_string()));
    }
    let none: Vec<serde_json::Value> = serde_json::from_str(&stdout(
        &env.bin_async(&["audit", "--json", "--since", "2999-01-01"])
            .await,
    ))
    .unwrap();
    assert!(none.is_empty());
    let all: Vec<serde_json::Value> = serde_json::from_str(&stdout(
        &env.bin_async(&["audit", "--json", "--since", "2000-01-01T00:00:00Z"])
            .await,
    ))
    .unwrap();
    assert_eq!(all.len(), rows.len());
    let bad = env.bin_async(&["audit", "--since", "last tuesday"]).await;
    assert!(!bad.status.success());
}

#[tokio::test]
async fn the_audit_log_file_holds_the_same_records_one_per_line() {
    let s = synced_demo().await;
    let (log, rows) = (&s.log, &s.rows);
    // The JSON-lines file holds the same records, one per line (files finishing together
    // may append in either order; each line carries the journal's id).
    let mut lines: Vec<serde_json::Value> = std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    lines.sort_by_key(|l| l["id"].as_i64().unwrap());
    assert_eq!(lines.len(), rows.len());
    for (l, r) in lines.iter().zip(rows) {
        assert_eq!(l["id"], r.id);
        assert_eq!(l["ts_ms"], r.ts_ms);
        assert_eq!(l["sha256"].as_str(), r.sha256.as_deref());
        assert_eq!(
            l["file_id"].as_str(),
            r.file_id.as_ref().map(|f| f.as_str())
        );
    }
}

#[tokio::test]
async fn a_repair_is_recorded_repaired_and_the_refetch_fetched() {
    let s = synced_demo().await;
    let (env, log, dir, rows, files) = (&s.env, &s.log, &s.dir, &s.rows, &s.files);
    // Damage one mirrored file: `verify --repair` records `repaired` (with the SHA-256 the
    // file had), then fetches it again (a new `fetched`).
    let victim = files
        .iter()
        .find(|f| f.state == FileState::Verified && f.size > 1000)
        .unwrap();
    let path = dir.join(&victim.rel_path);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[500] ^= 0x01;
    std::fs::write(&path, bytes).unwrap();
    let out = env.bin_async(&["verify", "--repair"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reader = JournalReader::open(&env.state()).unwrap();
    let after = reader.audit_since(rows.last().unwrap().ts_ms).unwrap();
    let new: Vec<&AuditRow> = after
        .iter()
        .filter(|r| r.id > rows.last().unwrap().id)
        .collect();
    assert_eq!(new.len(), 2, "{new:#?}");
    assert_eq!(new[0].action, "repaired");
    assert_eq!(new[0].file_id.as_ref(), Some(&victim.file_id));
    assert_eq!(new[0].sha256, victim.sha256);
    assert!(new[0].identity.as_deref().unwrap().contains("(uid "));
    assert_eq!(new[1].action, "fetched");
    assert_eq!(new[1].file_id.as_ref(), Some(&victim.file_id));
    assert_eq!(new[1].sha256, victim.sha256);
    let n_lines = std::fs::read_to_string(log).unwrap().lines().count();
    assert_eq!(n_lines, rows.len() + 2);
}

#[tokio::test]
async fn a_file_ending_corrupt_is_recorded_quarantined() {
    let spec = ProjectSpec::new("bad").file(
        FileSpec::new("/restricted/bam", "parts.bam", 256 << 10)
            .kind(FileSpecKind::PartsMd5(PartSizes::Uniform(128 << 10))),
    );
    let (_sandbox, project, env) = served_env_with(
        SandboxOptions {
            dataset: Dataset::build(3, vec![spec]).unwrap(),
            faults: FaultConfig {
                seed: 5,
                ..FaultConfig::default()
            }
            .with(BodyFault::Flip, 1.0),
            ..SandboxOptions::default()
        },
        "chunk-size = \"64KiB\"\nmax-verify-retries = 1",
    )
    .await;
    let summary = env.sync().await.unwrap();
    assert!(!summary.is_ok(), "{summary:#?}");
    let reader = JournalReader::open(&env.state()).unwrap();
    let files = reader.files(&project).unwrap();
    let bad = files
        .iter()
        .find(|f| f.state == FileState::Corrupt)
        .expect("a corrupt file");
    let rows = reader.audit_since(0).unwrap();
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert_eq!(rows[0].action, "quarantined");
    assert_eq!(rows[0].file_id.as_ref(), Some(&bad.file_id));
    assert_eq!(rows[0].size, Some(bad.size));
    assert_eq!(rows[0].identity.as_deref(), Some("user-sandbox"));
    assert_eq!(rows[0].sha256, None);
    assert!(
        rows[0].detail.starts_with(&bad.rel_path),
        "{}",
        rows[0].detail
    );
}
