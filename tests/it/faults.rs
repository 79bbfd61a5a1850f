//! End-to-end fault handling of the transfer engine: one `sync` per download fault the sandbox
//! injects (and one with all of them at once), each checking that the mirror is complete and
//! byte-identical, that no staging file is left, that the fault really fired, and that the
//! engine re-fetched no more intact bytes than the fault explains.
//!
//! Faults are decided deterministically from a fixed seed, so every run meets the same faults.
#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::time::{Duration, Instant};

use dxmirror::journal::{EventLevel, FileState, JournalReader};
use dxmirror::model::{ByteRange, ChecksumType, ProjectId};
use dxmirror::sandbox::{
    BodyFault, Dataset, FaultConfig, FileSpec, FileSpecKind, PartSizes, ProjectSpec, Sandbox,
    SandboxOptions, ServeStats,
};

use crate::support::{assert_mirrored, served_env_with, Env};

/// Seed of every fault decision in this file.
const SEED: u64 = 7;

/// Chunk size and progress step of every sync here: many chunks per file, so faults hit often.
const ENGINE: &str = "chunk-size = \"64KiB\"\nprogress-step = \"64KiB\"\n";

/// A project holding every file kind the planner knows. `checked_only` leaves out the files
/// without any platform checksum: a byte flipped in transit cannot be noticed in those.
fn dataset(checked_only: bool) -> Dataset {
    let kib = 1024u64;
    let mut p = ProjectSpec::new("faults")
        .file(
            FileSpec::new("/restricted/bam", "parts-md5.bam", 900_000)
                .kind(FileSpecKind::PartsMd5(PartSizes::Uniform(256 * kib))),
        )
        .file(
            FileSpec::new("/restricted/bam", "crc32c.bam", 700_001).kind(
                FileSpecKind::PartsChecksum(ChecksumType::Crc32c, PartSizes::Uniform(200_000)),
            ),
        )
        .file(
            FileSpec::new("/restricted/vcf", "crc64nvme.vcf.gz", 500_000).kind(
                FileSpecKind::PartsChecksum(
                    ChecksumType::Crc64Nvme,
                    PartSizes::Explicit(vec![100_000, 300_000, 100_000]),
                ),
            ),
        )
        .file(
            FileSpec::new("/restricted/cram", "sha256.cram", 400_000).kind(
                FileSpecKind::PartsChecksum(ChecksumType::Sha256, PartSizes::Uniform(150_000)),
            ),
        )
        .file(
            FileSpec::new("/restricted/bam", "drive.bam", 600_000)
                .kind(FileSpecKind::SymlinkWholeMd5),
        )
        .file(
            FileSpec::new("/restricted/txt", "single.txt", 150_000).kind(FileSpecKind::SinglePart),
        )
        // One chunk covering the whole file: a 200 answer is legitimate there.
        .file(FileSpec::new("/restricted/txt", "tiny.txt", 1_000).kind(FileSpecKind::SinglePart));
    if !checked_only {
        p = p
            .file(
                FileSpec::new("/restricted/raw", "unchecked.bin", 300_000)
                    .kind(FileSpecKind::NoChecksum(PartSizes::Uniform(128 * kib))),
            )
            .file(
                FileSpec::new("/restricted/raw", "unchecked-drive.bin", 200_000)
                    .kind(FileSpecKind::SymlinkNoChecksum),
            );
    }
    Dataset::build(SEED, vec![p]).unwrap()
}

/// What one faulty sync left behind.
struct Run {
    sandbox: Sandbox,
    env: Env,
    project: ProjectId,
    stats: ServeStats,
    elapsed: Duration,
}

impl Run {
    /// Bytes of every downloadable file.
    fn data_size(&self) -> u64 {
        self.sandbox
            .files(&self.project)
            .iter()
            .map(|f| f.size)
            .sum()
    }

    /// The largest file's size.
    fn max_file_size(&self) -> u64 {
        self.sandbox
            .files(&self.project)
            .iter()
            .map(|f| f.size)
            .max()
            .unwrap_or(0)
    }

    /// How many times the sandbox injected `fault`.
    fn fired(&self, fault: BodyFault) -> u64 {
        self.stats
            .faults_injected
            .get(fault.name())
            .copied()
            .unwrap_or(0)
    }

