//! THE retry table: how every platform failure is classified, plus the backoff schedule and
//! `Retry-After` parsing.
//!
//! All decisions about what a failure means live here, as pure functions, so they can be read
//! in one place and tested without a network. This module does no IO and never sleeps; the
//! callers (`DxClient`'s API loop, the transfer engine) do the waiting.
//!
//! | answer | from the API | from a download URL |
//! |---|---|---|
//! | connection reset, timeout, DNS failure, 408, 5xx | `Retry` | `RetryRange` |
//! | 429 or 503 with `Retry-After` | `RetryAfter` (no retry budget spent) | `RetryAfter` |
//! | 401/403 | `BadToken` (InvalidAuthentication) / `PermissionDenied` | `RefreshUrl` |
//! | 404 `ResourceNotFound` | `NotFound` | `RefreshUrlOnce` |
//! | 412 (a pinned GET: `If-Match` no longer names the object) | — | `ObjectChanged` |
//! | 422 `InvalidState` | `InvalidState` | `Fail` |
//! | other 4xx | `Fatal` | `Fail` |
//!
//! A download answer that does not match the request, a truncated body and a stalled body are
//! `RetryRange`. Malformed JSON from the API is `Retry` (every route used is idempotent).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::error::{IoKind, PlatformError};
use crate::clock::days_from_civil;

/// What an API caller should do about a failed call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiDisposition {
    /// Transient: retry with exponential backoff and jitter (spends the retry budget).
    Retry,
    /// The server asked to wait this long; retrying after it does not spend the retry budget.
    RetryAfter(Duration),
    /// `InvalidAuthentication`: the token is bad; stop the run with a clear error.
    BadToken,
    /// `PermissionDenied`: record the project (or file) as inaccessible.
    PermissionDenied,
    /// `ResourceNotFound`: record the file or project as gone.
    NotFound,
    /// `InvalidState` (archived, not closed): skip the file with the reason recorded.
    InvalidState,
    /// Anything else: record it, do not retry.
    Fatal,
}

/// What the transfer engine should do about a failed ranged GET.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownloadDisposition {
    /// Transient: retry the same range (with backoff).
    RetryRange,
    /// The server asked to wait this long before retrying.
    RetryAfter(Duration),
    /// Get a fresh download URL and retry the range, keeping every byte already fetched.
    RefreshUrl,
    /// Get a fresh URL once; if that fails the same way, record the file as failed.
    RefreshUrlOnce,
    /// `412 Precondition Failed` on a pinned GET: the object behind a drive-backed file was
    /// overwritten since its describe. Never retried, and no byte of it may be mixed with the
    /// bytes already staged: the file's progress is discarded and the file fails.
    ObjectChanged,
    /// Record the failure on the file; do not retry.
    Fail,
}

fn is_transient_status(status: u16) -> bool {
    status == 408 || status == 429 || (500..=599).contains(&status)
}

/// How long a `423 Locked` answer of the API is waited out: it says the object is busy, not
/// that the call is wrong, and carries no `Retry-After` (DNAnexus's download agent retries it).
pub const LOCKED_WAIT: Duration = Duration::from_secs(5);

/// `Retry-After` is honoured only on 429 and 503, as the platform documents; a `423 Locked`
/// is waited out for [`LOCKED_WAIT`].
fn honoured_retry_after(status: u16, retry_after: Option<Duration>) -> Option<Duration> {
    match status {
        429 | 503 => retry_after,
        423 => Some(retry_after.unwrap_or(LOCKED_WAIT)),
        _ => None,
    }
}

