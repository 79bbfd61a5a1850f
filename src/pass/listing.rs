//! The project's listing: the files the platform lists, the local path `store` gives each
//! (and the manifest's name), the journal entries made of them, and the recorded listing
//! (new files become `pending`; files no longer listed are reported and kept).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

use tracing::{info, warn};

use super::{project, PassContext, PassOptions, Step, SyncError};
use crate::journal::{FileListing, ListingDiff};
use crate::model::{FileId, ProjectId, RemoteFile};
use crate::planner::plan_file;
use crate::store::{self, RelPath};

/// One listing of the project, with the local paths decided for it.
pub(super) struct Listing {
    /// The files as the platform lists them (moved into the journal by [`record`]).
    pub(super) remote: Vec<RemoteFile>,
    /// How many files the platform listed.
    n_files: usize,
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
    let remote = match ctx.client.list_files(project).await {
        Ok(files) => files,
        Err(e) => {
            return project::api_error(&ctx.journal, project, e)
                .await
                .map(Step::End)
        }
    };
    let list_ms = t_list.elapsed().as_millis() as u64;
    let planned_from = Instant::now();
    let paths = store::assign_paths(&remote);
    let manifest_name = store::manifest_name(paths.values());
    Ok(Step::Next(Listing {
        n_files: remote.len(),
        remote,
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
/// file no longer listed (its local copy is kept). `added_early` counts the files a
/// preliminary listing already recorded (see `sample_info`). The platform's descriptions move
/// into the journal: afterwards `listing.remote` is empty.
pub(super) async fn record(
    ctx: &PassContext,
    project: &ProjectId,
    listing: &mut Listing,
    excluded: &HashMap<FileId, String>,
    opts: &PassOptions,
    added_early: usize,
) -> Result<ListingDiff, SyncError> {
    let diff = ctx
        .journal
        .record_listing(
            project,
            listing.take_entries(excluded, &opts.force, ctx.cfg.chunk_size),
        )
        .await?;
    info!(
        n_files = listing.n_files,
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