    /// Spoiled responses in all (each one is a fault that sent a body).
    fn spoiled_responses(&self) -> u64 {
        self.stats
            .files
            .values()
            .flatten()
            .filter(|s| s.spoiled)
            .count() as u64
    }

    /// Bytes served more than once, spoiled responses included, per file name.
    fn served_twice(&self) -> Vec<(String, Vec<ByteRange>)> {
        self.sandbox
            .files(&self.project)
            .into_iter()
            .map(|f| (f.name, self.stats.served_more_than_once(f.id.as_str())))
            .filter(|(_, r)| !r.is_empty())
            .collect()
    }

    /// Intact bytes served more than once, per file name.
    fn re_served(&self) -> Vec<(String, Vec<ByteRange>)> {
        self.sandbox
            .files(&self.project)
            .into_iter()
            .map(|f| {
                (
                    f.name,
                    self.stats.served_intact_more_than_once(f.id.as_str()),
                )
            })
            .filter(|(_, r)| !r.is_empty())
            .collect()
    }
}

/// Syncs [`dataset`] once against a sandbox injecting `faults`, with `extra` config lines,
/// and checks what every fault test checks: summary ok, every file byte-identical, no staging
/// file left, some fault fired.
async fn run(faults: FaultConfig, checked_only: bool, extra: &str) -> Run {
    let (sandbox, project, env) = served_env_with(
        SandboxOptions {
            dataset: dataset(checked_only),
            faults,
            retry_after_secs: 1,
            ..SandboxOptions::default()
        },
        format!("{ENGINE}{extra}"),
    )
    .await;
    let started = Instant::now();
    let summary = env.sync().await.unwrap();
    let elapsed = started.elapsed();
    assert!(summary.is_ok(), "{summary:#?}");
    let stats = sandbox.stats();
    let r = Run {
        sandbox,
        env,
        project,
        stats,
        elapsed,
    };
    let n = assert_mirrored(&r.sandbox, &r.env, &r.project);
    assert_eq!(n, r.sandbox.files(&r.project).len());
    assert!(
        r.stats.faults_injected.values().sum::<u64>() > 0,
        "no fault fired: the test proves nothing"
    );
    r
}

/// One fault alone at `rate`; checks that it fired and that no intact byte was fetched twice
/// (every faulty response is marked spoiled, so a correct engine keeps what arrived intact and
/// asks only for the rest), and that spoiled responses (each at most one file) explain every
/// other byte served.
async fn single_fault(fault: BodyFault, rate: f64, extra: &str) -> Run {
    let faults = FaultConfig {
        seed: SEED,
        stall_secs: 4,
        ..FaultConfig::default()
    }
    .with(fault, rate);
    let r = run(faults, false, extra).await;
    assert!(r.fired(fault) > 0, "{} never fired", fault.name());
    assert_eq!(
        r.re_served(),
        Vec::new(),
        "intact bytes fetched twice under {}",
        fault.name()
    );
    assert!(
        r.stats.bytes_spoiled <= r.spoiled_responses() * r.max_file_size(),
        "{} spoiled bytes from {} spoiled responses",
        r.stats.bytes_spoiled,
        r.spoiled_responses()
    );
    r
}

#[tokio::test]
async fn reset_mid_body_resumes_after_the_bytes_received() {
    let r = single_fault(BodyFault::Reset, 0.2, "").await;
    // A reset destroys only what was still in flight when the RST came (on loopback, next to
    // nothing: the half response sits in the receiver's buffer). An engine that threw away
    // what a cut response delivered would fetch every cut half again.
    let twice: u64 = r
        .served_twice()
        .iter()
        .flat_map(|(_, v)| v.iter().map(|x| x.len))
        .sum();
    let cut_halves: u64 = r
        .stats
        .files
        .values()
        .flatten()
        .filter(|s| s.spoiled)
        .map(|s| s.len)
        .sum();
    assert!(
        twice <= cut_halves / 2,
        "{twice} bytes fetched twice, of {cut_halves} bytes sent before resets"
    );
}

