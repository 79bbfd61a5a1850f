//! The daemon's timers: when discovery, re-listing, the inbox rescan, the watchdog, the status
//! line, the scheduled verification and the daily expiry check are due, and the two backoffs
//! (a refused token, an unusable mirror root).
//!
//! Pure: every method is handed the time, read by the daemon from its
//! [`Clock`](crate::clock::Clock), so the unit tests move a manual clock instead of waiting.
//! It decides only *when*; what runs once a timer is due is the daemon's (`on_timers`).

use std::time::{Duration, Instant};

use crate::clock::Date;
use crate::config::Config;

/// First wait after the token was refused; doubled on every refusal up to [`TOKEN_BACKOFF_MAX`].
pub const TOKEN_BACKOFF_MIN: Duration = Duration::from_secs(5);
/// Longest wait between two tries of a refused token.
pub const TOKEN_BACKOFF_MAX: Duration = Duration::from_secs(15 * 60);
/// First wait after the mirror root was found unusable (not mounted, not a directory, not
/// writable); doubled on every failure up to [`ROOT_RETRY_MAX`]. A reload retries at once.
pub const ROOT_RETRY_MIN: Duration = Duration::from_secs(5);
/// Longest wait between two looks at an unusable mirror root (a `stat`, so cheap).
pub const ROOT_RETRY_MAX: Duration = Duration::from_secs(60);
/// How often the `STATUS=` line and the daemon row are refreshed.
const STATUS_EVERY: Duration = Duration::from_secs(5);
/// How soon a scheduled verification that found passes running looks again (at most).
const VERIFY_BUSY_RETRY: Duration = Duration::from_secs(60);

/// A wait that doubles on every failure, from `min` up to `max`, until a success clears it:
/// the daemon's pause on a refused token and its wait for an unusable mirror root.
#[derive(Debug, Clone, Copy)]
pub(super) struct Backoff {
    min: Duration,
    max: Duration,
    /// While failing: when to try again, and the wait that led there.
    retry: Option<(Instant, Duration)>,
}

impl Backoff {
    const fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max,
            retry: None,
        }
    }

    /// One more failure at `now`: arms the next try and returns the wait until it.
    pub(super) fn failed(&mut self, now: Instant) -> Duration {
        let wait = match self.retry {
            Some((_, w)) => (w * 2).min(self.max),
            None => self.min,
        };
        self.retry = Some((now + wait, wait));
        wait
    }

    /// [`failed`](Backoff::failed), unless the wait holds (the next try is not due yet): a
    /// failure seen meanwhile (a pass that was still running) changes nothing (`None`).
    pub(super) fn failed_when_due(&mut self, now: Instant) -> Option<Duration> {
        if self.waiting() && !self.due(now) {
            return None;
        }
        Some(self.failed(now))
    }

    /// A success: returns whether it was failing.
    pub(super) fn cleared(&mut self) -> bool {
        self.retry.take().is_some()
    }

    /// Whether it is failing (waiting for its next try).
    pub(super) fn waiting(&self) -> bool {
        self.retry.is_some()
    }

    /// Whether the next try is due at `now`.
    pub(super) fn due(&self, now: Instant) -> bool {
        self.at().is_some_and(|at| now >= at)
    }

    fn at(&self) -> Option<Instant> {
        self.retry.map(|(at, _)| at)
    }
}

/// The intervals of the periodic timers the config in force (and systemd's watchdog) arms;
/// `None` is a timer that is off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Armed {
    /// `[discovery] interval`, when discovery is enabled.
    pub(super) discovery: Option<Duration>,
    /// `[relist] interval`.
    pub(super) relist: Duration,
    /// `[watch] rescan`, when there is an inbox.
    pub(super) rescan: Option<Duration>,
    /// Half of `WATCHDOG_USEC`, under a systemd watchdog.
    pub(super) watchdog: Option<Duration>,
}

