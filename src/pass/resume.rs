//! The early resume: files a previous run was in the middle of (`fetching` rows) start again
//! at once, before the project is listed. They were selected then, their plans and staged
//! bytes are in the journal and on disk, and file ids are immutable; this is what makes a
//! restart reach its first byte quickly on a project of 100 000 files.
//!
//! A file whose final path exists may be replacing it: it waits for the listing, which knows.
//! `SAMPLE_INFO.txt` has its own first-of-all fetch (`sample_info`).

use std::collections::HashSet;
use std::sync::Arc;

use tracing::error;

use super::jobs::{run_jobs, AbortOnDrop};
use super::{PassContext, SyncError};
use crate::journal::{FileRow, FileState};
use crate::model::{FileId, ProjectId};
use crate::selection;
use crate::store::{ProjectStore, RelPath};
use crate::transfer::{FileJob, TransferError};

/// The rows to resume before the listing, with their paths, in row order: `fetching`, among
/// `only` when it is set, not `SAMPLE_INFO.txt`, with a valid path at which `exists` finds no
/// file yet.
pub(super) fn resumable(
    rows: &[FileRow],
    only: Option<&HashSet<FileId>>,
    exists: impl Fn(&RelPath) -> bool,
) -> Vec<(usize, RelPath)> {
    rows.iter()
        .enumerate()
        .filter(|(_, row)| row.state == FileState::Fetching)
        .filter(|(_, row)| only.is_none_or(|only| only.contains(&row.file_id)))
        .filter(|(_, row)| !selection::is_sample_info(&row.remote()))
        .filter_map(|(i, row)| {
            let rel = RelPath::new(&row.rel_path).ok()?;
            (!exists(&rel)).then_some((i, rel))
        })
        .collect()
}

/// The resumed files running in the background of the pass (aborted if the pass ends early).
pub(super) struct EarlyResume {
    /// Their ids: the pass does not start them again.
    pub(super) ids: HashSet<FileId>,
    task: AbortOnDrop<(usize, Option<TransferError>)>,
}

/// Starts the files [`resumable`] picks, at most `max_files` at once.
pub(super) fn start(
    ctx: &PassContext,
    project: &ProjectId,
    store: &Arc<ProjectStore>,
    only: Option<&HashSet<FileId>>,
    max_files: usize,
) -> Result<EarlyResume, SyncError> {
    let rows = ctx.journal.files(project)?;
    let jobs: Vec<FileJob> = resumable(&rows, only, |rel| store.final_path(rel).exists())
        .into_iter()
        .map(|(i, rel)| FileJob {
            project: project.clone(),
            remote: rows[i].remote(),
            rel_path: rel,
            store: store.clone(),
            replaces: None,
        })
        .collect();
    let ids = jobs.iter().map(|j| j.remote.id.clone()).collect();
    let engine = ctx.engine.clone();
    let task = AbortOnDrop::spawn(async move { run_jobs(&engine, jobs, max_files).await });
    Ok(EarlyResume { ids, task })
}

impl EarlyResume {
    /// Waits for the resumed files: how many were published, and the run-wide error that
    /// stopped them, if any.
    pub(super) async fn join(self) -> (usize, Option<TransferError>) {
        match self.task.join().await {
            Some(Ok(ended)) => ended,
            Some(Err(e)) => {
                error!(error = %e, "the task resuming interrupted files failed");
                (0, None)
            }
            None => (0, None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pass::work::tests::{fid, pid, row};

    #[test]
    fn only_fetching_rows_without_a_final_file_resume() {
        let p = pid();
        let mut rows = vec![
            row(&p, 1, "a.bam", 10, FileState::Fetching),
            row(&p, 2, "b.bam", 10, FileState::Pending),
            row(&p, 3, "SAMPLE_INFO.txt", 10, FileState::Fetching),
            row(&p, 4, "there.bam", 10, FileState::Fetching),
            row(&p, 5, "d/e.bam", 10, FileState::Fetching),
            row(&p, 6, "bad", 10, FileState::Fetching),
        ];
        rows[5].rel_path = "../escape".into();
        let exists = |rel: &RelPath| rel.as_str() == "there.bam";
        let got: Vec<(usize, String)> = resumable(&rows, None, exists)
            .into_iter()
            .map(|(i, rel)| (i, rel.to_string()))
            .collect();
        assert_eq!(got, [(0, "a.bam".to_owned()), (4, "d/e.bam".to_owned())]);

        let only: HashSet<FileId> = [fid(5)].into_iter().collect();
        let got: Vec<usize> = resumable(&rows, Some(&only), exists)
            .into_iter()
            .map(|(i, _)| i)
            .collect();
        assert_eq!(got, [4]);
    }
}
