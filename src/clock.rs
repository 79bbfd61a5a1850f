//! Wall-clock time and the calendar: milliseconds since the epoch (as the journal stores
//! times), calendar dates (`access-expires`, today) and the day count of a civil date (also
//! for the HTTP dates of `Retry-After`); and [`Clock`], the time as the daemon reads it, so
//! that its timers can be tested by moving a manual clock (`ManualClock`, in test builds) instead
//! of waiting.
//!
//! One copy of each, so every module agrees on what "now" and "today" are. Pure apart from
//! reading the system clock; it must not know any config key or wire format.

use std::fmt;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

const MS_PER_DAY: i64 = 86_400_000;

/// Milliseconds since the Unix epoch, now (0 before the epoch; saturating far after it).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A calendar date (`YYYY-MM-DD`), kept as days since 1970-01-01.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Date {
    /// Days since the Unix epoch.
    pub days: i64,
}

impl Date {
    /// Parses `YYYY-MM-DD`.
    pub fn parse(s: &str) -> Result<Date, String> {
        let bad = || format!("{s:?} is not a date (expected YYYY-MM-DD)");
        let mut it = s.trim().splitn(3, '-');
        let y: i64 = it.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
        let m: i64 = it.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
        let d: i64 = it.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
        if !(1970..=9999).contains(&y) || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
            return Err(bad());
        }
        let days = days_from_civil(y, m, d);
        let back = Date { days };
        if back.to_string() != format!("{y:04}-{m:02}-{d:02}") {
            return Err(bad());
        }
        Ok(back)
    }

    /// Today (UTC).
    pub fn today() -> Date {
        Date::from_ms(now_ms())
    }

    /// The day (UTC) of a time in milliseconds since the epoch.
    pub fn from_ms(ms: i64) -> Date {
        Date {
            days: ms.div_euclid(MS_PER_DAY),
        }
    }
}

/// Where time is read: the monotonic clock for timers and the wall clock for what is recorded.
/// The daemon holds one: [`SystemClock`] in production, `ManualClock` in unit tests.
pub trait Clock: Send + Sync + 'static {
    /// Now on the monotonic clock (deadlines, intervals, elapsed times).
    fn now(&self) -> Instant;
    /// Now on the wall clock, in milliseconds since the Unix epoch (times in the journal).
    fn now_ms(&self) -> i64;
    /// Today (UTC) on the wall clock.
    fn today(&self) -> Date {
        Date::from_ms(self.now_ms())
    }
    /// Seconds east of UTC of the local time zone at `ms` (the `bwlimit` timetable is read
    /// in local time, as rclone reads it): the system's zone (`TZ`, `/etc/localtime`).
    fn utc_offset_s(&self, ms: i64) -> i32 {
        use chrono::{Offset, TimeZone};
        chrono::Local
            .timestamp_millis_opt(ms)
            .single()
            .map_or(0, |t| t.offset().fix().local_minus_utc())
    }
}

/// The system's clocks: [`Instant::now`] and [`now_ms`].
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn now_ms(&self) -> i64 {
        now_ms()
    }
}

/// A clock that moves only when told to: [`advance`](ManualClock::advance) moves both clocks,
/// [`set_ms`](ManualClock::set_ms) only the wall clock.
#[cfg(test)]
#[derive(Debug)]
pub struct ManualClock {
    start: Instant,
    /// Time since `start` on the monotonic clock, and the wall clock in ms.
    now: std::sync::Mutex<(std::time::Duration, i64)>,
}

#[cfg(test)]
impl ManualClock {
    /// A clock whose wall clock reads `ms`.
    pub fn new(ms: i64) -> ManualClock {
        ManualClock {
            start: Instant::now(),
            now: std::sync::Mutex::new((std::time::Duration::ZERO, ms)),
        }
    }

    /// Moves both clocks forward by `by`.
    pub fn advance(&self, by: std::time::Duration) {
        let mut now = self.now.lock().unwrap_or_else(|e| e.into_inner());
        now.0 += by;
        now.1 += i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
    }

    /// Sets the wall clock (the monotonic one never goes back).
    pub fn set_ms(&self, ms: i64) {
        self.now.lock().unwrap_or_else(|e| e.into_inner()).1 = ms;
    }
}

#[cfg(test)]
impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.start + self.now.lock().unwrap_or_else(|e| e.into_inner()).0
    }

    fn now_ms(&self) -> i64 {
        self.now.lock().unwrap_or_else(|e| e.into_inner()).1
    }

    /// Always UTC, so tests read the same on every machine.
    fn utc_offset_s(&self, _ms: i64) -> i32 {
        0
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Howard Hinnant's civil_from_days.
        let z = self.days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        let y = yoe + era * 400 + i64::from(m <= 2);
        write!(f, "{y:04}-{m:02}-{d:02}")
    }
}

/// `ms` (milliseconds since the epoch) as people read a time: ISO 8601 in local time, to
/// the second, with the offset (`2026-12-04T20:42:39+01:00`).
pub fn local_iso(ms: i64) -> String {
    use chrono::TimeZone;
    match chrono::Local.timestamp_millis_opt(ms).single() {
        Some(t) => t.to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
        None => format!("{ms} ms after the epoch"),
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    #[test]
    fn local_iso_is_iso_8601_with_the_offset() {
        let t = super::local_iso(1_764_877_359_000);
        // 2025-12-04T19:42:39Z in whatever zone the test runs in.
        assert_eq!(t.len(), "2025-12-04T19:42:39+00:00".len(), "{t}");
        assert_eq!(&t[4..5], "-");
        assert_eq!(&t[10..11], "T");
        assert!(
            t.ends_with(":00") || t.ends_with(":30") || t.ends_with(":45"),
            "{t}"
        );
    }

    use super::*;

    #[test]
    fn dates_round_trip() {
        for s in ["1970-01-01", "2000-02-29", "2027-05-01", "2100-12-31"] {
            assert_eq!(Date::parse(s).unwrap().to_string(), s);
        }
        assert_eq!(Date::parse("1970-01-02").unwrap().days, 1);
        assert!(Date::parse("2027-13-01").is_err());
    }

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let day = 86_400_000;
        let clock = ManualClock::new(20_000 * day + 1);
        let t0 = clock.now();
        assert_eq!(clock.today().days, 20_000);
        assert_eq!(clock.now(), t0);
        clock.advance(std::time::Duration::from_secs(86_400));
        assert_eq!(clock.now() - t0, std::time::Duration::from_secs(86_400));
        assert_eq!(clock.today().days, 20_001);
        clock.set_ms(day - 1);
        assert_eq!(clock.today(), Date { days: 0 });
        assert_eq!(clock.now() - t0, std::time::Duration::from_secs(86_400));
    }
}
