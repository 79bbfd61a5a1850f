//! The local mirror on disk. This module alone decides on-disk paths: the project directory
//! under the mirror root, the final path of each file, the hidden staging area, and the
//! `SHA256SUMS` manifest.
//!
//! Layout: `<mirror-root>/<project dir>/<folder>/<name>`, with staging files at
//! `<mirror-root>/<project dir>/.dxmirror/staging/<file-id>.part` (same filesystem as the final
//! paths, never next to real names). Directories are created 0750 and files 0640, set
//! explicitly. Every path below the project directory is walked with `openat` and
//! `O_NOFOLLOW` from a held directory descriptor, so a planted symlink is refused and never
//! written through. Finished files are never overwritten.
//!
//! This module does not hash, fetch or journal anything, and it never decides *whether* to
//! publish, replace or repair a file: callers do, and pass the decision in.

mod dirsync;
mod paths;

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, RenameFlags};

use crate::model::FileId;

pub use paths::{assign_paths, manifest_name, project_dir_name, RelPath, HIDDEN_DIR};

/// Mode of every directory the store creates.
const DIR_MODE: u32 = 0o750;
/// Mode of every file the store creates.
const FILE_MODE: u32 = 0o640;
/// The staging folder's key among the shared directory fsyncs (folder keys of final paths
/// are relative and never start with `/`).
const STAGING_SYNC_KEY: &str = "/staging";
/// Suffix of a staging file.
const PART_SUFFIX: &str = ".part";

/// A failure of the local store. Every variant names the path it concerns.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The mirror root is missing, not a directory or not writable; it is never created.
    #[error(transparent)]
    MirrorRoot(#[from] crate::dirs::DirError),
    /// A filesystem operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done (`create dir`, `open`, `rename`, ...).
        op: &'static str,
        /// The path concerned.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A path component is a symlink (or not a directory) where the store needs a directory
    /// or a file of its own; nothing is written through it.
    #[error("refusing {path}: it is a symlink or not a plain {expected}")]
    NotPlain {
        /// The offending path.
        path: PathBuf,
        /// What was expected there (`directory`, `file`).
        expected: &'static str,
    },
    /// The destination already exists and is never overwritten.
    #[error("{path} already exists")]
    Exists {
        /// The existing path.
        path: PathBuf,
    },
    /// A staging file exists with a length other than the planned size.
    #[error("staging file {path} is {actual} bytes, expected {expected}")]
    StagingSize {
        /// The staging file.
        path: PathBuf,
        /// The planned size.
        expected: u64,
        /// Its actual length.
        actual: u64,
    },
    /// A relative path or name that could escape or clash with the store's own files.
    #[error("unsafe path {path:?}: {reason}")]
    UnsafePath {
        /// The rejected path.
        path: String,
        /// Why.
        reason: &'static str,
    },
}

/// True when `e` says the disk (or the user's quota) is full (ENOSPC, EDQUOT): the one test of
/// it, for the store's own errors and for the engine's writes into staging files.
pub fn is_disk_full(e: &io::Error) -> bool {
    let code = e.raw_os_error();
    code == Some(rustix::io::Errno::NOSPC.raw_os_error())
        || code == Some(rustix::io::Errno::DQUOT.raw_os_error())
        || e.kind() == io::ErrorKind::StorageFull
        || e.kind() == io::ErrorKind::QuotaExceeded
}

impl StoreError {
    /// True when the disk (or the user's quota) is full: retrying later may succeed, retrying
    /// now will not.
    pub fn is_disk_full(&self) -> bool {
        match self {
            StoreError::Io { source, .. } => is_disk_full(source),
            _ => false,
        }
    }

    /// The path the error concerns.
    pub fn path(&self) -> &Path {
        match self {
            StoreError::Io { path, .. }
            | StoreError::NotPlain { path, .. }
            | StoreError::Exists { path }
            | StoreError::StagingSize { path, .. } => path,
            StoreError::UnsafePath { path, .. } => Path::new(path),
            StoreError::MirrorRoot(e) => e.path(),
        }
    }
}

