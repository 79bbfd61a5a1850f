//! The daemon's row in the journal and its `STATUS=` line: the state word (`running`,
//! `bad-token`, `waiting-for-mirror-root`, ...), the last error (recorded as a journal event
//! unless it repeats), the transfer rate, and the one-line summary that `sd_notify` and
//! `dxmirror status` show.
//!
//! It only reports: nothing here decides what runs.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use super::{Daemon, DaemonError};
use crate::journal::{DaemonState, EventLevel, FileState, ProjectTotals};
use crate::model::ProjectId;

/// How long the same error again adds no journal event (the daemon row still records it).
const REPEAT_WINDOW_MS: i64 = 600_000;

/// Each running project's rate, bytes per second, from its journaled bytes `secs` apart.
/// A project absent from `before` (just started) has no rate yet; bytes that went back (a
/// reset) count as none.
fn project_rates(
    before: &BTreeMap<ProjectId, u64>,
    after: &BTreeMap<ProjectId, u64>,
    secs: f64,
    running: &HashSet<ProjectId>,
) -> BTreeMap<String, u64> {
    if secs <= 0.0 {
        return BTreeMap::new();
    }
    after
        .iter()
        .filter(|(id, _)| running.contains(*id))
        .filter_map(|(id, now)| {
            let then = before.get(id)?;
            Some((
                id.to_string(),
                (now.saturating_sub(*then) as f64 / secs) as u64,
            ))
        })
        .collect()
}

/// Whether `message` at `now_ms` repeats the daemon's last error, recorded at `last_ms`,
/// within [`REPEAT_WINDOW_MS`].
fn is_repeat(last_error: Option<&str>, last_ms: Option<i64>, message: &str, now_ms: i64) -> bool {
    last_error == Some(message) && last_ms.is_some_and(|t| now_ms - t < REPEAT_WINDOW_MS)
}

impl Daemon {
    /// The daemon's state for its journal row: a refused token first, then a mirror root it
    /// waits for.
    pub(super) fn state_word(&self) -> DaemonState {
        if self.timers.token.waiting() {
            DaemonState::BadToken
        } else if !self.root_held {
            DaemonState::WaitingForMirrorRoot
        } else {
            DaemonState::Running
        }
    }

    /// Records `message` as the daemon's last error, and as a journal error event unless it
    /// repeats the last one.
    pub(super) async fn record_error(&mut self, message: String) -> Result<(), DaemonError> {
        // The same error again within ten minutes of its last occurrence (a relist of an
        // inaccessible project, a token retry) adds no event: the history stays readable.
        let now_ms = self.clock.now_ms();
        let repeat = is_repeat(
            self.row.last_error.as_deref(),
            self.row.last_error_ms,
            &message,
            now_ms,
        );
        self.row.last_error = Some(message.clone());
        self.row.last_error_ms = Some(now_ms);
        self.journal.put_daemon(self.row.clone()).await?;
        if !repeat {
            self.journal
                .record_event(EventLevel::Error, None, None, message)
                .await?;
        }
        Ok(())
    }

    /// The one-line summary: projects (running, queued), files and bytes done, and what
    /// holds every transfer back.
    pub(super) fn status_line(&self, totals: &[ProjectTotals]) -> String {
        let (mut done, mut total, mut files, mut verified) = (0u64, 0u64, 0u64, 0u64);
        for t in totals {
            done += t.bytes_done;
            total += t.bytes_total;
            files += t.n_files;
            verified += t
                .files_by_state
                .iter()
                .filter(|(s, _)| matches!(s, FileState::Verified | FileState::Unverified))
                .map(|(_, n)| *n)
                .sum::<u64>();
        }
        let mut s = format!(
            "{} projects ({} running, {} queued); {verified}/{files} files done; {} of {}",
            self.known.len(),
            self.running.len(),
            self.due.len(),
            crate::units::human_bytes(done),
            crate::units::human_bytes(total)
        );
        if self.timers.token.waiting() {
            s.push_str("; API TOKEN REFUSED, retrying");
        }
        if !self.root_held {
            s.push_str("; MIRROR ROOT UNUSABLE, retrying");
        }
        s
    }

