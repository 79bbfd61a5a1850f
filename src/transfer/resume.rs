//! Where a file's run starts: the journal's plan and progress or a new plan, a file already at
//! its final path (adopted if it verifies, never overwritten), and the staging file (opened,
//! recreated at the right size, and its journaled progress discarded or re-checked).
//!
//! Resume re-checks before it trusts: every chunk with journaled progress outside a verified
//! segment must still hash to its journaled CRC32C, or it is fetched again from zero.

use std::sync::Arc;

use tracing::{info, warn};

use super::decide::{self, Existing, PlanSource, Staging};
use super::{Engine, FileJob, FileOutcome, FileRunState, TransferError};
use crate::journal::FileKey;
use crate::planner::{plan_file, FilePlan};
use crate::readback;
use crate::store::StoreError;

/// The plan a file runs on, or why it cannot run.
pub(super) enum Start {
    /// The plan and what is known of its progress.
    Plan(FilePlan, FileRunState),
    /// The file cannot be planned.
    Ended(FileOutcome),
}

impl Engine {
    /// The journal's plan for a file in progress (the chunk size may have changed in the
    /// config since), or a new one. The attempt, the state and a new plan go to the journal in
    /// one commit.
    pub(super) async fn start_plan(&self, job: &FileJob) -> Result<Start, TransferError> {
        let key = job.key();
        let stored = self.journal.load_plan(&key)?;
        match decide::choose_plan(stored, job.remote.size) {
            PlanSource::Journal(stored) => {
                self.journal.start_file(&key, None).await?;
                let (plan, state) = FileRunState::resumed(stored);
                Ok(Start::Plan(plan, state))
            }
            PlanSource::New => match plan_file(&job.remote, self.cfg.chunk_size) {
                Ok(plan) => {
                    self.journal.start_file(&key, Some(&plan)).await?;
                    let state = FileRunState::fresh(&plan);
                    Ok(Start::Plan(plan, state))
                }
                Err(e) => {
                    self.journal.start_file(&key, None).await?;
                    Ok(Start::Ended(FileOutcome::Failed {
                        reason: format!("cannot plan the file: {e}"),
                    }))
                }
            },
        }
    }

    /// A previous run may have published the file and died before the journal said so:
    /// re-verifies what is at the final path instead of fetching again. `Some` when that
    /// ends the file.
    pub(super) async fn existing_final(
        &self,
        job: &FileJob,
        plan: &FilePlan,
    ) -> Result<Option<FileOutcome>, TransferError> {
        let staging_exists = job.store.staging_path(&job.remote.id).exists();
        // Only asked when it matters (no staging file), as before the decision was pure.
        let final_exists = !staging_exists && job.store.final_path(&job.rel_path).exists();
        match decide::existing_action(staging_exists, final_exists, job.replaces.is_some()) {
            Existing::Fetch => Ok(None),
            Existing::AdoptIfVerified => self.adopt_if_verified(job, plan).await,
            Existing::AdoptOrRefuse => Ok(Some(self.adopt_existing(job, plan).await?)),
        }
    }

    /// Opens the staging file (off the runtime: creating a file is a metadata operation that
    /// can take milliseconds), recreating one of the wrong size, and brings `state` in line
    /// with it: a vanished staging file discards the journaled progress, an existing one is
    /// reconciled with it.
    pub(super) async fn open_staging(
        &self,
        job: &FileJob,
        plan: &FilePlan,
        state: &mut FileRunState,
    ) -> Result<Arc<std::fs::File>, TransferError> {
        let (store, id, size) = (job.store.clone(), job.remote.id.clone(), job.remote.size);
        let (file, created) =
            tokio::task::spawn_blocking(move || match store.open_staging(&id, size) {
                Err(StoreError::StagingSize { .. }) => {
                    store.remove_staging(&id)?;
                    store.open_staging(&id, size)
                }
                other => other,
            })
            .await
            .map_err(|e| TransferError::Io(format!("staging task failed: {e}")))?
            .map_err(TransferError::from_store)?;
        let file = Arc::new(file);
        let key = job.key();
        match decide::staging_action(created, state.done.iter().any(|d| *d > 0)) {
            Staging::Fresh => {}
            Staging::DiscardAll => {
                warn!("staging file missing; its journaled progress is discarded");
                let all: Vec<u32> = (0..plan.chunks.len() as u32).collect();
                self.journal.reset_chunks(&key, all).await?;
                state.discard_all();
            }
            Staging::Reconcile => self.reconcile(&key, plan, &file, state).await?,
        }
        Ok(file)
    }

    /// Start-up reconcile of a staged file with the journal: every chunk outside a verified
    /// segment must still hash to its journaled CRC32C over the bytes the journal claims.
    async fn reconcile(
        &self,
        key: &FileKey,
        plan: &FilePlan,
        file: &Arc<std::fs::File>,
        state: &mut FileRunState,
    ) -> Result<(), TransferError> {
        let claims = decide::reconcile_targets(plan, &state.done, &state.crc, &state.seg_verified);
        if claims.is_empty() {
            return Ok(());
        }
        let file2 = file.clone();
        let results = self
            .on_pool(move || {
                use rayon::prelude::*;
                claims
                    .par_iter()
                    .map(|c| {
                        (
                            c.idx,
                            readback::chunk_crc(&file2, c.range).map(|got| got == c.crc),
                        )
                    })
                    .collect::<Vec<_>>()
            })
            .await;
        let bad: Vec<u32> = match results {
            Some(results) => results
                .into_iter()
                .filter(|(_, res)| !matches!(res, Ok(true)))
                .map(|(idx, _)| idx)
                .collect(),
            // Could not check: trust nothing of this file's unverified progress.
            None => decide::reconcile_targets(plan, &state.done, &state.crc, &state.seg_verified)
                .into_iter()
                .map(|c| c.idx)
                .collect(),
        };
        if !bad.is_empty() {
            warn!(
                n_chunks = bad.len(),
                "staged bytes no longer match their journaled digests; fetching them again"
            );
            for &c in &bad {
                state.done[c as usize] = 0;
                state.crc[c as usize] = 0;
            }
            self.journal.reset_chunks(key, bad).await?;
        }
        Ok(())
    }

    /// A file already at its final path: adopt it if it verifies, otherwise leave it alone
    /// and fail the file.
    pub(super) async fn adopt_existing(
        &self,
        job: &FileJob,
        plan: &FilePlan,
    ) -> Result<FileOutcome, TransferError> {
        if let Some(outcome) = self.adopt_if_verified(job, plan).await? {
            info!(path = %job.rel_path, "existing file verified; adopted without fetching");
            return Ok(outcome);
        }
        Ok(FileOutcome::Failed {
            reason: format!(
                "a different file already exists at {}; move it away and run again",
                job.store.final_path(&job.rel_path).display()
            ),
        })
    }

    /// A file already at its final path: adopt it if it verifies; `None` otherwise.
    async fn adopt_if_verified(
        &self,
        job: &FileJob,
        plan: &FilePlan,
    ) -> Result<Option<FileOutcome>, TransferError> {
        let report = self
            .read_back_on_pool(job.store.final_path(&job.rel_path), plan)
            .await;
        match report {
            Ok(r) if r.all_ok() => Ok(Some(self.finish(job, plan, r.sha256, None).await?)),
            _ => Ok(None),
        }
    }
}