fn io_err<'p>(
    op: &'static str,
    path: &'p Path,
) -> impl FnOnce(rustix::io::Errno) -> StoreError + 'p {
    move |errno| StoreError::Io {
        op,
        path: path.to_owned(),
        source: io::Error::from(errno),
    }
}

fn std_err<'p>(op: &'static str, path: &'p Path) -> impl FnOnce(io::Error) -> StoreError + 'p {
    move |source| StoreError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// Available bytes (for an unprivileged user) on the filesystem holding `path`.
pub fn free_space(path: &Path) -> Result<u64, StoreError> {
    let st = rustix::fs::statvfs(path).map_err(io_err("statvfs", path))?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Opens (creating it 0750 if missing) the directory `name` inside `parent`, refusing a
/// symlink or a non-directory. `shown` is the full path, for errors.
fn open_or_create_dir(
    parent: BorrowedFd<'_>,
    name: &str,
    shown: &Path,
) -> Result<OwnedFd, StoreError> {
    let created = match rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(DIR_MODE)) {
        Ok(()) => true,
        Err(rustix::io::Errno::EXIST) => false,
        Err(e) => return Err(io_err("create dir", shown)(e)),
    };
    let fd = open_dir(parent, name, shown)?;
    if created {
        // mkdirat's mode is filtered by the umask; set it explicitly.
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(DIR_MODE)).map_err(io_err("chmod", shown))?;
    }
    Ok(fd)
}

/// Opens the existing directory `name` inside `parent` without following a symlink.
fn open_dir(parent: BorrowedFd<'_>, name: &str, shown: &Path) -> Result<OwnedFd, StoreError> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    match rustix::fs::openat(parent, name, flags, Mode::empty()) {
        Ok(fd) => Ok(fd),
        Err(rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR) => Err(StoreError::NotPlain {
            path: shown.to_owned(),
            expected: "directory",
        }),
        Err(e) => Err(io_err("open dir", shown)(e)),
    }
}

/// The type of `name` in `parent` without following symlinks, `None` when absent.
fn entry_type(
    parent: BorrowedFd<'_>,
    name: &str,
    shown: &Path,
) -> Result<Option<FileType>, StoreError> {
    match rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(FileType::from_raw_mode(st.st_mode))),
        Err(rustix::io::Errno::NOENT) => Ok(None),
        Err(e) => Err(io_err("stat", shown)(e)),
    }
}

/// Renames without replacing an existing destination. Uses `RENAME_NOREPLACE` where the
/// filesystem supports it, else (NFS and some cluster filesystems) a check then a rename:
/// the store's lock makes the store the only writer, so the gap is not a race in practice.
fn rename_noreplace(
    from_dir: BorrowedFd<'_>,
    from: &str,
    to_dir: BorrowedFd<'_>,
    to: &str,
    shown_to: &Path,
) -> Result<(), StoreError> {
    match rustix::fs::renameat_with(from_dir, from, to_dir, to, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::EXIST) => Err(StoreError::Exists {
            path: shown_to.to_owned(),
        }),
        Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS | rustix::io::Errno::OPNOTSUPP) => {
            if entry_type(to_dir, to, shown_to)?.is_some() {
                return Err(StoreError::Exists {
                    path: shown_to.to_owned(),
                });
            }
            rustix::fs::renameat(from_dir, from, to_dir, to).map_err(io_err("rename", shown_to))
        }
        Err(e) => Err(io_err("rename", shown_to)(e)),
    }
}

/// One project's directory in the mirror, holding descriptors of the project directory and
/// its staging directory so nothing above or at them is looked up again.
#[derive(Debug)]
pub struct ProjectStore {
    dir: PathBuf,
    dir_fd: OwnedFd,
    hidden_fd: OwnedFd,
    staging_dir: PathBuf,
    staging_fd: OwnedFd,
    /// Directory fsyncs shared by files published at once.
    dir_syncs: dirsync::DirSyncs,
}

