//! A pass that writes nothing: what one project would fetch (`sync --dry-run`) and what
//! `check-config --online` says about it. It describes the project, lists it, applies the
//! project's selection (with a `SAMPLE_INFO.txt` already mirrored, if any) and subtracts what
//! the journal, opened read-only when there is one, already holds.
//!
//! It must not write: no journal, no store, no lock.

use std::collections::{HashMap, HashSet};

use super::sample_info::apply_selection;
use super::SyncError;
use crate::config::Config;
use crate::journal::{FileState, JournalReader};
use crate::model::{FileId, ProjectId};
use crate::platform::{ApiDisposition, DxClient};
use crate::selection;
use crate::store;

/// What a pass over one project would do.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ProjectPreview {
    /// The project.
    pub id: String,
    /// Its platform name (empty when it could not be described).
    pub name: String,
    /// The token's permission level on it, when the platform says.
    pub level: Option<String>,
    /// Downloads are forbidden: nothing would be fetched.
    pub download_restricted: bool,
    /// Why the project cannot be mirrored (not found, permission denied, listing refused).
    pub error: Option<String>,
    /// Files the platform lists.
    pub files_listed: usize,
    /// Files left out by the filters.
    pub files_filtered: usize,
    /// Files the platform cannot serve now (open, archived).
    pub files_unavailable: usize,
    /// Files selected and not yet mirrored.
    pub files_to_fetch: usize,
    /// Bytes still to fetch of those (bytes already staged are subtracted).
    pub bytes_to_fetch: u64,
    /// The filters use `SAMPLE_INFO.txt` columns, but none is mirrored yet: the counts
    /// ignore those columns.
    pub sample_info_missing: bool,
}

impl ProjectPreview {
    fn failed(id: &ProjectId, error: String) -> ProjectPreview {
        ProjectPreview {
            id: id.to_string(),
            name: String::new(),
            level: None,
            download_restricted: false,
            error: Some(error),
            files_listed: 0,
            files_filtered: 0,
            files_unavailable: 0,
            files_to_fetch: 0,
            bytes_to_fetch: 0,
            sample_info_missing: false,
        }
    }

    /// True when the filters leave out every file the project lists.
    pub fn selects_nothing(&self) -> bool {
        self.error.is_none() && self.files_listed > 0 && self.files_filtered == self.files_listed
    }
}

/// Previews one project. A refused token is an error (`BadToken`); every other platform
/// failure is the project's `error`.
pub async fn preview_project(
    cfg: &Config,
    client: &DxClient,
    journal: Option<&JournalReader>,
    project: &ProjectId,
) -> Result<ProjectPreview, SyncError> {
    let refused = |what: &str, e: crate::platform::PlatformError| match e.api_disposition() {
        ApiDisposition::BadToken => Err(SyncError::BadToken(e.to_string())),
        _ => Ok(ProjectPreview::failed(
            project,
            format!("cannot {what}: {e}"),
        )),
    };
    let info = match client.describe_project(project).await {
        Ok(info) => info,
        Err(e) => return refused("describe the project", e),
    };
    let mut out = ProjectPreview::failed(project, String::new());
    out.error = None;
    out.name = info.name.clone();
    out.level = info.level.clone();
    out.download_restricted = info.download_restricted;
    if info.download_restricted {
        out.error = Some("download-restricted: its data may not be downloaded".to_owned());
        return Ok(out);
    }
    let remote = match client.list_files(project).await {
        Ok(listing) => listing.files,
        Err(e) => return refused("list the project", e),
    };
    let paths = store::assign_paths(&remote);
    let rows: HashMap<FileId, (FileState, u64)> = match journal {
        Some(j) => j
            .files(project)?
            .into_iter()
            .map(|r| (r.file_id, (r.state, r.size)))
            .collect(),
        None => HashMap::new(),
    };
    let known = journal.map(|j| j.project(project)).transpose()?.flatten();
    let sample_text = known
        .as_ref()
        .and_then(|p| p.dir_name.as_deref())
        .and_then(|dir| {
            remote
                .iter()
                .filter(|f| selection::is_sample_info(f))
                .find_map(|f| {
                    let done = rows.get(&f.id).is_some_and(|(s, _)| {
                        matches!(s, FileState::Verified | FileState::Unverified)
                    });
                    let rel = paths.get(&f.id).filter(|_| done)?;
                    std::fs::read_to_string(cfg.mirror_root.join(dir).join(rel.as_path())).ok()
                })
        });
    let rules = cfg.selection_rules(project);
    out.sample_info_missing = sample_text.is_none() && rules.needs_sample_info();
    let rules = if out.sample_info_missing {
        Default::default()
    } else {
        rules
    };
    let excluded: HashSet<FileId> =
        apply_selection(&rules, &remote, &paths, sample_text.as_deref())
            .excluded
            .into_keys()
            .collect();
    // Bytes already staged, from the journal's totals: what it holds of files not finished.
    let staged = journal
        .map(|j| j.project_totals())
        .transpose()?
        .and_then(|t| t.into_iter().find(|t| &t.project.id == project))
        .map(|t| {
            let finished: u64 = rows
                .values()
                .filter(|(s, _)| s.is_finished())
                .map(|(_, size)| size)
                .sum();
            t.bytes_done.saturating_sub(finished)
        })
        .unwrap_or(0);
    out.files_listed = remote.len();
    for f in &remote {
        if excluded.contains(&f.id) {
            out.files_filtered += 1;
        } else if f.skip_reason().is_some() {
            out.files_unavailable += 1;
        } else if !rows.get(&f.id).is_some_and(|(s, _)| s.is_finished()) {
            out.files_to_fetch += 1;
            out.bytes_to_fetch += f.size;
        }
    }
    out.bytes_to_fetch = out.bytes_to_fetch.saturating_sub(staged);
    Ok(out)
}
