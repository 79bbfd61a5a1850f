//! The engine's decisions, as pure functions of what it knows: which plan a file runs on, what
//! to do with a file already at its final path or a staging file found on disk, which chunks
//! a damaged segment fetches again, what a checksum failure or a finished read-back means,
//! how much patience a file has left, and how a verified file is published.
//!
//! Nothing here does I/O, logs or awaits: the engine's `select!` loops ask, then act. Each
//! function is unit-tested below.

use std::collections::HashSet;
use std::time::Duration;

use super::FileOutcome;
use crate::journal::{FileState, StoredPlan};
use crate::model::ByteRange;
use crate::planner::{FileKind, FilePlan};
use crate::readback::{ReadBack, SegmentCheck};
use crate::store::RelPath;

/// The state a file ends in when it was not published, with the reason to record; `None`
/// for a published file.
pub(super) fn file_end(outcome: &FileOutcome) -> Option<(FileState, &str)> {
    match outcome {
        FileOutcome::Verified { .. } | FileOutcome::Unverified { .. } => None,
        FileOutcome::Skipped { reason } => Some((FileState::Skipped, reason)),
        FileOutcome::Gone { reason } => Some((FileState::Gone, reason)),
        FileOutcome::Corrupt { reason } => Some((FileState::Corrupt, reason)),
        FileOutcome::Failed { reason } | FileOutcome::ObjectChanged { reason } => {
            Some((FileState::Failed, reason))
        }
    }
}

/// Which plan a file runs on.
#[derive(Debug)]
pub(super) enum PlanSource {
    /// The journal's plan and progress: authoritative for a file in progress (the chunk size
    /// may have changed in the config since).
    Journal(StoredPlan),
    /// A new plan (none journaled, or the file's size changed).
    New,
}

/// The journal's plan when it is of a file of this `size`, else a new one.
pub(super) fn choose_plan(stored: Option<StoredPlan>, size: u64) -> PlanSource {
    match stored {
        Some(s) if s.plan.size == size => PlanSource::Journal(s),
        _ => PlanSource::New,
    }
}

/// What to do about a file already at its final path before fetching.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Existing {
    /// Nothing to adopt: fetch.
    Fetch,
    /// A previous run may have published the file and died before the journal said so: adopt
    /// it if it verifies, else refuse to overwrite it.
    AdoptOrRefuse,
    /// The file replaces an older version: what is at the path is usually the old one, which
    /// stays until the new one is verified; adopt it only if it verifies as the new one, else
    /// fetch.
    AdoptIfVerified,
}

/// A file at its final path with no staging file is re-verified rather than fetched again.
pub(super) fn existing_action(
    staging_exists: bool,
    final_exists: bool,
    replaces: bool,
) -> Existing {
    match (staging_exists, final_exists, replaces) {
        (false, true, false) => Existing::AdoptOrRefuse,
        (false, true, true) => Existing::AdoptIfVerified,
        _ => Existing::Fetch,
    }
}

/// What the staging file as opened means for the journaled progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Staging {
    /// Created, and the journal claims nothing: start from zero.
    Fresh,
    /// Created although the journal claims bytes: the staging file vanished, and nothing the
    /// journal claims is there any more.
    DiscardAll,
    /// An existing staging file: re-check the journaled progress against its bytes.
    Reconcile,
}

/// See [`Staging`].
pub(super) fn staging_action(created: bool, any_done: bool) -> Staging {
    match (created, any_done) {
        (true, true) => Staging::DiscardAll,
        (true, false) => Staging::Fresh,
        (false, _) => Staging::Reconcile,
    }
}

/// A file of at most one chunk of at most one progress step skips the hash cursor and the
/// per-chunk journaling.
pub(super) fn is_small(plan: &FilePlan, progress_step: u64) -> bool {
    plan.chunks.len() <= 1 && plan.size <= progress_step
}

