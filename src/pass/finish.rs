//! The end of a pass: the rows of replaced files get the path their old copy is kept under,
//! the manifest is rebuilt from the journal (so a kill between publishing and writing it is
//! repaired by the next pass), and the project's summary is made from its rows.

use std::collections::HashSet;

use tracing::info;

use super::listing::{unreadable_reason, Listing};
use super::project::Opened;
use super::work::Replacement;
use super::{FileProblem, ProjectSummary, SyncError};
use crate::journal::{EventLevel, FileKey, FileRow, FileState, Journal, ListingDiff};
use crate::model::{FileId, ProjectId};
use crate::store::{ProjectStore, RelPath};

/// The old version of a replaced file now lives under its kept name: says so in its row, once
/// the new version is published and the old copy is at the kept name (this also repairs a
/// kill between the rename and this update).
pub(super) async fn record_replacements(
    journal: &Journal,
    project: &ProjectId,
    store: &ProjectStore,
    replacements: &[Replacement],
) -> Result<(), SyncError> {
    for r in replacements {
        let new_done = journal
            .file(&FileKey::new(project, &r.new))?
            .is_some_and(|f| matches!(f.state, FileState::Verified | FileState::Unverified));
        if new_done && store.final_path(&r.keep_as).exists() {
            journal.set_rel_path(&r.old, r.keep_as.to_string()).await?;
            info!(file_id = %r.old.file, path = %r.keep_as, new_file_id = %r.new, "replaced upstream; previous version kept");
            journal
                .record_event(
                    EventLevel::Info,
                    Some(project),
                    Some(&r.old.file),
                    format!(
                        "replaced upstream by {}; previous version kept as {}",
                        r.new, r.keep_as
                    ),
                )
                .await?;
        }
    }
    Ok(())
}

/// Rewrites the project's manifest from the journal: every published file present locally,
/// under its listed path. Files no longer listed upstream stay in it under the path they have
/// locally. Returns the project's rows, as read for it.
pub(super) fn write_manifest(
    journal: &Journal,
    project: &ProjectId,
    store: &ProjectStore,
    listing: &Listing,
) -> Result<Vec<FileRow>, SyncError> {
    let rows = journal.files(project)?;
    let mut entries = Vec::new();
    let mut in_manifest: HashSet<String> = HashSet::new();
    for row in &rows {
        if matches!(row.state, FileState::Verified | FileState::Unverified) {
            let rel = match listing.paths.get(&row.file_id) {
                Some(rel) => Some(rel.clone()),
                None => RelPath::new(&row.rel_path).ok(),
            };
            if let (Some(sha), Some(rel)) = (row.sha256_bytes(), rel) {
                if in_manifest.insert(rel.to_string()) && store.final_path(&rel).exists() {
                    entries.push((rel, sha));
                }
            }
        }
    }
    store.write_manifest(&entries, listing.manifest_name)?;
    Ok(rows)
}

/// The project's summary: this pass's counts, and every listed file's end state from `rows`.
pub(super) fn summary(
    project: &ProjectId,
    opened: Opened,
    listing: &Listing,
    diff: &ListingDiff,
    rows: Vec<FileRow>,
    fetched_now: usize,
    bytes_now: u64,
) -> ProjectSummary {
    let mut summary = ProjectSummary {
        id: project.to_string(),
        name: opened.name,
        dir: Some(opened.store.dir().to_owned()),
        manifest: Some(opened.store.dir().join(listing.manifest_name)),
        error: None,
        verified: 0,
        unverified: 0,
        fetched_now,
        bytes_now,
        removed_upstream: diff.removed.len(),
        problems: Vec::new(),
    };
    let removed: HashSet<&FileId> = diff.removed.iter().collect();
    let unreadable = listing.unreadable_ids();
    for bad in &listing.unreadable {
        summary.problems.push(FileProblem {
            path: String::new(),
            file_id: bad.id.clone(),
            state: "failed".into(),
            reason: unreadable_reason(bad),
        });
    }
    for row in rows {
        if removed.contains(&row.file_id) || unreadable.contains(&row.file_id) {
            continue;
        }
        let path = listing
            .paths
            .get(&row.file_id)
            .map(|p| p.to_string())
            .unwrap_or_default();
        match row.state {
            FileState::Verified => summary.verified += 1,
            FileState::Unverified => summary.unverified += 1,
            FileState::Skipped | FileState::Failed | FileState::Corrupt | FileState::Gone => {
                summary.problems.push(FileProblem {
                    path,
                    file_id: row.file_id.to_string(),
                    state: row.state.as_str().to_owned(),
                    reason: row.reason.clone().unwrap_or_default(),
                })
            }
            other => summary.problems.push(FileProblem {
                path,
                file_id: row.file_id.to_string(),
                state: "failed".into(),
                reason: format!("left in state {}", other.as_str()),
            }),
        }
    }
    summary
}
