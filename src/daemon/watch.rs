//! The inbox: scans of the drop-in directory (`inbox::scan_with` parses and moves the files;
//! this records what was accepted in the journal's `requests` table and queues it) and the
//! `notify` watch whose events only make the next scan sooner. The periodic rescan is the
//! source of truth, since events are lost on NFS and across restarts.
//!
//! It must not parse dropped files itself: that is `inbox`'s.

use tokio::sync::mpsc;
use tracing::{info, instrument, warn};

use super::{Daemon, DaemonError, Source};
use crate::inbox::{self, InboxItem};
use crate::journal::EventLevel;

impl Daemon {
    /// Scans the drop-in directory (off the async threads), records what was rejected and
    /// accepted, and queues the accepted work.
    #[instrument(skip_all)]
    pub(super) async fn scan_inbox(&mut self) -> Result<(), DaemonError> {
        let Some(w) = self.cfg.watch.clone() else {
            return Ok(());
        };
        let dir = w.dir.clone();
        // Directory IO: off the async threads.
        let scanned =
            tokio::task::spawn_blocking(move || inbox::scan_with(&dir, inbox::DEFAULT_MIN_AGE))
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string()));
        match scanned {
            Ok(report) => {
                for (path, why) in &report.rejected {
                    warn!(path = %path.display(), reason = %why, "inbox file rejected");
                    self.journal
                        .record_event(
                            EventLevel::Warn,
                            None,
                            None,
                            format!("inbox file rejected ({}): {why}", path.display()),
                        )
                        .await?;
                }
                if !report.deferred.is_empty() {
                    // Still being written: look again soon.
                    let soon = self.clock.now() + inbox::DEFAULT_MIN_AGE;
                    self.timers.rescan_by(soon);
                }
                for (path, work) in report.accepted {
                    info!(path = %path.display(), "inbox file accepted; work queued");
                    self.journal
                        .record_event(
                            EventLevel::Info,
                            None,
                            None,
                            format!("inbox file accepted ({}); work queued", path.display()),
                        )
                        .await?;
                    match work {
                        InboxItem::Projects(ps) => {
                            self.journal
                                .add_requests(ps.iter().map(|p| (p.clone(), None)).collect())
                                .await?;
                            for p in ps {
                                let s = self.known.entry(p.clone()).or_insert(Source::Inbox);
                                if *s == Source::InboxFiles {
                                    *s = Source::Inbox;
                                }
                                self.due.insert(p);
                            }
                        }
                        InboxItem::Files(fs) => {
                            self.journal
                                .add_requests(
                                    fs.iter()
                                        .map(|(p, f)| (p.clone(), Some(f.clone())))
                                        .collect(),
                                )
                                .await?;
                            for (p, f) in fs {
                                let s = self.known.entry(p.clone()).or_insert(Source::InboxFiles);
                                if *s == Source::InboxFiles {
                                    self.only.entry(p.clone()).or_default().insert(f.clone());
                                }
                                self.force.entry(p.clone()).or_default().insert(f);
                                self.due.insert(p);
                            }
                        }
                    }
                }
            }
            Err(e) => {
                warn!(dir = %w.dir.display(), error = %e, "cannot scan the inbox");
                self.record_error(format!("inbox {}: {e}", w.dir.display()))
                    .await?;
            }
        }
        Ok(())
    }

    /// Watches the drop-in directory; events only make the next scan sooner.
    pub(super) fn start_watch(&mut self) {
        use notify::Watcher as _;
        self.watcher = None;
        self.inbox_rx = None;
        let Some(w) = &self.cfg.watch else {
            return;
        };
        if let Err(e) = std::fs::create_dir_all(&w.dir) {
            warn!(dir = %w.dir.display(), error = %e, "cannot create the inbox directory; relying on rescans");
            return;
        }
        let (tx, rx) = mpsc::channel(16);
        let watcher =
            notify::recommended_watcher(move |res: Result<notify::Event, notify::Error>| {
                if res.is_ok() {
                    let _ = tx.try_send(());
                }
            });
        match watcher {
            Ok(mut watcher) => match watcher.watch(&w.dir, notify::RecursiveMode::NonRecursive) {
                Ok(()) => {
                    self.watcher = Some(watcher);
                    self.inbox_rx = Some(rx);
                }
                Err(e) => {
                    warn!(dir = %w.dir.display(), error = %e, "cannot watch the inbox; relying on rescans")
                }
            },
            Err(e) => warn!(error = %e, "cannot watch the inbox; relying on rescans"),
        }
    }
}