/// Largest range one GET asks for. Drive-backed files redirect to storage (Azure for St. Jude
/// Cloud), which states the MD5 of ranges up to 4 MiB: fetched in such ranges, each is
/// checked as it arrives.
pub(super) fn range_cap(drive_backed: bool) -> u64 {
    if drive_backed {
        crate::platform::RANGE_MD5_MAX
    } else {
        u64::MAX
    }
}

/// The ETag a file's GETs are pinned to: a drive-backed file's, when its describe gave one.
/// (dxpy pins only files with parts; a parts-less symlink is pinned too.)
pub(super) fn pin(remote: &crate::model::RemoteFile) -> Option<String> {
    remote.drive.as_ref().and(remote.etag.clone())
}

/// One journaled claim that start-up re-hashes: chunk `idx`'s bytes `range` must hash to `crc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Claim {
    /// The chunk.
    pub idx: u32,
    /// Its bytes the journal claims (from the chunk's start, `done` long).
    pub range: ByteRange,
    /// Their journaled CRC32C.
    pub crc: u32,
}

/// The claims to re-check when a staged file resumes: every chunk with progress outside a
/// verified segment. If the check cannot run, all of them are fetched again.
pub(super) fn reconcile_targets(
    plan: &FilePlan,
    done: &[u64],
    crc: &[u32],
    seg_verified: &[bool],
) -> Vec<Claim> {
    plan.chunks
        .iter()
        .filter(|c| done[c.idx as usize] > 0 && !seg_verified[c.segment as usize])
        .map(|c| Claim {
            idx: c.idx,
            range: ByteRange::new(c.range.offset, done[c.idx as usize]),
            crc: crc[c.idx as usize],
        })
        .collect()
}

/// A checksum failure of a segment (or of a small file), counted against
/// `max-verify-retries`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Strike {
    /// What failed: for the log, the journal's event and the file's last error.
    pub evidence: String,
    /// Failures so far, this one included.
    pub attempt: u32,
    /// `Some(reason)` once the failures exceed the bound: the file ends corrupt. `None`: fetch
    /// it again.
    pub corrupt: Option<String>,
}

impl Strike {
    fn new(evidence: String, failures_before: u32, max_retries: u32) -> Strike {
        let attempt = failures_before + 1;
        let corrupt = (attempt > max_retries)
            .then(|| format!("{evidence}; still wrong after {max_retries} re-fetches"));
        Strike {
            evidence,
            attempt,
            corrupt,
        }
    }
}

/// What a small file's read-back means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum SmallVerdict {
    /// Every platform checksum matched and the bytes read back are the bytes that arrived.
    Publish,
    /// A mismatch: fetch the file again, or give up.
    Mismatch(Strike),
}

/// Judges a small file's read-back: its platform checksums, and its chunks' CRC32C against
/// the ones computed on arrival (`arrival_crc`). `failures_before` read-backs failed already.
pub(super) fn small_verdict(
    plan: &FilePlan,
    report: &ReadBack,
    arrival_crc: &[u32],
    failures_before: u32,
    max_retries: u32,
) -> SmallVerdict {
    let crc_differs: Vec<u32> = plan
        .chunks
        .iter()
        .filter(|c| report.chunk_crcs.get(c.idx as usize) != Some(&arrival_crc[c.idx as usize]))
        .map(|c| c.idx)
        .collect();
    if report.all_ok() && crc_differs.is_empty() {
        return SmallVerdict::Publish;
    }
    let evidence = if report.all_ok() {
        format!(
            "chunk {crc_differs:?}: the bytes read back differ from the bytes that arrived (CRC32C)"
        )
    } else {
        describe_bad(plan, report)
    };
    SmallVerdict::Mismatch(Strike::new(evidence, failures_before, max_retries))
}

