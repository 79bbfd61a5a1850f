//! `dxmirror daemon`: the long-running mirror. One main loop takes one [`Event`] at a time
//! (a timer tick, an inbox change, a reload, a finished project pass, a finished verification,
//! shutdown) and decides what runs next; the work itself is `pass::project_pass`, run as one
//! task per project.
//!
//! It owns scheduling (discovery, re-listing, the inbox rescan, queue order, the bad-token
//! and mirror-root backoffs), the daemon's row in the journal and its `sd_notify` messages.
//! It must not do transfers, selection or inbox parsing itself, nor delete anything: a
//! revoked, expired or removed project keeps its local copy until `dxmirror purge` is run.
//!
//! This file holds the loop: start-up, one [`Event`] at a time, the due timers, shutdown.
//! Each concern the loop calls into has a file of its own: `timers` (pure: when each timer is
//! due, on an injected clock), `root` (waiting for a usable mirror root), `token` (the pass
//! context and a refused token), `discovery`, `watch` (the inbox), `verify` (the scheduled
//! verification), `expiry` (`access-expires`), `metrics` (the endpoint's task), `alerts` (what is notified), `reload`, `schedule` (finished passes and the
//! queue order) and `status` (the daemon's journal row and `STATUS=` line).
//!
//! Everything is injected (config path, shutdown future, reload channel, notifier, and inside
//! the crate the clock) so tests run the daemon in-process.

mod alerts;
mod control;
mod discovery;
mod expiry;
mod metrics;
mod reload;
mod root;
mod schedule;
pub mod sd_notify;
pub mod signals;
mod status;
mod timers;
mod token;
mod verify;
mod watch;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::{error, info};

use crate::bandwidth::Bandwidth;
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, ConfigError};
use crate::counters::Counters;
use crate::journal::{DaemonRow, DaemonState, Journal, JournalError};
use crate::lock::{LockError, WriterLock};
use crate::metrics::MetricsSource;
use crate::model::{FileId, ProjectId};
use crate::notifications::{Edges, Notifications};
use crate::pass::{PassContext, ProjectSummary, SyncError};
use crate::verify::{VerifyError, VerifyReport};

pub use sd_notify::Notifier;
pub use timers::{ROOT_RETRY_MAX, ROOT_RETRY_MIN, TOKEN_BACKOFF_MAX, TOKEN_BACKOFF_MIN};

