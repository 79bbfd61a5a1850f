//! Assertions about a mirror: every file at its journaled path with exactly the platform's
//! bytes, verified, with no staging file left.

use std::path::{Path, PathBuf};

use dxmirror::journal::{FileState, JournalReader};
use dxmirror::model::{ByteRange, ProjectId};
use dxmirror::sandbox::{Dataset, Sandbox};

use super::Env;

/// Every regular file under `root`, relative to it, skipping the hidden `.dxmirror` dirs.
pub fn files_under(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                // The store's hidden working directory (staging, manifest temp files) is not
                // part of the mirror; callers that want it name it as `root`.
                if e.file_name() != ".dxmirror" {
                    stack.push(path);
                }
            } else if ft.is_file() {
                out.push(path.strip_prefix(root).unwrap().to_owned());
            }
        }
    }
    out.sort();
    out
}

/// Every downloadable file of `project` is at its journaled path with exactly the sandbox's
/// bytes; returns how many there were.
pub fn assert_mirrored(sandbox: &Sandbox, env: &Env, project: &ProjectId) -> usize {
    let reader = JournalReader::open(&env.state()).unwrap();
    let dir = env.project_dir(project);
    let mut n = 0;
    for f in reader.files(project).unwrap() {
        let sf = sandbox.file_in(project, &f.file_id).unwrap();
        if sf.state != "closed" || sf.archival_state != "live" {
            assert_eq!(f.state, FileState::Skipped, "{}", f.rel_path);
            continue;
        }
        assert!(
            matches!(f.state, FileState::Verified | FileState::Unverified),
            "{} is {:?}: {:?}",
            f.rel_path,
            f.state,
            f.reason
        );
        let local = std::fs::read(dir.join(&f.rel_path)).unwrap();
        assert_eq!(local.len() as u64, sf.size, "{}", f.rel_path);
        assert!(
            local == sandbox.content(&f.file_id, ByteRange::new(0, sf.size)),
            "{} differs from the platform's bytes",
            f.rel_path
        );
        n += 1;
    }
    let staging = dir.join(".dxmirror/staging");
    assert_eq!(
        files_under(&staging),
        Vec::<PathBuf>::new(),
        "staging files left"
    );
    n
}

/// Every file of `project` is verified, byte-identical to the dataset `dataset` (rebuilt from
/// its seed), with every chunk complete in the journal and no staging file left.
pub fn assert_matches_dataset(env: &Env, project: &ProjectId, dataset: &Dataset) {
    let reader = JournalReader::open(&env.state()).unwrap();
    let dir = env.project_dir(project);
    let rows = reader.files(project).unwrap();
    assert_eq!(rows.len(), dataset.files.len());
    for row in &rows {
        assert_eq!(
            row.state,
            FileState::Verified,
            "{}: {:?}",
            row.rel_path,
            row.reason
        );
        let built = dataset.files.iter().find(|f| f.id == row.file_id).unwrap();
        let local = std::fs::read(dir.join(&row.rel_path)).unwrap();
        let mut expected = vec![0u8; local.len()];
        built.fill(0, &mut expected);
        assert_eq!(local.len() as u64, built.spec.size);
        assert!(local == expected, "{} differs", row.rel_path);
        let plan = reader.load_plan(&row.key()).unwrap().unwrap();
        for (chunk, (done, _)) in plan.plan.chunks.iter().zip(&plan.chunk_done) {
            assert_eq!(
                *done, chunk.range.len,
                "{} chunk {}",
                row.rel_path, chunk.idx
            );
        }
    }
    assert!(
        files_under(&dir.join(".dxmirror/staging")).is_empty(),
        "staging files left"
    );
}