impl Armed {
    pub(super) fn new(cfg: &Config, watchdog: Option<Duration>) -> Armed {
        Armed {
            discovery: cfg.discovery.enabled.then_some(cfg.discovery.interval),
            relist: cfg.relist_interval,
            rescan: cfg.watch.as_ref().map(|w| w.rescan),
            watchdog,
        }
    }
}

/// A periodic timer, re-armed at its interval each time it is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Timer {
    Watchdog,
    Discovery,
    Relist,
    Rescan,
    Status,
}

/// What the scheduled verification does at a tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum VerifyStep {
    /// No `[verify] interval`.
    Off,
    NotDue,
    /// The previous verification still runs.
    Running,
    /// Due, but the mirror root is not held: looks again at the interval.
    NoRoot,
    /// Due, but passes run (they write the files it would check): looks again soon.
    Busy,
    /// Start it now.
    Start,
}

/// What the scheduled verification's step depends on besides the time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct VerifyState {
    /// The previous verification still runs.
    pub(super) running: bool,
    /// The mirror root's lock is held.
    pub(super) root_held: bool,
    /// Project passes run.
    pub(super) passes_running: bool,
}

/// Every deadline the daemon's loop waits for.
#[derive(Debug)]
pub(super) struct Timers {
    discovery: Instant,
    relist: Instant,
    rescan: Instant,
    status: Instant,
    watchdog: Option<Instant>,
    /// The pause on a refused token (5 s doubling to 15 min); discovery and re-listing wait
    /// while it holds.
    pub(super) token: Backoff,
    /// The wait for an unusable mirror root (5 s doubling to 1 min).
    pub(super) root: Backoff,
    verify: Option<Instant>,
    expiry_checked: Option<Date>,
}

impl Timers {
    /// Everything due at `now` (the watchdog only under a systemd watchdog).
    pub(super) fn new(now: Instant, watchdog: Option<Duration>) -> Timers {
        Timers {
            discovery: now,
            relist: now,
            rescan: now,
            status: now,
            watchdog: watchdog.map(|_| now),
            token: Backoff::new(TOKEN_BACKOFF_MIN, TOKEN_BACKOFF_MAX),
            root: Backoff::new(ROOT_RETRY_MIN, ROOT_RETRY_MAX),
            verify: None,
            expiry_checked: None,
        }
    }

    /// The earliest deadline among the armed timers (discovery and re-listing wait while the
    /// token is refused).
    pub(super) fn next_deadline(&self, armed: &Armed) -> Instant {
        let mut d = self.status;
        if !self.token.waiting() {
            if armed.discovery.is_some() {
                d = d.min(self.discovery);
            }
            d = d.min(self.relist);
        }
        if armed.rescan.is_some() {
            d = d.min(self.rescan);
        }
        [self.watchdog, self.token.at(), self.root.at(), self.verify]
            .into_iter()
            .flatten()
            .fold(d, Instant::min)
    }

    /// Whether `timer` is due at `now`; if so it is re-armed at its interval. Discovery and
    /// re-listing are never due while the token is refused.
    pub(super) fn take_due(&mut self, timer: Timer, now: Instant, armed: &Armed) -> bool {
        let (at, every) = match timer {
            Timer::Watchdog => match (&mut self.watchdog, armed.watchdog) {
                (Some(at), Some(every)) => (at, every),
                _ => return false,
            },
            Timer::Discovery if self.token.waiting() => return false,
            Timer::Discovery => match armed.discovery {
                Some(every) => (&mut self.discovery, every),
                None => return false,
            },
            Timer::Relist if self.token.waiting() => return false,
            Timer::Relist => (&mut self.relist, armed.relist),
            Timer::Rescan => match armed.rescan {
                Some(every) => (&mut self.rescan, every),
                None => return false,
            },
            Timer::Status => (&mut self.status, STATUS_EVERY),
        };
        if now < *at {
            return false;
        }
        *at = now + every;
        true
    }

    /// Makes the expiry check due again now (a purge waited for a pass; a reload).
    pub(super) fn recheck_expiry(&mut self) {
        self.expiry_checked = None;
    }

