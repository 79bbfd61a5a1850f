//! The pass's jobs: the local facts `work` decides from, the `FileJob`s made of its answer,
//! and running them through the engine, at most `max_files` at once, with the download URLs
//! of the next files asked for ahead of their turn (so URL requests overlap the transfers).

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::sync::Arc;

use tokio::task::{JoinError, JoinHandle, JoinSet};
use tracing::{error, warn};

use super::work::Planned;
use super::SyncError;
use crate::journal::{FileKey, FileRow, FileState, Journal};
use crate::model::{FileId, ProjectId};
use crate::store::{ProjectStore, RelPath};
use crate::transfer::{Engine, FileJob, TransferError};

/// The published rows whose file is present at its listed path.
pub(super) fn present<'a>(
    rows: &'a [FileRow],
    paths: &BTreeMap<FileId, RelPath>,
    store: &ProjectStore,
) -> HashSet<&'a FileId> {
    rows.iter()
        .filter(|row| matches!(row.state, FileState::Verified | FileState::Unverified))
        .filter(|row| {
            paths
                .get(&row.file_id)
                .is_some_and(|rel| store.final_path(rel).exists())
        })
        .map(|row| &row.file_id)
        .collect()
}

/// Puts the rows of published files missing locally back to `pending` (in row order), saying
/// so.
pub(super) async fn republish_missing(
    journal: &Journal,
    rows: &[FileRow],
    jobs: &[Planned],
) -> Result<(), SyncError> {
    let mut again: Vec<&Planned> = jobs.iter().filter(|j| j.republish).collect();
    again.sort_by_key(|j| j.row);
    for job in again {
        let row = &rows[job.row];
        warn!(file_id = %row.file_id, path = %job.rel_path, "published file is missing locally; fetching it again");
        journal
            .set_file_state(&row.key(), FileState::Pending, None)
            .await?;
    }
    Ok(())
}

/// Runs the engine's jobs for `planned`, in its order, at most `max_files` at once (as
/// [`run_jobs`]). Each `FileJob` is made from its journal row only when it starts, so at most
/// `max_files` of them (and their copies of the platform's description) exist at once, however
/// many files the project has.
pub(super) async fn run_planned(
    engine: &Arc<Engine>,
    project: &ProjectId,
    store: &Arc<ProjectStore>,
    rows: &[FileRow],
    planned: Vec<Planned>,
    max_files: usize,
) -> (usize, Option<TransferError>) {
    let keys: Vec<FileKey> = planned.iter().map(|p| rows[p.row].key()).collect();
    let wants_url: Vec<bool> = planned
        .iter()
        .map(|p| rows[p.row].is_downloadable())
        .collect();
    let mut planned = planned.into_iter();
    let next = move || {
        let p = planned.next()?;
        Some(FileJob {
            project: project.clone(),
            remote: rows[p.row].remote(),
            rel_path: p.rel_path,
            store: store.clone(),
            replaces: p.replaces,
        })
    };
    run_lazily(engine, &keys, &wants_url, next, max_files).await
}

/// A spawned task that is aborted when this guard is dropped without being joined.
pub(super) struct AbortOnDrop<T>(Option<JoinHandle<T>>);

impl<T: Send + 'static> AbortOnDrop<T> {
    /// Spawns `task`.
    pub(super) fn spawn(task: impl Future<Output = T> + Send + 'static) -> AbortOnDrop<T> {
        AbortOnDrop(Some(tokio::spawn(task)))
    }

    /// Waits for the task (`None` if it was already joined).
    pub(super) async fn join(mut self) -> Option<Result<T, JoinError>> {
        let handle = self.0.take()?;
        Some(handle.await)
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        if let Some(handle) = &self.0 {
            handle.abort();
        }
    }
}

/// Runs `jobs` in order, at most `max_files` at once, with the download URLs of the next
/// `max_files` jobs asked for ahead of their turn (so URL requests overlap the transfers).
/// Returns how many files were published, and the run-wide error that stopped the others.
pub(super) async fn run_jobs(
    engine: &Arc<Engine>,
    jobs: Vec<FileJob>,
    max_files: usize,
) -> (usize, Option<TransferError>) {
    let keys: Vec<FileKey> = jobs.iter().map(FileJob::key).collect();
    let wants_url: Vec<bool> = jobs
        .iter()
        .map(|j| j.remote.skip_reason().is_none())
        .collect();
    let mut jobs = jobs.into_iter();
    run_lazily(engine, &keys, &wants_url, move || jobs.next(), max_files).await
}

/// The loop of [`run_jobs`] over jobs made one at a time by `next` as their turn comes
/// (`keys[i]` and `wants_url[i]` describe the `i`th).
async fn run_lazily(
    engine: &Arc<Engine>,
    keys: &[FileKey],
    wants_url: &[bool],
    mut next: impl FnMut() -> Option<FileJob>,
    max_files: usize,
) -> (usize, Option<TransferError>) {
    let mut fetched_now = 0usize;
    let mut set = JoinSet::new();
    let (mut started, mut prefetched) = (0usize, 0usize);
    let mut run_error = None;
    loop {
        // URLs for the jobs about to start.
        let ahead = (started + max_files).min(keys.len());
        while run_error.is_none() && prefetched < ahead {
            if wants_url[prefetched] {
                engine.prefetch_url(&keys[prefetched]);
            }
            prefetched += 1;
        }
        while set.len() < max_files && run_error.is_none() {
            let Some(job) = next() else { break };
            started += 1;
            let engine = engine.clone();
            set.spawn(async move { engine.run_file(job).await });
        }
        let Some(joined) = set.join_next().await else {
            break;
        };
        match joined {
            Ok(Ok(outcome)) => {
                if outcome.is_done() {
                    fetched_now += 1;
                }
            }
            Ok(Err(e)) => {
                if run_error.is_none() {
                    run_error = Some(e);
                }
                set.abort_all();
            }
            Err(e) if e.is_cancelled() => {}
            Err(e) => {
                error!(error = %e, "a file task panicked");
            }
        }
    }
    // Asked for, but their files will not run (the run stopped), or ran and did not take them.
    engine.forget_prefetched(&keys[..prefetched]);
    (fetched_now, run_error)
}