use timers::{Armed, Timer, Timers};

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
    /// A notification sink could not be set up at start.
    #[error(transparent)]
    Notify(crate::notifications::NotifyError),
    /// The metrics endpoint could not listen at start.
    #[error(transparent)]
    Metrics(crate::metrics::MetricsError),
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
    /// A timer is due (discovery, re-listing, inbox rescan, watchdog, status, token retry,
    /// mirror-root retry, scheduled verification, the daily expiry check).
    Tick,
    /// Something changed in the watched drop-in directory.
    InboxChanged,
    /// SIGHUP: reload the config.
    Reload,
    /// A project pass ended.
    ProjectDone(ProjectId, Box<Result<ProjectSummary, SyncError>>),
    /// A scheduled verification of the mirror ended (with its report, or why it could not run).
    VerifyDone(Box<Result<VerifyReport, String>>),
    /// A request of the control socket (`dxmirror pause`, ...).
    Control(Box<control::ControlMsg>),
    /// A pass interrupted by `dxmirror pause` ended.
    PassStopped(ProjectId),
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
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let cfg = Config::load(&cfg_path)?;
    // The mirror root's lock is taken once the root is usable (it may be a mount that
    // appears later); until then the daemon runs, says why it waits, and retries.
    let lock = WriterLock::state(&cfg.state_dir)?;
    let journal = Journal::open(&cfg.state_dir)?;
    let run_id = journal.start_run("daemon").await?;
    let mut d = Daemon::new(cfg_path, cfg, journal.clone(), notify, lock, clock);
    let result = match d.follow_metrics(true).await {
        Ok(()) => match d.follow_notify(true).await {
            Ok(()) => d.main_loop(shutdown, &mut reloads).await,
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    d.stop_metrics();
    // Undelivered notifications stay in the outbox for the next start.
    d.notifications = None;
    d.tasks.shutdown().await;
    if let Some(task) = d.control_task.take() {
        task.abort();
        let _ = std::fs::remove_file(crate::ipc::socket_path(&d.cfg.state_dir));
    }
    d.row.state = DaemonState::Stopped;
    d.row.stopped_ms = Some(d.clock.now_ms());
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
    /// Where the daemon reads the time.
    clock: Arc<dyn Clock>,
    /// The pass context of the config in force; `None` while the token is unusable.
    ctx: Option<Arc<PassContext>>,
    /// The rate limiters (`bwlimit`): one set for the daemon's life, so that a reload changes
    /// the rate of the transfers already running on an older pass context.
    bandwidth: Arc<Bandwidth>,
    known: BTreeMap<ProjectId, Source>,
    due: BTreeSet<ProjectId>,
    force: HashMap<ProjectId, HashSet<FileId>>,
    /// The requested files of `Source::InboxFiles` projects.
    only: HashMap<ProjectId, HashSet<FileId>>,
    running: HashSet<ProjectId>,
    tasks: JoinSet<(ProjectId, Result<ProjectSummary, SyncError>)>,
    /// Every deadline, the token and mirror-root backoffs included.
    timers: Timers,
    row: DaemonRow,
    inbox_rx: Option<mpsc::Receiver<()>>,
    /// The last rate sample: when, the engine it came from, its byte counter.
    rate_sample: Option<(Instant, usize, u64)>,
    /// The last per-project sample: when, and each project's journaled bytes.
    project_sample: Option<(Instant, BTreeMap<ProjectId, u64>)>,
    watcher: Option<notify::RecommendedWatcher>,
    /// The writer lock: the state directory's from the start, the mirror root's once usable.
    lock: WriterLock,
    /// True once the mirror root's lock is held: no pass or verification runs before.
    root_held: bool,
    /// The verification running in the background, if any.
    verify_task: Option<tokio::task::JoinHandle<Result<VerifyReport, VerifyError>>>,
    /// What every client and engine of this daemon counts into (kept across reloads).
    counters: Arc<Counters>,
    /// What the metrics endpoint reads.
    metrics: Arc<MetricsSource>,
    /// The metrics endpoint's address and task, while it listens.
    metrics_task: Option<(std::net::SocketAddr, tokio::task::JoinHandle<()>)>,
    /// The notification sinks in force and the `[notify]` they were built from.
    notifications: Option<Notifications>,
    notify_cfg: Option<crate::config::NotifyConfig>,
    /// Conditions already told (one notification per change).
    edges: Edges,
    /// The stall and throttle clocks.
    watch: alerts::Watch,
    /// Projects whose pass started since the last `pass-start` events.
    started: Vec<ProjectId>,
    /// Projects paused by `dxmirror pause` (restored from the journal at start).
    paused: BTreeSet<ProjectId>,
    /// `dxmirror pause --all`.
    paused_all: bool,
    /// How to interrupt each running pass, and which task is which project's.
    aborts: HashMap<ProjectId, tokio::task::AbortHandle>,
    task_projects: HashMap<tokio::task::Id, ProjectId>,
    /// Projects `dxmirror verify --queue` asked to verify.
    verify_requested: BTreeSet<ProjectId>,
    /// Requests of the control socket, while it listens.
    control_rx: Option<mpsc::Receiver<control::ControlMsg>>,
    control_task: Option<tokio::task::JoinHandle<()>>,
}

impl Daemon {
    fn new(
        cfg_path: PathBuf,
        cfg: Config,
        journal: Journal,
        notify: Notifier,
        lock: WriterLock,
        clock: Arc<dyn Clock>,
    ) -> Daemon {
        let row = DaemonRow {
            pid: std::process::id(),
            started_ms: clock.now_ms(),
            state: DaemonState::Starting,
            ..DaemonRow::default()
        };
        let timers = Timers::new(clock.now(), notify.watchdog_interval());
        let counters = Arc::new(Counters::default());
        let metrics = Arc::new(MetricsSource::new(
            counters.clone(),
            journal.clone(),
            cfg.clone(),
        ));
        let bandwidth = crate::pass::bandwidth_for(&cfg, clock.clone());
        Daemon {
            counters,
            metrics,
            metrics_task: None,
            notifications: None,
            notify_cfg: None,
            edges: Edges::default(),
            watch: alerts::Watch::default(),
            started: Vec::new(),
            cfg_path,
            bandwidth,
            cfg,
            journal,
            notify,
            clock,
            ctx: None,
            known: BTreeMap::new(),
            due: BTreeSet::new(),
            force: HashMap::new(),
            only: HashMap::new(),
            running: HashSet::new(),
            tasks: JoinSet::new(),
            timers,
            row,
            inbox_rx: None,
            rate_sample: None,
            project_sample: None,
            watcher: None,
            verify_task: None,
            lock,
            root_held: false,
            paused: BTreeSet::new(),
            paused_all: false,
            aborts: HashMap::new(),
            task_projects: HashMap::new(),
            verify_requested: BTreeSet::new(),
            control_rx: None,
            control_task: None,
        }
    }

    /// The periodic timers the config in force arms.
    fn armed(&self) -> Armed {
        Armed::new(&self.cfg, self.notify.watchdog_interval())
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
            let deadline = self.timers.next_deadline(&self.armed());
            let has_tasks = !self.tasks.is_empty();
            let event = tokio::select! {
                biased;
                _ = &mut shutdown => Event::Shutdown,
                Some(()) = reloads.recv() => Event::Reload,
                Some(joined) = self.tasks.join_next_with_id(), if has_tasks => match joined {
                    Ok((id, (p, r))) => {
                        self.task_projects.remove(&id);
                        Event::ProjectDone(p, Box::new(r))
                    }
                    Err(e) => match self.task_projects.remove(&e.id()) {
                        Some(p) if e.is_cancelled() => Event::PassStopped(p),
                        p => {
                            error!(error = %e, project_id = ?p, "a project task panicked");
                            if let Some(p) = p {
                                self.running.remove(&p);
                                self.aborts.remove(&p);
                            }
                            Event::Tick
                        }
                    },
                },
                Some(msg) = recv_control(&mut self.control_rx) => Event::Control(Box::new(msg)),
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
        self.restore_pauses()?;
        match control::listen(&self.cfg.state_dir) {
            Ok((rx, task)) => {
                self.control_rx = Some(rx);
                self.control_task = Some(task);
            }
            // The mirroring goes on without it; `dxmirror pause` and friends say so.
            Err(e) => {
                error!(error = %e, "cannot open the control socket; pause, resume, bwlimit, relist and verify --queue are unavailable")
            }
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
            Event::Control(msg) => self.control(*msg).await?,
            Event::PassStopped(p) => {
                self.running.remove(&p);
                self.aborts.remove(&p);
                info!(project_id = %p, "project pass interrupted (paused)");
                // Queued again, so that it starts once resumed.
                self.due.insert(p);
            }
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
        self.tell_passes_started().await?;
        self.metrics_queue();
        Ok(())
    }

    /// Everything whose time has come, in this order: watchdog, mirror-root retry, token
    /// retry, discovery and re-listing (not while the token is refused), inbox rescan,
    /// expiry, scheduled verification, status.
    async fn on_timers(&mut self) -> Result<(), DaemonError> {
        let now = self.clock.now();
        let armed = self.armed();
        if self.timers.take_due(Timer::Watchdog, now, &armed) {
            self.notify.watchdog();
        }
        if self.timers.root.due(now) {
            self.take_mirror_root().await?;
            let word = self.state_word();
            if self.row.state != word {
                self.row.state = word;
                self.journal.put_daemon(self.row.clone()).await?;
            }
        }
        if self.timers.token.due(now) {
            info!("trying the API token again");
            self.build_context().await?;
        }
        // Both are decided before discovery runs: a token refused during discovery still
        // lets this round's re-listing queue the projects (they start once it is accepted).
        let discover = self.timers.take_due(Timer::Discovery, now, &armed);
        let relist = self.timers.take_due(Timer::Relist, now, &armed);
        if discover {
            self.discover().await?;
        }
        if relist {
            let all: Vec<ProjectId> = self.known.keys().cloned().collect();
            self.due.extend(all);
        }
        if self.timers.take_due(Timer::Rescan, now, &armed) {
            self.scan_inbox().await?;
        }
        let today = self.clock.today();
        if self.timers.expiry_due(today) {
            self.check_expiry(today).await?;
        }
        self.maybe_verify(now);
        if self.timers.take_due(Timer::Status, now, &armed) {
            self.publish_status().await?;
            self.tell_conditions().await?;
        }
        Ok(())
    }
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

async fn recv_control(
    rx: &mut Option<mpsc::Receiver<control::ControlMsg>>,
) -> Option<control::ControlMsg> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn recv_opt(rx: &mut Option<mpsc::Receiver<()>>) -> Option<()> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}
