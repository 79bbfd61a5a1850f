//! The end of a verified file: its staging file given the platform's modification time and
//! renamed into place (replacing an older
//! version, or adopting what a previous run already published), then its end journaled with
//! its `fetched` audit record in one commit, and the record copied to the `audit-log`.

use super::decide::{self, PublishVia};
use super::{Engine, FileJob, FileOutcome, TransferError};
use crate::audit::{self, Action};
use crate::planner::FilePlan;
use crate::store::StoreError;

impl Engine {
    /// Publishes a verified staging file (off the runtime: fsyncs and renames block) and
    /// journals its end. `chunks` carries the chunks' progress of a small file, which was
    /// not journaled while it was fetched: its data is already synced, and the chunks are
    /// journaled with the file's end.
    pub(super) async fn publish(
        &self,
        job: &FileJob,
        plan: &FilePlan,
        sha256: [u8; 32],
        chunks: Option<Vec<(u32, u64, u32)>>,
    ) -> Result<FileOutcome, TransferError> {
        let (store, id, rel) = (
            job.store.clone(),
            job.remote.id.clone(),
            job.rel_path.clone(),
        );
        let via = decide::publish_via(job.replaces.clone(), chunks.is_some());
        let modified_ms = job.remote.modified_ms;
        let published = tokio::task::spawn_blocking(move || {
            // The platform's modification time, like `rsync -t` (before the rename, so the
            // file never appears with the download's time).
            store.set_staged_mtime(&id, modified_ms)?;
            match &via {
                PublishVia::Replacing(keep) => store.publish_replacing(&id, &rel, keep),
                PublishVia::Synced => store.publish_synced(&id, &rel),
                PublishVia::Plain => store.publish(&id, &rel),
            }
        })
        .await
        .map_err(|e| TransferError::Io(format!("publish task failed: {e}")))?;
        match published {
            Ok(_) => {}
            Err(StoreError::Exists { .. }) => {
                job.store.remove_staging(&job.remote.id).ok();
                return self.adopt_existing(job, plan).await;
            }
            Err(e) if e.is_disk_full() => return Err(TransferError::DiskFull(e.to_string())),
            Err(e) => {
                return Ok(FileOutcome::Failed {
                    reason: e.to_string(),
                })
            }
        }
        self.finish(job, plan, sha256, chunks).await
    }

    /// Journals a published file's end (verified, or unverified when the platform gives no
    /// checksum) with its `fetched` audit record; a small file's chunks go in the same commit.
    pub(super) async fn finish(
        &self,
        job: &FileJob,
        plan: &FilePlan,
        sha256: [u8; 32],
        chunks: Option<Vec<(u32, u64, u32)>>,
    ) -> Result<FileOutcome, TransferError> {
        let (state, outcome) = decide::finished_state(plan.kind, sha256);
        let sha256_hex = hex::encode(sha256);
        let mut record = self.new_audit(
            job,
            Action::Fetched,
            format!("{} {}", state.as_str(), job.rel_path),
        );
        record.sha256 = Some(sha256_hex.clone());
        let row = match chunks {
            Some(chunks) => {
                self.journal
                    .finish_file(&job.key(), state, sha256_hex, chunks, record)
                    .await?
            }
            None => {
                self.journal
                    .mark_done_audited(&job.key(), state, sha256_hex, record)
                    .await?
            }
        };
        audit::append_logged(self.cfg.audit_log.as_deref(), &row);
        Ok(outcome)
    }
}
