//! The project as a whole: describe it, refuse a download-restricted one, decide its local
//! directory once (it never changes, even if the project is renamed), record it and open its
//! store; and record the project-level failures (a refused listing, a permission lost
//! mid-pass) that end a pass without ending the run.

use std::collections::HashSet;
use std::sync::Arc;

use tracing::error;

use super::{PassContext, ProjectSummary, Step, SyncError};
use crate::journal::{Journal, ProjectRow, ProjectState};
use crate::model::ProjectId;
use crate::platform::{ApiDisposition, PlatformError};
use crate::store::{self, ProjectStore};

/// A described, recorded project whose store is open.
pub(super) struct Opened {
    /// The platform name.
    pub(super) name: String,
    /// The project's local store.
    pub(super) store: Arc<ProjectStore>,
}

/// Describes the project and opens its store; a project that cannot or may not be mirrored
/// is recorded and ends the pass.
pub(super) async fn open(
    ctx: &PassContext,
    project: &ProjectId,
) -> Result<Step<Opened>, SyncError> {
    let (cfg, journal) = (&ctx.cfg, &ctx.journal);
    let info = match ctx.client.describe_project(project).await {
        Ok(info) => info,
        Err(e) => return api_error(journal, project, e).await.map(Step::End),
    };
    if info.download_restricted {
        let msg = format!(
            "project {project} ({:?}) is download-restricted: its data may not be downloaded, so it is not mirrored",
            info.name
        );
        error!("project is download-restricted; refusing to mirror it");
        let mut row = ProjectRow::new(project.clone(), ProjectState::Restricted, Some(msg.clone()));
        row.name = info.name.clone();
        row.download_restricted = true;
        journal.upsert_project(row).await?;
        let mut s = ProjectSummary::failed(project, msg);
        s.name = info.name;
        return Ok(Step::End(s));
    }

    // The project directory is decided once and never changes, even if the project is renamed.
    let known = journal.project(project)?;
    let dir_name = match known.as_ref().and_then(|p| p.dir_name.clone()) {
        Some(d) => d,
        None => {
            let taken: HashSet<String> = journal
                .projects()?
                .into_iter()
                .filter(|p| &p.id != project)
                .filter_map(|p| p.dir_name)
                .collect();
            store::project_dir_name(&info.name, project, &taken)
        }
    };
    let mut row = ProjectRow::new(project.clone(), ProjectState::Active, None);
    row.name = info.name.clone();
    row.dir_name = Some(dir_name.clone());
    journal.upsert_project(row).await?;
    let store = Arc::new(ProjectStore::open(&cfg.mirror_root, &dir_name)?);
    Ok(Step::Next(Opened {
        name: info.name,
        store,
    }))
}

/// A failed project-level API call: a bad token stops the run; anything else is recorded
/// on the project and the run goes on with the other projects.
pub(super) async fn api_error(
    journal: &Journal,
    project: &ProjectId,
    e: PlatformError,
) -> Result<ProjectSummary, SyncError> {
    let (state, msg) = match e.api_disposition() {
        ApiDisposition::BadToken => return Err(SyncError::BadToken(e.to_string())),
        ApiDisposition::PermissionDenied => (
            ProjectState::Inaccessible,
            format!("permission denied: {e}"),
        ),
        ApiDisposition::NotFound => (ProjectState::Gone, format!("project not found: {e}")),
        _ => (
            ProjectState::Active,
            format!("cannot list the project: {e}"),
        ),
    };
    error!(error = %e, "project cannot be mirrored");
    journal
        .upsert_project(ProjectRow::new(project.clone(), state, Some(msg.clone())))
        .await?;
    Ok(ProjectSummary::failed(project, msg))
}

/// The engine was refused a download for lack of permission: the project is recorded
/// `inaccessible` (keeping its known name) and nothing is deleted.
pub(super) async fn permission_denied(
    journal: &Journal,
    project: &ProjectId,
    message: &str,
) -> Result<ProjectSummary, SyncError> {
    error!("permission denied while mirroring; project marked inaccessible, nothing deleted");
    let mut row = ProjectRow::new(
        project.clone(),
        ProjectState::Inaccessible,
        Some(format!("permission denied: {message}")),
    );
    if let Some(known) = journal.project(project)? {
        row.name = known.name;
    }
    journal.upsert_project(row).await?;
    Ok(ProjectSummary::failed(
        project,
        format!("permission denied: {message}"),
    ))
}
