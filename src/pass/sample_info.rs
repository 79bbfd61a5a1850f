//! `SAMPLE_INFO.txt` first, then the selection: the project's metadata table is mirrored
//! before anything else and parsed, so that the filters can use its columns; then the
//! project's selection rules (and the inbox's `only` layer) decide which files are excluded.
//! The table's disagreements with the listing are reported once, when a new table arrives.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use tracing::{debug, warn};

use super::jobs::run_jobs;
use super::listing::Listing;
use super::work;
use super::{PassContext, SyncError};
use crate::journal::{EventLevel, FileKey, FileState, Journal};
use crate::model::{FileId, ProjectId, RemoteFile};
use crate::selection::{self, SampleInfo, SelectionRules};
use crate::store::{ProjectStore, RelPath};
use crate::transfer::FileJob;

/// The project's `SAMPLE_INFO.txt` once [`mirror_first`] is done.
pub(super) struct SampleInfoText {
    /// The text of a mirrored `SAMPLE_INFO.txt`, when there is a readable one.
    text: Option<String>,
    /// It arrived in this pass (its findings are reported now).
    fresh: bool,
    /// Files first seen by the preliminary listing recorded before `SAMPLE_INFO.txt` ran.
    pub(super) added_early: usize,
}

/// Reads an already mirrored `SAMPLE_INFO.txt`; when there is none but the project lists one,
/// records a preliminary listing (so its row exists), mirrors it, and reads it.
pub(super) async fn mirror_first(
    ctx: &PassContext,
    project: &ProjectId,
    store: &Arc<ProjectStore>,
    listing: &Listing,
    listed: &HashSet<&FileId>,
    max_files: usize,
) -> Result<SampleInfoText, SyncError> {
    let sample_infos: Vec<&RemoteFile> = listing
        .remote
        .iter()
        .filter(|f| selection::is_sample_info(f))
        .collect();
    let read = |journal: &Journal| read_mirrored(journal, project, store, listing, &sample_infos);
    let mut got = SampleInfoText {
        text: read(&ctx.journal)?,
        fresh: false,
        added_early: 0,
    };
    if got.text.is_none() && !sample_infos.is_empty() {
        got.added_early = ctx
            .journal
            .record_listing(
                project,
                listing.entries(&HashMap::new(), &HashSet::new(), ctx.cfg.chunk_size),
            )
            .await?
            .added
            .len();
        let replacements = work::replacements(&ctx.journal.files(project)?, listed, &listing.paths);
        let jobs: Vec<FileJob> = sample_infos
            .iter()
            .filter_map(|f| {
                Some(FileJob {
                    project: project.clone(),
                    remote: (*f).clone(),
                    rel_path: listing.paths.get(&f.id)?.clone(),
                    store: store.clone(),
                    replaces: work::kept_as(&replacements, &f.id),
                })
            })
            .collect();
        let (_, err) = run_jobs(&ctx.engine, jobs, max_files).await;
        if let Some(e) = err {
            return Err(e.into());
        }
        got.text = read(&ctx.journal)?;
        got.fresh = got.text.is_some();
    }
    Ok(got)
}

/// The text of the first listed `SAMPLE_INFO.txt` that is published and readable.
fn read_mirrored(
    journal: &Journal,
    project: &ProjectId,
    store: &ProjectStore,
    listing: &Listing,
    sample_infos: &[&RemoteFile],
) -> Result<Option<String>, SyncError> {
    for f in sample_infos {
        let key = FileKey::new(project, &f.id);
        let done = journal
            .file(&key)?
            .is_some_and(|r| matches!(r.state, FileState::Verified | FileState::Unverified));
        if let (true, Some(rel)) = (done, listing.paths.get(&f.id)) {
            if let Ok(text) = std::fs::read_to_string(store.final_path(rel)) {
                return Ok(Some(text));
            }
        }
    }
    Ok(None)
}

/// The files excluded from this pass, with why: the project's selection rules, and, when
/// `only` is set, every file outside it but `SAMPLE_INFO.txt`. A fresh `SAMPLE_INFO.txt`'s
/// findings are reported (log and journal event); known ones only at debug level.
pub(super) async fn select(
    ctx: &PassContext,
    project: &ProjectId,
    listing: &Listing,
    sample: &SampleInfoText,
    only: Option<&HashSet<FileId>>,
) -> Result<HashMap<FileId, String>, SyncError> {
    let rules = ctx.cfg.selection_rules(project);
    if sample.text.is_none() && rules.needs_sample_info() {
        warn!("the filters use SAMPLE_INFO.txt columns but the project has no usable SAMPLE_INFO.txt; only SAMPLE_INFO.txt itself is selected");
    }
    let mut selected = apply_selection(
        &rules,
        &listing.remote,
        &listing.paths,
        sample.text.as_deref(),
    );
    if let Some(only) = only {
        for f in &listing.remote {
            if !only.contains(&f.id) && !selection::is_sample_info(f) {
                selected.excluded.entry(f.id.clone()).or_insert_with(|| {
                    "not requested: only some files of this project were dropped in the inbox"
                        .to_owned()
                });
            }
        }
    }
    // Reported once, when a (new) SAMPLE_INFO.txt arrives, not at every re-listing.
    for finding in &selected.findings {
        if sample.fresh {
            warn!(finding = %finding, "SAMPLE_INFO.txt disagrees with the listing");
            ctx.journal
                .record_event(EventLevel::Warn, Some(project), None, finding.clone())
                .await?;
        } else {
            debug!(finding = %finding, "SAMPLE_INFO.txt disagreement (already reported)");
        }
    }
    Ok(selected.excluded)
}

/// What the selection decided for one project.
#[derive(Debug, Default)]
pub(super) struct Selected {
    /// Files the filters exclude, with why.
    pub(super) excluded: HashMap<FileId, String>,
    /// SAMPLE_INFO.txt parse errors and cross-check disagreements, reported as events.
    findings: Vec<String>,
}

/// Parses `SAMPLE_INFO.txt` (when there is one), cross-checks it against the listing and
/// applies the project's selection rules.
pub(super) fn apply_selection(
    rules: &SelectionRules,
    files: &[RemoteFile],
    paths: &BTreeMap<FileId, RelPath>,
    sample_info: Option<&str>,
) -> Selected {
    let mut findings = Vec::new();
    let info = sample_info.and_then(|text| match SampleInfo::parse(text) {
        Ok(info) => Some(info),
        Err(e) => {
            findings.push(format!("SAMPLE_INFO.txt cannot be used: {e}"));
            None
        }
    });
    if let Some(info) = &info {
        findings.extend(
            selection::cross_check(info, files)
                .into_iter()
                .map(|d| format!("SAMPLE_INFO.txt: {d}")),
        );
    }
    let excluded = if rules.is_empty() {
        HashMap::new()
    } else {
        selection::select(files, paths, rules, info.as_ref())
            .excluded
            .into_iter()
            .map(|(id, why)| (id, format!("excluded by filter: {why}")))
            .collect()
    };
    Selected { excluded, findings }
}