    /// Whether the access expiry is to be checked: once per calendar day.
    pub(super) fn expiry_due(&mut self, today: Date) -> bool {
        if self.expiry_checked == Some(today) {
            return false;
        }
        self.expiry_checked = Some(today);
        true
    }

    /// Brings the next inbox rescan forward to `at` (never later than it already is).
    pub(super) fn rescan_by(&mut self, at: Instant) {
        self.rescan = self.rescan.min(at);
    }

    /// Makes discovery due at once (after a reload).
    pub(super) fn discover_now(&mut self, now: Instant) {
        self.discovery = now;
    }

    /// The scheduled verification's step at `now`, with `every` its interval (`None`: off),
    /// in the daemon's state `s`. Its first run is one interval after it was first armed.
    pub(super) fn verify_step(
        &mut self,
        now: Instant,
        every: Option<Duration>,
        s: VerifyState,
    ) -> VerifyStep {
        let Some(every) = every else {
            self.verify = None;
            return VerifyStep::Off;
        };
        let due = *self.verify.get_or_insert(now + every);
        if now < due {
            return VerifyStep::NotDue;
        }
        if s.running {
            return VerifyStep::Running;
        }
        if !s.root_held {
            self.verify = Some(now + every);
            return VerifyStep::NoRoot;
        }
        if s.passes_running {
            self.verify = Some(now + every.min(VERIFY_BUSY_RETRY));
            return VerifyStep::Busy;
        }
        self.verify = Some(now + every);
        VerifyStep::Start
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};

    const S: Duration = Duration::from_secs(1);

    /// No verification or pass running, the mirror root held.
    const IDLE: VerifyState = VerifyState {
        running: false,
        root_held: true,
        passes_running: false,
    };
    const BUSY: VerifyState = VerifyState {
        passes_running: true,
        ..IDLE
    };
    const RUNNING: VerifyState = VerifyState {
        running: true,
        ..IDLE
    };
    const NO_ROOT: VerifyState = VerifyState {
        root_held: false,
        ..IDLE
    };

    fn armed() -> Armed {
        Armed {
            discovery: Some(600 * S),
            relist: 3600 * S,
            rescan: Some(30 * S),
            watchdog: None,
        }
    }

    const PERIODIC: [Timer; 5] = [
        Timer::Watchdog,
        Timer::Discovery,
        Timer::Relist,
        Timer::Rescan,
        Timer::Status,
    ];

    /// Timers whose first round (everything due at start) has been taken.
    fn started(clock: &ManualClock, armed: &Armed) -> Timers {
        let now = clock.now();
        let mut t = Timers::new(now, armed.watchdog);
        for timer in PERIODIC {
            t.take_due(timer, now, armed);
        }
        t
    }

    #[test]
    fn everything_is_due_at_start() {
        let clock = ManualClock::new(0);
        let a = Armed {
            watchdog: Some(10 * S),
            ..armed()
        };
        let now = clock.now();
        let mut t = Timers::new(now, a.watchdog);
        assert_eq!(t.next_deadline(&a), now);
        for timer in PERIODIC {
            assert!(t.take_due(timer, now, &a), "{timer:?}");
            assert!(!t.take_due(timer, now, &a), "{timer:?} twice");
        }
    }

    #[test]
    fn the_deadline_is_the_earliest_armed_timer() {
        let clock = ManualClock::new(0);
        let t0 = clock.now();
        let a = armed();
        let mut t = started(&clock, &a);
        // Status (5 s) comes first.
        assert_eq!(t.next_deadline(&a), t0 + STATUS_EVERY);
        // Timers that are off do not count: without status, the rescan (30 s) would be next.
        clock.advance(5 * S);
        assert!(t.take_due(Timer::Status, clock.now(), &a));
        assert!(!t.take_due(Timer::Rescan, clock.now(), &a));
        assert_eq!(t.next_deadline(&a), t0 + 10 * S);
        t.status = t0 + 3600 * S;
        assert_eq!(t.next_deadline(&a), t0 + 30 * S);
        let no_inbox = Armed {
            rescan: None,
            ..armed()
        };
        assert_eq!(t.next_deadline(&no_inbox), t0 + 600 * S);
        let nothing = Armed {
            discovery: None,
            ..no_inbox
        };
        assert_eq!(t.next_deadline(&nothing), t0 + 3600 * S);
        // A verification, a backoff or the watchdog come earlier.
        t.verify_step(clock.now(), Some(20 * S), IDLE);
        assert_eq!(t.next_deadline(&nothing), clock.now() + 20 * S);
        t.root.failed(clock.now());
        assert_eq!(t.next_deadline(&nothing), clock.now() + ROOT_RETRY_MIN);
    }

