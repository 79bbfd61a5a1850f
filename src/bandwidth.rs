//! Bandwidth: the `bwlimit` timetable, written in rclone's `--bwlimit` syntax, and the limiter
//! that every downloaded byte passes through (one global, one per project that has its own
//! `bwlimit`).
//!
//! A timetable is either one rate (`10MiB`, `off`) or space-separated `HH:MM,RATE` (every day)
//! and `Day-HH:MM,RATE` (one weekday: `Mon`, `Monday`, ... case-insensitive) entries, read in
//! the daemon's local time zone as rclone does. The rate in force is the one of the latest entry
//! at or before now, wrapping around the week. A rate is a size of the config's size parser
//! per second; rclone's `UP:DOWN` pair is accepted and its download side applies; a bare
//! number is refused, because rclone reads it as KiB/s and the config's sizes as bytes.
//!
//! The limiter is a GCRA (a token bucket kept as one "theoretical arrival time"), so over any
//! window `w` it admits at most `rate × w + burst` bytes, and, while data is waiting, at least
//! `rate × w − burst`. It reads time only from a [`Clock`], so its unit tests move a manual
//! clock. A change of rate (a timetable boundary, a reload, an override from the control
//! socket) takes effect at the next piece of data: waiters are woken and ask again, transfers
//! go on, and no byte is dropped (the limiter only delays reads, which TCP turns into a slower
//! sender).
//!
//! Pure apart from the clock and the tokio timer it sleeps on; it must not know the config's
//! schema (that is `config`) nor HTTP (that is `platform`).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::clock::Clock;
use crate::model::ProjectId;
use crate::units::{human_bytes, ByteSize};

const MINUTES_PER_DAY: u32 = 24 * 60;
const MINUTES_PER_WEEK: u32 = 7 * MINUTES_PER_DAY;
const MS_PER_MINUTE: i64 = 60_000;
const WEEKDAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];

/// The limiter looks at the timetable again at least this often, so that a wall clock set
/// back or a change of the UTC offset (daylight saving) is followed.
const RECHECK: Duration = Duration::from_secs(60);

/// A download rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rate {
    /// No limit.
    Off,
    /// At most this many bytes per second.
    PerSec(u64),
}

impl Rate {
    /// Parses one rate: `off`, or a size with a unit (`512KiB`, `10M`, `1.5GB`) read per second;
    /// rclone's `UP:DOWN` pair gives its download side. A bare number and a zero rate are refused.
    pub fn parse(s: &str) -> Result<Rate, String> {
        let t = s.trim();
        // rclone's upload:download pair; dxmirror only downloads.
        let down = t.split_once(':').map_or(t, |(_, rx)| rx).trim();
        if down.eq_ignore_ascii_case("off") {
            return Ok(Rate::Off);
        }
        if !down.is_empty() && down.chars().all(|c| c.is_ascii_digit() || c == '.') {
            return Err(format!(
                "rate {s:?} has no unit: write it with one (512KiB, 10MiB) or off; rclone reads a bare number as KiB/s, the config's sizes as bytes"
            ));
        }
        let bytes = ByteSize::parse(down).map_err(|e| format!("rate {s:?}: {e}"))?;
        if bytes.0 == 0 {
            return Err(format!(
                "rate {s:?} is zero: write off for no limit (pause a project to stop it)"
            ));
        }
        Ok(Rate::PerSec(bytes.0))
    }

    /// Bytes per second, `None` for no limit.
    pub fn bytes_per_sec(self) -> Option<u64> {
        match self {
            Rate::Off => None,
            Rate::PerSec(n) => Some(n),
        }
    }
}

impl Rate {
    /// The rate as the config writes it (`512KiB`, `off`), which [`Rate::parse`] reads back.
    pub fn to_config(self) -> String {
        match self {
            Rate::Off => "off".into(),
            Rate::PerSec(n) => {
                let (value, unit) = [(1_u64 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")]
                    .into_iter()
                    .find(|(m, _)| n % m == 0)
                    .map_or((n, "B"), |(m, unit)| (n / m, unit));
                format!("{value}{unit}")
            }
        }
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rate::Off => f.write_str("off"),
            Rate::PerSec(n) => write!(f, "{}/s", human_bytes(*n)),
        }
    }
}

/// One entry of a timetable: from this minute of the week on, this rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    /// Minutes since Sunday 00:00 (local time).
    at: u32,
    rate: Rate,
}

/// A weekly timetable of rates (`bwlimit`); a single rate is a timetable of one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timetable {
    /// Sorted by `at`, one entry per minute, never empty.
    slots: Vec<Slot>,
    /// Written as a single rate (no times).
    constant: bool,
}

