//! Group commit of directory fsyncs: publishing renames a file into a folder and must then
//! fsync that folder (and the staging folder) before the journal may say the file is
//! published. Many files published at once share one fsync per folder: a caller's rename is
//! covered by any fsync of that folder that *started* after the rename, so while one fsync
//! runs, every caller arriving meanwhile waits for the next one, which one of them runs for
//! all.
//!
//! This module only orders fsyncs; it does not decide paths or open anything.

use std::collections::HashMap;
use std::os::fd::BorrowedFd;
use std::sync::{Condvar, Mutex, PoisonError};

/// Per-folder fsync tickets.
#[derive(Debug, Default)]
struct Slot {
    /// Tickets handed out (one per caller).
    requested: u64,
    /// Every ticket up to this one is covered by a finished fsync.
    completed: u64,
    /// An fsync of this folder is under way.
    running: bool,
}

/// Shared directory fsyncs of one project store, keyed by folder.
#[derive(Debug, Default)]
pub(super) struct DirSyncs {
    slots: Mutex<HashMap<String, Slot>>,
    finished: Condvar,
}

impl DirSyncs {
    /// Makes durable every change made in the folder `key` (open as `fd`) before this call,
    /// by an fsync that started after it: either one another caller runs meanwhile, or its
    /// own. Blocks; call it off the async runtime. A failed fsync covers nobody: each caller
    /// it concerned gets the error, and later callers try again.
    pub(super) fn sync(&self, key: &str, fd: BorrowedFd<'_>) -> rustix::io::Result<()> {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        let ticket = {
            let slot = slots.entry(key.to_owned()).or_default();
            slot.requested += 1;
            slot.requested
        };
        loop {
            let slot = slots.entry(key.to_owned()).or_default();
            if slot.completed >= ticket {
                return Ok(());
            }
            if !slot.running {
                slot.running = true;
                let target = slot.requested;
                drop(slots);
                let res = rustix::fs::fsync(fd);
                slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
                let slot = slots.entry(key.to_owned()).or_default();
                slot.running = false;
                if res.is_ok() {
                    slot.completed = slot.completed.max(target);
                }
                self.finished.notify_all();
                return res;
            }
            slots = self
                .finished
                .wait(slots)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// The number of tickets of `key` covered by a finished fsync.
    #[cfg(test)]
    fn completed(&self, key: &str) -> u64 {
        self.slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .map_or(0, |s| s.completed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::sync::Arc;

    #[test]
    fn every_caller_is_covered_and_concurrent_callers_share_fsyncs() {
        let dir = tempfile::tempdir().unwrap();
        let fd = std::fs::File::open(dir.path()).unwrap();
        let fd = Arc::new(fd);
        let syncs = Arc::new(DirSyncs::default());
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let (syncs, fd) = (syncs.clone(), fd.clone());
                std::thread::spawn(move || {
                    for _ in 0..20 {
                        syncs.sync("a/b", fd.as_fd()).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // All 320 tickets are covered, and nobody is left running.
        assert_eq!(syncs.completed("a/b"), 320);
        let slots = syncs.slots.lock().unwrap();
        assert!(!slots["a/b"].running);
        assert_eq!(slots["a/b"].requested, 320);
    }

    #[test]
    fn a_failed_fsync_is_reported_and_covers_nobody() {
        // fsync of a socket fails with EINVAL.
        let (r, _w) = std::os::unix::net::UnixStream::pair().unwrap();
        let syncs = DirSyncs::default();
        assert!(syncs.sync("x", r.as_fd()).is_err());
        assert_eq!(syncs.completed("x"), 0);
        let dir = tempfile::tempdir().unwrap();
        let fd = std::fs::File::open(dir.path()).unwrap();
        syncs.sync("x", fd.as_fd()).unwrap();
        assert_eq!(syncs.completed("x"), 2);
    }
}
