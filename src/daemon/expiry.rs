//! The daily check of the configured `access-expires` dates: a warning 30 days ahead, an
//! error once passed, each logged and recorded as a journal event, in the words of
//! [`crate::access`] (which `dxmirror status` shares); then what the project's
//! `on-access-expired` calls for ([`crate::access::expiry_action`]): `warn` mirrors on,
//! `hold` stops its passes (`schedule` asks [`Daemon::expiry_action`]) and keeps the data,
//! `purge` holds, announces the day, and once the grace period is over deletes the local copy
//! through `purge::purge_locked` (the audit record `dxmirror purge` writes), never while its
//! pass runs (the check runs again when that pass ends).
//!
//! Every step is a journal event (`access held`, `access purge due`, `access purging`,
//! `access purged`, `access purge failed`, the words that open its message) recorded by
//! [`Daemon::access_step`], which also tells `access-held` (a hold, or a purge's day
//! announced: before), `access-purged` (after the deletion) and `access-purge-failed`, each
//! once per change. Nothing else here deletes anything.

use tracing::{error, warn};

use super::{Daemon, DaemonError};
use crate::access::{access_notice, expiry_action, AccessNotice, ExpiryAction};
use crate::clock::Date;
use crate::journal::EventLevel;
use crate::model::ProjectId;
use crate::notifications::{Event, Kind};

impl Daemon {
    /// Logs and records every configured project whose access expires soon or has expired,
    /// as of `today`.
    pub(super) async fn check_expiry(&mut self, today: Date) -> Result<(), DaemonError> {
        for (p, s) in self.cfg.project_settings.clone() {
            let Some(exp) = s.access_expires else {
                continue;
            };
            let Some(notice) = access_notice(exp, today) else {
                continue;
            };
            match notice {
                AccessNotice::Expired { .. } => {
                    error!(project_id = %p, access_expires = %exp, "data access has expired: the agreement usually requires destroying the local copy (dxmirror purge PROJECT --yes)");
                }
                AccessNotice::Soon { days_left, .. } => {
                    warn!(project_id = %p, access_expires = %exp, days_left, "data access expires soon");
                }
            }
            let msg = notice.event_message(&p);
            self.journal
                .record_event(EventLevel::Warn, Some(&p), None, msg.clone())
                .await?;
            let kind = match notice {
                AccessNotice::Expired { .. } => Kind::AccessExpired,
                AccessNotice::Soon { .. } => Kind::AccessExpiring,
            };
            let key = format!("{}:{p}", kind.as_str());
            self.tell_on_edge(&key, true, || Event::new(kind, msg).project(&p))
                .await?;
            self.act_on_expiry(&p, today).await?;
        }
        Ok(())
    }

    /// What `on-access-expired` calls for today for `project`.
    pub(super) fn expiry_action(&self, project: &ProjectId, today: Date) -> ExpiryAction {
        let s = self.cfg.settings(project);
        expiry_action(
            s.access_expires,
            today,
            s.on_access_expired,
            self.cfg.access_purge_grace_days,
        )
    }

    /// Holds, announces or purges `project` as its policy says.
    async fn act_on_expiry(&mut self, p: &ProjectId, today: Date) -> Result<(), DaemonError> {
        let policy = self.cfg.settings(p).on_access_expired.as_str();
        match self.expiry_action(p, today) {
            ExpiryAction::Mirror => {
                // Held again later is told again.
                self.edges
                    .clear_missing(&format!("access-held:{p}:"), &Default::default());
            }
            ExpiryAction::Hold => {
                self.due.remove(p);
                let msg = format!("access held: no fetching or re-listing, the local copy is kept (on-access-expired = \"{policy}\")");
                let key = format!("access-held:{p}:hold");
                self.access_step(p, EventLevel::Warn, msg, Some((Kind::AccessHeld, key)))
                    .await?;
            }
            ExpiryAction::PurgeOn { on } => {
                self.due.remove(p);
                let msg = format!("access purge due: the local copy is deleted on {on} (on-access-expired = \"purge\"); held until then");
                let key = format!("access-held:{p}:{on}");
                self.access_step(p, EventLevel::Warn, msg, Some((Kind::AccessHeld, key)))
                    .await?;
            }
            ExpiryAction::PurgeNow => {
                self.due.remove(p);
                if self.running.contains(p) || self.journal.project(p)?.is_none() {
                    // Its pass ends first (`project_done` checks again); or nothing is left.
                    return Ok(());
                }
                self.access_step(p, EventLevel::Warn, "access purging: access expired and the grace period is over (on-access-expired = \"purge\")".into(), None).await?;
                match crate::purge::purge_locked(&self.cfg, p, &self.journal).await {
                    Ok(out) => {
                        let detail = out
                            .audit
                            .map(|a| format!("{} (audit record {})", a.detail, a.id))
                            .unwrap_or_default();
                        // Told every time: a purge happens once.
                        let key = format!("access-purged:{p}");
                        self.edges.set(&format!("access-purge-failed:{p}"), false);
                        self.edges.set(&key, false);
                        self.access_step(
                            p,
                            EventLevel::Warn,
                            format!("access purged: {detail}"),
                            Some((Kind::AccessPurged, key)),
                        )
                        .await?;
                    }
                    Err(crate::purge::PurgeError::Journal(e)) => {
                        return Err(DaemonError::Journal(e))
                    }
                    Err(e) => {
                        error!(project_id = %p, error = %e, "purging the local copy of a project whose access expired failed");
                        let key = format!("access-purge-failed:{p}");
                        self.access_step(
                            p,
                            EventLevel::Error,
                            format!("access purge failed: {e}"),
                            Some((Kind::AccessPurgeFailed, key)),
                        )
                        .await?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Logs and records one step of the access policy, and tells it as `kind` once while
    /// its edge `key` holds (the daily check repeats a hold).
    async fn access_step(
        &mut self,
        p: &ProjectId,
        level: EventLevel,
        message: String,
        tell: Option<(Kind, String)>,
    ) -> Result<(), DaemonError> {
        warn!(project_id = %p, "{message}");
        self.journal
            .record_event(level, Some(p), None, message.clone())
            .await?;
        if let Some((kind, key)) = tell {
            let mut ev = Event::new(kind, message).project(p);
            // Gone once purged: the purge's message names what was deleted.
            if let Some(row) = self.journal.project(p)? {
                ev.project_name = Some(row.name).filter(|n| !n.is_empty());
                ev.mirror_path = row.dir_name.map(|d| self.cfg.mirror_root.join(d));
            }
            self.tell_on_edge(&key, true, || ev).await?;
        }
        Ok(())
    }
}
