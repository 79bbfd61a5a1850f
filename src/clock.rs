//! Wall-clock time and the calendar: milliseconds since the epoch (as the journal stores
//! times), calendar dates (`access-expires`, today) and the day count of a civil date (also
//! for the HTTP dates of `Retry-After`).
//!
//! One copy of each, so every module agrees on what "now" and "today" are. Pure apart from
//! reading the system clock; it must not know any config key or wire format.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

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
        Date {
            days: now_ms().div_euclid(MS_PER_DAY),
        }
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
    use super::*;

    #[test]
    fn dates_round_trip() {
        for s in ["1970-01-01", "2000-02-29", "2027-05-01", "2100-12-31"] {
            assert_eq!(Date::parse(s).unwrap().to_string(), s);
        }
        assert_eq!(Date::parse("1970-01-02").unwrap().days, 1);
        assert!(Date::parse("2027-13-01").is_err());
    }
}
