//! Disk-space budget of one engine: before a file starts, its remaining bytes must fit in the
//! mirror filesystem's free space minus the configured reserve minus what the files already in
//! progress still have to write. Each started file holds a [`Reservation`] that shrinks as its
//! bytes land on disk and is released when the file ends.
//!
//! This module only does the arithmetic and the book-keeping; it never waits, logs or
//! touches the journal (the engine does), and it never writes to disk.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::store::{free_space, StoreError};

/// Bytes still to be written by the files in progress, shared by all of them.
#[derive(Debug, Default)]
pub(super) struct DiskBudget {
    outstanding: Mutex<u64>,
}

/// Why a file does not fit yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Shortfall {
    /// The file's remaining bytes.
    pub need: u64,
    /// Free space on the filesystem.
    pub free: u64,
    /// The configured reserve.
    pub reserve: u64,
    /// Bytes promised to files already in progress.
    pub promised: u64,
}

impl DiskBudget {
    fn lock(&self) -> MutexGuard<'_, u64> {
        match self.outstanding.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Bytes currently promised to files in progress.
    #[cfg(test)]
    pub(super) fn promised(&self) -> u64 {
        *self.lock()
    }

    /// Reserves `need` bytes on the filesystem of `dir` if they fit in its free space minus
    /// `reserve` minus what is already promised; the shortfall otherwise.
    pub(super) fn try_reserve(
        self: &Arc<Self>,
        dir: &Path,
        need: u64,
        reserve: u64,
    ) -> Result<Result<Reservation, Shortfall>, StoreError> {
        // Held across the statvfs so that two files cannot both take the same free bytes.
        let mut promised = self.lock();
        let free = free_space(dir)?;
        if fits(need, free, reserve, *promised).is_err() {
            return Ok(Err(Shortfall {
                need,
                free,
                reserve,
                promised: *promised,
            }));
        }
        *promised = promised.saturating_add(need);
        Ok(Ok(Reservation {
            budget: self.clone(),
            left: Mutex::new(need),
        }))
    }
}

/// The check itself: `need` fits in `free - reserve - promised`.
fn fits(need: u64, free: u64, reserve: u64, promised: u64) -> Result<(), ()> {
    let available = free.saturating_sub(reserve).saturating_sub(promised);
    if need <= available {
        Ok(())
    } else {
        Err(())
    }
}

/// The bytes one file in progress may still write; released on drop.
#[derive(Debug)]
pub(super) struct Reservation {
    budget: Arc<DiskBudget>,
    left: Mutex<u64>,
}

impl Reservation {
    /// A reservation of nothing (for work that writes no new bytes).
    pub(super) fn none(budget: &Arc<DiskBudget>) -> Reservation {
        Reservation {
            budget: budget.clone(),
            left: Mutex::new(0),
        }
    }

    /// `n` bytes of this file are now on disk: free space already accounts for them.
    pub(super) fn consumed(&self, n: u64) {
        let mut left = match self.left.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let take = n.min(*left);
        *left -= take;
        let mut promised = self.budget.lock();
        *promised = promised.saturating_sub(take);
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let left = match self.left.lock() {
            Ok(g) => *g,
            Err(p) => *p.into_inner(),
        };
        let mut promised = self.budget.lock();
        *promised = promised.saturating_sub(left);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fits_subtracts_reserve_and_promised() {
        assert!(fits(10, 100, 50, 40).is_ok());
        assert!(fits(11, 100, 50, 40).is_err());
        assert!(fits(1, 10, 50, 0).is_err());
        assert!(fits(0, 0, 0, 0).is_ok());
    }

    #[test]
    fn reservations_are_counted_consumed_and_released() {
        let dir = tempfile::tempdir().unwrap();
        let budget = Arc::new(DiskBudget::default());
        let free = free_space(dir.path()).unwrap();
        // Half of the free space for one file: a second, equal one does not fit beside it.
        let half = free / 2 + 1;
        let a = budget.try_reserve(dir.path(), half, 0).unwrap().unwrap();
        assert_eq!(budget.promised(), half);
        let short = budget
            .try_reserve(dir.path(), half, 0)
            .unwrap()
            .unwrap_err();
        assert_eq!(short.need, half);
        assert_eq!(short.promised, half);
        a.consumed(10);
        assert_eq!(budget.promised(), half - 10);
        a.consumed(u64::MAX);
        assert_eq!(budget.promised(), 0);
        drop(a);
        assert_eq!(budget.promised(), 0);
        let b = budget.try_reserve(dir.path(), 7, 0).unwrap().unwrap();
        assert_eq!(budget.promised(), 7);
        drop(b);
        assert_eq!(budget.promised(), 0);
        // A reserve larger than the disk: nothing fits.
        assert!(budget
            .try_reserve(dir.path(), 1, u64::MAX)
            .unwrap()
            .is_err());
        assert!(budget
            .try_reserve(&dir.path().join("missing"), 1, 0)
            .is_err());
    }
}
