//! The process's cumulative counters: what the platform client and the transfer engine count
//! as it happens (bytes fetched and fetched again, chunk retries by reason, checksum
//! mismatches, URL refreshes, API calls and errors by kind, time spent throttled), which the
//! metrics endpoint exposes.
//!
//! Plain atomics, no locks on the data path. The daemon creates one [`Counters`] and hands it
//! to every client and engine it builds, so the counts survive a reload. Every label is a
//! fixed word of an enum here, never an id or a path, so the metrics' cardinality is bounded.
//! This module counts; it must not decide, log or expose anything.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

/// Why a chunk's range was asked for again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryReason {
    /// A reset, a timeout, a 5xx, a short body, a stall.
    Transient,
    /// The host asked to wait (`Retry-After`).
    Throttled,
    /// A checked range's bytes did not match its `Content-MD5`.
    Checksum,
    /// The download URL was refused or gone and a fresh one was asked for.
    UrlRefresh,
}

impl RetryReason {
    /// Every reason, in the order the metrics list them.
    pub const ALL: [RetryReason; 4] = [
        RetryReason::Transient,
        RetryReason::Throttled,
        RetryReason::Checksum,
        RetryReason::UrlRefresh,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            RetryReason::Transient => "transient",
            RetryReason::Throttled => "throttled",
            RetryReason::Checksum => "checksum",
            RetryReason::UrlRefresh => "url-refresh",
        }
    }
}

/// How a failed API call (one attempt) was classified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiErrorKind {
    /// Network failure, timeout or 5xx: retried.
    Transient,
    /// 429/503 with `Retry-After`.
    Throttled,
    /// The token was refused.
    Auth,
    /// Permission denied.
    Permission,
    /// The object is gone.
    NotFound,
    /// Anything else (other 4xx, a body that does not decode).
    Other,
}

impl ApiErrorKind {
    /// Every kind, in the order the metrics list them.
    pub const ALL: [ApiErrorKind; 6] = [
        ApiErrorKind::Transient,
        ApiErrorKind::Throttled,
        ApiErrorKind::Auth,
        ApiErrorKind::Permission,
        ApiErrorKind::NotFound,
        ApiErrorKind::Other,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ApiErrorKind::Transient => "transient",
            ApiErrorKind::Throttled => "throttled",
            ApiErrorKind::Auth => "auth",
            ApiErrorKind::Permission => "permission",
            ApiErrorKind::NotFound => "not-found",
            ApiErrorKind::Other => "other",
        }
    }
}

/// The cumulative counters of this process.
#[derive(Debug, Default)]
pub struct Counters {
    bytes_fetched: AtomicU64,
    bytes_refetched: AtomicU64,
    chunk_retries: [AtomicU64; RetryReason::ALL.len()],
    checksum_mismatches: AtomicU64,
    url_refreshes: AtomicU64,
    api_calls: AtomicU64,
    api_errors: [AtomicU64; ApiErrorKind::ALL.len()],
    throttled_ms: AtomicU64,
    disk_waits: AtomicI64,
}

/// A file waiting for disk space, counted in [`Counters::disk_waits`] until dropped (so an
/// aborted file task uncounts itself).
#[derive(Debug)]
pub struct DiskWait(Arc<Counters>);

impl Drop for DiskWait {
    fn drop(&mut self) {
        self.0.disk_waits.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A copy of the counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CountersSnapshot {
    /// Bytes received that counted (written to staging files).
    pub bytes_fetched: u64,
    /// Bytes discarded because they must be fetched again (a bad segment, damage on disk).
    pub bytes_refetched: u64,
    /// Chunk range retries, per [`RetryReason::ALL`].
    pub chunk_retries: Vec<(RetryReason, u64)>,
    /// Checksum mismatches: segments and checked ranges.
    pub checksum_mismatches: u64,
    /// Fresh download URLs asked for after a refusal.
    pub url_refreshes: u64,
    /// API call attempts.
    pub api_calls: u64,
    /// Failed API call attempts, per [`ApiErrorKind::ALL`].
    pub api_errors: Vec<(ApiErrorKind, u64)>,
    /// Milliseconds spent waiting as a host's `Retry-After` told.
    pub throttled_ms: u64,
}

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

impl Counters {
    /// Counts bytes that arrived and count.
    pub fn fetched(&self, n: u64) {
        add(&self.bytes_fetched, n);
    }

    /// Counts bytes thrown away to be fetched again.
    pub fn refetched(&self, n: u64) {
        add(&self.bytes_refetched, n);
    }

    /// Counts one chunk range retry.
    pub fn chunk_retry(&self, reason: RetryReason) {
        add(&self.chunk_retries[reason as usize], 1);
    }

    /// Counts one checksum mismatch (a segment or a checked range).
    pub fn checksum_mismatch(&self) {
        add(&self.checksum_mismatches, 1);
    }

    /// Counts one fresh download URL asked for after a refusal.
    pub fn url_refresh(&self) {
        add(&self.url_refreshes, 1);
    }

    /// Counts one API call attempt.
    pub fn api_call(&self) {
        add(&self.api_calls, 1);
    }

    /// Counts one failed API call attempt.
    pub fn api_error(&self, kind: ApiErrorKind) {
        add(&self.api_errors[kind as usize], 1);
    }

    /// Counts time spent waiting because a host said so.
    pub fn throttled(&self, wait: std::time::Duration) {
        add(&self.throttled_ms, wait.as_millis() as u64);
    }

    /// Counts a file waiting for disk space until the guard is dropped.
    pub fn disk_wait(self: &Arc<Self>) -> DiskWait {
        self.disk_waits.fetch_add(1, Ordering::Relaxed);
        DiskWait(Arc::clone(self))
    }

    /// Files waiting for disk space now.
    pub fn disk_waits(&self) -> u64 {
        self.disk_waits.load(Ordering::Relaxed).max(0) as u64
    }

    /// Reads every counter.
    pub fn snapshot(&self) -> CountersSnapshot {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CountersSnapshot {
            bytes_fetched: load(&self.bytes_fetched),
            bytes_refetched: load(&self.bytes_refetched),
            chunk_retries: RetryReason::ALL
                .iter()
                .map(|&r| (r, load(&self.chunk_retries[r as usize])))
                .collect(),
            checksum_mismatches: load(&self.checksum_mismatches),
            url_refreshes: load(&self.url_refreshes),
            api_calls: load(&self.api_calls),
            api_errors: ApiErrorKind::ALL
                .iter()
                .map(|&k| (k, load(&self.api_errors[k as usize])))
                .collect(),
            throttled_ms: load(&self.throttled_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_land_under_their_labels() {
        let c = Counters::default();
        c.chunk_retry(RetryReason::Checksum);
        c.chunk_retry(RetryReason::Checksum);
        c.api_error(ApiErrorKind::NotFound);
        c.throttled(std::time::Duration::from_millis(1500));
        let s = c.snapshot();
        assert_eq!(s.chunk_retries[2], (RetryReason::Checksum, 2));
        assert_eq!(s.chunk_retries[0], (RetryReason::Transient, 0));
        assert_eq!(s.api_errors[4], (ApiErrorKind::NotFound, 1));
        assert_eq!(s.throttled_ms, 1500);
        let c = Arc::new(c);
        let waiting = c.disk_wait();
        assert_eq!(c.disk_waits(), 1);
        drop(waiting);
        assert_eq!(c.disk_waits(), 0);
    }
}