/// What the cursor's check of one segment means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum SegmentVerdict {
    /// The segment matched; `newly` when a platform checksum verified it for the first time
    /// (the journal records it).
    Verified {
        /// Record it as verified.
        newly: bool,
    },
    /// It failed its checksum: fetch it again, or give up.
    Mismatch(Strike),
    /// It failed, but its re-fetch already waits for its chunk tasks to end: the cursor read
    /// the same bad bytes again (another segment's reset restarted it), which is no new
    /// failure.
    RefetchPending,
}

/// Judges the cursor's check of a segment, given whether it was verified already, how often
/// it failed before, and whether its re-fetch is already waiting.
pub(super) fn on_segment(
    plan: &FilePlan,
    check: &SegmentCheck,
    verified: bool,
    failures_before: u32,
    refetch_pending: bool,
    max_retries: u32,
) -> SegmentVerdict {
    if check.ok {
        return SegmentVerdict::Verified {
            newly: check.expected.is_some() && !verified,
        };
    }
    if refetch_pending {
        return SegmentVerdict::RefetchPending;
    }
    let seg = &plan.segments[check.idx as usize];
    let evidence = format!(
        "segment {} (part {:?}, {} bytes): expected {:?}, got {:?}",
        check.idx, seg.part_index, seg.range.len, check.expected, check.actual
    );
    SegmentVerdict::Mismatch(Strike::new(evidence, failures_before, max_retries))
}

/// A failed segment's re-fetch waits until none of its chunks has a task any more: only then
/// are the arrival digests of all its chunks known.
pub(super) fn segment_settled(plan: &FilePlan, seg: u32, in_flight: &HashSet<u32>) -> bool {
    !plan.chunks_of(seg).any(|c| in_flight.contains(&c.idx))
}

/// The chunks of a failed segment to fetch again: only those whose bytes, as the cursor read
/// them (`cursor_crcs`: chunk, CRC32C), no longer hash to what arrived (`arrival_crc`:
/// damage on disk); if none differs (the damage arrived with the bytes), every chunk of it.
pub(super) fn chunks_to_refetch(
    plan: &FilePlan,
    seg: u32,
    cursor_crcs: &[(u32, u32)],
    arrival_crc: &[u32],
) -> Vec<u32> {
    let changed: Vec<u32> = cursor_crcs
        .iter()
        .filter(|(c, crc)| *crc != arrival_crc[*c as usize])
        .map(|(c, _)| *c)
        .collect();
    if changed.is_empty() {
        plan.chunks_of(seg).map(|c| c.idx).collect()
    } else {
        changed
    }
}

/// What a cursor pass that has read the whole file means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum PassVerdict {
    /// Its bad segments are being fetched again: a new pass follows.
    AwaitNextPass,
    /// Bad, and nothing is being fetched again: the file is corrupt.
    Corrupt {
        /// The evidence.
        reason: String,
    },
    /// Every checksum matched: the file is ready once no chunk work is left.
    Complete,
}

/// Judges a finished cursor pass; `resets_pending` when failed segments wait to be fetched
/// again.
pub(super) fn on_finished(plan: &FilePlan, report: &ReadBack, resets_pending: bool) -> PassVerdict {
    match (report.all_ok(), resets_pending) {
        (true, _) => PassVerdict::Complete,
        (false, true) => PassVerdict::AwaitNextPass,
        (false, false) => PassVerdict::Corrupt {
            reason: describe_bad(plan, report),
        },
    }
}

/// The evidence of a bad read-back: its size, or every segment that did not match.
pub(super) fn describe_bad(plan: &FilePlan, report: &ReadBack) -> String {
    if !report.size_ok {
        return format!(
            "size is {} bytes, expected {}",
            report.actual_size, plan.size
        );
    }
    let parts: Vec<String> = report
        .bad_segments()
        .map(|s| {
            format!(
                "segment {}: expected {:?}, got {:?}",
                s.idx, s.expected, s.actual
            )
        })
        .collect();
    parts.join("; ")
}

/// How long a file may still wait for a byte, `since` its last progress (or activity).
pub(super) fn patience_left(patience: Duration, since: Duration) -> Duration {
    patience.saturating_sub(since)
}