/// A cut that delivers everything the server wrote (FIN, short body, stall): every byte that
/// arrived was kept, so no byte at all, cut responses included, was served twice. Except in
/// drive-backed files, whose ranges count only once their `Content-MD5` matched: there a cut
/// range is fetched again, but only within the bytes of that cut response.
fn assert_every_received_byte_kept(r: &Run) {
    for f in r.sandbox.files(&r.project) {
        let twice = r.stats.served_more_than_once(f.id.as_str());
        if f.kind.is_symlink() {
            let spoiled = spoiled_ranges(r, &f);
            for range in &twice {
                assert!(
                    spoiled
                        .iter()
                        .any(|s| s.offset <= range.offset && range.end() <= s.end()),
                    "{}: {range:?} fetched twice outside any cut response {spoiled:?}",
                    f.name
                );
            }
        } else {
            assert_eq!(
                twice,
                Vec::new(),
                "{}: bytes that arrived were fetched again",
                f.name
            );
        }
    }
}

/// The ranges of `file` that spoiled responses carried.
fn spoiled_ranges(r: &Run, file: &dxmirror::sandbox::SandboxFile) -> Vec<ByteRange> {
    r.stats
        .files
        .get(file.id.as_str())
        .into_iter()
        .flatten()
        .filter(|s| s.spoiled && s.len > 0)
        .map(|s| ByteRange::new(s.offset, s.len))
        .collect()
}

#[tokio::test]
async fn fin_mid_body_resumes_after_the_bytes_received() {
    let r = single_fault(BodyFault::Fin, 0.2, "").await;
    assert_every_received_byte_kept(&r);
}

#[tokio::test]
async fn status_500_is_retried() {
    single_fault(BodyFault::Status500, 0.2, "").await;
}

#[tokio::test]
async fn status_503_waits_for_retry_after() {
    let r = single_fault(BodyFault::Status503, 0.2, "").await;
    // The sandbox asks for 1 s; an engine that honours it cannot finish sooner. (Backoff
    // alone, 50-500 ms on a first retry, would.)
    assert!(
        r.elapsed >= Duration::from_secs(1),
        "finished in {:?} despite Retry-After: 1",
        r.elapsed
    );
}

#[tokio::test]
async fn short_bodies_are_completed() {
    let r = single_fault(BodyFault::ShortBody, 0.2, "").await;
    assert_every_received_byte_kept(&r);
}

#[tokio::test]
async fn long_content_length_is_refused() {
    single_fault(BodyFault::LongLength, 0.2, "").await;
}

#[tokio::test]
async fn whole_object_200_is_refused_not_downloaded_per_chunk() {
    let r = single_fault(BodyFault::Full200, 0.1, "").await;
    // Each refused 200 costs at most its whole object (what the socket buffers took before
    // the engine hung up); an engine that asked for or accepted whole objects per chunk would
    // be served every file once per chunk.
    let data = r.data_size();
    let explained: u64 = r
        .sandbox
        .files(&r.project)
        .iter()
        .map(|f| {
            let spoiled = r
                .stats
                .files
                .get(f.id.as_str())
                .map_or(0, |v| v.iter().filter(|s| s.spoiled).count() as u64);
            spoiled * f.size
        })
        .sum();
    assert!(
        r.stats.bytes_served <= data + explained,
        "{} bytes served for {data} bytes of data and {explained} of refused 200s",
        r.stats.bytes_served
    );
    assert!(
        r.stats.bytes_served <= 3 * data,
        "{} bytes served for {data} bytes of data",
        r.stats.bytes_served
    );
}

#[tokio::test]
async fn mismatched_content_range_is_refused() {
    single_fault(BodyFault::BadContentRange, 0.2, "").await;
}

#[tokio::test]
async fn stalled_bodies_time_out_and_resume() {
    // The sandbox holds a stalled connection 4 s; the engine gives up on it after 1 s.
    let r = single_fault(BodyFault::Stall, 0.1, "stall-timeout = \"1s\"\n").await;
    assert_every_received_byte_kept(&r);
}

#[tokio::test]
async fn expired_urls_are_refreshed() {
    let r = single_fault(BodyFault::ExpireEarly, 0.2, "").await;
    let urls = r.stats.requests("/file-xxxx/download");
    let files = r.sandbox.files(&r.project).len() as u64;
    assert!(
        urls > files,
        "{urls} URL requests for {files} files: no URL was refreshed"
    );
}