impl Default for Timetable {
    /// No limit.
    fn default() -> Timetable {
        Timetable::constant(Rate::Off)
    }
}

/// The rate a timetable puts in force at one moment, and its next change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InForce {
    /// The rate now.
    pub rate: Rate,
    /// When it next changes (ms since the epoch) and to what; `None` if never.
    pub next: Option<(i64, Rate)>,
}

impl Timetable {
    /// One rate at all times.
    pub fn constant(rate: Rate) -> Timetable {
        Timetable {
            slots: vec![Slot { at: 0, rate }],
            constant: true,
        }
    }

    /// Parses rclone's `--bwlimit` syntax (see the module doc).
    pub fn parse(s: &str) -> Result<Timetable, String> {
        let t = s.trim();
        if t.is_empty() {
            return Err("bwlimit is empty: write a rate, a timetable or off".into());
        }
        if !t.contains(char::is_whitespace) && !t.contains(',') {
            return Ok(Timetable::constant(Rate::parse(t)?));
        }
        let mut slots = Vec::new();
        for tok in t.split_whitespace() {
            let Some((when, rate)) = tok.split_once(',') else {
                return Err(format!("{tok:?} is not TIME,RATE (e.g. 08:00,512KiB)"));
            };
            if rate.contains(',') {
                return Err(format!("{tok:?} is not TIME,RATE (e.g. 08:00,512KiB)"));
            }
            let rate = Rate::parse(rate)?;
            match when.split_once('-') {
                None => {
                    let minute = parse_hhmm(when)?;
                    slots.extend((0..7).map(|day| Slot {
                        at: day * MINUTES_PER_DAY + minute,
                        rate,
                    }));
                }
                Some((day, hhmm)) => {
                    let day = parse_weekday(day)?;
                    slots.push(Slot {
                        at: day * MINUTES_PER_DAY + parse_hhmm(hhmm)?,
                        rate,
                    });
                }
            }
        }
        // A later entry for the same minute wins (as in rclone).
        let mut by_minute = BTreeMap::new();
        for slot in slots {
            by_minute.insert(slot.at, slot);
        }
        Ok(Timetable {
            slots: by_minute.into_values().collect(),
            constant: false,
        })
    }

    /// True when no entry limits anything.
    pub fn is_off(&self) -> bool {
        self.slots.iter().all(|s| s.rate == Rate::Off)
    }

    /// The index of the entry in force at `minute` of the week (wrapping to the week's last).
    fn index_at(&self, minute: u32) -> usize {
        match self.slots.iter().rposition(|s| s.at <= minute) {
            Some(i) => i,
            None => self.slots.len() - 1,
        }
    }

    /// The rate in force at `minute` of the week.
    pub fn rate_at(&self, minute: u32) -> Rate {
        self.slots[self.index_at(minute)].rate
    }

    /// Minutes from `minute` to the next entry of the timetable (whatever its rate), if it
    /// has times at all.
    fn minutes_to_next_entry(&self, minute: u32) -> Option<u32> {
        if self.constant {
            return None;
        }
        let next = self.slots[(self.index_at(minute) + 1) % self.slots.len()].at;
        Some(minutes_ahead(minute, next))
    }

    /// Minutes from `minute` to the next entry whose rate differs from the one in force, and
    /// that rate; `None` if the rate never changes.
    fn next_change(&self, minute: u32) -> Option<(u32, Rate)> {
        let i = self.index_at(minute);
        let now = self.slots[i].rate;
        let n = self.slots.len();
        (1..n)
            .map(|k| self.slots[(i + k) % n])
            .find(|s| s.rate != now)
            .map(|s| (minutes_ahead(minute, s.at), s.rate))
    }

    /// The rate in force at `ms` (ms since the epoch, at `offset_s` seconds east of UTC) and
    /// its next change.
    pub fn in_force(&self, ms: i64, offset_s: i32) -> InForce {
        let (minute, into) = week_minute(ms, offset_s);
        InForce {
            rate: self.rate_at(minute),
            next: self
                .next_change(minute)
                .map(|(ahead, rate)| (ms - into + i64::from(ahead) * MS_PER_MINUTE, rate)),
        }
    }
}

impl fmt::Display for Timetable {
    /// The timetable in rclone's syntax, one entry per weekday and time.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.constant {
            return f.write_str(&self.slots[0].rate.to_config());
        }
        for (i, s) in self.slots.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            let day = WEEKDAYS[(s.at / MINUTES_PER_DAY) as usize % 7];
            let m = s.at % MINUTES_PER_DAY;
            write!(
                f,
                "{day}-{:02}:{:02},{}",
                m / 60,
                m % 60,
                s.rate.to_config()
            )?;
        }
        Ok(())
    }
}