impl ProjectStore {
    /// Opens `<mirror_root>/<dir_name>`, creating it and `.dxmirror/staging` (0750) when
    /// missing. The mirror root itself is the administrator's, must exist (it is never
    /// created: an unmounted filesystem must not be filled in on the local disk) and may be
    /// a symlink; the project directory and everything in it may not.
    pub fn open(mirror_root: &Path, dir_name: &str) -> Result<ProjectStore, StoreError> {
        if !is_single_component(dir_name) || dir_name.starts_with('.') {
            return Err(StoreError::UnsafePath {
                path: dir_name.chars().take(300).collect(),
                reason: "not a plain directory name",
            });
        }
        crate::dirs::check_mirror_root(mirror_root)?;
        let root_fd = rustix::fs::open(
            mirror_root,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(io_err("open dir", mirror_root))?;
        let dir = mirror_root.join(dir_name);
        let dir_fd = open_or_create_dir(root_fd.as_fd(), dir_name, &dir)?;
        let hidden = dir.join(HIDDEN_DIR);
        let hidden_fd = open_or_create_dir(dir_fd.as_fd(), HIDDEN_DIR, &hidden)?;
        let staging_dir = hidden.join("staging");
        let staging_fd = open_or_create_dir(hidden_fd.as_fd(), "staging", &staging_dir)?;
        tracing::debug!(dir = %dir.display(), "project store opened");
        Ok(ProjectStore {
            dir,
            dir_fd,
            hidden_fd,
            staging_dir,
            staging_fd,
            dir_syncs: dirsync::DirSyncs::default(),
        })
    }

    /// The project directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where a file's bytes are written before it is published.
    pub fn staging_path(&self, id: &FileId) -> PathBuf {
        self.staging_dir.join(part_name(id))
    }

    /// Where a file lives once published.
    pub fn final_path(&self, rel: &RelPath) -> PathBuf {
        self.dir.join(rel.as_path())
    }

    /// Opens a file's staging file read+write, never truncating it. A new one is created 0640
    /// and sized to `size` (sparse). Returns the file and whether it was created. An existing
    /// one of another length is [`StoreError::StagingSize`], so the caller can re-plan.
    pub fn open_staging(&self, id: &FileId, size: u64) -> Result<(File, bool), StoreError> {
        let name = part_name(id);
        let path = self.staging_path(id);
        let base = OFlags::RDWR | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let (fd, created) =
            match rustix::fs::openat(&self.staging_fd, name.as_str(), base, Mode::empty()) {
                Ok(fd) => (fd, false),
                Err(rustix::io::Errno::NOENT) => {
                    let fd = rustix::fs::openat(
                        &self.staging_fd,
                        name.as_str(),
                        base | OFlags::CREATE | OFlags::EXCL,
                        Mode::from_raw_mode(FILE_MODE),
                    )
                    .map_err(io_err("create", &path))?;
                    (fd, true)
                }
                Err(rustix::io::Errno::LOOP) => {
                    return Err(StoreError::NotPlain {
                        path,
                        expected: "file",
                    })
                }
                Err(e) => return Err(io_err("open", &path)(e)),
            };
        let st = rustix::fs::fstat(&fd).map_err(io_err("stat", &path))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(StoreError::NotPlain {
                path,
                expected: "file",
            });
        }
        let file = File::from(fd);
        if created {
            rustix::fs::fchmod(&file, Mode::from_raw_mode(FILE_MODE))
                .map_err(io_err("chmod", &path))?;
            file.set_len(size).map_err(std_err("set length", &path))?;
            tracing::debug!(file_id = %id, len = size, "staging file created");
        } else {
            let actual = u64::try_from(st.st_size).unwrap_or(0);
            if actual != size {
                return Err(StoreError::StagingSize {
                    path,
                    expected: size,
                    actual,
                });
            }
        }
        Ok((file, created))
    }

