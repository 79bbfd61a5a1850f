//! The road of every file but the small ones: up to `max_connections_per_file` chunk tasks
//! fetch while the hash cursor reads the written bytes back behind them. Each segment is
//! checked as soon as the cursor passes its end; a bad one is fetched again (only its damaged
//! chunks, bounded by `max-verify-retries`), and the file is ready when a cursor pass has read
//! every byte with every checksum matching.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use tokio::task::JoinSet;
use tracing::{debug, warn, Instrument as _};

use super::chunk::{ChunkCtx, ChunkEnd};
use super::cursor::{self, CursorEvent};
use super::decide::{self, PassVerdict, SegmentVerdict};
use super::{Engine, Fetched, FileOutcome, FileRunState, TransferError};
use crate::journal::FileKey;
use crate::planner::FilePlan;
use crate::readback;

impl Engine {
    /// Runs chunk fetches while the hash cursor reads the written bytes back behind them, until
    /// the cursor has read the whole file with every platform checksum matching; returns its
    /// report, or the outcome that ended the file.
    pub(super) async fn fetch_all(
        &self,
        ctx: &Arc<ChunkCtx>,
        plan: &FilePlan,
        file: &Arc<std::fs::File>,
        tracker: &Arc<cursor::Tracker>,
        state: &mut FileRunState,
    ) -> Result<Fetched, TransferError> {
        let key = ctx.key().clone();
        let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel();
        // Dropping the guard (however this function ends) stops the cursor thread.
        let _cursor = cursor::CursorGuard(tracker.clone());
        if let Err(e) = cursor::spawn(file.clone(), tracker.clone(), events_tx) {
            return Ok(Fetched::Ended(FileOutcome::Failed {
                reason: format!("cannot start the read-back thread: {e}"),
            }));
        }
        let mut queue: VecDeque<u32> = plan
            .chunks
            .iter()
            .filter(|c| state.done[c.idx as usize] < c.range.len)
            .map(|c| c.idx)
            .collect();
        let mut tasks: JoinSet<(u32, ChunkEnd)> = JoinSet::new();
        let mut in_flight: HashSet<u32> = HashSet::new();
        // Resets waiting for chunk tasks that are still syncing the bytes being discarded:
        // (segment, the cursor's CRC32C of each of its chunks).
        let mut deferred: Vec<(u32, Vec<(u32, u32)>)> = Vec::new();
        let mut finished: Option<readback::ReadBack> = None;
        let mut last_activity = Instant::now();

        loop {
            // Apply the resets whose chunks have no task any more, fetching again only what
            // is damaged.
            let mut i = 0;
            while i < deferred.len() {
                let (seg, cursor_crcs) = &deferred[i];
                if !decide::segment_settled(plan, *seg, &in_flight) {
                    i += 1;
                    continue;
                }
                let chunks = decide::chunks_to_refetch(plan, *seg, cursor_crcs, &state.crc);
                deferred.swap_remove(i);
                self.reset(&key, &chunks, state, tracker).await?;
                queue.extend(chunks);
            }
            while in_flight.len() < self.cfg.max_connections_per_file {
                let Some(idx) = queue.pop_front() else { break };
                let c = plan.chunks[idx as usize];
                let ctx = ctx.clone();
                let (done, crc) = (state.done[idx as usize], state.crc[idx as usize]);
                // In the file's span, so that the chunk's lines name the file.
                tasks.spawn(async move { (idx, ctx.fetch(c, done, crc).await) }.in_current_span());
                in_flight.insert(idx);
            }
            if tasks.is_empty() && queue.is_empty() && deferred.is_empty() {
                if let Some(report) = finished.take() {
                    return Ok(Fetched::Ready(report));
                }
            }
            let patience_left = decide::patience_left(
                self.cfg.file_patience,
                last_activity.elapsed().min(ctx.since_last_progress()),
            );
            tokio::select! {
                Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                    last_activity = Instant::now();
                    match joined {
                        Ok((idx, ChunkEnd::Done { bytes, crc })) => {
                            in_flight.remove(&idx);
                            state.done[idx as usize] = bytes;
                            state.crc[idx as usize] = crc;
                        }
                        Ok((idx, ChunkEnd::File(outcome))) => {
                            tasks.abort_all();
                            debug!(chunk_idx = idx, "chunk failed");
                            return Ok(Fetched::Ended(outcome));
                        }
                        Ok((idx, ChunkEnd::Run(e))) => {
                            tasks.abort_all();
                            debug!(chunk_idx = idx, "chunk failed");
                            return Err(e);
                        }
                        Err(e) => {
                            // A panicking chunk task fails this file, not the run.
                            tasks.abort_all();
                            return Ok(Fetched::Ended(FileOutcome::Failed {
                                reason: format!("internal error in a transfer task: {e}"),
                            }));
                        }
                    }
                }
                event = events.recv() => {
                    last_activity = Instant::now();
                    let Some(event) = event else {
                        tasks.abort_all();
                        return Ok(Fetched::Ended(FileOutcome::Failed {
                            reason: "the read-back thread stopped unexpectedly".into(),
                        }));
                    };
                    if event.epoch() != tracker.epoch() {
                        continue; // about bytes since discarded
                    }
                    match event {
                        CursorEvent::Segment { check, chunk_crcs, .. } => {
                            let seg = check.idx as usize;
                            let pending = deferred.iter().any(|(s, _)| *s == check.idx);
                            let verdict = decide::on_segment(
                                plan,
                                &check,
                                state.seg_verified[seg],
                                state.seg_retries[seg],
                                pending,
                                self.cfg.max_verify_retries,
                            );
                            match verdict {
                                SegmentVerdict::Verified { newly: false } | SegmentVerdict::RefetchPending => {}
                                SegmentVerdict::Verified { newly: true } => {
                                    state.seg_verified[seg] = true;
                                    self.journal.set_segment_verified(&key, check.idx, true).await?;
                                }
                                SegmentVerdict::Mismatch(strike) => {
                                    state.seg_verified[seg] = false;
                                    state.seg_retries[seg] = strike.attempt;
                                    warn!(seg_idx = check.idx, attempt = strike.attempt, "segment checksum mismatch");
                                    self.client.counters().checksum_mismatch();
                                    self.file_warning(&key, strike.evidence.clone()).await?;
                                    state.last_error = Some(strike.evidence);
                                    if let Some(reason) = strike.corrupt {
                                        tasks.abort_all();
                                        return Ok(Fetched::Ended(FileOutcome::Corrupt { reason }));
                                    }
                                    deferred.push((check.idx, chunk_crcs));
                                }
                            }
                        }
                        CursorEvent::Finished { report, .. } => {
                            match decide::on_finished(plan, &report, !deferred.is_empty()) {
                                PassVerdict::AwaitNextPass => {}
                                PassVerdict::Corrupt { reason } => {
                                    tasks.abort_all();
                                    return Ok(Fetched::Ended(FileOutcome::Corrupt { reason }));
                                }
                                PassVerdict::Complete => finished = Some(report),
                            }
                        }
                        CursorEvent::Failed { error, .. } => {
                            tasks.abort_all();
                            return Ok(Fetched::Ended(FileOutcome::Failed { reason: error }));
                        }
                    }
                }
                _ = tokio::time::sleep(patience_left) => {
                    if let Some(outcome) = self.out_of_patience(ctx, state) {
                        tasks.abort_all();
                        return Ok(Fetched::Ended(outcome));
                    }
                    // Bytes moved (or the disk was waited for) meanwhile.
                }
            }
        }
    }

    /// Discards the progress of `chunks`, which will be fetched again: the cursor starts a new
    /// pass, the live counters and the journal forget their bytes.
    pub(super) async fn reset(
        &self,
        key: &FileKey,
        chunks: &[u32],
        state: &mut FileRunState,
        tracker: &cursor::Tracker,
    ) -> Result<(), TransferError> {
        tracker.reset(chunks);
        for &c in chunks {
            let lost = state.done[c as usize];
            state.done[c as usize] = 0;
            state.crc[c as usize] = 0;
            self.progress.sub_bytes(lost);
            self.client.counters().refetched(lost);
        }
        self.journal.reset_chunks(key, chunks.to_vec()).await?;
        Ok(())
    }
}
