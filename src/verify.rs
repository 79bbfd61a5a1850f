//! `dxmirror verify`: re-hashes what the journal says is mirrored, and finds bit rot and
//! tampering; with `--repair`, puts damaged files back into staging so that the next pass
//! fetches only their damaged chunks.
//!
//! Finished files are read back together with `readback::read_back_many` (large files cut into
//! independent pieces spread over all cores) and checked three ways: against the
//! platform's checksums (parts, or the whole-file md5), against the chunk CRC32Cs journaled as
//! the bytes arrived, and against the SHA-256 recorded when the file was published. Staged
//! files of unfinished transfers have their journaled chunk digests re-checked. Every finding
//! is reported; the read-only check never writes (it opens the journal with `JournalReader`).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Serialize;

use crate::audit::Action;
use crate::journal::{
    EventLevel, FileKey, FileRow, FileState, Journal, JournalError, JournalReader, NewAudit,
    StoredPlan,
};
use crate::model::{ByteRange, FileId, ProjectId};
use crate::readback;
use crate::store::{ProjectStore, RelPath, StoreError};

/// What is wrong with one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Finding {
    /// The published file is not there.
    Missing,
    /// The published file has the wrong size.
    Size {
        /// Size recorded.
        expected: u64,
        /// Size found.
        actual: u64,
    },
    /// A platform checksum does not match.
    Segment {
        /// Segment (part) index in the plan.
        seg_idx: u32,
        /// Platform part number, when the segment is a part.
        part: Option<u32>,
        /// Expected digest (`ALGO:hex`).
        expected: String,
        /// Digest of the bytes on disk.
        actual: String,
    },
    /// Bytes of a chunk no longer hash to the CRC32C journaled when they arrived.
    Chunk {
        /// Chunk index.
        chunk_idx: u32,
        /// Byte range of the chunk.
        offset: u64,
        /// Its length.
        len: u64,
    },
    /// The whole file's SHA-256 differs from the one recorded at publication.
    Sha256 {
        /// Recorded.
        expected: String,
        /// Found.
        actual: String,
    },
    /// The file could not be read.
    Unreadable {
        /// Why.
        error: String,
    },
}

/// Where a file with a finding lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Place {
    /// Published at its final path.
    Finished,
    /// In staging, its transfer unfinished.
    Staged,
}

impl Place {
    /// The word reports use (`finished`, `staged`).
    pub fn as_str(self) -> &'static str {
        match self {
            Place::Finished => "finished",
            Place::Staged => "staged",
        }
    }
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A finding about one file.
#[derive(Debug, Clone, Serialize)]
pub struct FileFinding {
    /// Project id.
    pub project: ProjectId,
    /// File id.
    pub file_id: FileId,
    /// Path relative to the project directory.
    pub path: String,
    /// Finished or staged.
    pub place: Place,
    /// What is wrong.
    pub finding: Finding,
}

/// The result of a check.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    /// Finished files read back.
    pub files_checked: u64,
    /// Staged (unfinished) files whose journaled chunks were re-checked.
    pub staged_checked: u64,
    /// Bytes read.
    pub bytes_checked: u64,
    /// Everything found.
    pub findings: Vec<FileFinding>,
    /// Files put back into staging for repair (with `--repair`).
    pub repaired: Vec<String>,
}

impl VerifyReport {
    /// True when nothing was found.
    pub fn is_clean(&self) -> bool {
        self.findings.is_empty()
    }
}

/// A check that could not run.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The journal cannot be read or written.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The project is not in the journal.
    #[error("project {0} is not in the journal; nothing of it is mirrored")]
    UnknownProject(ProjectId),
    /// The local store failed during repair.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One unit of checking work.
struct Work {
    row: FileRow,
    dir: PathBuf,
    plan: Option<StoredPlan>,
}