    #[test]
    fn a_refused_token_pauses_discovery_and_relisting() {
        let clock = ManualClock::new(0);
        let a = armed();
        let mut t = started(&clock, &a);
        clock.advance(3600 * S);
        let now = clock.now();
        assert_eq!(t.token.failed_when_due(now), Some(TOKEN_BACKOFF_MIN));
        assert!(t.token.waiting());
        assert!(!t.take_due(Timer::Discovery, now, &a));
        assert!(!t.take_due(Timer::Relist, now, &a));
        // The deadline is the token retry (or an earlier timer), never the paused ones.
        t.status = now + 3600 * S;
        t.rescan = now + 3600 * S;
        assert_eq!(t.next_deadline(&a), now + TOKEN_BACKOFF_MIN);
        // Others go on.
        assert!(t.take_due(Timer::Rescan, now + 3600 * S, &a));
        // Once the token is accepted, the overdue ones are taken at once.
        clock.advance(TOKEN_BACKOFF_MIN);
        assert!(t.token.due(clock.now()));
        assert!(t.token.cleared());
        assert!(!t.token.cleared());
        assert!(t.take_due(Timer::Discovery, clock.now(), &a));
        assert!(t.take_due(Timer::Relist, clock.now(), &a));
    }

    #[test]
    fn the_token_backoff_doubles_up_to_fifteen_minutes() {
        let clock = ManualClock::new(0);
        let mut t = Timers::new(clock.now(), None);
        let mut waits = Vec::new();
        for _ in 0..12 {
            let wait = t
                .token
                .failed_when_due(clock.now())
                .expect("a try that was due");
            waits.push(wait.as_secs());
            // A refusal while the pause holds (another pass) changes nothing.
            clock.advance(wait - S);
            assert!(!t.token.due(clock.now()));
            assert_eq!(t.token.failed_when_due(clock.now()), None);
            clock.advance(S);
            assert!(t.token.due(clock.now()));
        }
        assert_eq!(
            waits,
            [5, 10, 20, 40, 80, 160, 320, 640, 900, 900, 900, 900]
        );
        // Accepted, the next refusal starts again at 5 s.
        assert!(t.token.cleared());
        assert_eq!(
            t.token.failed_when_due(clock.now()),
            Some(TOKEN_BACKOFF_MIN)
        );
    }

    #[test]
    fn the_mirror_root_backoff_doubles_up_to_a_minute() {
        let clock = ManualClock::new(0);
        let mut t = Timers::new(clock.now(), None);
        assert!(!t.root.waiting());
        let mut waits = Vec::new();
        for _ in 0..6 {
            let wait = t.root.failed(clock.now());
            waits.push(wait.as_secs());
            assert!(t.root.waiting());
            clock.advance(wait - S);
            assert!(!t.root.due(clock.now()));
            clock.advance(S);
            assert!(t.root.due(clock.now()));
        }
        assert_eq!(waits, [5, 10, 20, 40, 60, 60]);
        assert!(t.root.cleared());
        assert!(!t.root.waiting());
        assert!(!t.root.cleared());
        assert_eq!(t.root.failed(clock.now()), ROOT_RETRY_MIN);
    }

