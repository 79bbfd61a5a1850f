//! The short road of a small file (at most one chunk of at most one progress step): its chunk
//! is fetched without syncing or journaling on the way, the file made durable once and read
//! back on the thread that synced it (every platform checksum, the chunk's CRC32C against the
//! one computed on arrival, the SHA-256), with no cursor threads. Its chunk is journaled with
//! the file's end, after publishing (`publish.rs`), so a kill loses at most that one step.

use std::os::unix::fs::FileExt as _;
use std::sync::Arc;

use tracing::warn;

use super::chunk::{ChunkCtx, ChunkEnd};
use super::decide::{self, SmallVerdict};
use super::patience::Patience;
use super::{cursor, Engine, Fetched, FileOutcome, FileRunState, TransferError};
use crate::planner::FilePlan;
use crate::readback;

/// Largest read of a small file's read-back.
const SMALL_READ_BUF: usize = 256 << 10;

impl Engine {
    /// A small file (at most one chunk, at most one progress step): fetches its chunk without
    /// syncing or journaling on the way, makes the file durable, reads it back once on the
    /// hashing pool (every platform checksum, the chunk's CRC32C against the one computed on
    /// arrival, the SHA-256) and fetches it again, bounded, while that fails. Returns the
    /// read-back, or the outcome that ended the file. Nothing of it is journaled here: the
    /// caller journals the chunk with the file's end, after publishing.
    pub(super) async fn fetch_small(
        &self,
        ctx: &ChunkCtx,
        plan: &FilePlan,
        file: &Arc<std::fs::File>,
        tracker: &Arc<cursor::Tracker>,
        state: &mut FileRunState,
    ) -> Result<Fetched, TransferError> {
        let key = ctx.key().clone();
        let mut retries = 0u32;
        loop {
            if let Some(&c) = plan.chunks.first() {
                let idx = c.idx as usize;
                if state.done[idx] < c.range.len {
                    let fetch = ctx.fetch(c, state.done[idx], state.crc[idx]);
                    match self.with_patience(ctx, state, fetch).await {
                        Patience::Expired(outcome) => return Ok(Fetched::Ended(outcome)),
                        Patience::Finished(ChunkEnd::Done { bytes, crc }) => {
                            state.done[idx] = bytes;
                            state.crc[idx] = crc;
                        }
                        Patience::Finished(ChunkEnd::Run(e)) => return Err(e),
                        Patience::Finished(ChunkEnd::File(outcome)) => {
                            return Ok(Fetched::Ended(outcome))
                        }
                    }
                }
            }
            // Durable before it is read back, published or journaled; the read-back runs on
            // the thread that synced (the file is at most one progress step).
            let plan2 = plan.clone();
            let read_back = move |f: &std::fs::File| read_back_small(f, &plan2);
            let result = match plan.chunks.first() {
                Some(&c) => ctx.sync_file_then(c, read_back).await?,
                None => {
                    let file2 = file.clone();
                    tokio::task::spawn_blocking(move || read_back(&file2))
                        .await
                        .map_err(|e| TransferError::Io(format!("read-back task failed: {e}")))?
                }
            };
            let report = match result {
                Ok(r) => r,
                Err(e) => {
                    return Ok(Fetched::Ended(FileOutcome::Failed {
                        reason: format!("reading the staging file back: {e}"),
                    }))
                }
            };
            let strike = match decide::small_verdict(
                plan,
                &report,
                &state.crc,
                retries,
                self.cfg.max_verify_retries,
            ) {
                SmallVerdict::Publish => return Ok(Fetched::Ready(report)),
                SmallVerdict::Mismatch(strike) => strike,
            };
            retries = strike.attempt;
            warn!(attempt = retries, "read-back mismatch");
            self.client.counters().checksum_mismatch();
            self.file_warning(&key, strike.evidence.clone()).await?;
            state.last_error = Some(strike.evidence);
            if let Some(reason) = strike.corrupt {
                return Ok(Fetched::Ended(FileOutcome::Corrupt { reason }));
            }
            let all: Vec<u32> = plan.chunks.iter().map(|c| c.idx).collect();
            self.reset(&key, &all, state, tracker).await?;
        }
    }
}

/// The read-back of a small file through its open staging file, on the calling thread (a
/// hashing-pool thread): one sequential read checking every segment's platform digest and
/// every chunk's CRC32C and computing the SHA-256, without the cursor's threads.
fn read_back_small(file: &std::fs::File, plan: &FilePlan) -> std::io::Result<readback::ReadBack> {
    let mut check = readback::SequentialCheck::new(plan);
    let mut sha = crate::hashing::Sha256Hasher::new();
    let cap = usize::try_from(plan.size).map_or(SMALL_READ_BUF, |n| n.clamp(1, SMALL_READ_BUF));
    let mut buf = vec![0u8; cap];
    let mut pos = 0u64;
    while pos < plan.size {
        let want = usize::try_from(plan.size - pos).map_or(cap, |n| n.min(cap));
        file.read_exact_at(&mut buf[..want], pos)?;
        check.feed(&buf[..want]);
        sha.update(&buf[..want]);
        pos += want as u64;
    }
    Ok(check.finish(sha.finish()))
}