/// Checks the mirror (or one project of it) read-only.
pub fn check(
    state_dir: &Path,
    mirror_root: &Path,
    project: Option<&ProjectId>,
) -> Result<VerifyReport, VerifyError> {
    let reader = JournalReader::open(state_dir)?;
    let projects = match project {
        Some(p) => vec![reader
            .project(p)?
            .ok_or_else(|| VerifyError::UnknownProject(p.clone()))?],
        None => reader.projects()?,
    };
    let mut work = Vec::new();
    for p in projects {
        let Some(dir_name) = p.dir_name.clone() else {
            continue;
        };
        let dir = mirror_root.join(&dir_name);
        for row in reader.files(&p.id)? {
            let finished = matches!(row.state, FileState::Verified | FileState::Unverified);
            let staged = crate::store::staging_path_in(&dir, &row.file_id);
            if !finished && !staged.exists() {
                continue;
            }
            let plan = reader.load_plan(&row.key())?;
            work.push(Work {
                row,
                dir: dir.clone(),
                plan,
            });
        }
    }
    // Finished files are read back together (their pieces spread over all cores, biggest
    // first); staged files and files with nothing to read are checked one by one.
    let read_back_paths: Vec<Option<PathBuf>> = work.iter().map(read_back_path).collect();
    let jobs: Vec<(&Path, &crate::planner::FilePlan)> = work
        .iter()
        .zip(&read_back_paths)
        .filter_map(|(w, p)| Some((p.as_deref()?, &w.plan.as_ref()?.plan)))
        .collect();
    let mut read_backs = readback::read_back_many(&jobs).into_iter();
    let others: Vec<_> = work
        .par_iter()
        .zip(&read_back_paths)
        .map(|(w, p)| p.is_none().then(|| check_one(w)))
        .collect();
    let mut results: Vec<(u64, u64, u64, Vec<FileFinding>)> = Vec::with_capacity(work.len());
    for (w, other) in work.iter().zip(others) {
        match (other, &w.plan) {
            (Some(r), _) => results.push(r),
            // Read back (`read_back_path` gave a path, so there is a plan): the next result.
            (None, Some(stored)) => {
                if let Some(rb) = read_backs.next() {
                    results.push(finished_findings(w, stored, rb));
                }
            }
            (None, None) => {}
        }
    }
    let mut report = VerifyReport::default();
    for (n_finished, n_staged, bytes, findings) in results {
        report.files_checked += n_finished;
        report.staged_checked += n_staged;
        report.bytes_checked += bytes;
        report.findings.extend(findings);
    }
    Ok(report)
}

/// Checks one file: `(finished files checked, staged files checked, bytes read, findings)`.
fn check_one(w: &Work) -> (u64, u64, u64, Vec<FileFinding>) {
    let finished = matches!(w.row.state, FileState::Verified | FileState::Unverified);
    let place = if finished {
        Place::Finished
    } else {
        Place::Staged
    };
    let found = |finding| FileFinding {
        project: w.row.project_id.clone(),
        file_id: w.row.file_id.clone(),
        path: w.row.rel_path.clone(),
        place,
        finding,
    };
    let mut findings = Vec::new();
    if !finished {
        // A staged file: the bytes the journal claims must still match their digests.
        let Some(plan) = &w.plan else {
            return (0, 0, 0, findings);
        };
        let path = crate::store::staging_path_in(&w.dir, &w.row.file_id);
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) => {
                findings.push(found(Finding::Unreadable {
                    error: e.to_string(),
                }));
                return (0, 1, 0, findings);
            }
        };
        let mut bytes = 0;
        for (chunk, (done, crc)) in plan.plan.chunks.iter().zip(&plan.chunk_done) {
            if *done == 0 {
                continue;
            }
            bytes += done;
            let ok = readback::chunk_crc(&file, ByteRange::new(chunk.range.offset, *done))
                .is_ok_and(|got| got == *crc);
            if !ok {
                findings.push(found(Finding::Chunk {
                    chunk_idx: chunk.idx,
                    offset: chunk.range.offset,
                    len: chunk.range.len,
                }));
            }
        }
        return (0, 1, bytes, findings);
    }

    let path = w.dir.join(&w.row.rel_path);
    if !path.exists() {
        findings.push(found(Finding::Missing));
        return (1, 0, 0, findings);
    }
    let Some(stored) = &w.plan else {
        findings.push(found(Finding::Unreadable {
            error: "the journal has no plan for this file".into(),
        }));
        return (1, 0, 0, findings);
    };
    finished_findings(w, stored, readback::read_back(&path, &stored.plan))
}

/// The path of a finished file to read back, when there is one and a plan to check it by
/// (`check_one` reports the other cases).
fn read_back_path(w: &Work) -> Option<PathBuf> {
    let finished = matches!(w.row.state, FileState::Verified | FileState::Unverified);
    let path = w.dir.join(&w.row.rel_path);
    (finished && w.plan.is_some() && path.exists()).then_some(path)
}