    /// Gives a staging file the platform's modification time (ms since the epoch), as
    /// `rsync -t` does, before it is published: downstream `make`-style pipelines and
    /// backups see the platform's time, not the download's. The access time is left alone.
    pub fn set_staged_mtime(&self, id: &FileId, modified_ms: i64) -> Result<(), StoreError> {
        let times = rustix::fs::Timestamps {
            last_access: rustix::fs::Timespec {
                tv_sec: 0,
                tv_nsec: rustix::fs::UTIME_OMIT,
            },
            last_modification: rustix::fs::Timespec {
                tv_sec: modified_ms.div_euclid(1000),
                tv_nsec: modified_ms.rem_euclid(1000) * 1_000_000,
            },
        };
        rustix::fs::utimensat(
            &self.staging_fd,
            part_name(id).as_str(),
            &times,
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(io_err(
            "set the modification time of",
            &self.staging_path(id),
        ))
    }

    /// Deletes a file's staging file; an absent one is fine.
    pub fn remove_staging(&self, id: &FileId) -> Result<(), StoreError> {
        match rustix::fs::unlinkat(&self.staging_fd, part_name(id).as_str(), AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(e) => Err(io_err("remove", &self.staging_path(id))(e)),
        }
    }

    /// The files that have a staging file, sorted. Other entries are ignored.
    pub fn list_staging(&self) -> Result<Vec<FileId>, StoreError> {
        let mut dir = rustix::fs::Dir::read_from(&self.staging_fd)
            .map_err(io_err("list", &self.staging_dir))?;
        let mut ids = Vec::new();
        while let Some(entry) = dir.read() {
            let entry = entry.map_err(io_err("list", &self.staging_dir))?;
            let Ok(name) = entry.file_name().to_str() else {
                continue;
            };
            if let Some(id) = name
                .strip_suffix(PART_SUFFIX)
                .and_then(|s| s.parse::<FileId>().ok())
            {
                ids.push(id);
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// Opens (creating 0750 as needed) the folders of `rel` below the project directory,
    /// refusing symlinks, and returns the innermost one's descriptor and the file name.
    fn parent_of<'r>(
        &self,
        rel: &'r RelPath,
        create: bool,
    ) -> Result<(OwnedFd, &'r str), StoreError> {
        let (folders, name) = rel.split_parent();
        let mut shown = self.dir.clone();
        let mut fd: Option<OwnedFd> = None;
        for comp in folders {
            shown.push(comp);
            let parent = fd.as_ref().map_or(self.dir_fd.as_fd(), |f| f.as_fd());
            let next = if create {
                // Usually there already: open it, and create it only when missing.
                match open_dir(parent, comp, &shown) {
                    Err(StoreError::Io { source, .. })
                        if source.kind() == io::ErrorKind::NotFound =>
                    {
                        open_or_create_dir(parent, comp, &shown)?
                    }
                    other => other?,
                }
            } else {
                open_dir(parent, comp, &shown)?
            };
            fd = Some(next);
        }
        let fd = match fd {
            Some(fd) => fd,
            None => self.dir_fd.try_clone().map_err(std_err("dup", &self.dir))?,
        };
        Ok((fd, name))
    }

    /// Moves a finished staging file to its final path: creates the folders (0750, refusing
    /// symlinks), fsyncs the file, renames it and fsyncs the folder. An existing final path
    /// is never overwritten: that is [`StoreError::Exists`] and the caller decides.
    pub fn publish(&self, id: &FileId, rel: &RelPath) -> Result<PathBuf, StoreError> {
        let staging = self.staging_path(id);
        let file = rustix::fs::openat(
            &self.staging_fd,
            part_name(id).as_str(),
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(io_err("open", &staging))?;
        rustix::fs::fsync(&file).map_err(io_err("fsync", &staging))?;
        drop(file);
        self.publish_synced(id, rel)
    }

    /// [`ProjectStore::publish`] for a staging file whose data the caller has already made
    /// durable (`fdatasync` after its last write): creates the folders, renames it and fsyncs
    /// the folders, without syncing the file again.
    pub fn publish_synced(&self, id: &FileId, rel: &RelPath) -> Result<PathBuf, StoreError> {
        let part = part_name(id);
        let final_path = self.final_path(rel);
        let (parent, name) = self.parent_of(rel, true)?;
        rename_noreplace(
            self.staging_fd.as_fd(),
            &part,
            parent.as_fd(),
            name,
            &final_path,
        )?;
        // Both folders' fsyncs are shared with the files published meanwhile.
        let (folders, _) = rel.split_parent();
        self.dir_syncs
            .sync(&folders.join("/"), parent.as_fd())
            .map_err(io_err(
                "fsync dir",
                final_path.parent().unwrap_or(&self.dir),
            ))?;
        self.dir_syncs
            .sync(STAGING_SYNC_KEY, self.staging_fd.as_fd())
            .map_err(io_err("fsync dir", &self.staging_dir))?;
        tracing::debug!(file_id = %id, path = %final_path.display(), "published");
        Ok(final_path)
    }

    /// Publishes over an existing file by first renaming it to `keep_old_as` (which must not
    /// exist), for when the platform replaced a file. Without an existing file this is
    /// [`ProjectStore::publish`].
    pub fn publish_replacing(
        &self,
        id: &FileId,
        rel: &RelPath,
        keep_old_as: &RelPath,
    ) -> Result<PathBuf, StoreError> {
        let (parent, name) = self.parent_of(rel, true)?;
        if entry_type(parent.as_fd(), name, &self.final_path(rel))?.is_some() {
            let (keep_parent, keep_name) = self.parent_of(keep_old_as, true)?;
            let keep_path = self.final_path(keep_old_as);
            rename_noreplace(
                parent.as_fd(),
                name,
                keep_parent.as_fd(),
                keep_name,
                &keep_path,
            )?;
            rustix::fs::fsync(&keep_parent).map_err(io_err("fsync dir", &keep_path))?;
            tracing::info!(file_id = %id, kept = %keep_path.display(), "previous version kept");
        }
        self.publish(id, rel)
    }

    /// Moves a published file back into staging (for repair). Refuses when a staging file
    /// already exists.
    pub fn unstage(&self, rel: &RelPath, id: &FileId) -> Result<PathBuf, StoreError> {
        let (parent, name) = self.parent_of(rel, false)?;
        let final_path = self.final_path(rel);
        match entry_type(parent.as_fd(), name, &final_path)? {
            Some(FileType::RegularFile) => {}
            Some(_) => {
                return Err(StoreError::NotPlain {
                    path: final_path,
                    expected: "file",
                })
            }
            None => {
                return Err(StoreError::Io {
                    op: "unstage",
                    path: final_path,
                    source: io::Error::from(io::ErrorKind::NotFound),
                })
            }
        }
        let staging = self.staging_path(id);
        rename_noreplace(
            parent.as_fd(),
            name,
            self.staging_fd.as_fd(),
            &part_name(id),
            &staging,
        )?;
        rustix::fs::fsync(&self.staging_fd).map_err(io_err("fsync dir", &self.staging_dir))?;
        rustix::fs::fsync(&parent).map_err(io_err("fsync dir", &final_path))?;
        tracing::info!(file_id = %id, path = %final_path.display(), "unstaged for repair");
        Ok(staging)
    }

    /// Writes the manifest `name` in the project directory atomically: lines `<hex>  <path>`
    /// sorted by path, escaped as coreutils does, so `sha256sum -c <name>` run in the project
    /// directory checks every file.
    pub fn write_manifest(
        &self,
        entries: &[(RelPath, [u8; 32])],
        name: &str,
    ) -> Result<(), StoreError> {
        if !is_single_component(name) {
            return Err(StoreError::UnsafePath {
                path: name.chars().take(300).collect(),
                reason: "manifest name must be one component",
            });
        }
        if entries.iter().any(|(rel, _)| rel.as_str() == name) {
            return Err(StoreError::UnsafePath {
                path: name.to_owned(),
                reason: "a project file has the manifest's name",
            });
        }
        let mut sorted: Vec<&(RelPath, [u8; 32])> = entries.iter().collect();
        sorted.sort_by(|a, b| a.0.cmp(&b.0));
        let mut text = String::with_capacity(sorted.len() * 100);
        for (rel, sha) in sorted {
            text.push_str(&manifest_line(rel.as_str(), sha));
        }

        let tmp_name = format!("{name}.tmp");
        let tmp_path = self.dir.join(HIDDEN_DIR).join(&tmp_name);
        let final_path = self.dir.join(name);
        let fd = rustix::fs::openat(
            &self.hidden_fd,
            tmp_name.as_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(FILE_MODE),
        )
        .map_err(io_err("create", &tmp_path))?;
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(FILE_MODE))
            .map_err(io_err("chmod", &tmp_path))?;
        let mut file = File::from(fd);
        file.write_all(text.as_bytes())
            .map_err(std_err("write", &tmp_path))?;
        file.sync_all().map_err(std_err("fsync", &tmp_path))?;
        drop(file);
        // The manifest is the store's own file: replacing it is the point. rename(2) replaces
        // a planted symlink itself, never its target.
        rustix::fs::renameat(&self.hidden_fd, tmp_name.as_str(), &self.dir_fd, name)
            .map_err(io_err("rename", &final_path))?;
        rustix::fs::fsync(&self.dir_fd).map_err(io_err("fsync dir", &self.dir))?;
        tracing::info!(path = %final_path.display(), n_files = entries.len(), "manifest written");
        Ok(())
    }
}

/// True when `name` is one safe path component.
fn is_single_component(name: &str) -> bool {
    RelPath::new(name).is_ok_and(|r| r.components().count() == 1)
}

/// The staging path of file `id` in the project directory `project_dir`, for readers that
/// must not create anything (`dxmirror verify`); `ProjectStore::staging_path` is the same.
pub fn staging_path_in(project_dir: &Path, id: &FileId) -> PathBuf {
    project_dir
        .join(HIDDEN_DIR)
        .join("staging")
        .join(part_name(id))
}

fn part_name(id: &FileId) -> String {
    format!("{id}{PART_SUFFIX}")
}

/// One manifest line in coreutils format: a name containing `\`, a newline or a carriage
/// return makes the line start with `\`, with those written `\\`, `\n` and `\r` in the name
/// (what coreutils 9 itself prints; a raw trailing `\r` would be eaten as a CRLF line end).
fn manifest_line(path: &str, sha: &[u8; 32]) -> String {
    sum_line(&hex::encode(sha), path)
}

/// One `md5sum`/`sha256sum` line for `hex` and `path`, escaped as [`manifest_line`] says.
pub fn sum_line(hex: &str, path: &str) -> String {
    if path.contains(['\\', '\n', '\r']) {
        let escaped = path
            .replace('\\', "\\\\")
            .replace('\n', "\\n")
            .replace('\r', "\\r");
        format!("\\{hex}  {escaped}\n")
    } else {
        format!("{hex}  {path}\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn fid(n: u32) -> FileId {
        format!("file-{n:024}").parse().unwrap()
    }

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn staging_path_in_is_the_stores_staging_path() {
        let root = tempfile::tempdir().unwrap();
        let store = ProjectStore::open(root.path(), "p").unwrap();
        assert_eq!(
            staging_path_in(store.dir(), &fid(7)),
            store.staging_path(&fid(7))
        );
    }

    #[test]
    fn open_creates_layout_with_modes() {
        let root = tempfile::tempdir().unwrap();
        let store = ProjectStore::open(root.path(), "P").unwrap();
        for d in ["P", "P/.dxmirror", "P/.dxmirror/staging"] {
            assert_eq!(mode(&root.path().join(d)), 0o750, "{d}");
        }
        assert_eq!(
            store.staging_path(&fid(1)),
            root.path()
                .join("P/.dxmirror/staging")
                .join(format!("{}.part", fid(1)))
        );
        // Opening again is fine.
        ProjectStore::open(root.path(), "P").unwrap();
        for bad in ["", ".", "..", "a/b", ".hidden"] {
            assert!(
                matches!(
                    ProjectStore::open(root.path(), bad),
                    Err(StoreError::UnsafePath { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn staging_is_sparse_sized_and_never_truncated() {
        let root = tempfile::tempdir().unwrap();
        let store = ProjectStore::open(root.path(), "P").unwrap();
        let (f, created) = store.open_staging(&fid(1), 10_000).unwrap();
        assert!(created);
        let meta = f.metadata().unwrap();
        assert_eq!(meta.len(), 10_000);
        assert_eq!(meta.mode() & 0o7777, 0o640);
        use std::os::unix::fs::FileExt;
        f.write_at(b"abc", 5).unwrap();
        drop(f);
        let (f, created) = store.open_staging(&fid(1), 10_000).unwrap();
        assert!(!created);
        let mut buf = [0u8; 3];
        f.read_exact_at(&mut buf, 5).unwrap();
        assert_eq!(&buf, b"abc");
        assert!(matches!(
            store.open_staging(&fid(1), 9),
            Err(StoreError::StagingSize {
                expected: 9,
                actual: 10_000,
                ..
            })
        ));
        assert_eq!(store.list_staging().unwrap(), vec![fid(1)]);
        store.remove_staging(&fid(1)).unwrap();
        store.remove_staging(&fid(1)).unwrap();
        assert!(store.list_staging().unwrap().is_empty());
    }

    #[test]
    fn manifest_lines_escape_like_coreutils() {
        let sha = [0xab; 32];
        let hex = "ab".repeat(32);
        assert_eq!(manifest_line("a b", &sha), format!("{hex}  a b\n"));
        assert_eq!(
            manifest_line("a\\b\nc", &sha),
            format!("\\{hex}  a\\\\b\\nc\n")
        );
        assert_eq!(manifest_line("x\r", &sha), format!("\\{hex}  x\\r\n"));
    }

    #[test]
    fn manifest_never_replaces_a_project_file() {
        let root = tempfile::tempdir().unwrap();
        let store = ProjectStore::open(root.path(), "P").unwrap();
        let rel: RelPath = "SHA256SUMS".parse().unwrap();
        let err = store
            .write_manifest(&[(rel, [0; 32])], "SHA256SUMS")
            .unwrap_err();
        assert!(matches!(err, StoreError::UnsafePath { .. }), "{err}");
        assert!(store.write_manifest(&[], "../x").is_err());
        assert!(!store.dir().join("SHA256SUMS").exists());
    }

    #[test]
    fn disk_full_is_recognised() {
        let e = StoreError::Io {
            op: "write",
            path: "/x".into(),
            source: io::Error::from_raw_os_error(rustix::io::Errno::NOSPC.raw_os_error()),
        };
        assert!(e.is_disk_full());
        let e = StoreError::Io {
            op: "write",
            path: "/x".into(),
            source: io::Error::from_raw_os_error(rustix::io::Errno::DQUOT.raw_os_error()),
        };
        assert!(e.is_disk_full());
        let e = StoreError::Io {
            op: "write",
            path: "/x".into(),
            source: io::Error::from_raw_os_error(rustix::io::Errno::IO.raw_os_error()),
        };
        assert!(!e.is_disk_full());
    }

    #[test]
    fn free_space_is_reported() {
        let root = tempfile::tempdir().unwrap();
        assert!(free_space(root.path()).unwrap() > 0);
        assert!(free_space(&root.path().join("missing")).is_err());
    }
}
