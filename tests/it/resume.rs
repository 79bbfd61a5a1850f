//! Kill and resume: the real binary, killed with SIGKILL at seeded points of progress while the
//! sandbox runs as its own process, then a final run that finishes. Only bytes that were in
//! flight at a kill may be served twice.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use dxmirror::journal::JournalReader;
use dxmirror::sandbox::{Dataset, ServeStats};

use crate::support::{
    assert_matches_dataset, kill_when_served, spawn_sync, sync_to_the_end, SandboxProcess,
};

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
    let (project, env) = sandbox.env("chunk-size = \"8MiB\"\nprogress-step = \"1MiB\"\nmax-connections = 6\nmax-connections-per-file = 3\n");

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
    // A drive-backed file's range counts only once its Content-MD5 matched: up to one
    // 4 MiB range per connection is in flight there.
    let allowance = (STEP + WRITE_BUFFER).max(dxmirror::platform::RANGE_MD5_MAX);
    let refetched = assert_refetched_only_in_flight(&snapshots, allowance, &[]);
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
    let (project, env) = sandbox.env("chunk-size = \"2MiB\"\nprogress-step = \"1MiB\"\nmax-connections = 4\nmax-connections-per-file = 2\n");
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
    let allowance = ((1 << 20) + (1 << 20)).max(dxmirror::platform::RANGE_MD5_MAX);
    assert_refetched_only_in_flight(&[first, last], allowance, &damaged);

    assert_matches_dataset(&env, &project, &Dataset::large(SIZE));
}