/// The findings of a finished file's read-back: `(1, 0, bytes read, findings)`.
fn finished_findings(
    w: &Work,
    stored: &StoredPlan,
    rb: Result<readback::ReadBack, readback::ReadBackError>,
) -> (u64, u64, u64, Vec<FileFinding>) {
    let found = |finding| FileFinding {
        project: w.row.project_id.clone(),
        file_id: w.row.file_id.clone(),
        path: w.row.rel_path.clone(),
        place: Place::Finished,
        finding,
    };
    let mut findings = Vec::new();
    let rb = match rb {
        Ok(rb) => rb,
        Err(e) => {
            findings.push(found(Finding::Unreadable {
                error: e.to_string(),
            }));
            return (1, 0, 0, findings);
        }
    };
    if !rb.size_ok {
        findings.push(found(Finding::Size {
            expected: stored.plan.size,
            actual: rb.actual_size,
        }));
    }
    for seg in rb.bad_segments() {
        findings.push(found(Finding::Segment {
            seg_idx: seg.idx,
            part: stored
                .plan
                .segments
                .get(seg.idx as usize)
                .and_then(|s| s.part_index),
            expected: seg
                .expected
                .as_ref()
                .map(|d| d.to_tagged())
                .unwrap_or_default(),
            actual: seg
                .actual
                .as_ref()
                .map(|d| d.to_tagged())
                .unwrap_or_default(),
        }));
    }
    for (chunk, ((done, crc), got)) in stored
        .plan
        .chunks
        .iter()
        .zip(stored.chunk_done.iter().zip(&rb.chunk_crcs))
    {
        if *done == chunk.range.len && crc != got {
            findings.push(found(Finding::Chunk {
                chunk_idx: chunk.idx,
                offset: chunk.range.offset,
                len: chunk.range.len,
            }));
        }
    }
    let actual = hex::encode(rb.sha256);
    if let Some(expected) = &w.row.sha256 {
        if *expected != actual {
            findings.push(found(Finding::Sha256 {
                expected: expected.clone(),
                actual,
            }));
        }
    }
    (1, 0, rb.actual_size, findings)
}

/// Puts the damaged files of `report` back into staging (only their damaged chunks reset),
/// except files of `busy` projects (dropped from `report.findings`: a pass running now writes
/// them, the next verification looks again), appends one `repaired` audit record per file (also
/// to the JSON-lines `audit_log` when one is configured), and returns the projects whose next
/// pass re-fetches them: those of the findings that remain. The caller holds the writer lock.
///
/// `dxmirror verify --repair` and the daemon's scheduled verification share this flow.
pub async fn repair_for_refetch(
    journal: &Journal,
    mirror_root: &Path,
    audit_log: Option<&Path>,
    report: &mut VerifyReport,
    busy: &HashSet<ProjectId>,
) -> Result<BTreeSet<ProjectId>, VerifyError> {
    report.findings.retain(|f| !busy.contains(&f.project));
    repair(journal, mirror_root, report, audit_log).await?;
    Ok(report.findings.iter().map(|f| f.project.clone()).collect())
}

