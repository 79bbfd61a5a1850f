//! The two directories dxmirror works in, checked before anything is written: the mirror
//! root, which belongs to the administrator and must already exist as a writable directory
//! (it is often a mount point, and a mount that failed must never be filled in on the local
//! root filesystem), and the state directory, which is local and may be created, but only its
//! last component.
//!
//! This module decides and reports; it creates nothing but the state directory's last
//! component, and never follows a path further than `stat` does.

use std::io::ErrorKind;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};

use rustix::fs::Access;

/// Mode of a state directory this module creates.
const STATE_DIR_MODE: u32 = 0o750;

/// A mirror root or state directory that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DirError {
    /// The mirror root does not exist: most often a filesystem that is not mounted.
    #[error("mirror-root {} does not exist (is the filesystem mounted?)", .path.display())]
    RootMissing {
        /// The configured mirror root.
        path: PathBuf,
    },
    /// The mirror root exists but is not a directory.
    #[error("mirror-root {} is not a directory", .path.display())]
    RootNotADirectory {
        /// The configured mirror root.
        path: PathBuf,
    },
    /// A directory this process cannot write into.
    #[error("{what} {} is not writable by user {user}", .path.display())]
    NotWritable {
        /// `mirror-root` or `state-dir`.
        what: &'static str,
        /// The directory.
        path: PathBuf,
        /// Who tried, e.g. `dxmirror (uid 998)`.
        user: String,
    },
    /// A directory on a filesystem mounted read-only.
    #[error("{what} {} is on a read-only filesystem", .path.display())]
    ReadOnly {
        /// `mirror-root` or `state-dir`.
        what: &'static str,
        /// The directory.
        path: PathBuf,
    },
    /// The state directory's parent does not exist: only the last component is created.
    #[error("state-dir {}: its parent directory {} does not exist (only the state directory itself is created)", .path.display(), .parent.display())]
    StateParentMissing {
        /// The configured state directory.
        path: PathBuf,
        /// Its parent.
        parent: PathBuf,
    },
    /// The state directory exists but is not a directory.
    #[error("state-dir {} is not a directory", .path.display())]
    StateNotADirectory {
        /// The configured state directory.
        path: PathBuf,
    },
    /// Any other failure to look at or create a directory.
    #[error("{what} {}: {source}", .path.display())]
    Io {
        /// `mirror-root` or `state-dir`.
        what: &'static str,
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

impl DirError {
    /// The directory concerned.
    pub fn path(&self) -> &Path {
        match self {
            DirError::RootMissing { path }
            | DirError::RootNotADirectory { path }
            | DirError::NotWritable { path, .. }
            | DirError::ReadOnly { path, .. }
            | DirError::StateParentMissing { path, .. }
            | DirError::StateNotADirectory { path }
            | DirError::Io { path, .. } => path,
        }
    }

    /// True when waiting may cure it (a mount that appears, a directory an operator creates
    /// or fixes): the daemon waits and retries instead of exiting.
    pub fn is_mirror_root(&self) -> bool {
        match self {
            DirError::RootMissing { .. } | DirError::RootNotADirectory { .. } => true,
            DirError::NotWritable { what, .. }
            | DirError::ReadOnly { what, .. }
            | DirError::Io { what, .. } => *what == MIRROR_ROOT,
            DirError::StateParentMissing { .. } | DirError::StateNotADirectory { .. } => false,
        }
    }
}

const MIRROR_ROOT: &str = "mirror-root";
const STATE_DIR: &str = "state-dir";

/// Requires `path` to be an existing directory (a symlink to one is fine: the root is the
/// administrator's) that this process may create files in. Creates nothing.
pub fn check_mirror_root(path: &Path) -> Result<(), DirError> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => writable(MIRROR_ROOT, path),
        Ok(_) => Err(DirError::RootNotADirectory {
            path: path.to_owned(),
        }),
        Err(e) if e.kind() == ErrorKind::NotFound => Err(DirError::RootMissing {
            path: path.to_owned(),
        }),
        Err(source) => Err(DirError::Io {
            what: MIRROR_ROOT,
            path: path.to_owned(),
            source,
        }),
    }
}

