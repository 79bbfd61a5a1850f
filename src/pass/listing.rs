//! The project's listing: the files the platform lists, the local path `store` gives each
//! (and the manifest's name), the journal entries made of them, and the recorded listing
//! (new files become `pending`; files no longer listed are reported and kept; a result the
//! platform sent that could not be read as a file fails that file alone, reported).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

use tracing::{info, warn};

use super::{project, PassContext, PassOptions, Step, SyncError};
use crate::journal::{EventLevel, FileListing, ListingDiff};
use crate::model::{FileId, ProjectId, RemoteFile};
use crate::planner::plan_file;
use crate::platform::UnreadableResult;
use crate::store::{self, RelPath};

/// One listing of the project, with the local paths decided for it.
pub(super) struct Listing {
    /// The files as the platform lists them (moved into the journal by [`record`]).
    pub(super) remote: Vec<RemoteFile>,
    /// How many files the platform listed.
    n_files: usize,
    /// The results that could not be read as files: each fails alone, the rest goes on.
    pub(super) unreadable: Vec<UnreadableResult>,
    /// The local path of every listed file (`store::assign_paths`).
    pub(super) paths: BTreeMap<FileId, RelPath>,
    /// The manifest's file name (`SHA256SUMS` unless a listed file has that path).
    pub(super) manifest_name: &'static str,
    /// How long the listing took.
    list_ms: u64,
    /// When planning started (right after the listing), for the log.
    planned_from: Instant,
}

/// Lists the project's files; a refused listing is recorded and ends the pass.
pub(super) async fn list(
    ctx: &PassContext,
    project: &ProjectId,
) -> Result<Step<Listing>, SyncError> {
    let t_list = Instant::now();
    let listed = match ctx.client.list_files(project).await {
        Ok(listed) => listed,
        Err(e) => {
            return project::api_error(&ctx.journal, project, e)
                .await
                .map(Step::End)
        }
    };
    let list_ms = t_list.elapsed().as_millis() as u64;
    let planned_from = Instant::now();
    let remote = listed.files;
    let paths = store::assign_paths(&remote);
    let manifest_name = store::manifest_name(paths.values());
    Ok(Step::Next(Listing {
        n_files: remote.len(),
        remote,
        unreadable: listed.unreadable,
        paths,
        manifest_name,
        list_ms,
        planned_from,
    }))
}

impl Listing {
    /// The ids of this listing.
    pub(super) fn ids(&self) -> HashSet<FileId> {
        self.remote.iter().map(|f| f.id.clone()).collect()
    }

    /// The ids of the unreadable results that are ids.
    pub(super) fn unreadable_ids(&self) -> HashSet<FileId> {
        self.unreadable
            .iter()
            .filter_map(|u| u.id.parse().ok())
            .collect()
    }

    /// The journal's entries for this listing: a file is skipped for the platform's reason
    /// (not closed, not live) or, unless `force`d, for why `excluded` excludes it.
    pub(super) fn entries(
        &self,
        excluded: &HashMap<FileId, String>,
        force: &HashSet<FileId>,
        chunk_size: u64,
    ) -> Vec<FileListing> {
        self.remote
            .iter()
            .filter_map(|f| self.entry(f.clone(), excluded, force, chunk_size))
            .collect()
    }

    /// [`Listing::entries`], moving the descriptions out of the listing instead of copying them.
    fn take_entries(
        &mut self,
        excluded: &HashMap<FileId, String>,
        force: &HashSet<FileId>,
        chunk_size: u64,
    ) -> Vec<FileListing> {
        std::mem::take(&mut self.remote)
            .into_iter()
            .filter_map(|f| self.entry(f, excluded, force, chunk_size))
            .collect()
    }

    /// The journal's entry for one listed file (`None` for a file without a local path).
    fn entry(
        &self,
        f: RemoteFile,
        excluded: &HashMap<FileId, String>,
        force: &HashSet<FileId>,
        chunk_size: u64,
    ) -> Option<FileListing> {
        let rel = self.paths.get(&f.id)?;
        let skip_reason = f.skip_reason().or_else(|| {
            excluded
                .get(&f.id)
                .filter(|_| !force.contains(&f.id))
                .cloned()
        });
        Some(FileListing {
            kind: plan_file(&f, chunk_size).ok().map(|p| p.kind),
            skip_reason,
            rel_path: rel.to_string(),
            remote: f,
        })
    }
}

/// Records the listing with the selection's exclusions and reports it: the counts, and each
/// file no longer listed (its local copy is kept), and each result that could not be read (a
/// file whose describe could not be read is not "no longer listed"). `added_early` counts the
/// files a preliminary listing already recorded (see `sample_info`). The platform's
/// descriptions move into the journal: afterwards `listing.remote` is empty.
pub(super) async fn record(
    ctx: &PassContext,
    project: &ProjectId,
    listing: &mut Listing,
    excluded: &HashMap<FileId, String>,
    opts: &PassOptions,
    added_early: usize,
) -> Result<ListingDiff, SyncError> {
    let mut diff = ctx
        .journal
        .record_listing(
            project,
            listing.take_entries(excluded, &opts.force, ctx.cfg.chunk_size),
        )
        .await?;
    let unreadable = listing.unreadable_ids();
    diff.removed.retain(|id| !unreadable.contains(id));
    for bad in &listing.unreadable {
        warn!(file_id = %bad.id, detail = %bad.detail, "the platform's description of this file could not be read; the file is not mirrored in this pass, the rest of the project goes on");
        let id: Option<FileId> = bad.id.parse().ok();
        ctx.journal
            .record_event(
                EventLevel::Error,
                Some(project),
                id.as_ref(),
                format!("{}: {}", bad.id, unreadable_reason(bad)),
            )
            .await?;
    }
    info!(
        n_files = listing.n_files,
        unreadable = listing.unreadable.len(),
        added = diff.added.len() + added_early,
        removed = diff.removed.len(),
        excluded = excluded.len(),
        list_ms = listing.list_ms,
        plan_ms = listing.planned_from.elapsed().as_millis() as u64,
        "project listed and journaled"
    );
    for id in &diff.removed {
        warn!(file_id = %id, "file no longer listed upstream; the local copy is kept");
    }
    Ok(diff)
}

/// Why an unreadable result is not mirrored, as its problem and event say.
pub(super) fn unreadable_reason(bad: &UnreadableResult) -> String {
    format!(
        "the platform's description of this file could not be read ({}); not mirrored in this pass",
        bad.detail
    )
}