/// Minutes forward from `from` to `to` on the weekly circle (a full week when equal).
fn minutes_ahead(from: u32, to: u32) -> u32 {
    if to > from {
        to - from
    } else {
        to + MINUTES_PER_WEEK - from
    }
}

/// `HH:MM` exactly (two digits each), as rclone checks it: minutes since midnight.
fn parse_hhmm(s: &str) -> Result<u32, String> {
    let bad = || format!("{s:?} is not a time HH:MM (00:00 to 23:59)");
    let b = s.as_bytes();
    if b.len() != 5 || b[2] != b':' {
        return Err(bad());
    }
    let hh: u32 = s[..2].parse().map_err(|_| bad())?;
    let mm: u32 = s[3..].parse().map_err(|_| bad())?;
    if hh > 23
        || mm > 59
        || !s[..2]
            .bytes()
            .chain(s[3..].bytes())
            .all(|c| c.is_ascii_digit())
    {
        return Err(bad());
    }
    Ok(hh * 60 + mm)
}

/// A weekday as rclone reads it (`Mon` or `Monday`, any case): days since Sunday.
fn parse_weekday(s: &str) -> Result<u32, String> {
    const LONG: [&str; 7] = [
        "sunday",
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
    ];
    let lower = s.to_ascii_lowercase();
    LONG.iter()
        .position(|long| lower == *long || lower == long[..3])
        .map(|i| i as u32)
        .ok_or_else(|| format!("{s:?} is not a weekday (Mon, Tue, ..., or Monday, ...)"))
}

/// The minute of the week (0: Sunday 00:00) at `ms` since the epoch, `offset_s` seconds east
/// of UTC, and the milliseconds already gone in that minute.
pub fn week_minute(ms: i64, offset_s: i32) -> (u32, i64) {
    let local = ms + i64::from(offset_s) * 1000;
    let day = local.div_euclid(86_400_000);
    // 1970-01-01 was a Thursday.
    let weekday = (day + 4).rem_euclid(7);
    let in_day = local.rem_euclid(86_400_000);
    let minute = weekday * i64::from(MINUTES_PER_DAY) + in_day / MS_PER_MINUTE;
    (u32::try_from(minute).unwrap_or(0), in_day % MS_PER_MINUTE)
}

/// The most bytes admitted at once: a tenth of a second at the rate, within 16 KiB..4 MiB.
pub fn burst_for(bytes_per_sec: u64) -> u64 {
    (bytes_per_sec / 10).clamp(16 << 10, 4 << 20)
}

/// The GCRA state: the time at which the bytes admitted so far would have passed at the rate.
#[derive(Debug, Default)]
struct Gcra {
    tat: Option<Instant>,
}

impl Gcra {
    /// Books `n` bytes (at most `burst`) at `rate` bytes/s at `now`: the time they may pass.
    fn reserve(&mut self, now: Instant, n: u64, rate: u64, burst: u64) -> Instant {
        let rate = rate.max(1) as f64;
        let cost = Duration::from_secs_f64(n as f64 / rate);
        let tau = Duration::from_secs_f64(burst as f64 / rate);
        let tat = self.tat.map_or(now, |t| t.max(now)) + cost;
        self.tat = Some(tat);
        tat.checked_sub(tau).map_or(now, |g| g.max(now))
    }
}

/// Where the limiter's rate comes from.
#[derive(Debug)]
struct State {
    table: Timetable,
    /// A rate set by `dxmirror bwlimit`, in force until this time (ms; the next entry of the
    /// timetable) or, with `None`, until a reload.
    manual: Option<(Rate, Option<i64>)>,
    rate: Rate,
    next: Option<(i64, Rate)>,
    /// When to look at the timetable again (ms), and when it was last looked at.
    check_at: i64,
    checked: i64,
    gcra: Gcra,
    /// Bumped at each change of rate; waiters booked under an older generation ask again.
    generation: u64,
}

/// What one booking gave: how long to wait, and when to look again in the meantime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Booking {
    /// How long until the bytes may pass (zero: now).
    pub wait: Duration,
    /// The limiter's generation the booking was made in.
    pub generation: u64,
    /// At most this long before the rate must be looked at again (a timetable boundary).
    pub recheck: Duration,
}

/// A rate limiter following a timetable, on an injected clock.
pub struct Limiter {
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
    changed: watch::Sender<u64>,
}

impl fmt::Debug for Limiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limiter")
            .field("in_force", &self.in_force())
            .finish_non_exhaustive()
    }
}

