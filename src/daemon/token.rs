//! The pass context and a refused token: (re)building the client and engine from the config
//! in force, checking the token with `/system/whoami` before the first transfer, and pausing
//! every pass on a refused or missing token (retried with the timers' backoff, re-reading the
//! token each time) instead of stopping the daemon.
//!
//! It must not retry API calls itself: `platform`'s retry table has already run when a
//! failure arrives here.

use std::sync::Arc;
use std::time::Duration;

use tracing::{error, info, instrument, warn};

use super::{Daemon, DaemonError};
use crate::journal::DaemonState;
use crate::pass::PassContext;
use crate::platform::{ApiDisposition, PlatformError};

impl Daemon {
    /// (Re)builds the pass context from the config in force; a missing or refused token
    /// pauses the daemon with a backoff instead of stopping it.
    #[instrument(skip_all)]
    pub(super) async fn build_context(&mut self) -> Result<(), DaemonError> {
        // The daemon never gives up on a throttled call: throttling waits, it fails nothing
        // (`throttle-budget` is `sync`'s; status shows the throttling).
        let mut cfg = self.cfg.clone();
        cfg.throttle_budget = Duration::MAX;
        let ctx = match PassContext::with_counters(
            cfg,
            self.journal.clone(),
            self.bandwidth.clone(),
            self.counters.clone(),
        ) {
            Ok(ctx) => ctx,
            Err(e) => {
                self.token_failed(e.to_string()).await?;
                return Ok(());
            }
        };
        // Check the token now rather than at the first transfer.
        match ctx.client.whoami().await {
            Ok(identity) => {
                // The platform identity every audit record of this context carries.
                ctx.engine.set_identity(Some(identity));
                if self.timers.token.cleared() {
                    info!("the API token is accepted again; resuming");
                    self.tell_token_accepted().await?;
                }
                if self.row.state != DaemonState::Starting && self.row.state != self.state_word() {
                    self.row.state = self.state_word();
                    self.journal.put_daemon(self.row.clone()).await?;
                }
                self.ctx = Some(Arc::new(ctx));
            }
            Err(e) if e.api_disposition() == ApiDisposition::BadToken => {
                self.token_failed(format!("the DNAnexus API rejected the token: {e}"))
                    .await?;
            }
            Err(e) => {
                // Not a token problem (network down, ...): go on; passes retry on their own.
                warn!(error = %e, "cannot reach the API; continuing");
                self.record_error(format!("cannot reach the API: {e}"))
                    .await?;
                self.ctx = Some(Arc::new(ctx));
            }
        }
        Ok(())
    }

    /// The token is unusable: drops the pass context and pauses until the next try, unless
    /// the daemon is already paused (another pass that was still running hit the same
    /// refusal).
    pub(super) async fn token_failed(&mut self, message: String) -> Result<(), DaemonError> {
        let Some(wait) = self.timers.token.failed_when_due(self.clock.now()) else {
            self.ctx = None;
            return Ok(());
        };
        let credential = std::env::var_os("CREDENTIALS_DIRECTORY")
            .map(|d| std::path::Path::new(&d).join("dx-token"))
            .filter(|p| p.exists());
        let fix = token_fix(credential.as_deref());
        error!(error = %message, retry_in_s = wait.as_secs(), "API token unusable: no transfer runs until it is fixed ({fix})");
        self.ctx = None;
        self.row.state = DaemonState::BadToken;
        self.record_error(message.clone()).await?;
        self.tell_token_refused(&message).await
    }

    /// An API call of the daemon's own (not a pass's) failed: a refused token pauses, anything
    /// else is recorded and waits for the next interval.
    pub(super) async fn api_failure(
        &mut self,
        what: &str,
        e: PlatformError,
    ) -> Result<(), DaemonError> {
        if e.api_disposition() == ApiDisposition::BadToken {
            return self
                .token_failed(format!("the DNAnexus API rejected the token: {e}"))
                .await;
        }
        warn!(error = %e, what, "API call failed; will retry at the next interval");
        self.record_error(format!("{what}: {e}")).await
    }
}

/// How a refused token gets replaced, true for where it comes from: a systemd credential is a
/// copy made at service start (re-reading it finds the same token), a token file is re-read
/// at every try.
fn token_fix(credential: Option<&std::path::Path>) -> String {
    match credential {
        Some(p) => format!(
            "replace the token file the unit's LoadCredential= names, then systemctl restart the service: {} is the copy systemd made at start",
            p.display()
        ),
        None => "replace the token file (or the environment's token); it is re-read at every try".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fix_for_a_credential_is_a_restart_and_for_a_file_the_next_try() {
        let cred = token_fix(Some(std::path::Path::new(
            "/run/credentials/dxmirror.service/dx-token",
        )));
        assert!(
            cred.contains("systemctl restart")
                && cred.contains("/run/credentials/dxmirror.service/dx-token"),
            "{cred}"
        );
        let file = token_fix(None);
        assert!(
            file.contains("re-read at every try") && !file.contains("restart"),
            "{file}"
        );
    }
}