/// Makes sure the state directory exists and is writable, creating its last component (mode
/// 0750) when missing; its parent must exist.
pub fn ensure_state_dir(path: &Path) -> Result<(), DirError> {
    let io = |source| DirError::Io {
        what: STATE_DIR,
        path: path.to_owned(),
        source,
    };
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => return writable(STATE_DIR, path),
        Ok(_) => {
            return Err(DirError::StateNotADirectory {
                path: path.to_owned(),
            })
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    match std::fs::DirBuilder::new()
        .recursive(false)
        .mode(STATE_DIR_MODE)
        .create(path)
    {
        Ok(()) => Ok(()),
        // Created meanwhile by someone else: fine if it is a directory now.
        Err(e) if e.kind() == ErrorKind::AlreadyExists && path.is_dir() => {
            writable(STATE_DIR, path)
        }
        Err(e) if e.kind() == ErrorKind::NotFound => Err(DirError::StateParentMissing {
            path: path.to_owned(),
            parent: parent_of(path),
        }),
        Err(e) if e.kind() == ErrorKind::PermissionDenied => Err(DirError::NotWritable {
            what: STATE_DIR,
            path: parent_of(path),
            user: current_user(),
        }),
        Err(e) if e.kind() == ErrorKind::ReadOnlyFilesystem => Err(DirError::ReadOnly {
            what: STATE_DIR,
            path: path.to_owned(),
        }),
        Err(e) => Err(io(e)),
    }
}

fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// Whether this process may create entries in the directory `path` (write and search).
fn writable(what: &'static str, path: &Path) -> Result<(), DirError> {
    match rustix::fs::access(path, Access::WRITE_OK | Access::EXEC_OK) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::ROFS) => Err(DirError::ReadOnly {
            what,
            path: path.to_owned(),
        }),
        Err(rustix::io::Errno::ACCESS) | Err(rustix::io::Errno::PERM) => {
            Err(DirError::NotWritable {
                what,
                path: path.to_owned(),
                user: current_user(),
            })
        }
        Err(e) => Err(DirError::Io {
            what,
            path: path.to_owned(),
            source: e.into(),
        }),
    }
}

/// The user this process runs as, by name with the uid in parentheses (`dxmirror (uid 998)`),
/// or the uid alone when the name cannot be found.
pub fn current_user() -> String {
    user_name(nix::unistd::getuid().as_raw())
}

/// A user as messages name one: `name (uid N)`, or `uid N` when the user database has no
/// name for it.
pub fn user_name(uid: u32) -> String {
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(user)) => format!("{} (uid {uid})", user.name),
        _ => format!("uid {uid}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn a_missing_mirror_root_is_refused_and_not_created() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("srv/stjude");
        let err = check_mirror_root(&root).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "mirror-root {} does not exist (is the filesystem mounted?)",
                root.display()
            )
        );
        assert!(err.is_mirror_root());
        assert!(!tmp.path().join("srv").exists());
    }

    #[test]
    fn a_mirror_root_that_is_a_file_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        std::fs::write(&root, b"").unwrap();
        let err = check_mirror_root(&root).unwrap_err().to_string();
        assert_eq!(
            err,
            format!("mirror-root {} is not a directory", root.display())
        );
    }

    #[test]
    fn an_existing_directory_is_a_mirror_root() {
        let tmp = tempfile::tempdir().unwrap();
        check_mirror_root(tmp.path()).unwrap();
    }

    #[test]
    fn the_state_dir_is_created_last_component_only_with_mode_0750() {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("state");
        ensure_state_dir(&state).unwrap();
        let mode = std::fs::metadata(&state).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & !0o750, 0, "{mode:o}");
        ensure_state_dir(&state).unwrap();

        let deep = tmp.path().join("no/such/state");
        let err = ensure_state_dir(&deep).unwrap_err().to_string();
        assert!(err.contains("its parent directory"), "{err}");
        assert!(!tmp.path().join("no").exists());
    }

    #[test]
    fn a_state_dir_that_is_a_file_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("state");
        std::fs::write(&state, b"").unwrap();
        let err = ensure_state_dir(&state).unwrap_err().to_string();
        assert!(err.ends_with("is not a directory"), "{err}");
    }

    #[test]
    fn the_current_user_has_a_uid() {
        assert!(current_user().contains(&format!("uid {}", nix::unistd::getuid())));
    }
}