impl PlatformError {
    /// Classifies a failure of an API call by the retry table.
    pub fn api_disposition(&self) -> ApiDisposition {
        match self {
            PlatformError::Api {
                status,
                error_type,
                retry_after,
                ..
            } => {
                if let Some(wait) = honoured_retry_after(*status, *retry_after) {
                    return ApiDisposition::RetryAfter(wait);
                }
                // The DNAnexus error type is more precise than the status; use it first.
                match error_type.as_deref() {
                    Some("InvalidAuthentication") => return ApiDisposition::BadToken,
                    Some("PermissionDenied") => return ApiDisposition::PermissionDenied,
                    Some("ResourceNotFound") => return ApiDisposition::NotFound,
                    Some("InvalidState") => return ApiDisposition::InvalidState,
                    _ => {}
                }
                match *status {
                    s if is_transient_status(s) => ApiDisposition::Retry,
                    401 => ApiDisposition::BadToken,
                    403 => ApiDisposition::PermissionDenied,
                    404 => ApiDisposition::NotFound,
                    422 => ApiDisposition::InvalidState,
                    _ => ApiDisposition::Fatal,
                }
            }
            PlatformError::Http {
                status,
                retry_after,
                ..
            } => match honoured_retry_after(*status, *retry_after) {
                Some(wait) => ApiDisposition::RetryAfter(wait),
                None if is_transient_status(*status) => ApiDisposition::Retry,
                None => ApiDisposition::Fatal,
            },
            PlatformError::Io { .. }
            | PlatformError::Decode { .. }
            | PlatformError::TruncatedBody { .. }
            | PlatformError::Stalled { .. }
            | PlatformError::BadResponse { .. } => ApiDisposition::Retry,
            PlatformError::RetriesExhausted { last, .. }
            | PlatformError::ThrottleBudgetExhausted { last, .. } => last.api_disposition(),
            PlatformError::Config(_)
            | PlatformError::InvalidRequest(_)
            | PlatformError::Redirect { .. } => ApiDisposition::Fatal,
        }
    }

    /// Classifies a failure of a ranged GET on a download URL by the retry table.
    pub fn download_disposition(&self) -> DownloadDisposition {
        match self {
            PlatformError::Http {
                status,
                retry_after,
                ..
            } => {
                if let Some(wait) = honoured_retry_after(*status, *retry_after) {
                    return DownloadDisposition::RetryAfter(wait);
                }
                match *status {
                    s if is_transient_status(s) => DownloadDisposition::RetryRange,
                    401 | 403 => DownloadDisposition::RefreshUrl,
                    404 => DownloadDisposition::RefreshUrlOnce,
                    412 => DownloadDisposition::ObjectChanged,
                    _ => DownloadDisposition::Fail,
                }
            }
            PlatformError::Io { .. }
            | PlatformError::BadResponse { .. }
            | PlatformError::TruncatedBody { .. }
            | PlatformError::Stalled { .. } => DownloadDisposition::RetryRange,
            // An API error reaching here came from fetching a fresh URL.
            PlatformError::Api { .. } | PlatformError::Decode { .. } => {
                match self.api_disposition() {
                    ApiDisposition::Retry => DownloadDisposition::RetryRange,
                    ApiDisposition::RetryAfter(wait) => DownloadDisposition::RetryAfter(wait),
                    _ => DownloadDisposition::Fail,
                }
            }
            PlatformError::RetriesExhausted { .. }
            | PlatformError::ThrottleBudgetExhausted { .. }
            | PlatformError::Config(_)
            | PlatformError::InvalidRequest(_)
            | PlatformError::Redirect { .. } => DownloadDisposition::Fail,
        }
    }

    /// True when the failure is a transport failure of the given kind.
    pub fn is_io(&self, kind: IoKind) -> bool {
        matches!(self, PlatformError::Io { kind: k, .. } if *k == kind)
    }
}

/// Exponential backoff with full jitter: attempt `n` (from 1) waits a uniformly random time in
/// `[0, min(cap, base * 2^(n-1))]`, never less than `floor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Upper bound of the first delay.
    pub base: Duration,
    /// Largest delay ever returned.
    pub cap: Duration,
    /// Smallest delay ever returned (keeps full jitter from retrying in a tight loop).
    pub floor: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_millis(500),
            cap: Duration::from_secs(60),
            floor: Duration::from_millis(50),
        }
    }
}

impl Backoff {
    /// A schedule with tiny delays, for tests.
    pub fn tiny() -> Backoff {
        Backoff {
            base: Duration::from_millis(2),
            cap: Duration::from_millis(20),
            floor: Duration::ZERO,
        }
    }

