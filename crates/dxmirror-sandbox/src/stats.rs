//! Serve counters of the sandbox: which byte ranges of which file were really written to a
//! socket, whether a fault spoiled them, totals per route, and how many responses are still
//! being written.
//!
//! Ranges are stored as intervals (files are GBs); per-byte serve counts are computed by a
//! sweep on demand. This module only counts; it decides nothing.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::model::ByteRange;

/// One response body (or the part of it that reached the socket).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Served {
    /// First byte sent.
    pub offset: u64,
    /// Bytes really written to the socket.
    pub len: u64,
    /// True when a fault spoiled the response (cut, flipped, mislabelled, ...).
    pub spoiled: bool,
}

/// A snapshot of every counter; what `GET /_sandbox/stats` returns.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServeStats {
    /// Body bytes written to sockets by the download and storage hosts.
    pub bytes_served: u64,
    /// Of those, bytes in spoiled responses.
    pub bytes_spoiled: u64,
    /// Requests per route (`/system/findDataObjects`, `/file-xxxx/download` as
    /// `/file/download`, `GET download`, `GET storage`, ...).
    pub requests_by_route: BTreeMap<String, u64>,
    /// Storage requests refused for carrying an `Authorization` header.
    pub storage_auth_refused: u64,
    /// Faults injected, by name.
    pub faults_injected: BTreeMap<String, u64>,
    /// Per file id: every served interval, in the order served.
    pub files: BTreeMap<String, Vec<Served>>,
    /// Body responses of the download and storage hosts begun and not yet counted: 0 means
    /// every byte written so far is in these counters (a test waits for it after killing a
    /// client, instead of sleeping).
    pub responses_in_flight: u64,
    /// Requests that carried `If-Match`, per host (`GET download`, `GET storage`).
    #[serde(default)]
    pub if_match_requests: BTreeMap<String, u64>,
    /// Storage requests answered `412 Precondition Failed` (an `If-Match` that no longer
    /// names the backing object).
    #[serde(default)]
    pub precondition_failed: u64,
}

/// Per-byte serve counts of a list of intervals: `(range, count)` runs with count > 0.
fn coverage(served: &[Served], include_spoiled: bool) -> Vec<(ByteRange, u32)> {
    let mut events: Vec<(u64, i64)> = Vec::with_capacity(served.len() * 2);
    for s in served
        .iter()
        .filter(|s| s.len > 0 && (include_spoiled || !s.spoiled))
    {
        events.push((s.offset, 1));
        events.push((s.offset + s.len, -1));
    }
    events.sort_unstable();
    let mut out: Vec<(ByteRange, u32)> = Vec::new();
    let mut depth: i64 = 0;
    let mut last = 0u64;
    for (pos, delta) in events {
        if pos > last && depth > 0 {
            let count = depth as u32;
            match out.last_mut() {
                Some((r, c)) if *c == count && r.end() == last => r.len += pos - last,
                _ => out.push((ByteRange::new(last, pos - last), count)),
            }
        }
        depth += delta;
        last = pos;
    }
    out
}

impl ServeStats {
    /// Body bytes of `file` written to sockets (spoiled or not).
    pub fn bytes_served(&self, file: &str) -> u64 {
        self.files
            .get(file)
            .map_or(0, |v| v.iter().map(|s| s.len).sum())
    }

    /// The largest number of times any byte of `file` was served (0 if never).
    pub fn max_serve_count(&self, file: &str) -> u32 {
        self.files.get(file).map_or(0, |v| {
            coverage(v, true).iter().map(|(_, c)| *c).max().unwrap_or(0)
        })
    }

    /// Ranges of `file` served more than once, counting spoiled responses too.
    pub fn served_more_than_once(&self, file: &str) -> Vec<ByteRange> {
        self.more_than_once(file, true)
    }

    /// Ranges of `file` served intact more than once: a real re-fetch of good bytes.
    pub fn served_intact_more_than_once(&self, file: &str) -> Vec<ByteRange> {
        self.more_than_once(file, false)
    }

    fn more_than_once(&self, file: &str, include_spoiled: bool) -> Vec<ByteRange> {
        let Some(v) = self.files.get(file) else {
            return Vec::new();
        };
        let mut out: Vec<ByteRange> = Vec::new();
        for (r, c) in coverage(v, include_spoiled) {
            if c < 2 {
                continue;
            }
            match out.last_mut() {
                Some(prev) if prev.end() == r.offset => prev.len += r.len,
                _ => out.push(r),
            }
        }
        out
    }

