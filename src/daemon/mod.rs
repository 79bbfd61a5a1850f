//! `dxmirror daemon`: the long-running mirror. One main loop takes one [`Event`] at a time
//! (a timer tick, an inbox change, a reload, a finished project pass, shutdown) and decides
//! what runs next; the work itself is `sync::project_pass`, run as one task per project.
//!
//! It owns scheduling (discovery, re-listing, the inbox rescan, queue order, the bad-token
//! backoff), the daemon's row in the journal and its `sd_notify` messages. It must not do
//! transfers, selection or inbox parsing itself, nor delete anything: a revoked, expired or
//! removed project keeps its local copy until `dxmirror purge` is run.
//!
//! Everything is injected (config path, shutdown future, reload channel, notifier) so tests
//! run the daemon in-process.

pub mod sd_notify;
pub mod signals;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::{error, info, warn};

use crate::access::{access_notice, AccessNotice};
use crate::clock::{now_ms, Date};
use crate::config::{Config, ConfigError};
use crate::inbox::{self, InboxItem};
use crate::journal::{
    DaemonRow, DaemonState, EventLevel, FileState, Journal, JournalError, ProjectRow, ProjectState,
};
use crate::lock::{LockError, WriterLock};
use crate::model::{FileId, ProjectId};
use crate::platform::{ApiDisposition, PlatformError, ProjectQuery};
use crate::sync::{project_pass, PassContext, PassOptions, ProjectSummary, SyncError};
use crate::verify::{self, VerifyError, VerifyReport};

pub use sd_notify::Notifier;

/// First wait after the token was refused; doubled on every refusal up to [`TOKEN_BACKOFF_MAX`].
pub const TOKEN_BACKOFF_MIN: Duration = Duration::from_secs(5);
/// Longest wait between two tries of a refused token.
pub const TOKEN_BACKOFF_MAX: Duration = Duration::from_secs(15 * 60);
/// How often the `STATUS=` line and the daemon row are refreshed.
const STATUS_EVERY: Duration = Duration::from_secs(5);
/// First wait after the mirror root was found unusable (not mounted, not a directory, not
/// writable); doubled on every failure up to [`ROOT_RETRY_MAX`]. A reload retries at once.
pub const ROOT_RETRY_MIN: Duration = Duration::from_secs(5);
/// Longest wait between two looks at an unusable mirror root (a `stat`, so cheap).
pub const ROOT_RETRY_MAX: Duration = Duration::from_secs(60);

/// The daemon could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The config at start is unusable (a bad config on reload is refused, not fatal).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Another writer runs.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// The state directory is on a network file system.
    #[error(transparent)]
    StateDir(#[from] crate::journal::FsCheckError),
    /// The journal failed: progress can no longer be recorded.
    #[error("journal: {0}")]
    Journal(JournalError),
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
}

impl From<JournalError> for DaemonError {
    /// `Journal::open`'s refusal of the state directory is said as it is, not as a journal error.
    fn from(e: JournalError) -> DaemonError {
        match e {
            JournalError::StateDirFs(e) => DaemonError::StateDir(e),
            e => DaemonError::Journal(e),
        }
    }
}

/// Everything the main loop reacts to. Closed: there is no other source of work.
#[derive(Debug)]
pub enum Event {
    /// A timer is due (discovery, re-listing, inbox rescan, watchdog, status, token retry).
    Tick,
    /// Something changed in the watched drop-in directory.
    InboxChanged,
    /// SIGHUP: reload the config.
    Reload,
    /// A project pass ended.
    ProjectDone(ProjectId, Box<Result<ProjectSummary, SyncError>>),
    /// A scheduled verification of the mirror ended (with its report, or why it could not run).
    VerifyDone(Box<Result<VerifyReport, String>>),
    /// SIGTERM, SIGINT or the injected shutdown future.
    Shutdown,
}

/// Why a project is known to the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Source {
    Configured,
    Discovered,
    /// Dropped in the inbox as a whole project.
    Inbox,
    /// Known only through file ids dropped in the inbox: only those files are mirrored.
    InboxFiles,
    Journal,
}

/// Runs the daemon until `shutdown` resolves (or SIGTERM/SIGINT, which the caller wires into
/// `shutdown`); SIGHUP reloads the config. Returns `Ok` after a clean stop.
pub async fn run(
    cfg_path: PathBuf,
    shutdown: impl Future<Output = ()>,
    notify: Notifier,
) -> Result<(), DaemonError> {
    let reloads = signals::reloads().map_err(DaemonError::Signals)?;
    run_with(cfg_path, shutdown, reloads, notify).await
}

