//! What the daemon tells operators: it builds the notification sinks of the config in force
//! (again on reload when `[notify]` changed; a reload whose secret cannot be read is refused
//! and the old sinks stay), and turns what it sees into `notifications::Event`s.
//!
//! Conditions seen at every check (a refused token, an inaccessible project, a failed file,
//! a full disk, throttling, a stall, access expiry) go through `notifications::Edges`, so
//! each sends one event when it starts (`token-accepted` also when it ends), not one per
//! retry. Edges live in memory: after a restart a condition still holding is told again once.
//! The `access-expiring`/`access-expired` events come from the daemon's own daily
//! `access-expires` check (`expiry.rs`).
//!
//! It must not deliver anything itself (`notifications` does) nor change what runs.

use std::collections::HashSet;
use std::time::Instant;

use tracing::{error, info, warn};

use super::{Daemon, DaemonError};
use crate::journal::{EventLevel, ProjectState};
use crate::model::ProjectId;
use crate::notifications::{Event, Kind, Notifications};
use crate::pass::ProjectSummary;

/// The stall and throttle clocks the status tick keeps.
#[derive(Debug, Default)]
pub(super) struct Watch {
    /// The byte counter at the last tick, and since when it has not moved.
    bytes: Option<(u64, Instant)>,
    /// The throttled-time counter at the last tick, and since when it keeps growing.
    throttled: Option<(u64, Option<Instant>)>,
    /// Notifications dropped so far, as last reported.
    dropped: u64,
}

impl Daemon {
    /// Puts the sinks of `[notify]` in force if they changed (or at start). `fatal`: a secret
    /// that cannot be read stops the start rather than being recorded (on reload).
    pub(super) async fn follow_notify(&mut self, fatal: bool) -> Result<(), DaemonError> {
        if self.notifications.is_some() && self.notify_cfg.as_ref() == Some(&self.cfg.notify) {
            return Ok(());
        }
        if self.notifications.is_none() {
            // Drops of earlier runs were reported then: only new ones are reported.
            self.watch.dropped = self
                .journal
                .outbox_counts()?
                .iter()
                .map(|c| c.dropped)
                .sum();
        }
        match Notifications::start(self.journal.clone(), &self.cfg.notify).await {
            Ok(n) => {
                if !self.cfg.notify.webhooks.is_empty() || !self.cfg.notify.commands.is_empty() {
                    info!(
                        webhooks = self.cfg.notify.webhooks.len(),
                        commands = self.cfg.notify.commands.len(),
                        "notifications in force"
                    );
                }
                self.notifications = Some(n);
                self.notify_cfg = Some(self.cfg.notify.clone());
                self.report_dropped().await
            }
            Err(e) if fatal => Err(DaemonError::Notify(e)),
            Err(e) => {
                error!(error = %e, "notification sinks not changed; the previous ones stay");
                self.record_error(e.to_string()).await
            }
        }
    }

    /// Records `event` in the outbox (the sinks deliver it).
    pub(super) async fn tell(&mut self, event: Event) -> Result<(), DaemonError> {
        if let Some(n) = &self.notifications {
            n.send(event).await.map_err(DaemonError::Journal)?;
        }
        self.report_dropped().await
    }

    /// Counts dropped notifications in the metrics, and logs and records any new drop.
    async fn report_dropped(&mut self) -> Result<(), DaemonError> {
        let Some(n) = &self.notifications else {
            return Ok(());
        };
        let (dropped, sinks) = n.dropped();
        self.metrics.set_notifications_dropped(dropped);
        if dropped > self.watch.dropped {
            let new = dropped - self.watch.dropped;
            let message = format!(
                "{new} undelivered notification(s) dropped ({dropped} in all; sinks {}): a receiver stayed down past [notify] queue-limit, or its sink was removed",
                sinks.join(", ")
            );
            warn!(dropped = new, total = dropped, "{message}");
            self.journal
                .record_event(EventLevel::Warn, None, None, message)
                .await?;
        }
        self.watch.dropped = dropped;
        Ok(())
    }

    /// Tells `event` if condition `key` has just started.
    pub(super) async fn tell_on_edge(
        &mut self,
        key: &str,
        holds: bool,
        event: impl FnOnce() -> Event,
    ) -> Result<(), DaemonError> {
        if self.edges.set(key, holds) == Some(true) {
            self.tell(event()).await?;
        }
        Ok(())
    }

    /// The token was refused (the daemon pauses).
    pub(super) async fn tell_token_refused(&mut self, message: &str) -> Result<(), DaemonError> {
        let message = format!("the DNAnexus API token is refused; no transfer runs: {message}");
        self.tell_on_edge("token", true, || Event::new(Kind::TokenRefused, message))
            .await
    }

    /// The token is accepted (again).
    pub(super) async fn tell_token_accepted(&mut self) -> Result<(), DaemonError> {
        if self.edges.set("token", false) == Some(false) {
            self.tell(Event::new(
                Kind::TokenAccepted,
                "the DNAnexus API token is accepted again; transfers resume",
            ))
            .await?;
        }
        Ok(())
    }