/// A file that moved no byte for its whole patience fails.
pub(super) fn out_of_patience(patience: Duration, since_progress: Duration) -> bool {
    since_progress >= patience
}

/// The reason of a file that ran out of patience: its last error (the file's own, else its
/// chunks').
pub(super) fn no_progress_reason(
    patience: Duration,
    file_error: Option<&str>,
    chunk_error: Option<&str>,
) -> String {
    format!(
        "no progress for {}; last error: {}",
        humantime::format_duration(patience),
        file_error.or(chunk_error).unwrap_or("none")
    )
}

/// How a verified staging file is renamed into place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum PublishVia {
    /// Replacing an older version, which is kept under this name.
    Replacing(RelPath),
    /// The data is already synced (a small file): only the rename and its folder.
    Synced,
    /// Sync, then rename.
    Plain,
}

/// See [`PublishVia`].
pub(super) fn publish_via(replaces: Option<RelPath>, data_synced: bool) -> PublishVia {
    match replaces {
        Some(keep) => PublishVia::Replacing(keep),
        None if data_synced => PublishVia::Synced,
        None => PublishVia::Plain,
    }
}

/// The journal state and outcome of a published file of this kind.
pub(super) fn finished_state(kind: FileKind, sha256: [u8; 32]) -> (FileState, FileOutcome) {
    if kind == FileKind::Unverified {
        (FileState::Unverified, FileOutcome::Unverified { sha256 })
    } else {
        (FileState::Verified, FileOutcome::Verified { sha256 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Digest;
    use crate::planner::{Chunk, Segment};

    /// A plan of segments cut into chunks of the given lengths, each segment with an MD5.
    fn plan(segments: &[&[u64]]) -> FilePlan {
        let (mut segs, mut chunks, mut offset) = (Vec::new(), Vec::new(), 0u64);
        for (s, lens) in segments.iter().enumerate() {
            let start = offset;
            for len in lens.iter() {
                chunks.push(Chunk {
                    idx: chunks.len() as u32,
                    segment: s as u32,
                    range: ByteRange::new(offset, *len),
                });
                offset += len;
            }
            segs.push(Segment {
                idx: s as u32,
                part_index: Some(s as u32 + 1),
                range: ByteRange::new(start, offset - start),
                expect: Some(Digest::Md5([s as u8; 16])),
            });
        }
        FilePlan {
            kind: FileKind::PartsMd5,
            size: offset,
            segments: segs,
            chunks,
        }
    }

    fn check(idx: u32, ok: bool) -> SegmentCheck {
        SegmentCheck {
            idx,
            expected: Some(Digest::Md5([1; 16])),
            actual: Some(Digest::Md5([if ok { 1 } else { 2 }; 16])),
            ok,
        }
    }

    fn report(plan: &FilePlan, bad: &[u32], crcs: &[u32]) -> ReadBack {
        ReadBack {
            size_ok: true,
            actual_size: plan.size,
            sha256: [7; 32],
            segments: plan
                .segments
                .iter()
                .map(|s| check(s.idx, !bad.contains(&s.idx)))
                .collect(),
            chunk_crcs: crcs.to_vec(),
        }
    }

    #[test]
    fn published_files_record_no_end_state_and_the_others_their_reason() {
        assert_eq!(file_end(&FileOutcome::Verified { sha256: [0; 32] }), None);
        assert_eq!(file_end(&FileOutcome::Unverified { sha256: [0; 32] }), None);
        let cases = [
            (
                FileOutcome::Skipped { reason: "s".into() },
                FileState::Skipped,
            ),
            (FileOutcome::Gone { reason: "g".into() }, FileState::Gone),
            (
                FileOutcome::Corrupt { reason: "c".into() },
                FileState::Corrupt,
            ),
            (
                FileOutcome::Failed { reason: "f".into() },
                FileState::Failed,
            ),
        ];
        for (outcome, state) in cases {
            let (got, reason) = file_end(&outcome).unwrap();
            assert_eq!(got, state);
            assert_eq!(reason, &state.as_str()[..1]);
        }
    }

    #[test]
    fn the_journal_plan_is_kept_only_for_a_file_of_the_same_size() {
        let p = plan(&[&[10, 10]]);
        let stored = || StoredPlan {
            plan: p.clone(),
            chunk_done: vec![(10, 1), (3, 2)],
            segment_verified: vec![false],
        };
        match choose_plan(Some(stored()), 20) {
            PlanSource::Journal(s) => assert_eq!(s.chunk_done, vec![(10, 1), (3, 2)]),
            PlanSource::New => panic!("the journal's plan was dropped"),
        }
        assert!(matches!(choose_plan(Some(stored()), 21), PlanSource::New));
        assert!(matches!(choose_plan(None, 20), PlanSource::New));
    }

    #[test]
    fn a_final_file_without_staging_is_adopted_or_refused_and_a_replaced_one_only_adopted() {
        assert_eq!(existing_action(false, true, false), Existing::AdoptOrRefuse);
        assert_eq!(
            existing_action(false, true, true),
            Existing::AdoptIfVerified
        );
        for replaces in [false, true] {
            assert_eq!(existing_action(true, true, replaces), Existing::Fetch);
            assert_eq!(existing_action(false, false, replaces), Existing::Fetch);
            assert_eq!(existing_action(true, false, replaces), Existing::Fetch);
        }
    }

    #[test]
    fn a_vanished_staging_file_discards_progress_and_an_existing_one_is_reconciled() {
        assert_eq!(staging_action(true, true), Staging::DiscardAll);
        assert_eq!(staging_action(true, false), Staging::Fresh);
        assert_eq!(staging_action(false, true), Staging::Reconcile);
        assert_eq!(staging_action(false, false), Staging::Reconcile);
    }

    #[test]
    fn small_means_one_chunk_of_at_most_one_step() {
        assert!(is_small(&plan(&[&[100]]), 100));
        assert!(!is_small(&plan(&[&[101]]), 100));
        assert!(!is_small(&plan(&[&[10, 10]]), 100));
        assert!(is_small(&plan(&[]), 100));
        assert_eq!(range_cap(true), crate::platform::RANGE_MD5_MAX);
        assert_eq!(range_cap(false), u64::MAX);
    }

    #[test]
    fn reconcile_rechecks_progress_outside_verified_segments_only() {
        let p = plan(&[&[10, 10], &[10, 10]]);
        let done = [10, 0, 4, 10];
        let crc = [1, 2, 3, 4];
        let targets = reconcile_targets(&p, &done, &crc, &[false, false]);
        assert_eq!(
            targets,
            vec![
                Claim {
                    idx: 0,
                    range: ByteRange::new(0, 10),
                    crc: 1
                },
                Claim {
                    idx: 2,
                    range: ByteRange::new(20, 4),
                    crc: 3
                },
                Claim {
                    idx: 3,
                    range: ByteRange::new(30, 10),
                    crc: 4
                },
            ]
        );
        let targets = reconcile_targets(&p, &done, &crc, &[true, false]);
        assert_eq!(
            targets.iter().map(|c| c.idx).collect::<Vec<_>>(),
            vec![2, 3]
        );
        assert!(reconcile_targets(&p, &[0; 4], &crc, &[false, false]).is_empty());
    }

    #[test]
    fn a_small_file_publishes_only_when_checksums_and_arrival_crcs_agree() {
        let p = plan(&[&[10]]);
        assert_eq!(
            small_verdict(&p, &report(&p, &[], &[5]), &[5], 0, 3),
            SmallVerdict::Publish
        );

        // Read back differently from what arrived: damage on disk.
        let SmallVerdict::Mismatch(s) = small_verdict(&p, &report(&p, &[], &[6]), &[5], 0, 3)
        else {
            panic!("a changed chunk was published");
        };
        assert_eq!(
            s.evidence,
            "chunk [0]: the bytes read back differ from the bytes that arrived (CRC32C)"
        );
        assert_eq!((s.attempt, s.corrupt), (1, None));

        // A platform checksum failed: the read-back's evidence, corrupt past the bound.
        let SmallVerdict::Mismatch(s) = small_verdict(&p, &report(&p, &[0], &[5]), &[5], 3, 3)
        else {
            panic!("a bad checksum was published");
        };
        assert!(
            s.evidence.starts_with("segment 0: expected "),
            "{}",
            s.evidence
        );
        assert_eq!(s.attempt, 4);
        assert_eq!(
            s.corrupt,
            Some(format!("{}; still wrong after 3 re-fetches", s.evidence))
        );

        // A missing chunk CRC is a difference too.
        assert!(matches!(
            small_verdict(&p, &report(&p, &[], &[]), &[5], 0, 3),
            SmallVerdict::Mismatch(_)
        ));
    }

    #[test]
    fn a_segment_is_verified_once_refetched_while_retries_last_then_corrupt() {
        let p = plan(&[&[10], &[7, 3]]);
        assert_eq!(
            on_segment(&p, &check(1, true), false, 0, false, 3),
            SegmentVerdict::Verified { newly: true }
        );
        assert_eq!(
            on_segment(&p, &check(1, true), true, 0, false, 3),
            SegmentVerdict::Verified { newly: false }
        );
        // Nothing to verify against: matched, but not recorded as verified.
        let unchecked = SegmentCheck {
            idx: 1,
            expected: None,
            actual: None,
            ok: true,
        };
        assert_eq!(
            on_segment(&p, &unchecked, false, 0, false, 3),
            SegmentVerdict::Verified { newly: false }
        );

        let SegmentVerdict::Mismatch(s) = on_segment(&p, &check(1, false), true, 2, false, 3)
        else {
            panic!("a bad segment was verified");
        };
        assert_eq!(
            s.evidence,
            format!(
                "segment 1 (part Some(2), 10 bytes): expected {:?}, got {:?}",
                Some(Digest::Md5([1; 16])),
                Some(Digest::Md5([2; 16]))
            )
        );
        assert_eq!((s.attempt, s.corrupt), (3, None));
        let SegmentVerdict::Mismatch(s) = on_segment(&p, &check(1, false), false, 3, false, 3)
        else {
            panic!("a bad segment was verified");
        };
        assert_eq!(s.attempt, 4);
        assert_eq!(
            s.corrupt,
            Some(format!("{}; still wrong after 3 re-fetches", s.evidence))
        );
    }

    #[test]
    fn the_same_bad_bytes_read_again_before_their_refetch_are_not_counted_again() {
        let p = plan(&[&[10], &[7, 3]]);
        // At the last retry: read again while its re-fetch waits, it is not the end.
        assert_eq!(
            on_segment(&p, &check(1, false), false, 2, true, 2),
            SegmentVerdict::RefetchPending
        );
        assert_eq!(
            on_segment(&p, &check(1, true), false, 2, true, 2),
            SegmentVerdict::Verified { newly: true }
        );
    }

    #[test]
    fn a_reset_waits_for_every_chunk_of_its_segment() {
        let p = plan(&[&[10], &[5, 5]]);
        assert!(segment_settled(&p, 1, &HashSet::from([0])));
        assert!(!segment_settled(&p, 1, &HashSet::from([2])));
        assert!(segment_settled(&p, 1, &HashSet::new()));
    }

    #[test]
    fn only_chunks_changed_on_disk_are_refetched_else_the_whole_segment() {
        let p = plan(&[&[10], &[5, 5, 5]]);
        let arrival = [9, 11, 12, 13];
        // Chunk 2 reads back differently from what arrived: only it is fetched again.
        assert_eq!(
            chunks_to_refetch(&p, 1, &[(1, 11), (2, 99), (3, 13)], &arrival),
            vec![2]
        );
        assert_eq!(
            chunks_to_refetch(&p, 1, &[(1, 0), (2, 99), (3, 13)], &arrival),
            vec![1, 2]
        );
        // Every chunk reads back as it arrived: the damage came with the bytes.
        assert_eq!(
            chunks_to_refetch(&p, 1, &[(1, 11), (2, 12), (3, 13)], &arrival),
            vec![1, 2, 3]
        );
        assert_eq!(chunks_to_refetch(&p, 0, &[(0, 9)], &arrival), vec![0]);
    }

    #[test]
    fn a_finished_pass_completes_waits_for_its_resets_or_is_corrupt() {
        let p = plan(&[&[10], &[10]]);
        assert_eq!(
            on_finished(&p, &report(&p, &[], &[]), false),
            PassVerdict::Complete
        );
        assert_eq!(
            on_finished(&p, &report(&p, &[], &[]), true),
            PassVerdict::Complete
        );
        assert_eq!(
            on_finished(&p, &report(&p, &[1], &[]), true),
            PassVerdict::AwaitNextPass
        );
        let PassVerdict::Corrupt { reason } = on_finished(&p, &report(&p, &[0, 1], &[]), false)
        else {
            panic!("a bad pass was not corrupt");
        };
        assert_eq!(reason, describe_bad(&p, &report(&p, &[0, 1], &[])));
        assert_eq!(reason.matches("segment ").count(), 2, "{reason}");
        assert!(reason.contains("; segment 1: expected "), "{reason}");
    }

    #[test]
    fn a_wrong_size_is_the_whole_evidence() {
        let p = plan(&[&[10]]);
        let mut r = report(&p, &[0], &[]);
        r.size_ok = false;
        r.actual_size = 4;
        assert_eq!(describe_bad(&p, &r), "size is 4 bytes, expected 10");
    }

    #[test]
    fn patience_counts_from_the_last_progress_and_names_the_last_error() {
        let p = Duration::from_secs(60);
        assert_eq!(
            patience_left(p, Duration::from_secs(20)),
            Duration::from_secs(40)
        );
        assert_eq!(patience_left(p, Duration::from_secs(90)), Duration::ZERO);
        assert!(!out_of_patience(p, Duration::from_secs(59)));
        assert!(out_of_patience(p, p));
        assert_eq!(
            no_progress_reason(p, Some("file"), Some("chunk")),
            "no progress for 1m; last error: file"
        );
        assert_eq!(
            no_progress_reason(p, None, Some("chunk")),
            "no progress for 1m; last error: chunk"
        );
        assert_eq!(
            no_progress_reason(Duration::from_secs(90), None, None),
            "no progress for 1m 30s; last error: none"
        );
    }

    #[test]
    fn publishing_replaces_keeps_synced_data_or_syncs_first() {
        let keep = RelPath::new("a/old__x.bam").unwrap();
        for synced in [false, true] {
            assert_eq!(
                publish_via(Some(keep.clone()), synced),
                PublishVia::Replacing(keep.clone())
            );
        }
        assert_eq!(publish_via(None, true), PublishVia::Synced);
        assert_eq!(publish_via(None, false), PublishVia::Plain);
        assert_eq!(
            finished_state(FileKind::Unverified, [1; 32]),
            (
                FileState::Unverified,
                FileOutcome::Unverified { sha256: [1; 32] }
            )
        );
        for kind in [
            FileKind::PartsMd5,
            FileKind::PartsChecksum,
            FileKind::WholeMd5,
            FileKind::PublishedMd5,
        ] {
            assert_eq!(
                finished_state(kind, [2; 32]),
                (
                    FileState::Verified,
                    FileOutcome::Verified { sha256: [2; 32] }
                )
            );
        }
    }
}