/// Ranges (offset, len) that a spoiled response made suspect: the platform segments it
/// touched (its parts), or, for a drive-backed file (whose ranges are checked against the
/// storage's `Content-MD5` as they arrive), the spoiled response's own range.
fn affected_segments(r: &Run, file: &dxmirror::sandbox::SandboxFile) -> Vec<ByteRange> {
    let spoiled = spoiled_ranges(r, file);
    if file.kind.is_symlink() {
        return spoiled;
    }
    let segments: Vec<ByteRange> = if file.parts.is_empty() {
        vec![ByteRange::new(0, file.size)]
    } else {
        file.parts.iter().map(|p| p.range).collect()
    };
    segments
        .into_iter()
        .filter(|seg| {
            spoiled
                .iter()
                .any(|s| s.offset < seg.end() && seg.offset < s.end())
        })
        .collect()
}

#[tokio::test]
async fn flipped_bytes_are_healed_by_refetching_only_their_part() {
    let faults = FaultConfig {
        seed: SEED,
        ..FaultConfig::default()
    }
    .with(BodyFault::Flip, 0.08);
    let r = run(faults, true, "").await;
    assert!(r.fired(BodyFault::Flip) > 0, "flip never fired");
    let events = JournalReader::open(&r.env.state())
        .unwrap()
        .recent_events(10_000)
        .unwrap();
    let mut healed = 0;
    for f in r.sandbox.files(&r.project) {
        let again = r.stats.served_intact_more_than_once(f.id.as_str());
        let affected = affected_segments(&r, &f);
        for range in &again {
            assert!(
                affected
                    .iter()
                    .any(|seg| seg.offset <= range.offset && range.end() <= seg.end()),
                "{}: {range:?} fetched twice but lies outside the damaged parts {affected:?}",
                f.name
            );
        }
        healed += usize::from(!affected.is_empty());
        // Every damaged file, and only those, left the checksum mismatch in the journal; a
        // drive-backed file's flip is caught in transit by the range's `Content-MD5` instead,
        // before any byte of it counts.
        let reported = events
            .iter()
            .any(|e| e.level == EventLevel::Warn && e.file_id.as_ref() == Some(&f.id));
        assert_eq!(
            reported,
            !affected.is_empty() && !f.kind.is_symlink(),
            "{}: mismatch reported {reported}, damaged parts {affected:?}",
            f.name
        );
    }
    assert!(healed > 0, "no file met a flipped byte");
}

#[tokio::test]
async fn all_faults_at_once_at_low_rates() {
    let faults = FaultConfig::parse(
        "reset=0.03,fin=0.03,status500=0.03,status503=0.02,short_body=0.03,long_length=0.03,\
         full_200=0.03,bad_content_range=0.03,stall=0.02,flip=0.02,expire_early=0.03,\
         api500=0.03,api503=0.02,api429=0.02,stall_secs=3,seed=10",
    )
    .unwrap();
    let r = run(faults, true, "stall-timeout = \"1s\"\n").await;
    let kinds = r.stats.faults_injected.len();
    assert!(
        kinds >= 4,
        "only {kinds} kinds of fault fired: {:?}",
        r.stats.faults_injected
    );
    // Intact bytes are fetched again only inside parts that some spoiled response touched
    // (a flipped byte makes its whole part be fetched again).
    for f in r.sandbox.files(&r.project) {
        let affected = affected_segments(&r, &f);
        for range in r.stats.served_intact_more_than_once(f.id.as_str()) {
            assert!(
                affected
                    .iter()
                    .any(|seg| seg.offset <= range.offset && range.end() <= seg.end()),
                "{}: {range:?} fetched twice outside the damaged parts {affected:?}",
                f.name
            );
        }
    }
    let data = r.data_size();
    assert!(
        r.stats.bytes_served <= 4 * data,
        "{} bytes served for {data} bytes of data",
        r.stats.bytes_served
    );
}

