//! Pure: which rows of the journal become jobs in this pass, and which listed file replaces
//! which mirrored one. No IO: the caller gathers the local facts (which published files are
//! present on disk, which files the early resume already runs) and acts on the answer.
//!
//! A job is every listed row not yet published, plus every published row whose local copy went
//! missing (it is published again); skipped rows, rows no longer listed and rows already
//! running are not. Jobs run small files first (by size, then id): many files finish early
//! and the metadata table arrives first. A listed file whose path is that of a published file
//! no longer listed is a *replacement*: the old copy is kept as `<old-file-id>__<name>` in the
//! same folder once the new one is verified.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::journal::{FileKey, FileRow, FileState};
use crate::model::FileId;
use crate::store::RelPath;

/// What [`plan_work`] decides from.
pub(super) struct WorkInput<'a> {
    /// The project's journal rows, after the listing was recorded.
    pub(super) rows: &'a [FileRow],
    /// The ids of this listing.
    pub(super) listed: &'a HashSet<&'a FileId>,
    /// The local path of every listed file (`store::assign_paths`).
    pub(super) paths: &'a BTreeMap<FileId, RelPath>,
    /// The rows no longer listed (`ListingDiff::removed`).
    pub(super) removed: &'a HashSet<&'a FileId>,
    /// The files the early resume already runs.
    pub(super) running: &'a HashSet<&'a FileId>,
    /// The published rows whose file is present at its listed path.
    pub(super) present: &'a HashSet<&'a FileId>,
}

/// A file whose path now belongs to a new file id upstream: the old copy is kept as
/// `<old-file-id>__<name>` once the new version is verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Replacement {
    /// The old file's row.
    pub(super) old: FileKey,
    /// The listed file now at its path.
    pub(super) new: FileId,
    /// Where the old copy is kept.
    pub(super) keep_as: RelPath,
}

/// One job of the pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Planned {
    /// Its index in [`WorkInput::rows`].
    pub(super) row: usize,
    /// Where it goes.
    pub(super) rel_path: RelPath,
    /// The kept name of the file it replaces, if it is a replacement's new file.
    pub(super) replaces: Option<RelPath>,
    /// It was published but its local copy is missing: its row goes back to `pending`.
    pub(super) republish: bool,
}

/// The pass's work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Work {
    /// The jobs, smallest first (then by id).
    pub(super) jobs: Vec<Planned>,
    /// The replacements found in the listing.
    pub(super) replacements: Vec<Replacement>,
}

/// The jobs and replacements of a pass (see the module doc).
pub(super) fn plan_work(input: &WorkInput<'_>) -> Work {
    let replacements = replacements(input.rows, input.listed, input.paths);
    let mut jobs = Vec::new();
    for (i, row) in input.rows.iter().enumerate() {
        if input.removed.contains(&row.file_id) || input.running.contains(&row.file_id) {
            continue;
        }
        let Some(rel) = input.paths.get(&row.file_id) else {
            continue;
        };
        let republish = match row.state {
            FileState::Verified | FileState::Unverified => {
                if input.present.contains(&row.file_id) {
                    continue;
                }
                true
            }
            FileState::Skipped => continue,
            _ => false,
        };
        jobs.push(Planned {
            row: i,
            rel_path: rel.clone(),
            replaces: kept_as(&replacements, &row.file_id),
            republish,
        });
    }
    let rows = input.rows;
    jobs.sort_by(|a, b| {
        let (a, b) = (&rows[a.row], &rows[b.row]);
        (a.size, &a.file_id).cmp(&(b.size, &b.file_id))
    });
    Work { jobs, replacements }
}

/// The replacements in a project: each published row no longer listed whose path a listed
/// file now has.
pub(super) fn replacements(
    rows: &[FileRow],
    listed: &HashSet<&FileId>,
    paths: &BTreeMap<FileId, RelPath>,
) -> Vec<Replacement> {
    let by_path: HashMap<&str, &FileId> = paths.iter().map(|(id, p)| (p.as_str(), id)).collect();
    rows.iter()
        .filter(|row| {
            !listed.contains(&row.file_id)
                && matches!(row.state, FileState::Verified | FileState::Unverified)
        })
        .filter_map(|row| {
            Some(Replacement {
                old: row.key(),
                new: (*by_path.get(row.rel_path.as_str())?).clone(),
                keep_as: keep_name(&row.rel_path, &row.file_id)?,
            })
        })
        .collect()
}

/// The name under which the file `new` replaces has to be kept, if `new` is a replacement.
pub(super) fn kept_as(replacements: &[Replacement], new: &FileId) -> Option<RelPath> {
    replacements
        .iter()
        .find(|r| &r.new == new)
        .map(|r| r.keep_as.clone())
}

