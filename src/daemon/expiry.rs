//! The daily check of the configured `access-expires` dates: a warning 30 days ahead, an
//! error once passed, each logged and recorded as a journal event, in the words of
//! [`crate::access`] (which `dxmirror status` shares).
//!
//! It must not delete anything: an expired project keeps its copy until `dxmirror purge`.

use tracing::{error, warn};

use super::{Daemon, DaemonError};
use crate::access::{access_notice, AccessNotice};
use crate::clock::Date;
use crate::journal::EventLevel;
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
        }
        Ok(())
    }
}