/// One file of each kind a damaged range can hit: drive-backed without parts (checked per range
/// against the storage's `Content-MD5`, then whole), drive-backed with one part, multi-part and
/// single-part from the platform's own download host.
fn one_of_each_kind() -> Dataset {
    let p = ProjectSpec::new("damaged")
        .file(
            FileSpec::new("/restricted/bam", "drive.bam", 600_000)
                .kind(FileSpecKind::SymlinkWholeMd5),
        )
        .file(
            FileSpec::new("/restricted/bam", "drive-part.bam", 300_000)
                .kind(FileSpecKind::DriveSinglePart),
        )
        .file(
            FileSpec::new("/restricted/bam", "parts.bam", 500_000)
                .kind(FileSpecKind::PartsMd5(PartSizes::Uniform(128 * 1024))),
        )
        .file(
            FileSpec::new("/restricted/txt", "single.txt", 150_000).kind(FileSpecKind::SinglePart),
        );
    Dataset::build(SEED, vec![p]).unwrap()
}

/// Every response damaged, forever: a checksum failure is never progress, so every file ends
/// `corrupt` (with the evidence in the journal and a `quarantined` audit record) after the
/// bounded re-fetches, well within the time limit, and the run ends saying so.
#[tokio::test]
async fn a_range_that_always_arrives_damaged_ends_corrupt_in_bounded_time() {
    let (sandbox, project, env) = served_env_with(
        SandboxOptions {
            dataset: one_of_each_kind(),
            faults: FaultConfig::parse("flip=1.0,seed=3").unwrap(),
            ..SandboxOptions::default()
        },
        format!("{ENGINE}max-verify-retries = 2\n"),
    )
    .await;
    let summary = tokio::time::timeout(Duration::from_secs(60), env.sync())
        .await
        .expect("a sync of ranges that always arrive damaged never ended")
        .unwrap();
    assert!(!summary.is_ok(), "{summary:#?}");
    let reader = JournalReader::open(&env.state()).unwrap();
    let rows = reader.files(&project).unwrap();
    assert_eq!(rows.len(), sandbox.files(&project).len());
    for row in &rows {
        assert_eq!(
            row.state,
            FileState::Corrupt,
            "{}: {:?}",
            row.rel_path,
            row.reason
        );
        let reason = row.reason.as_deref().unwrap_or("");
        assert!(
            reason.contains("still wrong after 2 re-fetches"),
            "{}: {reason}",
            row.rel_path
        );
    }
    // The drive-backed files name the damaged range and the storage's checksum.
    for row in rows.iter().filter(|r| r.rel_path.contains("drive")) {
        let reason = row.reason.as_deref().unwrap_or("");
        assert!(
            reason.contains("Content-MD5 mismatch"),
            "{}: {reason}",
            row.rel_path
        );
    }
    let quarantined = reader
        .audit_since(0)
        .unwrap()
        .into_iter()
        .filter(|a| a.action == "quarantined")
        .count();
    assert_eq!(quarantined, rows.len());
    // Bounded work: each range of a drive-backed file is served at most 1 + 2 times before the
    // file gives up (the other files stop at their first range), nothing more.
    let stats = sandbox.stats();
    let data: u64 = sandbox.files(&project).iter().map(|f| f.size).sum();
    assert!(
        stats.bytes_served <= 3 * data,
        "{} bytes served for {data} bytes of data",
        stats.bytes_served
    );
}

/// A range damaged only on its first two serves heals on the third: within the bound, nothing
/// ends corrupt and the mirror is exact.
#[tokio::test]
async fn a_range_damaged_only_on_its_first_serves_still_heals() {
    let (sandbox, project, env) = served_env_with(
        SandboxOptions {
            dataset: one_of_each_kind(),
            faults: FaultConfig::parse("flip_first=2,seed=3").unwrap(),
            ..SandboxOptions::default()
        },
        format!("{ENGINE}max-verify-retries = 2\n"),
    )
    .await;
    let summary = tokio::time::timeout(Duration::from_secs(60), env.sync())
        .await
        .expect("sync never ended")
        .unwrap();
    assert!(summary.is_ok(), "{summary:#?}");
    assert_eq!(
        assert_mirrored(&sandbox, &env, &project),
        sandbox.files(&project).len()
    );
    assert!(
        sandbox
            .stats()
            .faults_injected
            .get("flip")
            .copied()
            .unwrap_or(0)
            > 0
    );
}