    /// The largest delay attempt `attempt` (from 1) can get.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let shift = attempt.saturating_sub(1).min(30);
        let grown = self.base.saturating_mul(1u32 << shift);
        grown.min(self.cap).max(self.floor)
    }

    /// A random delay for attempt `attempt` (from 1), with full jitter.
    pub fn next_delay(&self, attempt: u32) -> Duration {
        let ceiling = self.ceiling(attempt);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(fastrand::u64(0..=nanos)).max(self.floor)
    }
}

/// Parses a `Retry-After` value: delay seconds, or an HTTP-date (IMF-fixdate) relative to `now`.
/// A date in the past gives zero; anything unparsable gives `None`.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return value.parse::<u64>().ok().map(Duration::from_secs);
    }
    let when = parse_imf_fixdate(value)?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Parses `Sun, 06 Nov 1994 08:49:37 GMT`.
fn parse_imf_fixdate(s: &str) -> Option<SystemTime> {
    let (_weekday, rest) = s.split_once(", ")?;
    let mut it = rest.split(' ');
    let day: u32 = it.next()?.parse().ok()?;
    let month = match it.next()? {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    let year: i64 = it.next()?.parse().ok()?;
    let mut hms = it.next()?.split(':');
    let h: u64 = hms.next()?.parse().ok()?;
    let m: u64 = hms.next()?.parse().ok()?;
    let sec: u64 = hms.next()?.parse().ok()?;
    if it.next()? != "GMT" || it.next().is_some() || hms.next().is_some() {
        return None;
    }
    if !(1..=31).contains(&day) || h > 23 || m > 59 || sec > 60 || year < 1970 {
        return None;
    }
    let days = u64::try_from(days_from_civil(year, i64::from(month), i64::from(day))).ok()?;
    Some(UNIX_EPOCH + Duration::from_secs(days * 86_400 + h * 3600 + m * 60 + sec))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, ty: Option<&str>, retry_after: Option<u64>) -> PlatformError {
        PlatformError::Api {
            route: "/system/whoami".into(),
            status,
            error_type: ty.map(str::to_owned),
            message: "m".into(),
            retry_after: retry_after.map(Duration::from_secs),
        }
    }

    fn http(status: u16, retry_after: Option<u64>) -> PlatformError {
        PlatformError::Http {
            url: "https://dl.example/…".into(),
            status,
            retry_after: retry_after.map(Duration::from_secs),
        }
    }

    fn io(kind: IoKind) -> PlatformError {
        PlatformError::Io {
            target: "/system/whoami".into(),
            kind,
            detail: "x".into(),
        }
    }

    #[test]
    fn api_table() {
        use ApiDisposition::*;
        let cases: Vec<(PlatformError, ApiDisposition)> = vec![
            (io(IoKind::Reset), Retry),
            (io(IoKind::Timeout), Retry),
            (io(IoKind::Dns), Retry),
            (io(IoKind::Connect), Retry),
            (api(408, None, None), Retry),
            (api(500, Some("InternalError"), None), Retry),
            (api(502, None, None), Retry),
            (api(503, Some("ServiceUnavailable"), None), Retry),
            (api(429, None, None), Retry),
            (
                api(503, Some("ServiceUnavailable"), Some(20)),
                RetryAfter(Duration::from_secs(20)),
            ),
            (api(429, None, Some(3)), RetryAfter(Duration::from_secs(3))),
            // 423 Locked: waited out (as throttling), whatever its error type, never a failure.
            (api(423, None, None), RetryAfter(LOCKED_WAIT)),
            (
                api(423, Some("ResourceLocked"), None),
                RetryAfter(LOCKED_WAIT),
            ),
            (api(423, None, Some(9)), RetryAfter(Duration::from_secs(9))),
            // Retry-After on other statuses is not a licence to wait.
            (api(500, None, Some(3)), Retry),
            (api(401, Some("InvalidAuthentication"), None), BadToken),
            (api(401, None, None), BadToken),
            (api(403, Some("InvalidAuthentication"), None), BadToken),
            (api(403, Some("PermissionDenied"), None), PermissionDenied),
            (api(401, Some("PermissionDenied"), None), PermissionDenied),
            (api(403, None, None), PermissionDenied),
            (api(404, Some("ResourceNotFound"), None), NotFound),
            (api(404, None, None), NotFound),
            (api(422, Some("InvalidState"), None), InvalidState),
            (api(400, Some("InvalidState"), None), InvalidState),
            (api(400, Some("InvalidInput"), None), Fatal),
            (api(400, Some("MalformedJSON"), None), Fatal),
            (api(409, None, None), Fatal),
            (
                PlatformError::Decode {
                    route: "/x".into(),
                    detail: "eof".into(),
                },
                Retry,
            ),
            (PlatformError::Config("x".into()), Fatal),
            (
                PlatformError::RetriesExhausted {
                    route: "/x".into(),
                    attempts: 3,
                    last: Box::new(api(401, Some("InvalidAuthentication"), None)),
                },
                BadToken,
            ),
        ];
        for (err, want) in cases {
            assert_eq!(err.api_disposition(), want, "{err}");
        }
    }

    #[test]
    fn download_table() {
        use DownloadDisposition::*;
        let cases: Vec<(PlatformError, DownloadDisposition)> = vec![
            (io(IoKind::Reset), RetryRange),
            (io(IoKind::Dns), RetryRange),
            (io(IoKind::Timeout), RetryRange),
            (http(408, None), RetryRange),
            (http(500, None), RetryRange),
            (http(504, None), RetryRange),
            (http(503, Some(7)), RetryAfter(Duration::from_secs(7))),
            (http(429, Some(1)), RetryAfter(Duration::from_secs(1))),
            (http(429, None), RetryRange),
            (http(401, None), RefreshUrl),
            (http(403, None), RefreshUrl),
            (http(404, None), RefreshUrlOnce),
            (http(412, None), ObjectChanged),
            (http(416, None), Fail),
            (http(400, None), Fail),
            (
                PlatformError::BadResponse {
                    url: "u".into(),
                    what: "w".into(),
                },
                RetryRange,
            ),
            (
                PlatformError::TruncatedBody {
                    url: "u".into(),
                    expected: 10,
                    received: 3,
                    detail: None,
                },
                RetryRange,
            ),
            (
                PlatformError::Stalled {
                    url: "u".into(),
                    after: Duration::from_secs(1),
                    received: 0,
                },
                RetryRange,
            ),
            (
                PlatformError::Redirect {
                    url: "u".into(),
                    what: "loop".into(),
                },
                Fail,
            ),
            (PlatformError::InvalidRequest("empty".into()), Fail),
            (api(500, None, None), RetryRange),
            (api(422, Some("InvalidState"), None), Fail),
        ];
        for (err, want) in cases {
            assert_eq!(err.download_disposition(), want, "{err}");
        }
    }

    #[test]
    fn backoff_grows_caps_and_jitters() {
        let b = Backoff {
            base: Duration::from_millis(500),
            cap: Duration::from_secs(60),
            floor: Duration::ZERO,
        };
        assert_eq!(b.ceiling(1), Duration::from_millis(500));
        assert_eq!(b.ceiling(2), Duration::from_secs(1));
        assert_eq!(b.ceiling(4), Duration::from_secs(4));
        assert_eq!(b.ceiling(8), Duration::from_secs(60));
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(60));
        let mut distinct = std::collections::HashSet::new();
        for attempt in 1..200 {
            let d = b.next_delay(attempt % 12 + 1);
            assert!(d <= b.ceiling(attempt % 12 + 1));
            distinct.insert(d);
        }
        assert!(distinct.len() > 10, "full jitter must spread delays");
        let floored = Backoff {
            floor: Duration::from_millis(50),
            ..b
        };
        for _ in 0..100 {
            assert!(floored.next_delay(1) >= Duration::from_millis(50));
        }
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_retry_after("Thu, 29 Feb 2024 23:59:59 GMT", UNIX_EPOCH),
            Some(Duration::from_secs(1_709_251_199))
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
        assert_eq!(parse_retry_after("", now), None);
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 UTC", now),
            None
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Foo 1994 08:49:37 GMT", now),
            None
        );
    }
}