impl Limiter {
    /// A limiter following `table`.
    pub fn new(clock: Arc<dyn Clock>, table: Timetable) -> Limiter {
        let state = State {
            table,
            manual: None,
            rate: Rate::Off,
            next: None,
            check_at: i64::MIN,
            checked: i64::MIN,
            gcra: Gcra::default(),
            generation: 0,
        };
        let limiter = Limiter {
            clock,
            state: Mutex::new(state),
            changed: watch::channel(0).0,
        };
        limiter.refresh();
        limiter
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent numbers (every update is one
        // assignment): keep going.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Puts a new timetable in force now (a reload); a rate set by hand ends.
    pub fn set_timetable(&self, table: Timetable) {
        {
            let mut st = self.lock();
            if st.table == table && st.manual.is_none() {
                return;
            }
            st.table = table;
            st.manual = None;
            st.check_at = i64::MIN;
        }
        self.refresh();
    }

    /// Puts `rate` in force until the timetable's next entry (or the next reload, for a
    /// timetable of one rate).
    pub fn set_manual(&self, rate: Rate) {
        {
            let mut st = self.lock();
            let now_ms = self.clock.now_ms();
            let (minute, into) = week_minute(now_ms, self.clock.utc_offset_s(now_ms));
            let until = st
                .table
                .minutes_to_next_entry(minute)
                .map(|ahead| now_ms - into + i64::from(ahead) * MS_PER_MINUTE);
            st.manual = Some((rate, until));
            st.check_at = i64::MIN;
        }
        self.refresh();
    }

    /// The rate in force now and its next change.
    pub fn in_force(&self) -> InForce {
        self.refresh();
        let st = self.lock();
        InForce {
            rate: st.rate,
            next: st.next,
        }
    }

    /// Looks at the timetable (when due) and puts its rate in force; a change resets the
    /// booking and wakes every waiter.
    fn refresh(&self) {
        let now_ms = self.clock.now_ms();
        let mut st = self.lock();
        if now_ms < st.check_at && now_ms >= st.checked {
            return;
        }
        if st
            .manual
            .is_some_and(|(_, until)| until.is_some_and(|u| now_ms >= u))
        {
            st.manual = None;
        }
        let offset = self.clock.utc_offset_s(now_ms);
        let table = st.table.in_force(now_ms, offset);
        let (rate, next) = match st.manual {
            None => (table.rate, table.next),
            Some((rate, None)) => (rate, None),
            Some((rate, Some(until))) => (rate, Some((until, st.table.rate_after(until, offset)))),
        };
        let recheck = i64::try_from(RECHECK.as_millis()).unwrap_or(i64::MAX);
        st.checked = now_ms;
        st.check_at = next.map_or(now_ms + recheck, |(at, _)| at.min(now_ms + recheck));
        st.next = next;
        if rate != st.rate {
            st.rate = rate;
            // Neither credit nor debt carries over: the new rate starts from now.
            st.gcra = Gcra::default();
            st.generation += 1;
            let generation = st.generation;
            drop(st);
            self.changed.send_replace(generation);
        }
    }

    /// The largest piece [`Limiter::book`] takes at the rate in force (the burst).
    pub fn piece(&self) -> u64 {
        match self.lock().rate {
            Rate::Off => u64::MAX,
            Rate::PerSec(r) => burst_for(r),
        }
    }

    /// Books `n` bytes (at most [`Limiter::piece`]) now: how long to wait before they pass.
    pub fn book(&self, n: u64) -> Booking {
        self.refresh();
        let now = self.clock.now();
        let now_ms = self.clock.now_ms();
        let mut st = self.lock();
        let recheck =
            Duration::from_millis(u64::try_from((st.check_at - now_ms).max(0)).unwrap_or(u64::MAX));
        let wait = match st.rate {
            Rate::Off => Duration::ZERO,
            Rate::PerSec(rate) => {
                let burst = burst_for(rate);
                st.gcra.reserve(now, n.min(burst), rate, burst) - now
            }
        };
        Booking {
            wait,
            generation: st.generation,
            recheck,
        }
    }

    /// The limiter's generation now (bumped by every change of rate).
    fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// Waits until `n` bytes may pass, in pieces of at most one burst. A change of rate while
    /// waiting (a timetable boundary, a reload, `dxmirror bwlimit`) books the rest again at
    /// the new rate.
    pub async fn admit(&self, n: u64) {
        let mut left = n;
        let mut changes = self.changed.subscribe();
        while left > 0 {
            let piece = left.min(self.piece());
            let booking = self.book(piece);
            if !booking.wait.is_zero() && !self.wait(booking, &mut changes).await {
                // The rate changed while waiting: book this piece again.
                continue;
            }
            left -= piece;
        }
    }

    /// Sleeps out a booking; false when the rate changed meanwhile (the booking is void).
    async fn wait(&self, booking: Booking, changes: &mut watch::Receiver<u64>) -> bool {
        let start = tokio::time::Instant::now();
        let granted = start + booking.wait;
        let mut look = start + booking.recheck.max(Duration::from_millis(1));
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(granted.min(look)) => {
                    if tokio::time::Instant::now() >= granted {
                        return true;
                    }
                    self.refresh();
                    if self.generation() != booking.generation {
                        return false;
                    }
                    look = tokio::time::Instant::now() + RECHECK;
                }
                res = changes.changed() => {
                    if res.is_err() || *changes.borrow_and_update() != booking.generation {
                        return false;
                    }
                }
            }
        }
    }
}