/// The sibling name an old version is kept under: `<old-file-id>__<name>` in the same folder.
fn keep_name(rel: &str, old: &FileId) -> Option<RelPath> {
    let (parent, name) = match rel.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, rel),
    };
    let kept = match parent {
        Some(p) => format!("{p}/{old}__{name}"),
        None => format!("{old}__{name}"),
    };
    RelPath::new(&kept).ok()
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    pub(in crate::pass) use crate::model::testing::file_id as fid;
    use crate::model::testing::project_id;
    use crate::model::{ArchivalState, ProjectId, RemoteState};

    pub(in crate::pass) fn pid() -> ProjectId {
        project_id(1)
    }

    /// The row of file `n`, recorded at `rel` (also its platform path) with `size` bytes.
    pub(in crate::pass) fn row(
        project: &ProjectId,
        n: u32,
        rel: &str,
        size: u64,
        state: FileState,
    ) -> FileRow {
        let (folder, name) = match rel.rsplit_once('/') {
            Some((folder, name)) => (format!("/{folder}"), name),
            None => ("/".to_owned(), rel),
        };
        FileRow {
            file_id: fid(n),
            project_id: project.clone(),
            folder,
            name: name.to_owned(),
            size,
            remote_state: RemoteState::Closed,
            archival_state: ArchivalState::Live,
            created_ms: 0,
            modified_ms: 0,
            parts: None,
            drive: None,
            md5: None,
            checksum_type: None,
            kind: None,
            rel_path: rel.to_owned(),
            state,
            reason: None,
            attempts: 0,
            sha256: None,
            done_ms: None,
            last_seen_ms: 0,
            etag: None,
            updated_ms: 0,
        }
    }

    /// The facts of a pass over `rows`: every row listed at its own path, except `unlisted`
    /// (which are removed); nothing running, nothing present.
    struct Facts {
        paths: BTreeMap<FileId, RelPath>,
        listed: Vec<FileId>,
        removed: Vec<FileId>,
        running: Vec<FileId>,
        present: Vec<FileId>,
    }

    impl Facts {
        fn new(rows: &[FileRow], unlisted: &[u32]) -> Facts {
            let unlisted: Vec<FileId> = unlisted.iter().map(|n| fid(*n)).collect();
            let listed: Vec<FileId> = rows
                .iter()
                .map(|r| r.file_id.clone())
                .filter(|id| !unlisted.contains(id))
                .collect();
            let paths = rows
                .iter()
                .filter(|r| listed.contains(&r.file_id))
                .map(|r| (r.file_id.clone(), RelPath::new(&r.rel_path).unwrap()))
                .collect();
            Facts {
                paths,
                listed,
                removed: unlisted,
                running: Vec::new(),
                present: Vec::new(),
            }
        }

        fn plan(&self, rows: &[FileRow]) -> Work {
            plan_work(&WorkInput {
                rows,
                listed: &self.listed.iter().collect(),
                paths: &self.paths,
                removed: &self.removed.iter().collect(),
                running: &self.running.iter().collect(),
                present: &self.present.iter().collect(),
            })
        }
    }

    /// The jobs as (file id, rel_path, replaces, republish).
    fn jobs(work: &Work, rows: &[FileRow]) -> Vec<(String, String, Option<String>, bool)> {
        work.jobs
            .iter()
            .map(|j| {
                (
                    rows[j.row].file_id.to_string(),
                    j.rel_path.to_string(),
                    j.replaces.as_ref().map(RelPath::to_string),
                    j.republish,
                )
            })
            .collect()
    }

    #[test]
    fn a_new_file_is_a_job_and_a_present_published_one_is_not() {
        let p = pid();
        let rows = vec![
            row(&p, 1, "new.bam", 5, FileState::Pending),
            row(&p, 2, "done.bam", 5, FileState::Verified),
            row(&p, 3, "plain.txt", 5, FileState::Unverified),
        ];
        let mut facts = Facts::new(&rows, &[]);
        facts.present = vec![fid(2), fid(3)];
        let work = facts.plan(&rows);
        assert_eq!(
            jobs(&work, &rows),
            [(fid(1).to_string(), "new.bam".into(), None, false)]
        );
        assert!(work.replacements.is_empty());
    }

    #[test]
    fn a_published_file_missing_locally_is_published_again() {
        let p = pid();
        let rows = vec![
            row(&p, 1, "gone.bam", 5, FileState::Verified),
            row(&p, 2, "plain.txt", 6, FileState::Unverified),
        ];
        let work = Facts::new(&rows, &[]).plan(&rows);
        assert_eq!(
            jobs(&work, &rows),
            [
                (fid(1).to_string(), "gone.bam".into(), None, true),
                (fid(2).to_string(), "plain.txt".into(), None, true),
            ]
        );
    }

    #[test]
    fn skipped_removed_and_running_files_are_not_jobs() {
        let p = pid();
        let rows = vec![
            row(&p, 1, "skipped.bam", 5, FileState::Skipped),
            row(&p, 2, "removed.bam", 5, FileState::Pending),
            row(&p, 3, "running.bam", 5, FileState::Fetching),
            row(&p, 4, "failed.bam", 5, FileState::Failed),
        ];
        let mut facts = Facts::new(&rows, &[2]);
        facts.running = vec![fid(3)];
        let work = facts.plan(&rows);
        assert_eq!(
            jobs(&work, &rows),
            [(fid(4).to_string(), "failed.bam".into(), None, false)]
        );
    }

    #[test]
    fn a_removed_file_still_given_a_path_is_not_a_job() {
        let p = pid();
        let rows = vec![row(&p, 1, "a.bam", 5, FileState::Pending)];
        let mut facts = Facts::new(&rows, &[]);
        facts.removed = vec![fid(1)];
        assert!(facts.plan(&rows).jobs.is_empty());
    }

    #[test]
    fn a_listed_file_at_the_path_of_an_unlisted_published_one_replaces_it() {
        let p = pid();
        // The old rows (1, 3) are no longer listed; the new files have taken their paths.
        let rows = vec![
            row(&p, 1, "data.bam", 5, FileState::Verified),
            row(&p, 2, "data.bam", 7, FileState::Pending),
            row(&p, 3, "d/e/x.vcf", 5, FileState::Unverified),
            row(&p, 4, "d/e/x.vcf", 8, FileState::Pending),
        ];
        let work = Facts::new(&rows, &[1, 3]).plan(&rows);
        let kept_root = format!("{}__data.bam", fid(1));
        let kept_folder = format!("d/e/{}__x.vcf", fid(3));
        assert_eq!(
            work.replacements,
            [
                Replacement {
                    old: FileKey::new(&p, &fid(1)),
                    new: fid(2),
                    keep_as: RelPath::new(&kept_root).unwrap(),
                },
                Replacement {
                    old: FileKey::new(&p, &fid(3)),
                    new: fid(4),
                    keep_as: RelPath::new(&kept_folder).unwrap(),
                },
            ]
        );
        assert_eq!(
            jobs(&work, &rows),
            [
                (
                    fid(2).to_string(),
                    "data.bam".into(),
                    Some(kept_root),
                    false
                ),
                (
                    fid(4).to_string(),
                    "d/e/x.vcf".into(),
                    Some(kept_folder),
                    false
                ),
            ]
        );
    }

    #[test]
    fn a_file_that_was_never_published_is_not_replaced() {
        let p = pid();
        let rows = vec![
            row(&p, 1, "data.bam", 5, FileState::Failed),
            row(&p, 2, "data.bam", 7, FileState::Pending),
            row(&p, 3, "x.bam", 5, FileState::Pending),
            row(&p, 4, "x.bam", 7, FileState::Pending),
        ];
        let work = Facts::new(&rows, &[1, 3]).plan(&rows);
        assert!(work.replacements.is_empty());
        assert_eq!(
            jobs(&work, &rows),
            [
                (fid(2).to_string(), "data.bam".into(), None, false),
                (fid(4).to_string(), "x.bam".into(), None, false),
            ]
        );
    }

    #[test]
    fn jobs_run_by_size_then_id() {
        let p = pid();
        let rows = vec![
            row(&p, 5, "e", 30, FileState::Pending),
            row(&p, 4, "d", 10, FileState::Pending),
            row(&p, 1, "a", 20, FileState::Fetching),
            row(&p, 3, "c", 10, FileState::Failed),
            row(&p, 2, "b", 0, FileState::Pending),
        ];
        let work = Facts::new(&rows, &[]).plan(&rows);
        let order: Vec<&str> = work.jobs.iter().map(|j| j.rel_path.as_str()).collect();
        assert_eq!(order, ["b", "c", "d", "a", "e"]);
        let rows_of: Vec<usize> = work.jobs.iter().map(|j| j.row).collect();
        assert_eq!(rows_of, [4, 3, 1, 2, 0]);
    }

    #[test]
    fn the_kept_name_is_a_sibling_and_bad_paths_have_none() {
        let old = fid(9);
        assert_eq!(
            keep_name("a.bam", &old).unwrap().as_str(),
            format!("{old}__a.bam")
        );
        assert_eq!(
            keep_name("x/y/a.bam", &old).unwrap().as_str(),
            format!("x/y/{old}__a.bam")
        );
        assert_eq!(keep_name("../a.bam", &old), None);
        assert_eq!(keep_name("x//a.bam", &old), None);
        assert_eq!(keep_name(".dxmirror/a.bam", &old), None);
        // The kept name would be longer than a file name may be.
        assert_eq!(keep_name(&"n".repeat(240), &old), None);
    }
}
