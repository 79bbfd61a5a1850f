//! The platform client's error type: facts about what went wrong talking to DNAnexus or to a
//! download URL (HTTP status, DNAnexus error type and message, route, `Retry-After`, I/O kind).
//!
//! This module only describes failures. What to do about one (retry, refresh the URL, give up)
//! is decided in `retry.rs`, in one table. No message here may contain the API token, a
//! download URL's path token or query string, or the secret headers of a download URL.

use std::time::Duration;

/// What kind of transport failure happened, as far as it can be told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IoKind {
    /// The TCP (or TLS) connection could not be established.
    Connect,
    /// A deadline passed (connect, whole call, or waiting for response headers).
    Timeout,
    /// The connection was reset or closed mid-exchange.
    Reset,
    /// The host name could not be resolved.
    Dns,
    /// Anything else the HTTP stack reported (protocol error, bad framing).
    Other,
}

impl IoKind {
    /// Short lower-case name for messages and log fields.
    pub fn as_str(self) -> &'static str {
        match self {
            IoKind::Connect => "connect",
            IoKind::Timeout => "timeout",
            IoKind::Reset => "reset",
            IoKind::Dns => "dns",
            IoKind::Other => "other",
        }
    }
}

impl std::fmt::Display for IoKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything that can go wrong in the platform client.
///
/// `target` fields name an API route (`/system/findDataObjects`) or a redacted download URL
/// (`https://host:port/…`): never a token.
#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    /// The configuration cannot be used (bad API URL, unreadable CA file, client set-up).
    #[error("platform client configuration: {0}")]
    Config(String),

    /// A caller asked for something impossible (an empty range, a range past the file end).
    #[error("invalid request: {0}")]
    InvalidRequest(String),

    /// The API answered with an error status (and usually a DNAnexus error body).
    #[error("{route} answered HTTP {status}{}: {message}", error_type.as_deref().map(|t| format!(" {t}")).unwrap_or_default())]
    Api {
        /// The route called, e.g. `/system/whoami`.
        route: String,
        /// HTTP status code.
        status: u16,
        /// DNAnexus `error.type` (`InvalidAuthentication`, `ResourceNotFound`, ...), when given.
        error_type: Option<String>,
        /// DNAnexus `error.message`, or a short description when the body had none.
        message: String,
        /// The `Retry-After` the server asked for, when it sent one.
        retry_after: Option<Duration>,
    },

    /// A download URL (or its redirect target) answered with an error status.
    #[error("download from {url} answered HTTP {status}")]
    Http {
        /// Redacted URL (scheme, host and port only).
        url: String,
        /// HTTP status code.
        status: u16,
        /// The `Retry-After` the server asked for, when it sent one.
        retry_after: Option<Duration>,
    },

    /// The transport failed before a complete answer arrived.
    #[error("{kind} error talking to {target}: {detail}")]
    Io {
        /// A route or a redacted URL.
        target: String,
        /// What kind of failure.
        kind: IoKind,
        /// The HTTP stack's description (never contains the URL's secret parts).
        detail: String,
    },

    /// A successful API answer whose JSON is malformed, truncated or missing fields.
    #[error("{route} returned an unusable answer: {detail}")]
    Decode {
        /// The route called.
        route: String,
        /// What was wrong.
        detail: String,
    },

    /// A download answer that does not match the request (status, `Content-Range`, lengths).
    #[error("download from {url} gave a bad answer: {what}")]
    BadResponse {
        /// Redacted URL.
        url: String,
        /// What differed from what was asked.
        what: String,
    },

    /// The body ended (or broke) before the expected number of bytes arrived.
    #[error("download from {url} ended after {received} of {expected} bytes{}", detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    TruncatedBody {
        /// Redacted URL.
        url: String,
        /// Bytes the range should have had.
        expected: u64,
        /// Bytes that arrived.
        received: u64,
        /// The HTTP stack's description of the break, if it reported one.
        detail: Option<String>,
    },

    /// No byte arrived for longer than the stall timeout.
    #[error("download from {url} stalled: no data for {}s after {received} bytes", after.as_secs_f64())]
    Stalled {
        /// Redacted URL.
        url: String,
        /// The inactivity that was tolerated.
        after: Duration,
        /// Bytes received before the stall.
        received: u64,
    },

    /// Redirects did not end within the hop limit, or a redirect had no usable `Location`.
    #[error("download from {url}: {what}")]
    Redirect {
        /// Redacted URL of the first request.
        url: String,
        /// What went wrong.
        what: String,
    },

    /// An API call kept failing until its retry budget ran out.
    #[error("{route} failed after {attempts} attempts: {last}")]
    RetriesExhausted {
        /// The route called.
        route: String,
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        #[source]
        last: Box<PlatformError>,
    },
    /// The platform kept throttling an API call (`429`/`503` with `Retry-After`, `423
    /// Locked`) until the waiting budget (`throttle-budget`) ran out.
    #[error("{route}: the platform kept throttling; the throttle-budget of {} ran out after {attempts} attempts (last: {last})", humantime::format_duration(*budget))]
    ThrottleBudgetExhausted {
        /// The route called.
        route: String,
        /// Attempts made.
        attempts: u32,
        /// The budget that ran out.
        budget: Duration,
        /// The last failure.
        #[source]
        last: Box<PlatformError>,
    },
}

impl PlatformError {
    /// The HTTP status, when the failure was an HTTP answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            PlatformError::Api { status, .. } | PlatformError::Http { status, .. } => Some(*status),
            PlatformError::RetriesExhausted { last, .. }
            | PlatformError::ThrottleBudgetExhausted { last, .. } => last.status(),
            _ => None,
        }
    }

    /// The DNAnexus error type, when the API gave one.
    pub fn error_type(&self) -> Option<&str> {
        match self {
            PlatformError::Api { error_type, .. } => error_type.as_deref(),
            PlatformError::RetriesExhausted { last, .. }
            | PlatformError::ThrottleBudgetExhausted { last, .. } => last.error_type(),
            _ => None,
        }
    }

    /// The `Retry-After` the server asked for, when it sent one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            PlatformError::Api { retry_after, .. } | PlatformError::Http { retry_after, .. } => {
                *retry_after
            }
            _ => None,
        }
    }
}