impl Timetable {
    /// The rate the timetable gives just at `ms` (for the end of a rate set by hand).
    fn rate_after(&self, ms: i64, offset_s: i32) -> Rate {
        self.rate_at(week_minute(ms, offset_s).0)
    }
}

/// Every limiter of a run: the global one, and one per project with its own `bwlimit`. A byte
/// of a project passes its project's limiter, then the global one.
pub struct Bandwidth {
    clock: Arc<dyn Clock>,
    global: Limiter,
    projects: Mutex<BTreeMap<ProjectId, Arc<Limiter>>>,
}

impl fmt::Debug for Bandwidth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bandwidth")
            .field("global", &self.global)
            .finish_non_exhaustive()
    }
}

impl Bandwidth {
    /// Limiters for the global timetable and the projects' own.
    pub fn new(
        clock: Arc<dyn Clock>,
        global: Timetable,
        projects: &BTreeMap<ProjectId, Timetable>,
    ) -> Bandwidth {
        let bw = Bandwidth {
            global: Limiter::new(clock.clone(), global),
            clock,
            projects: Mutex::new(BTreeMap::new()),
        };
        bw.set_projects(projects);
        bw
    }

    /// No limit at all, on the system clock.
    pub fn unlimited() -> Bandwidth {
        Bandwidth::new(
            Arc::new(crate::clock::SystemClock),
            Timetable::default(),
            &BTreeMap::new(),
        )
    }

    fn lock_projects(&self) -> MutexGuard<'_, BTreeMap<ProjectId, Arc<Limiter>>> {
        self.projects.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set_projects(&self, projects: &BTreeMap<ProjectId, Timetable>) {
        let mut map = self.lock_projects();
        map.retain(|id, _| projects.contains_key(id));
        for (id, table) in projects {
            match map.get(id) {
                Some(limiter) => limiter.set_timetable(table.clone()),
                None => {
                    let limiter = Limiter::new(self.clock.clone(), table.clone());
                    map.insert(id.clone(), Arc::new(limiter));
                }
            }
        }
    }

    /// A reload: the new timetables take effect now, for transfers already running too.
    pub fn reload(&self, global: Timetable, projects: &BTreeMap<ProjectId, Timetable>) {
        self.global.set_timetable(global);
        self.set_projects(projects);
    }

    /// The global limiter.
    pub fn global(&self) -> &Limiter {
        &self.global
    }

    /// The limiter of `project`'s own `bwlimit`, if it has one.
    pub fn project(&self, project: &ProjectId) -> Option<Arc<Limiter>> {
        self.lock_projects().get(project).cloned()
    }

