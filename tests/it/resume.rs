//! Kill and resume: the real binary, killed with SIGKILL at seeded points of progress while the
//! sandbox runs as its own process, then a final run that finishes. Only bytes that were in
//! flight at a kill may be served twice.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dxmirror::journal::{FileState, JournalReader};
use dxmirror::model::ProjectId;
use dxmirror::sandbox::{Dataset, ServeStats};

use crate::support::{files_under, Env, EnvOptions};

/// `dxmirror sandbox` running as a child process.
pub struct SandboxProcess {
    child: Child,
    pub api_url: String,
    pub token: String,
    pub projects: Vec<ProjectId>,
    http: reqwest::Client,
}

impl SandboxProcess {
    pub fn start(args: &[&str]) -> SandboxProcess {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut child = Command::new(env!("CARGO_BIN_EXE_dxmirror"))
            .arg("sandbox")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        SandboxProcess {
            child,
            api_url: v["api_url"].as_str().unwrap().to_owned(),
            token: v["token"].as_str().unwrap().to_owned(),
            projects: serde_json::from_value(v["projects"].clone()).unwrap(),
            http: reqwest::Client::new(),
        }
    }

    pub async fn stats(&self) -> ServeStats {
        self.http
            .get(format!("{}/_sandbox/stats", self.api_url))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

impl Drop for SandboxProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `dxmirror sync` on `env`'s config, quietly.
fn spawn_sync(env: &Env) -> Child {
    Command::new(env!("CARGO_BIN_EXE_dxmirror"))
        .args(["-q", "sync", "--config"])
        .arg(&env.config_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Runs `dxmirror sync` to the end and requires success.
fn sync_to_the_end(env: &Env) {
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
/// sandbox's counters once it has counted what it wrote.
async fn kill_when_served(sandbox: &SandboxProcess, mut child: Child, target: u64) -> ServeStats {
    let start = Instant::now();
    while sandbox.stats().await.bytes_served < target {
        assert!(
            child.try_wait().unwrap().is_none(),
            "sync ended before the kill point"
        );
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no progress towards {target}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // Let the sandbox notice the closed connections and count what it wrote.
    tokio::time::sleep(Duration::from_millis(300)).await;
    sandbox.stats().await
}

/// Every file of `project` is verified, byte-identical to the dataset `dataset` (rebuilt from
/// its seed), with every chunk complete in the journal and no staging file left.
fn assert_matches_dataset(env: &Env, project: &ProjectId, dataset: &Dataset) {
    let reader = JournalReader::open(&env.state()).unwrap();
    let dir_name = reader.project(project).unwrap().unwrap().dir_name.unwrap();
    let dir = env.mirror().join(&dir_name);
    let rows = reader.files(project).unwrap();
    assert_eq!(rows.len(), dataset.files.len());
    for row in &rows {
        assert_eq!(
            row.state,
            FileState::Verified,
            "{}: {:?}",
            row.rel_path,
            row.reason
        );
        let built = dataset.files.iter().find(|f| f.id == row.file_id).unwrap();
        let local = std::fs::read(dir.join(&row.rel_path)).unwrap();
        let mut expected = vec![0u8; local.len()];
        built.fill(0, &mut expected);
        assert_eq!(local.len() as u64, built.spec.size);
        assert!(local == expected, "{} differs", row.rel_path);
        let plan = reader.load_plan(&row.key()).unwrap().unwrap();
        for (chunk, (done, _)) in plan.plan.chunks.iter().zip(&plan.chunk_done) {
            assert_eq!(
                *done, chunk.range.len,
                "{} chunk {}",
                row.rel_path, chunk.idx
            );
        }
    }
    assert!(
        files_under(&dir.join(".dxmirror/staging")).is_empty(),
        "staging files left"
    );
}

/// Served intervals of each file, split by the run (0, 1, ...) that received them.
fn intervals_by_run(snapshots: &[ServeStats]) -> BTreeMap<String, Vec<(usize, u64, u64)>> {
    let mut out: BTreeMap<String, Vec<(usize, u64, u64)>> = BTreeMap::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for (run, snap) in snapshots.iter().enumerate() {
        for (file, served) in &snap.files {
            let start = seen.get(file).copied().unwrap_or(0);
            for s in &served[start..] {
                assert!(!s.spoiled, "no fault is switched on in this test");
                out.entry(file.clone())
                    .or_default()
                    .push((run, s.offset, s.offset + s.len));
            }
            seen.insert(file.clone(), served.len());
        }
    }
    out
}

/// Checks that every byte received in one run and fetched again in a later run lies in the
/// last `allowance` bytes of its response (in flight at a kill) or in `damaged` (file, range).
/// Returns the number of bytes fetched again.
fn assert_refetched_only_in_flight(
    snapshots: &[ServeStats],
    allowance: u64,
    damaged: &[(String, u64, u64)],
) -> u64 {
    let by_run = intervals_by_run(snapshots);
    let mut refetched = 0u64;
    for (file, intervals) in &by_run {
        for &(run, start, end) in intervals {
            let durable_end = end.saturating_sub(allowance).max(start);
            for &(later, s2, e2) in intervals.iter().filter(|i| i.0 > run) {
                let (lo, hi) = (start.max(s2), durable_end.min(e2));
                if lo < hi {
                    let excused = damaged
                        .iter()
                        .any(|(f, ds, de)| f == file && *ds <= lo && hi <= *de);
                    assert!(
                        excused,
                        "{file}: bytes {lo}..{hi} received in run {run} were fetched again in run {later}"
                    );
                }
                refetched += end.min(e2).saturating_sub(start.max(s2));
            }
        }
    }
    refetched
}

#[tokio::test]
async fn sigkill_at_seeded_progress_then_resume_refetches_only_what_was_in_flight() {
    const SIZE: u64 = 96 << 20;
    const STEP: u64 = 1 << 20;
    const WRITE_BUFFER: u64 = 1 << 20;
    let sandbox = SandboxProcess::start(&["--dataset", "large:96MiB", "--bandwidth", "24MiB"]);
    let project = sandbox.projects[0].clone();
    let env = Env::new(EnvOptions {
        api_url: sandbox.api_url.clone(),
        token: sandbox.token.clone(),
        projects: vec![project.clone()],
        extra: "chunk-size = \"8MiB\"\nprogress-step = \"1MiB\"\nmax-connections = 6\nmax-connections-per-file = 3\n".into(),
    });

    // Seeded kill points: fractions of the data size served so far.
    let mut rng = fastrand::Rng::with_seed(20261125);
    let mut fractions: Vec<f64> = (0..4)
        .map(|i| 0.12 + 0.2 * i as f64 + rng.f64() * 0.08)
        .collect();
    fractions.sort_by(f64::total_cmp);
    let mut snapshots = Vec::new();
    for fraction in &fractions {
        let target = (fraction * SIZE as f64) as u64;
        snapshots.push(kill_when_served(&sandbox, spawn_sync(&env), target).await);
    }
    sync_to_the_end(&env);
    snapshots.push(sandbox.stats().await);
    assert_matches_dataset(&env, &project, &Dataset::large(SIZE));

    // Bytes served more than once were in flight at a kill: each lies in the unsynced tail of
    // a response of an earlier run (at most one progress step plus one write buffer).
    let refetched = assert_refetched_only_in_flight(&snapshots, STEP + WRITE_BUFFER, &[]);
    let total = snapshots.last().unwrap().bytes_served;
    eprintln!(
        "kills at {fractions:?}: served {total} bytes for {SIZE} ({refetched} re-fetched, {:.2}%)",
        refetched as f64 * 100.0 / SIZE as f64
    );
    assert!(total <= SIZE + refetched);
}

#[tokio::test]
async fn damage_to_a_staged_file_is_found_at_resume_and_only_its_chunk_refetched() {
    const SIZE: u64 = 48 << 20;
    let sandbox = SandboxProcess::start(&["--dataset", "large:48MiB", "--bandwidth", "16MiB"]);
    let project = sandbox.projects[0].clone();
    let env = Env::new(EnvOptions {
        api_url: sandbox.api_url.clone(),
        token: sandbox.token.clone(),
        projects: vec![project.clone()],
        extra: "chunk-size = \"2MiB\"\nprogress-step = \"1MiB\"\nmax-connections = 4\nmax-connections-per-file = 2\n".into(),
    });
    let first = kill_when_served(&sandbox, spawn_sync(&env), SIZE / 2).await;

    // Flip one byte inside a chunk the journal says is complete, in every staged file that
    // has one (the symlink with a whole-file md5 and the single-part file among them).
    let reader = JournalReader::open(&env.state()).unwrap();
    let dir_name = reader.project(&project).unwrap().unwrap().dir_name.unwrap();
    let staging = env.mirror().join(&dir_name).join(".dxmirror/staging");
    let mut damaged = Vec::new();
    for row in reader.files(&project).unwrap() {
        let path = staging.join(format!("{}.part", row.file_id));
        let Some(plan) = reader.load_plan(&row.key()).unwrap() else {
            continue;
        };
        if !path.exists() {
            continue;
        }
        let done = plan
            .plan
            .chunks
            .iter()
            .zip(&plan.chunk_done)
            .find(|(c, (d, _))| *d == c.range.len);
        if let Some((chunk, _)) = done {
            let mut bytes = std::fs::read(&path).unwrap();
            let at = (chunk.range.offset + chunk.range.len / 2) as usize;
            bytes[at] ^= 0x40;
            std::fs::write(&path, bytes).unwrap();
            damaged.push((
                row.file_id.to_string(),
                chunk.range.offset,
                chunk.range.end(),
            ));
        }
    }
    drop(reader);
    assert!(
        damaged.len() >= 2,
        "too few staged files to damage: {damaged:?}"
    );

    sync_to_the_end(&env);
    let last = sandbox.stats().await;

    // The damaged chunks were fetched again, and nothing else but in-flight tails.
    let by_file: BTreeMap<String, Vec<(u64, u64)>> = last
        .files
        .iter()
        .map(|(f, v)| {
            (
                f.clone(),
                v.iter().map(|s| (s.offset, s.offset + s.len)).collect(),
            )
        })
        .collect();
    for (file, start, end) in &damaged {
        let n = first.files[file].len();
        let again = by_file[file][n..]
            .iter()
            .any(|&(s, e)| s <= *start && *end <= e || (s < *end && *start < e));
        assert!(
            again,
            "{file}: damaged chunk {start}..{end} was not fetched again"
        );
    }
    assert_refetched_only_in_flight(&[first, last], (1 << 20) + (1 << 20), &damaged);

    assert_matches_dataset(&env, &project, &Dataset::large(SIZE));
}