    /// Sends the `STATUS=` line and writes the daemon row with it and the current rate.
    pub(super) async fn publish_status(&mut self) -> Result<(), DaemonError> {
        if let Some(ctx) = &self.ctx {
            let now = self.clock.now();
            let engine_id = Arc::as_ptr(&ctx.engine) as usize;
            let bytes = ctx.engine.progress().snapshot().bytes_done;
            if let Some((t, id, b)) = self.rate_sample {
                let secs = now.duration_since(t).as_secs_f64();
                if id == engine_id && secs > 0.5 {
                    self.row.bytes_per_s = Some((bytes.saturating_sub(b) as f64 / secs) as i64);
                }
            }
            self.rate_sample = Some((now, engine_id, bytes));
        } else {
            self.row.bytes_per_s = None;
        }
        let totals = self.journal.project_totals().unwrap_or_default();
        self.sample_projects(&totals);
        let status = self.status_line(&totals);
        self.notify.status(&status);
        self.row.status = Some(status);
        self.journal.put_daemon(self.row.clone()).await?;
        Ok(())
    }

    /// Updates the per-project rates and the time of the last progress from the journaled
    /// bytes of every project.
    fn sample_projects(&mut self, totals: &[ProjectTotals]) {
        let now = self.clock.now();
        let bytes: BTreeMap<ProjectId, u64> = totals
            .iter()
            .map(|t| (t.project.id.clone(), t.bytes_done))
            .collect();
        if let Some((then, before)) = &self.project_sample {
            let secs = now.duration_since(*then).as_secs_f64();
            let rates = project_rates(before, &bytes, secs, &self.running);
            if rates.values().any(|r| *r > 0) {
                self.row.live.last_progress_ms = Some(self.clock.now_ms());
            }
            self.row.live.project_bytes_per_s = rates;
        } else if self.row.live.last_progress_ms.is_none() {
            // Stalled is measured from the start until bytes first arrive.
            self.row.live.last_progress_ms = Some(self.row.started_ms);
        }
        self.project_sample = Some((now, bytes));
        let throttled = self.counters.snapshot().throttled_ms;
        self.row.live.throttled_now = throttled > self.row.live.throttled_ms;
        self.row.live.throttled_ms = throttled;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_needs_two_samples_of_a_running_project() {
        let (a, b, c) = (
            crate::model::testing::project_id(1),
            crate::model::testing::project_id(2),
            crate::model::testing::project_id(3),
        );
        let before = BTreeMap::from([(a.clone(), 1_000), (b.clone(), 5_000)]);
        let after = BTreeMap::from([(a.clone(), 11_000), (b.clone(), 4_000), (c.clone(), 9)]);
        let running = HashSet::from([a.clone(), b.clone(), c.clone()]);
        let rates = project_rates(&before, &after, 2.0, &running);
        // a: 10 000 bytes in 2 s; b went back (a reset): 0; c has one sample only.
        assert_eq!(
            rates,
            BTreeMap::from([(a.to_string(), 5_000), (b.to_string(), 0)])
        );
        // A project whose pass ended has no rate.
        let running = HashSet::from([b.clone()]);
        assert_eq!(
            project_rates(&before, &after, 2.0, &running),
            BTreeMap::from([(b.to_string(), 0)])
        );
        assert!(project_rates(&before, &after, 0.0, &running).is_empty());
    }

    #[test]
    fn the_same_error_within_ten_minutes_repeats() {
        let t = 1_000_000_000;
        assert!(is_repeat(Some("x"), Some(t), "x", t + 599_999));
        assert!(!is_repeat(Some("x"), Some(t), "x", t + 600_000));
        assert!(!is_repeat(Some("x"), Some(t), "y", t + 1));
        assert!(!is_repeat(None, None, "x", t));
        assert!(!is_repeat(Some("x"), None, "x", t));
    }
}
