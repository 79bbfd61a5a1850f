//! Discovery: asks `/system/findProjects` for the projects `[discovery]` describes (level,
//! name glob, tags, properties) and queues the new ones; a download-restricted project is
//! recorded `restricted` and never queued, and a project known only through dropped file ids
//! becomes a whole project once it is visible.
//!
//! It must not forget a project that is no longer found: re-listing and `dxmirror purge`
//! decide about those.

use tracing::{info, instrument, warn};

use super::{Daemon, DaemonError, Source};
use crate::journal::{EventLevel, ProjectRow, ProjectState};
use crate::platform::ProjectQuery;

impl Daemon {
    /// One round of discovery with the pass context in force (none while the token is
    /// refused).
    #[instrument(skip_all)]
    pub(super) async fn discover(&mut self) -> Result<(), DaemonError> {
        let Some(ctx) = self.ctx.clone() else {
            return Ok(());
        };
        let d = &self.cfg.discovery;
        let q = ProjectQuery {
            level: d.level.clone(),
            name_glob: d.name.clone(),
            tags: d.tags.clone(),
            properties: d.properties.clone(),
        };
        let started = self.clock.now();
        let found = match ctx.client.find_projects(&q).await {
            Ok(found) => found,
            Err(e) => return self.api_failure("discovery", e).await,
        };
        self.row.last_discovery_ms = Some(self.clock.now_ms());
        let mut new = 0usize;
        for p in found {
            if p.download_restricted {
                let known = self.journal.project(&p.id)?;
                if known
                    .as_ref()
                    .is_none_or(|k| k.state != ProjectState::Restricted)
                {
                    let msg = format!(
                        "project {} ({:?}) is download-restricted: it is never downloaded",
                        p.id, p.name
                    );
                    warn!(project_id = %p.id, "discovered a download-restricted project; it is reported, not mirrored");
                    let mut row =
                        ProjectRow::new(p.id.clone(), ProjectState::Restricted, Some(msg.clone()));
                    row.name = p.name.clone();
                    row.download_restricted = true;
                    self.journal.upsert_project(row).await?;
                    self.journal
                        .record_event(EventLevel::Warn, Some(&p.id), None, msg)
                        .await?;
                }
                self.known.remove(&p.id);
                self.due.remove(&p.id);
                continue;
            }
            if self.known.get(&p.id) == Some(&Source::InboxFiles) {
                // Now visible as a whole project: mirror all of it.
                self.known.insert(p.id.clone(), Source::Discovered);
                self.due.insert(p.id.clone());
            }
            if !self.known.contains_key(&p.id) {
                new += 1;
                info!(project_id = %p.id, name = %p.name, "new project discovered; queued");
                self.journal
                    .record_event(
                        EventLevel::Info,
                        Some(&p.id),
                        None,
                        format!("discovered project {:?}; queued", p.name),
                    )
                    .await?;
                self.known.insert(p.id.clone(), Source::Discovered);
                self.due.insert(p.id);
            }
        }
        let elapsed = self.clock.now().saturating_duration_since(started);
        info!(
            new,
            elapsed_ms = elapsed.as_millis() as u64,
            "discovery done"
        );
        self.journal.put_daemon(self.row.clone()).await?;
        Ok(())
    }
}
