//! Passes: what a finished pass means for the daemon (a refused token pauses, a journal
//! failure stops it, other failures wait for the next re-listing), and which queued projects
//! start now with how many file slots (`pick`, pure: priorities first, equal priorities
//! together sharing `max-connections`).
//!
//! It must not pre-empt a running pass, nor start one while the token is refused or the
//! mirror root is not held.

use std::collections::{BTreeSet, HashSet};

use tracing::{debug, error, info, warn};

use super::{Daemon, DaemonError, Source};
use crate::access::ExpiryAction;
use crate::journal::ProjectState;
use crate::model::ProjectId;
use crate::pass::{project_pass, PassOptions, ProjectSummary, SyncError};
use crate::transfer::TransferError;

impl Daemon {
    /// A pass ended: logs its outcome; a refused token pauses and queues the project again,
    /// a journal failure stops the daemon, any other failure waits for the next re-listing.
    pub(super) async fn project_done(
        &mut self,
        p: ProjectId,
        r: Result<ProjectSummary, SyncError>,
    ) -> Result<(), DaemonError> {
        self.running.remove(&p);
        if self.expiry_action(&p, self.clock.today()) == ExpiryAction::PurgeNow {
            // Its purge waited for this pass to end.
            self.timers.recheck_expiry();
        }
        self.aborts.remove(&p);
        match r {
            Ok(s) => {
                if let Some(err) = &s.error {
                    warn!(project_id = %p, error = %err, "project pass ended with an error");
                    if let Some(row) = self.journal.project(&p)? {
                        if matches!(row.state, ProjectState::Inaccessible | ProjectState::Gone) {
                            self.record_error(format!("project {p}: {err}")).await?;
                        }
                    }
                } else {
                    info!(project_id = %p, verified = s.verified, fetched_now = s.fetched_now, bytes_now = s.bytes_now, problems = s.problems.len(), "project pass done");
                }
                self.tell_pass_done(&p, &s).await?;
            }
            Err(SyncError::BadToken(m)) => {
                self.token_failed(format!("the DNAnexus API rejected the token: {m}"))
                    .await?;
                self.due.insert(p);
            }
            Err(SyncError::Transfer(TransferError::BadToken(m))) => {
                self.token_failed(format!("the DNAnexus API rejected the token: {m}"))
                    .await?;
                self.due.insert(p);
            }
            Err(SyncError::Journal(e)) => return Err(DaemonError::Journal(e)),
            Err(SyncError::Transfer(TransferError::Journal(e))) => {
                return Err(DaemonError::Journal(e))
            }
            Err(e) => {
                error!(project_id = %p, error = %e, "project pass failed; retried at the next re-listing");
                self.record_error(format!("project {p}: {e}")).await?;
            }
        }
        self.publish_status().await
    }

    /// Starts passes: the highest priority first; projects of the same priority run together
    /// and share the connections (each pass gets an equal share of file slots when it
    /// starts); a lower priority waits while a higher one is queued or running.
    pub(super) fn schedule(&mut self) {
        let Some(ctx) = self.ctx.clone() else {
            return;
        };
        if self.timers.token.waiting() || !self.root_held {
            return;
        }
        // A project whose access expired is held (`on-access-expired`): no pass starts.
        let today = self.clock.today();
        let held: Vec<ProjectId> = self
            .due
            .iter()
            .filter(|p| self.expiry_action(p, today).holds())
            .cloned()
            .collect();
        for p in held {
            debug!(project_id = %p, "access expired: the project is held");
            self.due.remove(&p);
        }
        let prio = |p: &ProjectId| self.cfg.settings(p).priority;
        // Paused projects stay queued until resumed.
        let due: BTreeSet<ProjectId> = self
            .due
            .iter()
            .filter(|p| !self.is_paused(p))
            .cloned()
            .collect();
        let (start, share) = pick(&due, &self.running, &prio, self.cfg.max_connections);
        for p in start {
            self.due.remove(&p);
            self.running.insert(p.clone());
            self.started.push(p.clone());
            let only = match self.known.get(&p) {
                Some(Source::InboxFiles) => Some(self.only.get(&p).cloned().unwrap_or_default()),
                _ => None,
            };
            let opts = PassOptions {
                max_files: share,
                force: self.force.remove(&p).unwrap_or_default(),
                only,
            };
            let ctx = ctx.clone();
            info!(project_id = %p, priority = prio(&p), max_files = share, "project pass started");
            let project = p.clone();
            let handle = self.tasks.spawn(async move {
                let r = project_pass(&ctx, &p, &opts).await;
                (p, r)
            });
            self.task_projects.insert(handle.id(), project.clone());
            self.aborts.insert(project, handle);
        }
    }
}

/// The queue order: which queued projects start now, and the file slots each gets. A project
/// starts when its priority is at least the highest among queued and running ones; equal
/// priorities run together; at most `max_connections` passes run; the slots are an equal
/// share of `max_connections` among the passes running.
fn pick(
    due: &BTreeSet<ProjectId>,
    running: &HashSet<ProjectId>,
    prio: &dyn Fn(&ProjectId) -> i64,
    max_connections: usize,
) -> (Vec<ProjectId>, usize) {
    let candidates: Vec<&ProjectId> = due.iter().filter(|p| !running.contains(*p)).collect();
    let Some(top) = candidates
        .iter()
        .copied()
        .chain(running.iter())
        .map(prio)
        .max()
    else {
        return (Vec::new(), 0);
    };
    let max_conn = max_connections.max(1);
    let mut start: Vec<ProjectId> = candidates
        .into_iter()
        .filter(|p| prio(p) >= top)
        .cloned()
        .collect();
    // Among equals, the queue is in id order; stable across ticks.
    start.truncate(max_conn.saturating_sub(running.len()));
    let share = (max_conn / (running.len() + start.len()).max(1)).max(1);
    (start, share)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pid(n: u8) -> ProjectId {
        format!("project-{}", format!("{n:02}").repeat(12))
            .parse()
            .unwrap()
    }

    #[test]
    fn higher_priority_first_equal_priorities_share() {
        let (a, b, c) = (pid(1), pid(2), pid(3));
        let prio = |p: &ProjectId| if *p == c { 10 } else { 0 };
        let due: BTreeSet<ProjectId> = [a.clone(), b.clone(), c.clone()].into();
        let (start, share) = pick(&due, &HashSet::new(), &prio, 16);
        assert_eq!(start, vec![c.clone()]);
        assert_eq!(share, 16);
        // While the high-priority project runs, the others wait.
        let running: HashSet<ProjectId> = [c.clone()].into();
        let due: BTreeSet<ProjectId> = [a.clone(), b.clone()].into();
        assert!(pick(&due, &running, &prio, 16).0.is_empty());
        // Then the two equal ones start together with half the connections each.
        let (start, share) = pick(&due, &HashSet::new(), &prio, 16);
        assert_eq!(start, vec![a, b]);
        assert_eq!(share, 8);
    }

    #[test]
    fn never_more_passes_than_connections() {
        let due: BTreeSet<ProjectId> = (1..=5).map(pid).collect();
        let (start, share) = pick(&due, &HashSet::new(), &|_| 0, 2);
        assert_eq!(start.len(), 2);
        assert_eq!(share, 1);
    }
}