    /// Bytes of `file` covered by at least one intact response.
    pub fn bytes_covered_intact(&self, file: &str) -> u64 {
        self.files
            .get(file)
            .map_or(0, |v| coverage(v, false).iter().map(|(r, _)| r.len).sum())
    }

    /// Bytes in spoiled responses, all files.
    pub fn spoiled_bytes(&self) -> u64 {
        self.bytes_spoiled
    }

    /// Requests to `host` (`GET download`, `GET storage`) that carried `If-Match`.
    pub fn if_match(&self, host: &str) -> u64 {
        self.if_match_requests.get(host).copied().unwrap_or(0)
    }

    /// Requests counted for a route key.
    pub fn requests(&self, route: &str) -> u64 {
        self.requests_by_route.get(route).copied().unwrap_or(0)
    }
}

/// The live counters behind a mutex.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    inner: Mutex<ServeStats>,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> ServeStats {
        match self.inner.lock() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut ServeStats) -> R) -> R {
        match self.inner.lock() {
            Ok(mut g) => f(&mut g),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }

    pub(crate) fn request(&self, route: &str) -> u64 {
        self.with(|s| {
            let n = s.requests_by_route.entry(route.to_owned()).or_insert(0);
            *n += 1;
            *n - 1
        })
    }

    pub(crate) fn fault(&self, name: &str) {
        self.with(|s| *s.faults_injected.entry(name.to_owned()).or_insert(0) += 1);
    }

    pub(crate) fn if_match(&self, host: &str) {
        self.with(|s| *s.if_match_requests.entry(host.to_owned()).or_insert(0) += 1);
    }

    pub(crate) fn precondition_failed(&self) {
        self.with(|s| s.precondition_failed += 1);
    }

    pub(crate) fn auth_refused(&self) {
        self.with(|s| s.storage_auth_refused += 1);
    }

    /// A body response begins: it counts as in flight until [`InFlight::served`] records what
    /// reached the socket, or until it is dropped unsent (a refusal, a `HEAD`, a shutdown).
    pub(crate) fn response_started(&self) -> InFlight<'_> {
        self.with(|s| s.responses_in_flight += 1);
        InFlight {
            counters: self,
            open: true,
        }
    }
}

fn end_response(s: &mut ServeStats) {
    s.responses_in_flight = s.responses_in_flight.saturating_sub(1);
}

/// One body response in flight (see [`Counters::response_started`]).
#[derive(Debug)]
pub(crate) struct InFlight<'a> {
    counters: &'a Counters,
    open: bool,
}

impl InFlight<'_> {
    /// Counts the `len` bytes at `offset` of `file` that reached the socket, and ends the
    /// response, under one lock: a snapshot never sees the response ended but uncounted.
    pub(crate) fn served(mut self, file: &str, offset: u64, len: u64, spoiled: bool) {
        self.open = false;
        self.counters.with(|s| {
            end_response(s);
            if len == 0 {
                return;
            }
            s.bytes_served += len;
            if spoiled {
                s.bytes_spoiled += len;
            }
            s.files.entry(file.to_owned()).or_default().push(Served {
                offset,
                len,
                spoiled,
            });
        });
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if self.open {
            self.counters.with(end_response);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_counts_overlaps() {
        let c = Counters::default();
        c.response_started().served("f", 0, 100, false);
        c.response_started().served("f", 50, 100, false);
        c.response_started().served("f", 120, 10, true);
        let s = c.snapshot();
        assert_eq!(s.bytes_served("f"), 210);
        assert_eq!(s.max_serve_count("f"), 2);
        assert_eq!(
            s.served_more_than_once("f"),
            vec![ByteRange::new(50, 50), ByteRange::new(120, 10)]
        );
        assert_eq!(
            s.served_intact_more_than_once("f"),
            vec![ByteRange::new(50, 50)]
        );
        assert_eq!(s.spoiled_bytes(), 10);
        assert_eq!(s.bytes_covered_intact("f"), 150);
        assert_eq!(s.max_serve_count("g"), 0);
    }

    #[test]
    fn a_response_is_in_flight_until_counted_or_dropped() {
        let c = Counters::default();
        let a = c.response_started();
        let b = c.response_started();
        assert_eq!(c.snapshot().responses_in_flight, 2);
        a.served("f", 0, 10, false);
        let s = c.snapshot();
        assert_eq!((s.responses_in_flight, s.bytes_served), (1, 10));
        drop(b);
        assert_eq!(c.snapshot().responses_in_flight, 0);
        c.response_started().served("f", 10, 0, false);
        let s = c.snapshot();
        assert_eq!((s.responses_in_flight, s.bytes_served("f")), (0, 10));
    }
}