/// Puts every damaged file of `report` back into staging (finished files, by rename) and
/// resets only its damaged chunks in the journal, so that the next sync pass re-fetches those
/// chunks and nothing else. Every repaired file gets one `repaired` record in the journal
/// (identity: the local user; size and SHA-256: those recorded for the file before), appended
/// also to `audit_log`.
async fn repair(
    journal: &Journal,
    mirror_root: &Path,
    report: &mut VerifyReport,
    audit_log: Option<&Path>,
) -> Result<(), VerifyError> {
    let mut by_file: BTreeMap<(&ProjectId, &FileId), Vec<&FileFinding>> = BTreeMap::new();
    for f in &report.findings {
        by_file.entry((&f.project, &f.file_id)).or_default().push(f);
    }
    let mut repaired = Vec::new();
    for ((project, file_id), findings) in by_file {
        let key = FileKey::new(project, file_id);
        let (Some(row), Some(prow), Some(stored)) = (
            journal.file(&key)?,
            journal.project(project)?,
            journal.load_plan(&key)?,
        ) else {
            continue;
        };
        let Some(dir_name) = prow.dir_name else {
            continue;
        };
        let store = ProjectStore::open(mirror_root, &dir_name)?;
        let plan = &stored.plan;
        // The chunks to fetch again: those whose digests changed; for a platform checksum
        // that fails with every chunk digest intact, all of that segment's chunks; for a
        // missing file or a wrong size, everything.
        let mut reset: BTreeSet<u32> = BTreeSet::new();
        for f in &findings {
            match &f.finding {
                Finding::Chunk { chunk_idx, .. } => {
                    reset.insert(*chunk_idx);
                }
                Finding::Segment { seg_idx, .. } => {
                    let chunk_hit = findings.iter().any(|g| matches!(g.finding, Finding::Chunk { chunk_idx, .. } if plan.chunks.get(chunk_idx as usize).is_some_and(|c| c.segment == *seg_idx)));
                    if !chunk_hit {
                        reset.extend(plan.chunks_of(*seg_idx).map(|c| c.idx));
                    }
                }
                Finding::Missing | Finding::Size { .. } | Finding::Unreadable { .. } => {
                    reset.extend(plan.chunks.iter().map(|c| c.idx));
                }
                Finding::Sha256 { .. } => {}
            }
        }
        if reset.is_empty() {
            // Only the SHA-256 differs: nothing narrower to blame.
            reset.extend(plan.chunks.iter().map(|c| c.idx));
        }
        let finished = matches!(row.state, FileState::Verified | FileState::Unverified);
        if finished {
            let rel: RelPath = match row.rel_path.parse() {
                Ok(r) => r,
                Err(_) => continue,
            };
            if store.final_path(&rel).exists() {
                store.unstage(&rel, file_id)?;
            } else {
                store.remove_staging(file_id)?;
            }
        }
        journal
            .reset_chunks(&key, reset.iter().copied().collect())
            .await?;
        journal
            .set_file_state(
                &key,
                FileState::Pending,
                Some(format!(
                    "repair: {} damaged chunk(s) to fetch again",
                    reset.len()
                )),
            )
            .await?;
        journal
            .record_event(
                EventLevel::Warn,
                Some(project),
                Some(file_id),
                format!(
                    "verify --repair: {} put back into staging; chunks {:?} will be fetched again",
                    row.rel_path, reset
                ),
            )
            .await?;
        let record = journal
            .append_audit(NewAudit {
                action: Action::Repaired,
                project_id: project.clone(),
                file_id: Some(file_id.clone()),
                identity: Some(crate::audit::local_identity()),
                size: Some(row.size),
                sha256: row.sha256.clone(),
                detail: format!(
                    "{}: put back into staging, {} damaged chunk(s) to fetch again",
                    row.rel_path,
                    reset.len()
                ),
            })
            .await?;
        crate::audit::append_logged(audit_log, &record);
        repaired.push(format!("{project}:{}", row.rel_path));
    }
    report.repaired = repaired;
    Ok(())
}

impl std::fmt::Display for FileFinding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match &self.finding {
            Finding::Missing => "missing".to_owned(),
            Finding::Size { expected, actual } => {
                format!("size is {actual} bytes, expected {expected}")
            }
            Finding::Segment {
                seg_idx,
                part,
                expected,
                actual,
            } => match part {
                Some(p) => format!("part {p} checksum mismatch: expected {expected}, got {actual}"),
                None => format!(
                    "segment {seg_idx} checksum mismatch: expected {expected}, got {actual}"
                ),
            },
            Finding::Chunk {
                chunk_idx,
                offset,
                len,
            } => format!(
                "chunk {chunk_idx} (bytes {offset}..{}) changed since it arrived",
                offset + len
            ),
            Finding::Sha256 { expected, actual } => {
                format!("SHA-256 is {actual}, recorded {expected}")
            }
            Finding::Unreadable { error } => format!("unreadable: {error}"),
        };
        write!(
            f,
            "{} {}:{} ({}): {what}",
            self.place, self.project, self.path, self.file_id
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::testing::{file_id, project_id};

    #[test]
    fn findings_read_well() {
        let f = FileFinding {
            project: project_id(1),
            file_id: file_id(1),
            path: "restricted/bam/x.bam".into(),
            place: Place::Finished,
            finding: Finding::Chunk {
                chunk_idx: 3,
                offset: 48,
                len: 16,
            },
        };
        assert_eq!(
            f.to_string(),
            "finished project-000000000000000000000001:restricted/bam/x.bam (file-000000000000000000000001): chunk 3 (bytes 48..64) changed since it arrived"
        );
        let json = serde_json::to_value(&f).unwrap();
        assert_eq!(json["finding"]["kind"], "chunk");
        // The typed ids and place serialize as the words they were before.
        assert_eq!(json["project"], "project-000000000000000000000001");
        assert_eq!(json["file_id"], "file-000000000000000000000001");
        assert_eq!(json["place"], "finished");
    }
}
