//! `dxmirror purge PROJECT --yes`: the end of a data-use agreement. Deletes one project's
//! local copy (its directory under the mirror root, as the journal recorded it) and its
//! journal rows, and appends an audit record saying who deleted what, when.
//!
//! It takes the writer lock, so it never races a sync or the daemon. It deletes only the
//! directory named by the journal's `dir_name` for that project, directly under the mirror
//! root, and refuses when that name is not one plain path component, when the directory is
//! a symlink or not a directory, or when it resolves outside the mirror root. Symlinks
//! inside it are removed, never followed. Nothing is deleted without `yes`; [`plan`] shows
//! what would go, read-only.
//!
//! Order: the directory is deleted first, then the journal rows and the audit record are
//! written in one transaction. A crash in between leaves the journal still naming the
//! project, so running `purge` again finishes the job; the reverse order could leave data on
//! disk that nothing points at any more.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::journal::{AuditRow, DeletedRows, Journal, JournalError, JournalReader, NewAudit};
use crate::lock::{LockError, WriterLock};
use crate::model::ProjectId;
use crate::units::human_bytes;

/// Why a purge did not happen (or did not finish).
#[derive(Debug, thiserror::Error)]
pub enum PurgeError {
    /// Another writer runs.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// The journal failed.
    #[error("journal: {0}")]
    Journal(JournalError),
    /// The state directory is on a file system the journal cannot use.
    #[error(transparent)]
    StateDir(crate::journal::FsCheckError),
    /// The journal does not know the project.
    #[error("project {0} is not in the journal: nothing to purge (purge only deletes what dxmirror recorded)")]
    UnknownProject(ProjectId),
    /// The recorded directory is not one dxmirror may delete.
    #[error("refusing to delete {path}: {reason}")]
    UnsafeDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A filesystem operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

impl From<JournalError> for PurgeError {
    /// `Journal::open`'s refusal of the state directory is said as it is, not as a journal error.
    fn from(e: JournalError) -> PurgeError {
        match e {
            JournalError::StateDirFs(e) => PurgeError::StateDir(e),
            e => PurgeError::Journal(e),
        }
    }
}

/// What a purge of one project deletes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurgePlan {
    /// The project.
    pub project: ProjectId,
    /// Its platform name (untrusted text).
    pub name: String,
    /// Its local directory, when one was ever decided and it exists.
    pub dir: Option<PathBuf>,
    /// Files found under the directory (any kind, symlinks included, not followed).
    pub n_local_files: u64,
    /// Bytes of the regular files under the directory.
    pub bytes: u64,
    /// File rows in the journal.
    pub n_journal_files: u64,
    /// The project is still in the config's `[[project]]` list (it would be mirrored again).
    pub still_configured: bool,
}

impl fmt::Display for PurgePlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "project {} {:?}", self.project, self.name)?;
        match &self.dir {
            Some(dir) => writeln!(
                f,
                "  directory {}: {} files, {} ({} bytes)",
                dir.display(),
                self.n_local_files,
                human_bytes(self.bytes),
                self.bytes
            )?,
            None => writeln!(f, "  no local directory")?,
        }
        writeln!(
            f,
            "  journal: the project and {} file rows",
            self.n_journal_files
        )?;
        if self.still_configured {
            writeln!(
                f,
                "  WARNING: the project is still listed in the config; remove it, or the next sync mirrors it again"
            )?;
        }
        Ok(())
    }
}

/// The result of a purge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurgeOutcome {
    /// What was deleted.
    pub plan: PurgePlan,
    /// Journal rows deleted.
    pub deleted: DeletedRows,
    /// The audit record written.
    pub audit: Option<AuditRow>,
}

/// Checks the journal's `dir_name` and returns the project directory if it exists; refuses
/// anything but a real directory directly under the mirror root.
fn project_dir(root: &Path, dir_name: &str) -> Result<Option<PathBuf>, PurgeError> {
    let path = root.join(dir_name);
    let unsafe_dir = |reason: &str| PurgeError::UnsafeDir {
        path: path.clone(),
        reason: reason.to_owned(),
    };
    if dir_name.is_empty()
        || dir_name.contains('/')
        || dir_name.contains('\0')
        || dir_name.starts_with('.')
    {
        return Err(unsafe_dir(
            "the journal's directory name is not one plain path component",
        ));
    }
    let meta = match std::fs::symlink_metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(PurgeError::Io {
                op: "inspect",
                path,
                source,
            })
        }
    };
    if meta.file_type().is_symlink() {
        return Err(unsafe_dir("it is a symbolic link"));
    }
    if !meta.is_dir() {
        return Err(unsafe_dir("it is not a directory"));
    }
    let canon = |p: &Path| {
        std::fs::canonicalize(p).map_err(|source| PurgeError::Io {
            op: "resolve",
            path: p.to_owned(),
            source,
        })
    };
    let (root_c, dir_c) = (canon(root)?, canon(&path)?);
    if dir_c.parent() != Some(root_c.as_path()) {
        return Err(unsafe_dir(&format!(
            "it resolves to {}, which is not directly under the mirror root {}",
            dir_c.display(),
            root_c.display()
        )));
    }
    Ok(Some(path))
}

/// Counts entries and regular-file bytes under `dir`, never following symlinks.
fn measure(dir: &Path) -> Result<(u64, u64), PurgeError> {
    let io = |op, path: &Path| {
        let path = path.to_owned();
        move |source| PurgeError::Io { op, path, source }
    };
    let (mut n, mut bytes) = (0u64, 0u64);
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).map_err(io("read dir", &d))? {
            let entry = entry.map_err(io("read dir", &d))?;
            let ft = entry.file_type().map_err(io("inspect", &entry.path()))?;
            if ft.is_dir() {
                stack.push(entry.path());
                continue;
            }
            n += 1;
            if ft.is_file() {
                bytes += entry
                    .metadata()
                    .map_err(io("inspect", &entry.path()))?
                    .len();
            }
        }
    }
    Ok((n, bytes))
}

