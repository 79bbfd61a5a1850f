//! Chaos: every fault the sandbox has, at modest rates, while the real binary is killed with
//! SIGKILL twenty times at seeded points of progress; then a final run must finish with every
//! file verified and byte-identical, and the bytes served must be explained by the data, what
//! was in flight at the kills, and what the sandbox itself spoiled.
#![allow(clippy::unwrap_used)]

use dxmirror::model::ProjectId;
use dxmirror::platform::RANGE_MD5_MAX;
use dxmirror::sandbox::Dataset;

use crate::support::{
    assert_matches_dataset, kill_when_served, spawn_sync, sync_to_the_end, Env, SandboxProcess,
};

/// Bytes the journal counts as durable for `project` (finished files and chunk progress).
fn durable(env: &Env, project: &ProjectId) -> u64 {
    let Some(reader) = env.reader() else {
        return 0;
    };
    reader
        .project_totals()
        .unwrap()
        .into_iter()
        .find(|t| &t.project.id == project)
        .map_or(0, |t| t.bytes_done)
}

#[tokio::test]
async fn twenty_sigkills_with_every_fault_on_end_verified_within_the_byte_bound() {
    const SIZE: u64 = 48 << 20;
    const KILLS: usize = 20;
    const CONNECTIONS: u64 = 4;
    let faults = "reset=0.04,fin=0.04,status500=0.04,status503=0.03,short_body=0.04,\
                  long_length=0.03,full_200=0.03,bad_content_range=0.03,stall=0.02,flip=0.04,\
                  expire_early=0.04,api500=0.03,api503=0.02,api429=0.02,stall_secs=2,seed=2026";
    let sandbox = SandboxProcess::start(&[
        "--dataset",
        "chaos:48MiB",
        "--bandwidth",
        "32MiB",
        "--faults",
        faults,
        "--retry-after",
        "1",
    ]);
    let (project, env) = sandbox.env(format!(
        "chunk-size = \"1MiB\"\nprogress-step = \"256KiB\"\nstall-timeout = \"1s\"\n\
             max-connections = {CONNECTIONS}\nmax-connections-per-file = 2\n"
    ));
    let dataset = Dataset::chaos(SIZE);
    let largest_part = dataset
        .files
        .iter()
        .flat_map(|f| f.parts.iter().map(|p| p.range.len))
        .max()
        .unwrap_or(0);

    // Seeded kill points: increasing fractions of the data size served so far.
    let mut rng = fastrand::Rng::with_seed(7_2026);
    let mut fractions: Vec<f64> = (1..=KILLS)
        .map(|k| 0.033 * k as f64 + rng.f64() * 0.01)
        .collect();
    fractions.sort_by(f64::total_cmp);

    // Per killed run: bytes served in it minus the durable progress it added is what the kill
    // (and that run's faults) cost. It must be explained by what was in flight at the kill,
    // at most one checked range (or progress step plus write buffer) per connection plus
    // slack for socket buffers, and by that run's spoiled responses (a flipped byte costs its
    // whole part).
    let in_flight_bound = CONNECTIONS * (RANGE_MD5_MAX + (1 << 20));
    let (mut served_before, mut spoiled_before, mut durable_before) = (0u64, 0u64, 0u64);
    let mut lost_total = 0u64;
    for fraction in &fractions {
        let target = (fraction * SIZE as f64) as u64;
        let stats = kill_when_served(&sandbox, spawn_sync(&env), target).await;
        let durable_now = durable(&env, &project);
        let served = stats.bytes_served - served_before;
        let spoiled = stats.bytes_spoiled - spoiled_before;
        let gained = durable_now.saturating_sub(durable_before);
        let lost = served.saturating_sub(gained);
        let explained = in_flight_bound + spoiled + if spoiled > 0 { largest_part } else { 0 };
        assert!(
            lost <= explained,
            "kill at {fraction:.3}: {served} bytes served, {gained} became durable; {lost} lost \
             but only {explained} explained ({spoiled} spoiled)"
        );
        lost_total += lost;
        (served_before, spoiled_before, durable_before) =
            (stats.bytes_served, stats.bytes_spoiled, durable_now);
    }

    sync_to_the_end(&env);
    let stats = sandbox.stats().await;
    assert_matches_dataset(&env, &project, &dataset);
    assert!(
        stats.faults_injected.len() >= 6,
        "too few kinds of fault fired: {:?}",
        stats.faults_injected
    );

    // The whole run: the data, plus what was in flight at the kills, plus what the sandbox
    // spoiled (with one part of slack per flip, which re-fetches its part).
    let flips = stats.faults_injected.get("flip").copied().unwrap_or(0);
    let bound = SIZE + KILLS as u64 * in_flight_bound + stats.bytes_spoiled + flips * largest_part;
    eprintln!(
        "chaos: {KILLS} kills, served {} for {SIZE} bytes of data ({:.2}x); lost at kills {lost_total}, \
         spoiled {}, faults {:?}",
        stats.bytes_served,
        stats.bytes_served as f64 / SIZE as f64,
        stats.bytes_spoiled,
        stats.faults_injected
    );
    assert!(
        stats.bytes_served <= bound,
        "served {} > bound {bound}",
        stats.bytes_served
    );
}
