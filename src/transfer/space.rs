//! Disk-space budget of one engine: before a file starts, its remaining bytes must fit in the
//! mirror filesystem's free space minus the configured reserve minus what the files already in
//! progress still have to write. Each started file holds a [`Reservation`] that shrinks as its
//! bytes land on disk and is released when the file ends.
//!
//! [`DiskBudget`] and [`Reservation`] only do the arithmetic and the book-keeping: they never
//! wait, log or touch the journal, and never write to disk. [`Engine::wait_for_space`] is the
//! engine's side: it waits for a file to fit, reporting the wait once.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tracing::{info, warn};

use super::{Engine, FileJob, TransferError};
use crate::journal::FileState;
use crate::store::{free_space, StoreError};
use crate::units::human_bytes;

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

impl Shortfall {
    /// The file's reason while it waits (also its journal event).
    /// `dir` is where the file goes (its file system is the one short of space).
    pub(super) fn reason(&self, dir: &std::path::Path) -> String {
        let promised = if self.promised > 0 {
            format!(
                ", promised to files in progress {}",
                human_bytes(self.promised)
            )
        } else {
            String::new()
        };
        format!(
            "waiting for disk space on {}: need {}, free {}, reserve {}{promised}",
            dir.display(),
            human_bytes(self.need),
            human_bytes(self.free),
            human_bytes(self.reserve),
        )
    }
}

/// Whether a file fits now.
#[derive(Debug)]
pub(super) enum SpaceCheck {
    /// It fits: its bytes are reserved.
    Reserved(Reservation),
    /// It does not fit yet.
    Short(Shortfall),
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
    ) -> Result<SpaceCheck, StoreError> {
        // Held across the statvfs so that two files cannot both take the same free bytes.
        let mut promised = self.lock();
        let free = free_space(dir)?;
        if fits(need, free, reserve, *promised).is_err() {
            return Ok(SpaceCheck::Short(Shortfall {
                need,
                free,
                reserve,
                promised: *promised,
            }));
        }
        *promised = promised.saturating_add(need);
        Ok(SpaceCheck::Reserved(Reservation {
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

impl Engine {
    /// Waits until `need` more bytes of this file fit on the mirror's filesystem (free space
    /// minus the reserve minus what files in progress still have to write), reporting the
    /// wait once (log, journal event and the file's reason), and reserves them.
    pub(super) async fn wait_for_space(
        &self,
        job: &FileJob,
        need: u64,
    ) -> Result<Reservation, TransferError> {
        let key = job.key();
        let dir = job.store.dir().to_path_buf();
        let mut waiting_since: Option<Instant> = None;
        let mut _counted = None;
        loop {
            match self.disk.try_reserve(&dir, need, self.cfg.disk_reserve) {
                Ok(SpaceCheck::Reserved(reservation)) => {
                    if let Some(since) = waiting_since {
                        info!(
                            len = need,
                            elapsed_ms = since.elapsed().as_millis() as u64,
                            "disk space available; file starts"
                        );
                        self.journal
                            .set_file_state(&key, FileState::Fetching, None)
                            .await?;
                    }
                    return Ok(reservation);
                }
                Ok(SpaceCheck::Short(short)) => {
                    if waiting_since.is_none() {
                        waiting_since = Some(Instant::now());
                        _counted = Some(self.client.counters().disk_wait());
                        let reason = short.reason(&dir);
                        warn!("{reason}");
                        self.file_warning(&key, reason.clone()).await?;
                        self.journal
                            .set_file_state(&key, FileState::Fetching, Some(reason))
                            .await?;
                    }
                }
                Err(e) => {
                    // Free space unknown: start anyway; a full disk still pauses the writes.
                    warn!(error = %e, "cannot read free space; starting without the check");
                    return Ok(Reservation::none(&self.disk));
                }
            }
            tokio::time::sleep(self.cfg.disk_poll).await;
        }
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

    fn reserved(check: SpaceCheck) -> Reservation {
        match check {
            SpaceCheck::Reserved(r) => r,
            SpaceCheck::Short(s) => panic!("does not fit: {s:?}"),
        }
    }

    #[test]
    fn a_shortfall_names_every_term() {
        let short = Shortfall {
            need: 3 << 30,
            free: 2 << 30,
            reserve: 1 << 30,
            promised: 512 << 20,
        };
        assert_eq!(
            short.reason(std::path::Path::new("/srv/stjude/P")),
            "waiting for disk space on /srv/stjude/P: need 3.0 GiB, free 2.0 GiB, reserve 1.0 GiB, promised to files in progress 512.0 MiB"
        );
        let alone = Shortfall {
            promised: 0,
            ..short
        };
        assert_eq!(
            alone.reason(std::path::Path::new("/srv/stjude/P")),
            "waiting for disk space on /srv/stjude/P: need 3.0 GiB, free 2.0 GiB, reserve 1.0 GiB"
        );
    }

    #[test]
    fn reservations_are_counted_consumed_and_released() {
        let dir = tempfile::tempdir().unwrap();
        let budget = Arc::new(DiskBudget::default());
        let free = free_space(dir.path()).unwrap();
        // Half of the free space for one file: a second, equal one does not fit beside it.
        let half = free / 2 + 1;
        let a = reserved(budget.try_reserve(dir.path(), half, 0).unwrap());
        assert_eq!(budget.promised(), half);
        let SpaceCheck::Short(short) = budget.try_reserve(dir.path(), half, 0).unwrap() else {
            panic!("a second half of the disk fitted");
        };
        assert_eq!(short.need, half);
        assert_eq!(short.promised, half);
        a.consumed(10);
        assert_eq!(budget.promised(), half - 10);
        a.consumed(u64::MAX);
        assert_eq!(budget.promised(), 0);
        drop(a);
        assert_eq!(budget.promised(), 0);
        let b = reserved(budget.try_reserve(dir.path(), 7, 0).unwrap());
        assert_eq!(budget.promised(), 7);
        drop(b);
        assert_eq!(budget.promised(), 0);
        // A reserve larger than the disk: nothing fits.
        assert!(matches!(
            budget.try_reserve(dir.path(), 1, u64::MAX).unwrap(),
            SpaceCheck::Short(_)
        ));
        assert!(budget
            .try_reserve(&dir.path().join("missing"), 1, 0)
            .is_err());
    }
}
