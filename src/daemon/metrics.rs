//! The daemon's side of the metrics endpoint: binding `[metrics] listen` at start, moving it
//! when a reload changes the address (a new address that cannot be bound is refused and the
//! old endpoint stays), and keeping the source's config and queue gauges current.
//!
//! The exposition itself is `crate::metrics`; this file only starts and stops its task.

use tracing::{error, info};

use super::{Daemon, DaemonError};
use crate::metrics;

impl Daemon {
    /// Serves `[metrics] listen` of the config in force, if the endpoint is not already there;
    /// stops the endpoint when the key was removed. `fatal`: a bind failure stops the daemon
    /// (at start) rather than being recorded (on reload).
    pub(super) async fn follow_metrics(&mut self, fatal: bool) -> Result<(), DaemonError> {
        self.metrics.set_config(self.cfg.clone());
        let want = self.cfg.metrics_listen;
        if self.metrics_task.as_ref().map(|(a, _)| *a) == want {
            return Ok(());
        }
        let Some(addr) = want else {
            if let Some((old, task)) = self.metrics_task.take() {
                task.abort();
                info!(listen = %old, "metrics endpoint stopped");
            }
            return Ok(());
        };
        match metrics::bind(addr).await {
            Ok(listener) => {
                if let Some((_, old)) = self.metrics_task.take() {
                    old.abort();
                }
                let task = tokio::spawn(metrics::serve(listener, self.metrics.clone()));
                info!(listen = %addr, "metrics endpoint listening");
                self.metrics_task = Some((addr, task));
                Ok(())
            }
            Err(e) if fatal => Err(DaemonError::Metrics(e)),
            Err(e) => {
                error!(error = %e, "metrics endpoint not moved; the previous one stays");
                self.record_error(e.to_string()).await
            }
        }
    }

    /// Stops the endpoint (at shutdown).
    pub(super) fn stop_metrics(&mut self) {
        if let Some((_, task)) = self.metrics_task.take() {
            task.abort();
        }
    }

    /// Gives the endpoint the queue as it is now.
    pub(super) fn metrics_queue(&self) {
        self.metrics.set_queue(self.due.len(), self.running.len());
    }
}