    #[test]
    fn a_busy_verification_looks_again_within_a_minute() {
        let clock = ManualClock::new(0);
        let mut t = Timers::new(clock.now(), None);
        let hour = Some(3600 * S);
        // First armed: due one interval later.
        assert_eq!(t.verify_step(clock.now(), hour, BUSY), VerifyStep::NotDue);
        clock.advance(3600 * S);
        assert_eq!(t.verify_step(clock.now(), hour, BUSY), VerifyStep::Busy);
        assert_eq!(t.verify, Some(clock.now() + 60 * S));
        clock.advance(59 * S);
        assert_eq!(t.verify_step(clock.now(), hour, IDLE), VerifyStep::NotDue);
        clock.advance(S);
        assert_eq!(t.verify_step(clock.now(), hour, IDLE), VerifyStep::Start);
        assert_eq!(t.verify, Some(clock.now() + 3600 * S));
        // An interval shorter than a minute is kept when busy.
        let mut t = Timers::new(clock.now(), None);
        let short = Some(20 * S);
        t.verify_step(clock.now(), short, BUSY);
        clock.advance(20 * S);
        assert_eq!(t.verify_step(clock.now(), short, BUSY), VerifyStep::Busy);
        assert_eq!(t.verify, Some(clock.now() + 20 * S));
        // Still running, without a root, or turned off.
        clock.advance(20 * S);
        assert_eq!(
            t.verify_step(clock.now(), short, RUNNING),
            VerifyStep::Running
        );
        assert_eq!(
            t.verify_step(clock.now(), short, NO_ROOT),
            VerifyStep::NoRoot
        );
        assert_eq!(t.verify, Some(clock.now() + 20 * S));
        assert_eq!(t.verify_step(clock.now(), None, IDLE), VerifyStep::Off);
        assert_eq!(t.verify, None);
    }

    #[test]
    fn expiry_is_checked_once_per_day() {
        let day = 86_400_000;
        let clock = ManualClock::new(20_000 * day);
        let mut t = Timers::new(clock.now(), None);
        assert!(t.expiry_due(clock.today()));
        assert!(!t.expiry_due(clock.today()));
        clock.advance(23 * 3600 * S);
        assert!(!t.expiry_due(clock.today()));
        clock.advance(3600 * S);
        assert!(t.expiry_due(clock.today()));
        assert!(!t.expiry_due(clock.today()));
    }

    #[test]
    fn the_watchdog_re_arms() {
        let clock = ManualClock::new(0);
        let a = Armed {
            watchdog: Some(10 * S),
            ..armed()
        };
        let mut t = started(&clock, &a);
        assert_eq!(t.watchdog, Some(clock.now() + 10 * S));
        for _ in 0..3 {
            clock.advance(9 * S);
            assert!(!t.take_due(Timer::Watchdog, clock.now(), &a));
            clock.advance(S);
            assert!(t.take_due(Timer::Watchdog, clock.now(), &a));
            assert_eq!(t.watchdog, Some(clock.now() + 10 * S));
        }
        // Without systemd's watchdog, never.
        let mut t = Timers::new(clock.now(), None);
        assert!(!t.take_due(Timer::Watchdog, clock.now(), &armed()));
    }

    #[test]
    fn a_deferred_rescan_moves_earlier_never_later() {
        let clock = ManualClock::new(0);
        let a = armed();
        let mut t = started(&clock, &a);
        let t0 = clock.now();
        t.rescan_by(t0 + 2 * S);
        assert_eq!(t.rescan, t0 + 2 * S);
        t.rescan_by(t0 + 20 * S);
        assert_eq!(t.rescan, t0 + 2 * S);
        clock.advance(2 * S);
        assert!(t.take_due(Timer::Rescan, clock.now(), &a));
        assert_eq!(t.rescan, clock.now() + 30 * S);
    }

    #[test]
    fn a_reload_makes_discovery_due_at_once() {
        let clock = ManualClock::new(0);
        let a = armed();
        let mut t = started(&clock, &a);
        clock.advance(S);
        assert!(!t.take_due(Timer::Discovery, clock.now(), &a));
        t.discover_now(clock.now());
        assert!(t.take_due(Timer::Discovery, clock.now(), &a));
    }
}