fn build_plan(
    cfg: &Config,
    project: &ProjectId,
    row: Option<crate::journal::ProjectRow>,
    n_journal_files: u64,
) -> Result<PurgePlan, PurgeError> {
    let row = row.ok_or_else(|| PurgeError::UnknownProject(project.clone()))?;
    let dir = match &row.dir_name {
        Some(name) => project_dir(&cfg.mirror_root, name)?,
        None => None,
    };
    let (n_local_files, bytes) = match &dir {
        Some(d) => measure(d)?,
        None => (0, 0),
    };
    Ok(PurgePlan {
        project: project.clone(),
        name: row.name,
        dir,
        n_local_files,
        bytes,
        n_journal_files,
        still_configured: cfg.projects.contains(project),
    })
}

/// What purging `project` would delete, from the journal (read-only, no lock).
pub fn plan(cfg: &Config, project: &ProjectId) -> Result<PurgePlan, PurgeError> {
    let reader = JournalReader::open(&cfg.state_dir)?;
    let n = reader.files(project)?.len() as u64;
    build_plan(cfg, project, reader.project(project)?, n)
}

/// Deletes `project`'s local copy and journal rows and writes the audit record, holding the
/// writer lock. Call only after the operator confirmed (`--yes`).
pub async fn purge(cfg: &Config, project: &ProjectId) -> Result<PurgeOutcome, PurgeError> {
    let _lock = WriterLock::acquire(&cfg.state_dir, &cfg.mirror_root)?;
    let journal = Journal::open(&cfg.state_dir)?;
    let result = purge_locked(cfg, project, &journal).await;
    let closed = journal.close().await;
    let outcome = result?;
    closed?;
    Ok(outcome)
}

/// Like [`purge`] for a caller that already holds the writer lock and the journal (the
/// daemon, for `on-access-expired = "purge"`): the same deletion, journal rows and audit
/// record.
pub async fn purge_locked(
    cfg: &Config,
    project: &ProjectId,
    journal: &Journal,
) -> Result<PurgeOutcome, PurgeError> {
    let n = journal.files(project)?.len() as u64;
    let plan = build_plan(cfg, project, journal.project(project)?, n)?;
    let started = std::time::Instant::now();
    if let Some(dir) = &plan.dir {
        tracing::warn!(project_id = %project, path = %dir.display(), files = plan.n_local_files, bytes = plan.bytes, "purging the project's local copy");
        std::fs::remove_dir_all(dir).map_err(|source| PurgeError::Io {
            op: "delete",
            path: dir.clone(),
            source,
        })?;
    }
    let detail = match &plan.dir {
        Some(dir) => format!(
            "purged project {:?}: deleted {} ({} files, {} bytes) and {} journal file rows",
            plan.name,
            dir.display(),
            plan.n_local_files,
            plan.bytes,
            plan.n_journal_files
        ),
        None => format!(
            "purged project {:?}: no local directory; deleted {} journal file rows",
            plan.name, plan.n_journal_files
        ),
    };
    let record = NewAudit {
        action: crate::audit::Action::Purged,
        project_id: project.clone(),
        file_id: None,
        identity: Some(crate::audit::local_identity()),
        size: Some(plan.bytes),
        sha256: None,
        detail,
    };
    let deleted = journal.delete_project(project, record).await?;
    let audit = journal
        .audit_since(0)?
        .into_iter()
        .find(|r| r.id == deleted.audit_id);
    if let Some(row) = &audit {
        crate::audit::append_logged(cfg.audit_log.as_deref(), row);
    }
    tracing::warn!(
        project_id = %project,
        audit_id = deleted.audit_id,
        files = deleted.files,
        bytes = plan.bytes,
        elapsed_ms = started.elapsed().as_millis() as u64,
        detail = audit.as_ref().map(|a| a.detail.as_str()).unwrap_or_default(),
        "project purged"
    );
    Ok(PurgeOutcome {
        plan,
        deleted,
        audit,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn only_a_real_directory_under_the_root_is_accepted() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("mirror");
        std::fs::create_dir_all(root.join("proj/sub")).unwrap();
        std::fs::write(root.join("proj/sub/a"), b"12345").unwrap();
        std::fs::write(root.join("plainfile"), b"x").unwrap();
        let outside = tmp.path().join("precious");
        std::fs::create_dir(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("proj/escape")).unwrap();

        assert_eq!(project_dir(&root, "proj").unwrap(), Some(root.join("proj")));
        assert_eq!(project_dir(&root, "absent").unwrap(), None);
        for (name, why) in [
            ("link", "symbolic link"),
            ("plainfile", "not a directory"),
            ("..", "one plain path component"),
            ("proj/sub", "one plain path component"),
            (".dxmirror.lock", "one plain path component"),
            ("", "one plain path component"),
        ] {
            let err = project_dir(&root, name).unwrap_err().to_string();
            assert!(err.contains(why), "{name}: {err}");
        }
        // Counting does not follow the symlink inside.
        std::fs::write(outside.join("big"), vec![0u8; 1000]).unwrap();
        assert_eq!(measure(&root.join("proj")).unwrap(), (2, 5));
    }

    #[test]
    fn a_root_reached_through_a_symlink_still_resolves() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("real/proj")).unwrap();
        std::os::unix::fs::symlink(tmp.path().join("real"), tmp.path().join("root")).unwrap();
        let root = tmp.path().join("root");
        assert_eq!(project_dir(&root, "proj").unwrap(), Some(root.join("proj")));
    }
}
