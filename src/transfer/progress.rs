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
    planned_bytes: AtomicU64,
    planned_files: AtomicU64,
    projects_planned: AtomicU64,
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
    /// Bytes of every file the passes so far planned to fetch (their whole sizes: bytes
    /// resumed from disk count in `bytes_done` as they are found).
    pub planned_bytes: u64,
    /// Files the passes so far planned to fetch.
    pub planned_files: u64,
    /// Passes that have planned (0: still listing).
    pub projects_planned: u64,
}

impl ProgressSnapshot {
    /// The total to show: what was planned, or what has started if more (a file started
    /// before its pass planned, as a resumed one is counted in both).
    pub fn total(&self) -> u64 {
        self.planned_bytes
            .max(self.bytes_total)
            .max(self.bytes_done)
    }
}

impl Progress {
    /// Records one pass's plan: `files` files of `bytes` bytes in all to fetch.
    pub fn plan(&self, bytes: u64, files: u64) {
        self.planned_bytes.fetch_add(bytes, Ordering::Relaxed);
        self.planned_files.fetch_add(files, Ordering::Relaxed);
        self.projects_planned.fetch_add(1, Ordering::Relaxed);
    }

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
            planned_bytes: self.planned_bytes.load(Ordering::Relaxed),
            planned_files: self.planned_files.load(Ordering::Relaxed),
            projects_planned: self.projects_planned.load(Ordering::Relaxed),
        }
    }
}