/// [`run`] with the reload requests injected (each `()` is one SIGHUP).
pub async fn run_with(
    cfg_path: PathBuf,
    shutdown: impl Future<Output = ()>,
    mut reloads: mpsc::Receiver<()>,
    notify: Notifier,
) -> Result<(), DaemonError> {
    let cfg = Config::load(&cfg_path)?;
    // The mirror root's lock is taken once the root is usable (it may be a mount that
    // appears later); until then the daemon runs, says why it waits, and retries.
    let lock = WriterLock::state(&cfg.state_dir)?;
    let journal = Journal::open(&cfg.state_dir)?;
    let run_id = journal.start_run("daemon").await?;
    let mut d = Daemon::new(cfg_path, cfg, journal.clone(), notify, lock);
    let result = d.main_loop(shutdown, &mut reloads).await;
    d.tasks.shutdown().await;
    d.row.state = DaemonState::Stopped;
    d.row.stopped_ms = Some(now_ms());
    let outcome = if result.is_ok() { "stopped" } else { "error" };
    let _ = d.journal.put_daemon(d.row.clone()).await;
    let _ = journal.end_run(run_id, outcome).await;
    d.ctx = None;
    journal.close().await?;
    info!(outcome, "daemon stopped");
    result
}

struct Daemon {
    cfg_path: PathBuf,
    cfg: Config,
    journal: Journal,
    notify: Notifier,
    /// The pass context of the config in force; `None` while the token is unusable.
    ctx: Option<Arc<PassContext>>,
    known: BTreeMap<ProjectId, Source>,
    due: BTreeSet<ProjectId>,
    force: HashMap<ProjectId, HashSet<FileId>>,
    /// The requested files of `Source::InboxFiles` projects.
    only: HashMap<ProjectId, HashSet<FileId>>,
    running: HashSet<ProjectId>,
    tasks: JoinSet<(ProjectId, Result<ProjectSummary, SyncError>)>,
    next_discovery: Instant,
    next_relist: Instant,
    next_rescan: Instant,
    next_status: Instant,
    next_watchdog: Option<Instant>,
    /// While the token is refused: when to try again, and the wait after that.
    token_retry: Option<(Instant, Duration)>,
    expiry_checked: Option<Date>,
    row: DaemonRow,
    inbox_rx: Option<mpsc::Receiver<()>>,
    /// The last rate sample: when, the engine it came from, its byte counter.
    rate_sample: Option<(Instant, usize, u64)>,
    watcher: Option<notify::RecommendedWatcher>,
    /// The writer lock: the state directory's from the start, the mirror root's once usable.
    lock: WriterLock,
    /// True once the mirror root's lock is held: no pass or verification runs before.
    root_held: bool,
    /// While the mirror root is unusable: when to look again, and the wait after that.
    root_retry: Option<(Instant, Duration)>,
    /// When the next scheduled verification is due (`[verify] interval`).
    next_verify: Option<Instant>,
    /// The verification running in the background, if any.
    verify_task: Option<tokio::task::JoinHandle<Result<VerifyReport, VerifyError>>>,
}

impl Daemon {
    fn new(
        cfg_path: PathBuf,
        cfg: Config,
        journal: Journal,
        notify: Notifier,
        lock: WriterLock,
    ) -> Daemon {
        let now = Instant::now();
        let row = DaemonRow {
            pid: std::process::id(),
            started_ms: now_ms(),
            state: DaemonState::Starting,
            ..DaemonRow::default()
        };
        let next_watchdog = notify.watchdog_interval().map(|_| now);
        Daemon {
            cfg_path,
            cfg,
            journal,
            notify,
            ctx: None,
            known: BTreeMap::new(),
            due: BTreeSet::new(),
            force: HashMap::new(),
            only: HashMap::new(),
            running: HashSet::new(),
            tasks: JoinSet::new(),
            next_discovery: now,
            next_relist: now,
            next_rescan: now,
            next_status: now,
            next_watchdog,
            token_retry: None,
            expiry_checked: None,
            row,
            inbox_rx: None,
            rate_sample: None,
            watcher: None,
            next_verify: None,
            verify_task: None,
            lock,
            root_held: false,
            root_retry: None,
        }
    }