    /// The events of a project pass that ended with `s`.
    pub(super) async fn tell_pass_done(
        &mut self,
        p: &ProjectId,
        s: &ProjectSummary,
    ) -> Result<(), DaemonError> {
        let totals = self
            .journal
            .project_totals()?
            .into_iter()
            .find(|t| &t.project.id == p);
        let with_counts = |mut ev: Event| {
            ev.project = Some(p.clone());
            ev.project_name = (!s.name.is_empty()).then(|| s.name.clone());
            ev.mirror_path = s.dir.clone();
            if let Some(t) = &totals {
                ev.files_total = Some(
                    t.n_files
                        - t.files_by_state
                            .get(&crate::journal::FileState::Skipped)
                            .copied()
                            .unwrap_or(0),
                );
                ev.files_done = Some((s.verified + s.unverified) as u64);
                ev.files_failed = Some(t.n_failed + t.n_corrupt);
                ev.bytes_done = Some(t.bytes_done);
                ev.bytes_total = Some(t.bytes_total);
            }
            ev
        };
        let mut end = with_counts(Event::new(
            Kind::PassEnd,
            match &s.error {
                Some(e) => format!("pass of {p} ended: {e}"),
                None => format!(
                    "pass of {p} ended with {} problem(s)",
                    s.problems.iter().filter(|f| f.state != "skipped").count()
                ),
            },
        ));
        end.ok = Some(s.is_ok());
        self.tell(end).await?;

        // The project as a whole.
        let state = self.journal.project(p)?.map(|r| r.state);
        let lost = match (&s.error, state) {
            (Some(_), Some(ProjectState::Inaccessible)) => Some(Kind::ProjectInaccessible),
            (Some(_), Some(ProjectState::Gone)) => Some(Kind::ProjectGone),
            _ => None,
        };
        for kind in [Kind::ProjectInaccessible, Kind::ProjectGone] {
            let key = format!("{}:{p}", kind.as_str());
            let msg = format!("project {p}: {}", s.error.clone().unwrap_or_default());
            self.tell_on_edge(&key, lost == Some(kind), || {
                with_counts(Event::new(kind, msg))
            })
            .await?;
        }

        // Files that failed or were quarantined, once each until they are mirrored.
        let prefix = format!("file:{p}:");
        let mut now_bad = HashSet::new();
        for f in &s.problems {
            let kind = match f.state.as_str() {
                "failed" => Kind::FileFailed,
                "corrupt" => Kind::FileCorrupt,
                _ => continue,
            };
            let key = format!("{prefix}{}:{}", f.file_id, f.state);
            now_bad.insert(key.clone());
            let mut ev = with_counts(Event::new(
                kind,
                format!("{} {}: {}", f.state, f.path, f.reason),
            ));
            ev.file = f.file_id.parse().ok();
            ev.mirror_path = s.dir.as_ref().map(|d| d.join(&f.path));
            self.tell_on_edge(&key, true, || ev).await?;
        }
        self.edges.clear_missing(&prefix, &now_bad);

        // Complete: this pass published files and left nothing to do.
        if s.is_ok() && s.fetched_now > 0 {
            let msg = format!(
                "project {p} is completely mirrored ({} files verified)",
                s.verified + s.unverified
            );
            self.tell(with_counts(Event::new(Kind::ProjectComplete, msg)))
                .await?;
        }
        Ok(())
    }

    /// `pass-start` of each project started since the last call.
    pub(super) async fn tell_passes_started(&mut self) -> Result<(), DaemonError> {
        for p in std::mem::take(&mut self.started) {
            self.tell(Event::new(Kind::PassStart, format!("pass of {p} started")).project(&p))
                .await?;
        }
        Ok(())
    }

    /// At each status tick: a file waiting for disk space, throttling for longer than
    /// `throttled-after`, and no byte for `stalled-after` while a pass runs.
    pub(super) async fn tell_conditions(&mut self) -> Result<(), DaemonError> {
        let now = self.clock.now();
        let waits = self.counters.disk_waits();
        self.tell_on_edge("disk-wait", waits > 0, || {
            Event::new(
                Kind::DiskWait,
                format!("{waits} file(s) wait for disk space on the mirror root"),
            )
        })
        .await?;

        let c = self.counters.snapshot();
        let since = match self.watch.throttled {
            Some((ms, since)) if c.throttled_ms > ms => Some(since.unwrap_or(now)),
            _ => None,
        };
        self.watch.throttled = Some((c.throttled_ms, since));
        let limit = self.cfg.notify.throttled_after;
        let throttled = since.is_some_and(|t| now.duration_since(t) >= limit);
        self.tell_on_edge("throttled", throttled, || {
            Event::new(
                Kind::Throttled,
                format!(
                    "the platform has throttled transfers for more than {}s",
                    limit.as_secs()
                ),
            )
        })
        .await?;

        let moved = match self.watch.bytes {
            Some((b, t)) if b == c.bytes_fetched && !self.running.is_empty() => t,
            _ => now,
        };
        self.watch.bytes = Some((c.bytes_fetched, moved));
        let limit = self.cfg.notify.stalled_after;
        let stalled = now.duration_since(moved) >= limit;
        let running = self.running.len();
        self.tell_on_edge("stalled", stalled, || {
            Event::new(
                Kind::Stalled,
                format!(
                    "no byte arrived for {}s while {running} pass(es) run",
                    limit.as_secs()
                ),
            )
        })
        .await
    }
}
