//! A file's patience: a file that moves no byte for `file-patience` fails with its last error.
//! Only bytes that count are progress (a checked range counts once it matched), and waiting
//! for disk space holds the clock; the arithmetic is in `decide.rs`.

use std::future::Future;

use super::chunk::ChunkCtx;
use super::{decide, Engine, FileOutcome, FileRunState};

/// How a wait bounded by the file's patience ended.
pub(super) enum Patience<T> {
    /// The awaited work ended with this.
    Finished(T),
    /// The file moved no byte for its whole patience: it ends with this (failed).
    Expired(FileOutcome),
}

impl Engine {
    /// Runs `fut` (a chunk's fetch) until it ends or the file has moved no byte for
    /// `file_patience`; then the file fails with its last error.
    pub(super) async fn with_patience<T>(
        &self,
        ctx: &ChunkCtx,
        state: &FileRunState,
        fut: impl Future<Output = T>,
    ) -> Patience<T> {
        tokio::pin!(fut);
        loop {
            let left = decide::patience_left(self.cfg.file_patience, ctx.since_last_progress());
            tokio::select! {
                out = &mut fut => return Patience::Finished(out),
                _ = tokio::time::sleep(left) => {
                    if let Some(outcome) = self.out_of_patience(ctx, state) {
                        return Patience::Expired(outcome);
                    }
                    // Bytes moved (or the disk was waited for) meanwhile.
                }
            }
        }
    }

    /// The file's end once it has moved no byte for its whole patience; `None` while it has
    /// patience left.
    pub(super) fn out_of_patience(
        &self,
        ctx: &ChunkCtx,
        state: &FileRunState,
    ) -> Option<FileOutcome> {
        let patience = self.cfg.file_patience;
        if !decide::out_of_patience(patience, ctx.since_last_progress()) {
            return None;
        }
        let reason = decide::no_progress_reason(
            patience,
            state.last_error.as_deref(),
            ctx.last_error().as_deref(),
        );
        Some(FileOutcome::Failed { reason })
    }
}
