//! The single-writer rule: one writing process (`sync`, the daemon, `verify --repair`) per
//! state directory and per mirror root, enforced with advisory `flock` locks.
//!
//! A second writer gets a clear error naming the lock file and the pid that holds it. The
//! locks are released by the kernel when the process exits, however it exits, so a crash or
//! SIGKILL never leaves a stale lock behind. Read-only commands never take these locks.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rustix::fs::{flock, FlockOperation};

/// Name of the lock file in the state directory.
pub const STATE_LOCK: &str = "dxmirror.lock";
/// Name of the lock file in the mirror root.
pub const ROOT_LOCK: &str = ".dxmirror.lock";

/// A lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it.
    #[error("another dxmirror writer{holder} already holds {path}; only one sync, daemon or verify --repair may run per state directory and mirror root")]
    Held {
        /// The lock file.
        path: PathBuf,
        /// ` (pid N)` when known, else empty.
        holder: String,
    },
    /// The mirror root or the state directory cannot be used.
    #[error(transparent)]
    Dir(#[from] crate::dirs::DirError),
    /// The lock file could not be created or locked.
    #[error("cannot use lock file {path}: {source}")]
    Io {
        /// The lock file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Held locks; dropping this releases them.
#[derive(Debug)]
pub struct WriterLock {
    _files: Vec<File>,
}

impl WriterLock {
    /// Takes the writer locks of a state directory and a mirror root. The state directory's
    /// last component is created (0750) when missing; the mirror root must exist already as a
    /// writable directory (see [`crate::dirs`]).
    pub fn acquire(state_dir: &Path, mirror_root: &Path) -> Result<WriterLock, LockError> {
        let mut lock = WriterLock::state(state_dir)?;
        lock.add_mirror_root(mirror_root)?;
        Ok(lock)
    }

    /// Takes the state directory's lock only (the daemon, which may have to wait for its
    /// mirror root to be mounted, takes that one later with [`WriterLock::add_mirror_root`]).
    pub fn state(state_dir: &Path) -> Result<WriterLock, LockError> {
        crate::dirs::ensure_state_dir(state_dir)?;
        let a = lock_file(&state_dir.join(STATE_LOCK))?;
        Ok(WriterLock { _files: vec![a] })
    }

    /// Adds the mirror root's lock; the root must exist as a writable directory.
    pub fn add_mirror_root(&mut self, mirror_root: &Path) -> Result<(), LockError> {
        crate::dirs::check_mirror_root(mirror_root)?;
        let b = lock_file(&mirror_root.join(ROOT_LOCK))?;
        self._files.push(b);
        Ok(())
    }
}

fn lock_file(path: &Path) -> Result<File, LockError> {
    let io = |source| LockError::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o640)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
        .map_err(io)?;
    // Retry for a moment before calling the lock held: a process that forks (to run a child)
    // holds a copy of every descriptor until its child execs, ours included.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    let mut locked = flock(&file, FlockOperation::NonBlockingLockExclusive).is_ok();
    while !locked && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(25));
        locked = flock(&file, FlockOperation::NonBlockingLockExclusive).is_ok();
    }
    if !locked {
        let mut text = String::new();
        let _ = file.read_to_string(&mut text);
        let holder = match text.trim().parse::<u32>() {
            Ok(pid) => format!(" (pid {pid})"),
            Err(_) => String::new(),
        };
        return Err(LockError::Held {
            path: path.to_owned(),
            holder,
        });
    }
    file.set_len(0).map_err(io)?;
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    writeln!(file, "{}", std::process::id()).map_err(io)?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_writer_is_refused_until_the_first_drops() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        let first = WriterLock::acquire(&state, &root).unwrap();
        let err = WriterLock::acquire(&state, &root).unwrap_err().to_string();
        assert!(err.contains("already holds"), "{err}");
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(first);
        WriterLock::acquire(&state, &root).unwrap();
    }

    #[test]
    fn a_missing_mirror_root_is_refused_and_not_created() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("srv/stjude");
        let err = WriterLock::acquire(&dir.path().join("state"), &root)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("does not exist (is the filesystem mounted?)"),
            "{err}"
        );
        assert!(!dir.path().join("srv").exists());
    }
}
