//! The scheduled verification (`[verify] interval`): `verify::check`, the `dxmirror verify`
//! code, run on blocking threads when it is due and no pass runs; its report comes back as
//! `Event::VerifyDone`. Findings become journal error events; with `repair` the damaged files
//! go back into staging (`verify::repair_for_refetch`, only their damaged chunks reset) and
//! their projects are queued, so the next passes fetch only those chunks.
//!
//! It must not verify while a pass runs (a pass writes the files being checked), nor repair
//! files of a project whose pass is running.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use tracing::{error, info, instrument, warn};

use super::timers::{VerifyState, VerifyStep};
use super::{Daemon, DaemonError};
use crate::journal::EventLevel;
use crate::notifications::{Event, Kind};
use crate::verify::{self, VerifyReport};

impl Daemon {
    /// Starts the scheduled verification when it is due and no pass is running (a pass
    /// writes the files being checked); it runs in the background, on blocking threads, and
    /// ends as an `Event::VerifyDone`.
    pub(super) fn maybe_verify(&mut self, now: Instant) {
        if self.verify_task.is_none() && self.root_held {
            // `dxmirror verify PROJECT --queue`: as soon as no pass of it runs.
            let next = self
                .verify_requested
                .iter()
                .find(|p| !self.running.contains(*p))
                .cloned();
            if let Some(p) = next {
                self.verify_requested.remove(&p);
                let (state_dir, mirror_root) =
                    (self.cfg.state_dir.clone(), self.cfg.mirror_root.clone());
                info!(project_id = %p, "requested verification started");
                self.verify_task = Some(tokio::task::spawn_blocking(move || {
                    verify::check(&state_dir, &mirror_root, Some(&p))
                }));
                return;
            }
        }
        let every = self.cfg.verify.map(|v| v.interval);
        let state = VerifyState {
            running: self.verify_task.is_some(),
            root_held: self.root_held,
            passes_running: !self.running.is_empty(),
        };
        let step = self.timers.verify_step(now, every, state);
        if step != VerifyStep::Start {
            return;
        }
        let (state_dir, mirror_root) = (self.cfg.state_dir.clone(), self.cfg.mirror_root.clone());
        info!("scheduled verification of the mirror started");
        self.verify_task = Some(tokio::task::spawn_blocking(move || {
            verify::check(&state_dir, &mirror_root, None)
        }));
    }

    /// Records a scheduled verification's findings and, with `[verify] repair`, puts the
    /// damaged files back into staging and queues their projects, so that the next passes
    /// fetch only the damaged chunks again.
    #[instrument(skip_all)]
    pub(super) async fn verify_done(
        &mut self,
        result: Result<VerifyReport, String>,
    ) -> Result<(), DaemonError> {
        let mut report = match result {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "scheduled verification could not run");
                self.journal
                    .record_event(
                        EventLevel::Error,
                        None,
                        None,
                        format!("scheduled verification could not run: {e}"),
                    )
                    .await?;
                return Ok(());
            }
        };
        info!(
            files = report.files_checked,
            bytes = report.bytes_checked,
            findings = report.findings.len(),
            "scheduled verification done"
        );
        if report.is_clean() {
            return Ok(());
        }
        for f in &report.findings {
            error!(finding = %f, "verification found damage");
            self.journal
                .record_event(
                    EventLevel::Error,
                    Some(&f.project),
                    Some(&f.file_id),
                    format!("verify: {f}"),
                )
                .await?;
        }
        // One event per project: its damaged files (counted once however many checks each
        // failed) and its findings.
        let mut by_project: BTreeMap<_, (BTreeSet<_>, usize)> = BTreeMap::new();
        for f in &report.findings {
            let e = by_project.entry(f.project.clone()).or_default();
            e.0.insert(f.file_id.clone());
            e.1 += 1;
        }
        for (p, (files, findings)) in by_project {
            let mut ev = Event::new(
                Kind::VerifyFindings,
                format!(
                    "scheduled verification of {p}: {} damaged file(s), {findings} finding(s){}",
                    files.len(),
                    if self.cfg.verify.is_none_or(|v| v.repair) {
                        "; repairing"
                    } else {
                        ""
                    }
                ),
            )
            .project(&p);
            ev.files_failed = Some(files.len() as u64);
            if files.len() == 1 {
                ev.file = files.into_iter().next();
            }
            self.tell(ev).await?;
        }
        // A requested verification repairs too, unless `[verify] repair = false`.
        if !self.cfg.verify.is_none_or(|v| v.repair) {
            return Ok(());
        }
        // Files of a project with a pass running now are left for the next verification.
        match verify::repair_for_refetch(
            &self.journal,
            &self.cfg.mirror_root,
            self.cfg.audit_log.as_deref(),
            &mut report,
            &self.running,
        )
        .await
        {
            Ok(projects) => self.due.extend(projects),
            Err(e) => warn!(error = %e, "repair after verification failed"),
        }
        Ok(())
    }
}