    /// Waits until `n` bytes of `project` may pass.
    pub async fn admit(&self, project: &ProjectId, n: u64) {
        if let Some(limiter) = self.project(project) {
            limiter.admit(n).await;
        }
        self.global.admit(n).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    /// 2027-01-04 00:00 UTC, a Monday.
    const MONDAY_MS: i64 = 1_799_020_800_000;

    fn at(day: u32, hh: u32, mm: u32) -> u32 {
        day * MINUTES_PER_DAY + hh * 60 + mm
    }

    #[test]
    fn rates_need_a_unit() {
        assert_eq!(Rate::parse("512KiB"), Ok(Rate::PerSec(512 << 10)));
        assert_eq!(Rate::parse("10M"), Ok(Rate::PerSec(10 << 20)));
        assert_eq!(Rate::parse("1.5GB"), Ok(Rate::PerSec(1_500_000_000)));
        assert_eq!(Rate::parse("OFF"), Ok(Rate::Off));
        assert_eq!(Rate::parse("10M:100KiB"), Ok(Rate::PerSec(100 << 10)));
        assert_eq!(Rate::parse("10M:off"), Ok(Rate::Off));
        let bare = Rate::parse("512").unwrap_err();
        assert!(bare.contains("no unit") && bare.contains("KiB/s"), "{bare}");
        assert!(Rate::parse("0KiB").unwrap_err().contains("zero"));
        assert!(Rate::parse("fast").is_err());
        assert_eq!(Rate::PerSec(512 << 10).to_string(), "512.0 KiB/s");
    }

    #[test]
    fn a_daily_timetable_applies_to_every_day() {
        let t = Timetable::parse("08:00,512KiB 12:00,10MiB 23:00,off").unwrap();
        for day in 0..7 {
            assert_eq!(t.rate_at(at(day, 7, 59)), Rate::Off);
            assert_eq!(t.rate_at(at(day, 8, 0)), Rate::PerSec(512 << 10));
            assert_eq!(t.rate_at(at(day, 11, 59)), Rate::PerSec(512 << 10));
            assert_eq!(t.rate_at(at(day, 12, 0)), Rate::PerSec(10 << 20));
            assert_eq!(t.rate_at(at(day, 23, 30)), Rate::Off);
        }
        // Sunday before 08:00 wraps around to Saturday 23:00's entry.
        assert_eq!(t.rate_at(0), Rate::Off);
        assert_eq!(
            t.next_change(at(1, 9, 0)),
            Some((180, Rate::PerSec(10 << 20)))
        );
        assert_eq!(
            t.next_change(at(6, 23, 30)),
            Some((510, Rate::PerSec(512 << 10)))
        );
    }

    #[test]
    fn a_weekday_timetable_wraps_around_the_week() {
        let t = Timetable::parse("Mon-00:00,512KiB Fri-23:59,10MiB Sat-10:00,1MiB Sun-20:00,off")
            .unwrap();
        assert_eq!(t.rate_at(at(1, 0, 0)), Rate::PerSec(512 << 10));
        assert_eq!(t.rate_at(at(5, 23, 58)), Rate::PerSec(512 << 10));
        assert_eq!(t.rate_at(at(5, 23, 59)), Rate::PerSec(10 << 20));
        assert_eq!(t.rate_at(at(6, 10, 0)), Rate::PerSec(1 << 20));
        // Sunday before 20:00 is still Saturday's 1 MiB/s; after it, off until Monday.
        assert_eq!(t.rate_at(at(0, 19, 59)), Rate::PerSec(1 << 20));
        assert_eq!(t.rate_at(at(0, 20, 0)), Rate::Off);
        assert_eq!(
            t.next_change(at(0, 21, 0)),
            Some((180, Rate::PerSec(512 << 10)))
        );
        assert_eq!(
            t.to_string(),
            "Sun-20:00,off Mon-00:00,512KiB Fri-23:59,10MiB Sat-10:00,1MiB"
        );
        assert_eq!(
            Timetable::parse(&t.to_string()).unwrap(),
            Timetable {
                constant: false,
                ..t
            }
        );
        // Long day names, any case, and mixed with daily entries.
        let mixed = Timetable::parse("monday-09:00,1MiB 10:00,off").unwrap();
        assert_eq!(mixed.rate_at(at(1, 9, 30)), Rate::PerSec(1 << 20));
        assert_eq!(mixed.rate_at(at(2, 9, 30)), Rate::Off);
    }

    #[test]
    fn bad_timetables_are_refused_with_the_reason() {
        for (bad, why) in [
            ("", "empty"),
            ("8:00,1MiB 12:00,off", "HH:MM"),
            ("24:00,1MiB", "HH:MM"),
            ("12:60,1MiB", "HH:MM"),
            ("Mon-12:00 Tue-13:00", "TIME,RATE"),
            ("Mon-12:00,1MiB,2MiB", "TIME,RATE"),
            ("Someday-12:00,1MiB", "weekday"),
            ("08:00,512 12:00,off", "no unit"),
            ("1024", "no unit"),
        ] {
            let err = Timetable::parse(bad).unwrap_err();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
        assert_eq!(Timetable::parse("off").unwrap(), Timetable::default());
        assert!(Timetable::parse("off").unwrap().is_off());
        assert_eq!(Timetable::parse("2MiB").unwrap().to_string(), "2MiB");
        assert_eq!(Timetable::parse("1000B").unwrap().to_string(), "1000B");
    }

    #[test]
    fn week_minutes_follow_the_local_offset() {
        assert_eq!(week_minute(MONDAY_MS, 0), (at(1, 0, 0), 0));
        assert_eq!(week_minute(MONDAY_MS + 90_500, 0), (at(1, 0, 1), 30_500));
        // Two hours east of UTC, Monday 00:00 UTC is Monday 02:00; five west, Sunday 19:00.
        assert_eq!(week_minute(MONDAY_MS, 7200).0, at(1, 2, 0));
        assert_eq!(week_minute(MONDAY_MS, -5 * 3600).0, at(0, 19, 0));
        let t = Timetable::parse("08:00,512KiB 12:00,off").unwrap();
        let f = t.in_force(MONDAY_MS + 9 * 3_600_000 + 123, 0);
        assert_eq!(f.rate, Rate::PerSec(512 << 10));
        assert_eq!(f.next, Some((MONDAY_MS + 12 * 3_600_000, Rate::Off)));
    }

    /// Drives one limiter with a consumer that always has data waiting, moving the manual
    /// clock to each grant: returns (ms since start, bytes) per grant.
    fn saturate(clock: &ManualClock, limiter: &Limiter, total: Duration) -> Vec<(f64, u64)> {
        let start = clock.now();
        let mut grants = Vec::new();
        while clock.now() - start < total {
            let piece = limiter.piece().min(64 << 10);
            let b = limiter.book(piece);
            clock.advance(b.wait);
            grants.push(((clock.now() - start).as_secs_f64(), piece));
        }
        grants
    }

    /// Bytes granted in `[from, from + w)`.
    fn in_window(grants: &[(f64, u64)], from: f64, w: f64) -> u64 {
        grants
            .iter()
            .filter(|(t, _)| *t >= from && *t < from + w)
            .map(|(_, n)| n)
            .sum()
    }

    #[test]
    fn the_limiter_admits_rate_times_window_within_one_burst() {
        for rate in [20_000_u64, 300 << 10, 8 << 20] {
            let clock = Arc::new(ManualClock::new(MONDAY_MS));
            let limiter = Limiter::new(clock.clone(), Timetable::constant(Rate::PerSec(rate)));
            let burst = burst_for(rate) as f64;
            let grants = saturate(&clock, &limiter, Duration::from_secs(20));
            for w in [0.05, 0.5, 1.0, 5.0] {
                let mut from = 0.0;
                while from + w <= 19.0 {
                    let got = in_window(&grants, from, w) as f64;
                    let ideal = rate as f64 * w;
                    // Durations round to nanoseconds: allow a millionth.
                    assert!(
                        got <= ideal * 1.000_001 + burst + 1.0,
                        "rate {rate} window {w}s at {from}s: {got} > {ideal} + {burst}"
                    );
                    assert!(
                        got + burst + 64.0 * 1024.0 >= ideal,
                        "rate {rate} window {w}s at {from}s: {got} < {ideal} - {burst}"
                    );
                    from += w / 3.0;
                }
            }
        }
    }

    #[test]
    fn idle_time_earns_at_most_one_burst() {
        let clock = Arc::new(ManualClock::new(MONDAY_MS));
        let rate = 1 << 20;
        let limiter = Limiter::new(clock.clone(), Timetable::constant(Rate::PerSec(rate)));
        clock.advance(Duration::from_secs(3600));
        let burst = burst_for(rate);
        let mut free = 0;
        while limiter.book(16 << 10).wait.is_zero() {
            free += 16 << 10;
        }
        assert!(
            free <= burst,
            "{free} bytes passed at once after an idle hour (burst {burst})"
        );
        assert!(free >= burst - (16 << 10), "{free}");
    }

    #[test]
    fn a_boundary_changes_the_rate_at_the_next_piece() {
        // 08:00 to 12:00 at 100 KiB/s, then 1 MiB/s; start at 11:59:50 on a Monday (UTC).
        let clock = Arc::new(ManualClock::new(
            MONDAY_MS + (11 * 60 + 59) * 60_000 + 50_000,
        ));
        let slow = 100 << 10;
        let fast = 1 << 20;
        let limiter = Limiter::new(
            clock.clone(),
            Timetable::parse("08:00,100KiB 12:00,1MiB 23:00,off").unwrap(),
        );
        let f = limiter.in_force();
        assert_eq!(f.rate, Rate::PerSec(slow));
        assert_eq!(
            f.next,
            Some((MONDAY_MS + 12 * 3_600_000, Rate::PerSec(fast)))
        );
        let b = limiter.book(16 << 10);
        assert!(b.recheck <= Duration::from_secs(10), "{b:?}");
        let grants = saturate(&clock, &limiter, Duration::from_secs(20));
        // The first 10 s at the slow rate, the next 10 s at the fast one.
        let before = in_window(&grants, 0.0, 10.0) as f64;
        let after = in_window(&grants, 10.5, 9.0) as f64;
        assert!(
            before <= slow as f64 * 10.0 + burst_for(slow) as f64 + 1.0,
            "{before}"
        );
        assert!(before >= slow as f64 * 9.0, "{before}");
        assert!(
            after <= fast as f64 * 9.0 + burst_for(fast) as f64 + 1.0,
            "{after}"
        );
        assert!(after >= fast as f64 * 8.5, "{after}");
        assert_eq!(
            limiter.in_force().next,
            Some((MONDAY_MS + 23 * 3_600_000, Rate::Off))
        );
    }

    #[test]
    fn a_manual_rate_lasts_until_the_next_entry_or_a_reload() {
        let clock = Arc::new(ManualClock::new(MONDAY_MS + 9 * 3_600_000));
        let limiter = Limiter::new(
            clock.clone(),
            Timetable::parse("08:00,100KiB 12:00,1MiB").unwrap(),
        );
        let generation = limiter.book(1).generation;
        limiter.set_manual(Rate::Off);
        assert_eq!(limiter.book(1 << 30).wait, Duration::ZERO);
        assert_ne!(
            limiter.book(1).generation,
            generation,
            "waiters must be woken"
        );
        assert_eq!(
            limiter.in_force(),
            InForce {
                rate: Rate::Off,
                next: Some((MONDAY_MS + 12 * 3_600_000, Rate::PerSec(1 << 20)))
            }
        );
        clock.advance(Duration::from_secs(3 * 3600));
        assert_eq!(limiter.in_force().rate, Rate::PerSec(1 << 20));
        // A reload ends a manual rate at once.
        limiter.set_manual(Rate::PerSec(5 << 20));
        assert_eq!(limiter.in_force().rate, Rate::PerSec(5 << 20));
        limiter.set_timetable(Timetable::constant(Rate::PerSec(2 << 20)));
        assert_eq!(
            limiter.in_force(),
            InForce {
                rate: Rate::PerSec(2 << 20),
                next: None
            }
        );
        // On a timetable of one rate, a manual rate lasts until the reload.
        limiter.set_manual(Rate::Off);
        clock.advance(Duration::from_secs(7 * 86_400));
        assert_eq!(limiter.in_force().rate, Rate::Off);
    }

    #[test]
    fn a_wall_clock_set_back_is_followed() {
        let clock = Arc::new(ManualClock::new(MONDAY_MS + 13 * 3_600_000));
        let limiter = Limiter::new(
            clock.clone(),
            Timetable::parse("08:00,100KiB 12:00,off").unwrap(),
        );
        assert_eq!(limiter.in_force().rate, Rate::Off);
        clock.set_ms(MONDAY_MS + 9 * 3_600_000);
        assert_eq!(limiter.in_force().rate, Rate::PerSec(100 << 10));
    }

    #[test]
    fn projects_have_their_own_limiters_and_reload_replaces_them() {
        let clock = Arc::new(ManualClock::new(MONDAY_MS));
        let a = crate::model::testing::project_id(1);
        let b = crate::model::testing::project_id(2);
        let mut own = BTreeMap::new();
        own.insert(a.clone(), Timetable::constant(Rate::PerSec(1 << 20)));
        let bw = Bandwidth::new(clock.clone(), Timetable::default(), &own);
        assert!(bw.project(&b).is_none());
        let la = bw.project(&a).unwrap();
        assert_eq!(la.in_force().rate, Rate::PerSec(1 << 20));
        own.insert(a.clone(), Timetable::constant(Rate::PerSec(2 << 20)));
        own.insert(b.clone(), Timetable::constant(Rate::PerSec(3 << 20)));
        bw.reload(Timetable::constant(Rate::PerSec(4 << 20)), &own);
        // The same limiter, so transfers holding it follow the reload.
        assert_eq!(la.in_force().rate, Rate::PerSec(2 << 20));
        assert_eq!(
            bw.project(&b).unwrap().in_force().rate,
            Rate::PerSec(3 << 20)
        );
        assert_eq!(bw.global().in_force().rate, Rate::PerSec(4 << 20));
        bw.reload(Timetable::default(), &BTreeMap::new());
        assert!(bw.project(&a).is_none());
    }

    #[tokio::test]
    async fn a_waiter_follows_a_change_of_rate_at_once() {
        // At 1000 B/s the next piece waits 16 s: only the change can end it within the
        // deadline (the manual clock stands still, so no boundary comes either).
        let clock = Arc::new(ManualClock::new(MONDAY_MS));
        let limiter = Arc::new(Limiter::new(
            clock.clone(),
            Timetable::constant(Rate::PerSec(1000)),
        ));
        limiter.admit(burst_for(1000)).await;
        let waiter = {
            let limiter = limiter.clone();
            tokio::spawn(async move { limiter.admit(10 << 20).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished());
        limiter.set_timetable(Timetable::default());
        tokio::time::timeout(Duration::from_secs(8), waiter)
            .await
            .expect("the waiter goes on once the limit is off")
            .unwrap();
    }
}
