//! Reload (SIGHUP): the config is read again and either refused, with the reason logged and
//! recorded and the old config kept, or put in force: configured projects are queued, a
//! refused token and an unusable mirror root are tried again at once, a new pass context is
//! built, the inbox watch follows a changed `[watch]`, the `bwlimit`s take effect at once
//! (running transfers included), and discovery runs at once.
//!
//! It must not change `state-dir` or `mirror-root` (that takes a restart), nor stop a
//! running pass.

use tracing::{error, info, instrument};

use super::{Daemon, DaemonError, Source};
use crate::config::Config;
use crate::journal::EventLevel;

impl Daemon {
    /// SIGHUP: re-reads the config; a config that does not load, or that moves `state-dir` or
    /// `mirror-root`, is refused and the old one stays. Otherwise a new pass context is built
    /// (running passes finish on the old one) and discovery runs at once.
    #[instrument(skip_all)]
    pub(super) async fn reload(&mut self) -> Result<(), DaemonError> {
        self.notify.reloading();
        let refused = |why: String| why;
        let outcome = match Config::load(&self.cfg_path) {
            Err(e) => Err(refused(e.to_string())),
            Ok(c) if c.state_dir != self.cfg.state_dir || c.mirror_root != self.cfg.mirror_root => {
                Err(refused(
                    "state-dir and mirror-root cannot change on reload; restart the daemon".into(),
                ))
            }
            Ok(c) => Ok(c),
        };
        match outcome {
            Err(why) => {
                error!(reason = %why, "config reload refused; the previous config stays in force");
                self.record_error(format!("config reload refused: {why}"))
                    .await?;
            }
            Ok(new) => {
                info!(config = %self.cfg_path.display(), "config reloaded");
                let watch_changed = new.watch != self.cfg.watch;
                self.cfg = new;
                // Live, for the transfers already running too.
                self.bandwidth
                    .reload(self.cfg.bwlimit.clone(), &self.cfg.project_bwlimits());
                let rate = self.bandwidth.global().in_force().rate;
                info!(bwlimit = %self.cfg.bwlimit, rate = %rate, "bandwidth limit in force");
                self.known.retain(|_, s| *s != Source::Configured);
                for p in self.journal.projects()? {
                    self.known.entry(p.id).or_insert(Source::Journal);
                }
                for p in self.cfg.projects.clone() {
                    self.known.insert(p.clone(), Source::Configured);
                    self.due.insert(p);
                }
                // A refused token and an unusable mirror root are tried again now (the
                // operator may have fixed them).
                if self.timers.root.waiting() {
                    self.take_mirror_root().await?;
                    self.row.state = self.state_word();
                }
                // The new sinks first: what the reload finds (a token refused or accepted
                // again) goes to them.
                self.follow_notify(false).await?;
                self.build_context().await?;
                self.follow_metrics(false).await?;
                if watch_changed {
                    self.start_watch();
                }
                let now = self.clock.now();
                self.timers.discover_now(now);
                // `access-expires` and `on-access-expired` apply at once.
                self.timers.recheck_expiry();
                self.journal
                    .record_event(EventLevel::Info, None, None, "config reloaded".into())
                    .await?;
            }
        }
        let totals = self.journal.project_totals().unwrap_or_default();
        let status = self.status_line(&totals);
        self.notify.ready(&status);
        Ok(())
    }
}
