//! Live counters of a run, shared by the engine (which bumps them) and the progress display
//! (which reads them). Plain atomics: no locks on the data path.

use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes and files of the current run.
#[derive(Debug, Default)]
pub struct Progress {
    bytes_done: AtomicU64,
    bytes_total: AtomicU64,
    files_done: AtomicU64,
    files_failed: AtomicU64,
}

/// A consistent-enough copy of the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProgressSnapshot {
    /// Bytes written to staging files (including bytes resumed from earlier runs).
    pub bytes_done: u64,
    /// Size of every file started so far.
    pub bytes_total: u64,
    /// Files published.
    pub files_done: u64,
    /// Files that ended without being published.
    pub files_failed: u64,
}

impl Progress {
    /// Adds a started file's size to the total.
    pub fn add_total(&self, n: u64) {
        self.bytes_total.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts bytes written.
    pub fn add_bytes(&self, n: u64) {
        self.bytes_done.fetch_add(n, Ordering::Relaxed);
    }

    /// Uncounts bytes that will be fetched again.
    pub fn sub_bytes(&self, n: u64) {
        // Saturating: a reset can race with the display reading the counter.
        let _ = self
            .bytes_done
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v.saturating_sub(n))
            });
    }

    /// Counts a file that ended.
    pub fn file_finished(&self, published: bool) {
        if published {
            self.files_done.fetch_add(1, Ordering::Relaxed);
        } else {
            self.files_failed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Reads the counters.
    pub fn snapshot(&self) -> ProgressSnapshot {
        ProgressSnapshot {
            bytes_done: self.bytes_done.load(Ordering::Relaxed),
            bytes_total: self.bytes_total.load(Ordering::Relaxed),
            files_done: self.files_done.load(Ordering::Relaxed),
            files_failed: self.files_failed.load(Ordering::Relaxed),
        }
    }
}
