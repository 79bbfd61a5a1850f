//! Waiting for a usable mirror root: the daemon takes the mirror root's writer lock once the
//! root exists as a writable directory (it is often a mount point that appears later); until
//! then it runs no pass or verification, records why it waits, and looks again with the
//! backoff of its timers (5 s doubling to 1 min; at once on reload).
//!
//! It must not create the mirror root: `dirs` and `lock` decide what is usable.

use tracing::{error, info};

use super::{Daemon, DaemonError};
use crate::journal::EventLevel;
use crate::lock::LockError;

impl Daemon {
    /// Takes the mirror root's writer lock if the root is usable now; if it is not (not
    /// mounted, not a directory, not writable), records why and looks again after a backoff.
    /// Another writer holding the root's lock stops the daemon, as at start.
    pub(super) async fn take_mirror_root(&mut self) -> Result<(), DaemonError> {
        if self.root_held {
            return Ok(());
        }
        match self.lock.add_mirror_root(&self.cfg.mirror_root) {
            Ok(()) => {
                self.root_held = true;
                if self.timers.root.cleared() {
                    info!(path = %self.cfg.mirror_root.display(), "mirror root usable; resuming");
                    self.journal
                        .record_event(
                            EventLevel::Info,
                            None,
                            None,
                            format!(
                                "mirror-root {} is usable; resuming",
                                self.cfg.mirror_root.display()
                            ),
                        )
                        .await?;
                }
                Ok(())
            }
            Err(LockError::Dir(e)) if e.is_mirror_root() => {
                let wait = self.timers.root.failed(self.clock.now());
                error!(error = %e, retry_in_s = wait.as_secs(), "mirror root unusable: no transfer runs until it is");
                self.record_error(e.to_string()).await
            }
            Err(e) => Err(e.into()),
        }
    }
}