    /// The daemon's state for its journal row: a refused token first, then a mirror root it
    /// waits for.
    fn state_word(&self) -> DaemonState {
        if self.token_retry.is_some() {
            DaemonState::BadToken
        } else if !self.root_held {
            DaemonState::WaitingForMirrorRoot
        } else {
            DaemonState::Running
        }
    }

    /// Takes the mirror root's writer lock if the root is usable now; if it is not (not
    /// mounted, not a directory, not writable), records why and looks again after a backoff.
    /// Another writer holding the root's lock stops the daemon, as at start.
    async fn take_mirror_root(&mut self) -> Result<(), DaemonError> {
        if self.root_held {
            return Ok(());
        }
        match self.lock.add_mirror_root(&self.cfg.mirror_root) {
            Ok(()) => {
                self.root_held = true;
                if self.root_retry.take().is_some() {
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
                let wait = match self.root_retry {
                    Some((_, w)) => (w * 2).min(ROOT_RETRY_MAX),
                    None => ROOT_RETRY_MIN,
                };
                error!(error = %e, retry_in_s = wait.as_secs(), "mirror root unusable: no transfer runs until it is");
                self.root_retry = Some((Instant::now() + wait, wait));
                self.record_error(e.to_string()).await
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn main_loop(
        &mut self,
        shutdown: impl Future<Output = ()>,
        reloads: &mut mpsc::Receiver<()>,
    ) -> Result<(), DaemonError> {
        tokio::pin!(shutdown);
        // Every step may wait on the network or the journal: shutdown interrupts it (an
        // abandoned step loses nothing the journal claims) and the watchdog keeps being fed
        // while the loop itself is responsive.
        let notify = self.notify.clone();
        let wd = notify.watchdog_interval();
        // Ready once the lock and the journal are ours: the first API call may wait on a
        // network outage, which must not look like a failed start to systemd.
        notify.ready("starting: checking the API token");
        match guarded(&mut shutdown, &notify, wd, self.start()).await {
            None => return self.stop_requested(),
            Some(r) => r?,
        }
        loop {
            let deadline = self.next_deadline();
            let has_tasks = !self.tasks.is_empty();
            let event = tokio::select! {
                biased;
                _ = &mut shutdown => Event::Shutdown,
                Some(()) = reloads.recv() => Event::Reload,
                Some(joined) = self.tasks.join_next(), if has_tasks => match joined {
                    Ok((p, r)) => Event::ProjectDone(p, Box::new(r)),
                    Err(e) => {
                        error!(error = %e, "a project task panicked");
                        Event::Tick
                    }
                },
                Some(()) = recv_opt(&mut self.inbox_rx) => Event::InboxChanged,
                Some(done) = join_opt(&mut self.verify_task) => Event::VerifyDone(Box::new(match done {
                    Ok(Ok(report)) => Ok(report),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(e) => Err(format!("the verification task failed: {e}")),
                })),
                _ = tokio::time::sleep_until(deadline.into()) => Event::Tick,
            };
            if matches!(event, Event::Shutdown) {
                return self.stop_requested();
            }
            match guarded(&mut shutdown, &notify, wd, self.step(event)).await {
                None => return self.stop_requested(),
                Some(r) => r?,
            }
        }
    }

    fn stop_requested(&self) -> Result<(), DaemonError> {
        self.notify
            .stopping("stopping: interrupting transfers (their progress is journaled)");
        info!(running = self.running.len(), "stopping");
        Ok(())
    }

    async fn start(&mut self) -> Result<(), DaemonError> {
        self.take_mirror_root().await?;
        self.build_context().await?;
        for p in self.cfg.projects.clone() {
            self.known.insert(p, Source::Configured);
        }
        for (p, f) in self.journal.requests()? {
            match f {
                None => {
                    self.known.entry(p).or_insert(Source::Inbox);
                }
                Some(f) => {
                    self.only.entry(p).or_default().insert(f);
                }
            }
        }
        for p in self.only.keys() {
            self.known.entry(p.clone()).or_insert(Source::InboxFiles);
        }
        for p in self.journal.projects()? {
            self.known.entry(p.id).or_insert(Source::Journal);
        }
        self.start_watch();
        self.row.state = self.state_word();
        self.journal.put_daemon(self.row.clone()).await?;
        info!(config = %self.cfg_path.display(), projects = self.known.len(), discovery = self.cfg.discovery.enabled, "daemon started");
        Ok(())
    }

    /// Handles one event, then the due timers, then starts what may start.
    async fn step(&mut self, event: Event) -> Result<(), DaemonError> {
        match event {
            Event::Shutdown | Event::Tick => {}
            Event::Reload => self.reload().await?,
            Event::ProjectDone(p, r) => self.project_done(p, *r).await?,
            Event::VerifyDone(r) => self.verify_done(*r).await?,
            Event::InboxChanged => {
                // Coalesce a burst of file events into one scan.
                if let Some(rx) = self.inbox_rx.as_mut() {
                    while rx.try_recv().is_ok() {}
                }
                self.scan_inbox().await?;
            }
        }
        self.on_timers().await?;
        self.schedule();
        Ok(())
    }

    fn next_deadline(&self) -> Instant {
        let mut d = self.next_status;
        if self.token_retry.is_none() {
            if self.cfg.discovery.enabled {
                d = d.min(self.next_discovery);
            }
            d = d.min(self.next_relist);
        }
        if self.cfg.watch.is_some() {
            d = d.min(self.next_rescan);
        }
        if let Some(w) = self.next_watchdog {
            d = d.min(w);
        }
        if let Some((at, _)) = self.token_retry {
            d = d.min(at);
        }
        if let Some((at, _)) = self.root_retry {
            d = d.min(at);
        }
        if let Some(v) = self.next_verify {
            d = d.min(v);
        }
        d
    }

    /// Everything whose time has come.
    async fn on_timers(&mut self) -> Result<(), DaemonError> {
        let now = Instant::now();
        if let (Some(at), Some(every)) = (self.next_watchdog, self.notify.watchdog_interval()) {
            if now >= at {
                self.notify.watchdog();
                self.next_watchdog = Some(now + every);
            }
        }
        if let Some((at, _)) = self.root_retry {
            if now >= at {
                self.take_mirror_root().await?;
                let word = self.state_word();
                if self.row.state != word {
                    self.row.state = word;
                    self.journal.put_daemon(self.row.clone()).await?;
                }
            }
        }
        if let Some((at, _)) = self.token_retry {
            if now >= at {
                info!("trying the API token again");
                self.build_context().await?;
            }
        }
        if self.token_retry.is_none() {
            if self.cfg.discovery.enabled && now >= self.next_discovery {
                self.next_discovery = now + self.cfg.discovery.interval;
                self.discover().await?;
            }
            if now >= self.next_relist {
                self.next_relist = now + self.cfg.relist_interval;
                let all: Vec<ProjectId> = self.known.keys().cloned().collect();
                self.due.extend(all);
            }
        }
        if let Some(w) = &self.cfg.watch {
            if now >= self.next_rescan {
                self.next_rescan = now + w.rescan;
                self.scan_inbox().await?;
            }
        }
        if self.expiry_checked != Some(Date::today()) {
            self.expiry_checked = Some(Date::today());
            self.check_expiry().await?;
        }
        self.maybe_verify(now);
        if now >= self.next_status {
            self.next_status = now + STATUS_EVERY;
            self.publish_status().await?;
        }
        Ok(())
    }

    /// Starts the scheduled verification when it is due and no pass is running (a pass
    /// writes the files being checked); it runs in the background, on blocking threads, and
    /// ends as an `Event::VerifyDone`.
    fn maybe_verify(&mut self, now: Instant) {
        let Some(every) = self.cfg.verify.map(|v| v.interval) else {
            self.next_verify = None;
            return;
        };
        let due = *self.next_verify.get_or_insert(now + every);
        if now < due || self.verify_task.is_some() {
            return;
        }
        if !self.root_held {
            // Nothing to verify on a root that is not there; look again at the interval.
            self.next_verify = Some(now + every);
            return;
        }
        if !self.running.is_empty() {
            // Busy: look again in a minute (or at the interval, if shorter).
            self.next_verify = Some(now + every.min(Duration::from_secs(60)));
            return;
        }
        self.next_verify = Some(now + every);
        let (state_dir, mirror_root) = (self.cfg.state_dir.clone(), self.cfg.mirror_root.clone());
        info!("scheduled verification of the mirror started");
        self.verify_task = Some(tokio::task::spawn_blocking(move || {
            verify::check(&state_dir, &mirror_root, None)
        }));
    }

    /// Records a scheduled verification's findings and, with `[verify] repair`, puts the
    /// damaged files back into staging and queues their projects, so that the next passes
    /// fetch only the damaged chunks again.
    async fn verify_done(
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
        if !self.cfg.verify.is_some_and(|v| v.repair) {
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

    /// (Re)builds the pass context from the config in force; a missing or refused token
    /// pauses the daemon with a backoff instead of stopping it.
    async fn build_context(&mut self) -> Result<(), DaemonError> {
        let ctx = match PassContext::new(self.cfg.clone(), self.journal.clone()) {
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
                if self.token_retry.take().is_some() {
                    info!("the API token is accepted again; resuming");
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

    async fn token_failed(&mut self, message: String) -> Result<(), DaemonError> {
        if let Some((at, _)) = self.token_retry {
            if Instant::now() < at {
                // Already paused: another pass that was still running hit the same refusal.
                self.ctx = None;
                return Ok(());
            }
        }
        let wait = match self.token_retry {
            Some((_, w)) => (w * 2).min(TOKEN_BACKOFF_MAX),
            None => TOKEN_BACKOFF_MIN,
        };
        error!(error = %message, retry_in_s = wait.as_secs(), "API token unusable: no transfer runs until it is fixed (replace the token file or credential; it is re-read at every try)");
        self.token_retry = Some((Instant::now() + wait, wait));
        self.ctx = None;
        self.row.state = DaemonState::BadToken;
        self.record_error(message).await
    }

    async fn record_error(&mut self, message: String) -> Result<(), DaemonError> {
        // The same error again within ten minutes of its last occurrence (a relist of an
        // inaccessible project, a token retry) adds no event: the history stays readable.
        let repeat = self.row.last_error.as_deref() == Some(message.as_str())
            && self
                .row
                .last_error_ms
                .is_some_and(|t| now_ms() - t < 600_000);
        self.row.last_error = Some(message.clone());
        self.row.last_error_ms = Some(now_ms());
        self.journal.put_daemon(self.row.clone()).await?;
        if !repeat {
            self.journal
                .record_event(EventLevel::Error, None, None, message)
                .await?;
        }
        Ok(())
    }

    async fn discover(&mut self) -> Result<(), DaemonError> {
        let Some(ctx) = self.ctx.clone() else {
            return Ok(());
        };
        let d = &self.cfg.discovery;
        let q = ProjectQuery {
            level: d.level.clone(),
            name_glob: d.name.clone(),
            tags: d.tags.clone(),
            properties: d.properties.clone(),
        };
        let started = Instant::now();
        let found = match ctx.client.find_projects(&q).await {
            Ok(found) => found,
            Err(e) => return self.api_failure("discovery", e).await,
        };
        self.row.last_discovery_ms = Some(now_ms());
        let mut new = 0usize;
        for p in found {
            if p.download_restricted {
                let known = self.journal.project(&p.id)?;
                if known
                    .as_ref()
                    .is_none_or(|k| k.state != ProjectState::Restricted)
                {
                    let msg = format!(
                        "project {} ({:?}) is download-restricted: it is never downloaded",
                        p.id, p.name
                    );
                    warn!(project_id = %p.id, "discovered a download-restricted project; it is reported, not mirrored");
                    let mut row =
                        ProjectRow::new(p.id.clone(), ProjectState::Restricted, Some(msg.clone()));
                    row.name = p.name.clone();
                    row.download_restricted = true;
                    self.journal.upsert_project(row).await?;
                    self.journal
                        .record_event(EventLevel::Warn, Some(&p.id), None, msg)
                        .await?;
                }
                self.known.remove(&p.id);
                self.due.remove(&p.id);
                continue;
            }
            if self.known.get(&p.id) == Some(&Source::InboxFiles) {
                // Now visible as a whole project: mirror all of it.
                self.known.insert(p.id.clone(), Source::Discovered);
                self.due.insert(p.id.clone());
            }
            if !self.known.contains_key(&p.id) {
                new += 1;
                info!(project_id = %p.id, name = %p.name, "new project discovered; queued");
                self.journal
                    .record_event(
                        EventLevel::Info,
                        Some(&p.id),
                        None,
                        format!("discovered project {:?}; queued", p.name),
                    )
                    .await?;
                self.known.insert(p.id.clone(), Source::Discovered);
                self.due.insert(p.id);
            }
        }
        info!(
            new,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "discovery done"
        );
        self.journal.put_daemon(self.row.clone()).await?;
        Ok(())
    }

    async fn api_failure(&mut self, what: &str, e: PlatformError) -> Result<(), DaemonError> {
        if e.api_disposition() == ApiDisposition::BadToken {
            return self
                .token_failed(format!("the DNAnexus API rejected the token: {e}"))
                .await;
        }
        warn!(error = %e, what, "API call failed; will retry at the next interval");
        self.record_error(format!("{what}: {e}")).await
    }

    async fn scan_inbox(&mut self) -> Result<(), DaemonError> {
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
                    self.next_rescan = self
                        .next_rescan
                        .min(Instant::now() + inbox::DEFAULT_MIN_AGE);
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
    fn start_watch(&mut self) {
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

    async fn check_expiry(&mut self) -> Result<(), DaemonError> {
        let today = Date::today();
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
                .record_event(EventLevel::Warn, Some(&p), None, msg)
                .await?;
        }
        Ok(())
    }

    async fn reload(&mut self) -> Result<(), DaemonError> {
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
                if self.root_retry.is_some() {
                    self.take_mirror_root().await?;
                    self.row.state = self.state_word();
                }
                self.build_context().await?;
                if watch_changed {
                    self.start_watch();
                }
                let now = Instant::now();
                self.next_discovery = now;
                self.journal
                    .record_event(EventLevel::Info, None, None, "config reloaded".into())
                    .await?;
            }
        }
        let status = self.status_line();
        self.notify.ready(&status);
        Ok(())
    }

    async fn project_done(
        &mut self,
        p: ProjectId,
        r: Result<ProjectSummary, SyncError>,
    ) -> Result<(), DaemonError> {
        self.running.remove(&p);
        match r {
            Ok(s) => {
                if let Some(err) = &s.error {
                    warn!(project_id = %p, error = %err, "project pass ended with an error");
                    if let Some(row) = self.journal.project(&p)? {
                        if matches!(row.state, ProjectState::Inaccessible | ProjectState::Gone) {
                            self.record_error(format!("project {p}: {err}")).await?;
                        }
                    }
                } else {
                    info!(project_id = %p, verified = s.verified, fetched_now = s.fetched_now, bytes_now = s.bytes_now, problems = s.problems.len(), "project pass done");
                }
            }
            Err(SyncError::BadToken(m)) => {
                self.token_failed(format!("the DNAnexus API rejected the token: {m}"))
                    .await?;
                self.due.insert(p);
            }
            Err(SyncError::Transfer(crate::transfer::TransferError::BadToken(m))) => {
                self.token_failed(format!("the DNAnexus API rejected the token: {m}"))
                    .await?;
                self.due.insert(p);
            }
            Err(SyncError::Journal(e)) => return Err(DaemonError::Journal(e)),
            Err(SyncError::Transfer(crate::transfer::TransferError::Journal(e))) => {
                return Err(DaemonError::Journal(e))
            }
            Err(e) => {
                error!(project_id = %p, error = %e, "project pass failed; retried at the next re-listing");
                self.record_error(format!("project {p}: {e}")).await?;
            }
        }
        self.publish_status().await
    }

    /// Starts passes: the highest priority first; projects of the same priority run together
    /// and share the connections (each pass gets an equal share of file slots when it
    /// starts); a lower priority waits while a higher one is queued or running.
    fn schedule(&mut self) {
        let Some(ctx) = self.ctx.clone() else {
            return;
        };
        if self.token_retry.is_some() || !self.root_held {
            return;
        }
        let prio = |p: &ProjectId| self.cfg.settings(p).priority;
        let (start, share) = pick(&self.due, &self.running, &prio, self.cfg.max_connections);
        for p in start {
            self.due.remove(&p);
            self.running.insert(p.clone());
            let only = match self.known.get(&p) {
                Some(Source::InboxFiles) => Some(self.only.get(&p).cloned().unwrap_or_default()),
                _ => None,
            };
            let opts = PassOptions {
                max_files: share,
                force: self.force.remove(&p).unwrap_or_default(),
                only,
            };
            let ctx = ctx.clone();
            info!(project_id = %p, priority = prio(&p), max_files = share, "project pass started");
            self.tasks.spawn(async move {
                let r = project_pass(&ctx, &p, &opts).await;
                (p, r)
            });
        }
    }

    fn status_line(&self) -> String {
        let totals = self.journal.project_totals().unwrap_or_default();
        let (mut done, mut total, mut files, mut verified) = (0u64, 0u64, 0u64, 0u64);
        for t in &totals {
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
        if self.token_retry.is_some() {
            s.push_str("; API TOKEN REFUSED, retrying");
        }
        if !self.root_held {
            s.push_str("; MIRROR ROOT UNUSABLE, retrying");
        }
        s
    }

    async fn publish_status(&mut self) -> Result<(), DaemonError> {
        if let Some(ctx) = &self.ctx {
            let now = Instant::now();
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
        let status = self.status_line();
        self.notify.status(&status);
        self.row.status = Some(status);
        self.journal.put_daemon(self.row.clone()).await?;
        Ok(())
    }
}

/// The queue order: which queued projects start now, and the file slots each gets. A project
/// starts when its priority is at least the highest among queued and running ones; equal
/// priorities run together; at most `max_connections` passes run; the slots are an equal
/// share of `max_connections` among the passes running.
fn pick(
    due: &BTreeSet<ProjectId>,
    running: &HashSet<ProjectId>,
    prio: &dyn Fn(&ProjectId) -> i64,
    max_connections: usize,
) -> (Vec<ProjectId>, usize) {
    let candidates: Vec<&ProjectId> = due.iter().filter(|p| !running.contains(*p)).collect();
    let Some(top) = candidates
        .iter()
        .copied()
        .chain(running.iter())
        .map(prio)
        .max()
    else {
        return (Vec::new(), 0);
    };
    let max_conn = max_connections.max(1);
    let mut start: Vec<ProjectId> = candidates
        .into_iter()
        .filter(|p| prio(p) >= top)
        .cloned()
        .collect();
    // Among equals, the queue is in id order; stable across ticks.
    start.truncate(max_conn.saturating_sub(running.len()));
    let share = (max_conn / (running.len() + start.len()).max(1)).max(1);
    (start, share)
}

/// Runs `work` unless shutdown comes first (`None`), feeding the watchdog meanwhile.
async fn guarded<T>(
    shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
    notify: &Notifier,
    watchdog: Option<Duration>,
    work: impl Future<Output = T>,
) -> Option<T> {
    tokio::pin!(work);
    loop {
        let feed = async {
            match watchdog {
                Some(w) => tokio::time::sleep(w).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = shutdown.as_mut() => return None,
            r = &mut work => return Some(r),
            _ = feed => notify.watchdog(),
        }
    }
}

/// Awaits a background task if there is one (then forgets it); never resolves otherwise.
async fn join_opt<T>(
    task: &mut Option<tokio::task::JoinHandle<T>>,
) -> Option<Result<T, tokio::task::JoinError>> {
    match task {
        Some(handle) => {
            let res = handle.await;
            *task = None;
            Some(res)
        }
        None => std::future::pending().await,
    }
}

async fn recv_opt(rx: &mut Option<mpsc::Receiver<()>>) -> Option<()> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pid(n: u8) -> ProjectId {
        format!("project-{}", format!("{n:02}").repeat(12))
            .parse()
            .unwrap()
    }

    #[test]
    fn higher_priority_first_equal_priorities_share() {
        let (a, b, c) = (pid(1), pid(2), pid(3));
        let prio = |p: &ProjectId| if *p == c { 10 } else { 0 };
        let due: BTreeSet<ProjectId> = [a.clone(), b.clone(), c.clone()].into();
        let (start, share) = pick(&due, &HashSet::new(), &prio, 16);
        assert_eq!(start, vec![c.clone()]);
        assert_eq!(share, 16);
        // While the high-priority project runs, the others wait.
        let running: HashSet<ProjectId> = [c.clone()].into();
        let due: BTreeSet<ProjectId> = [a.clone(), b.clone()].into();
        assert!(pick(&due, &running, &prio, 16).0.is_empty());
        // Then the two equal ones start together with half the connections each.
        let (start, share) = pick(&due, &HashSet::new(), &prio, 16);
        assert_eq!(start, vec![a, b]);
        assert_eq!(share, 8);
    }

    #[test]
    fn never_more_passes_than_connections() {
        let due: BTreeSet<ProjectId> = (1..=5).map(pid).collect();
        let (start, share) = pick(&due, &HashSet::new(), &|_| 0, 2);
        assert_eq!(start.len(), 2);
        assert_eq!(share, 1);
    }
}
