//! Files on the published drive (`drive-PUBLISHED`): their parts carry no md5, and dxmirror
//! verifies them by the whole-file `md5` as dxpy does, instead of calling them unverified; an
//! object whose bytes no longer match that md5 is never published.
#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use dxmirror::journal::{FileKey, FileState, JournalReader};
use dxmirror::model::{FileId, ProjectId};
use dxmirror::planner::FileKind;
use dxmirror::sandbox::{
    Dataset, FileSpec, FileSpecKind, PartSizes, ProjectSpec, Sandbox, SandboxOptions,
};

use crate::support::{assert_mirrored, files_under, served_env_with, Env};

const MIB: u64 = 1 << 20;

/// One project: a published file of 10 MiB in 4 MiB parts without md5, and a regular file.
async fn setup() -> (Sandbox, ProjectId, FileId, Env) {
    let p = ProjectSpec::new("published")
        .file(
            FileSpec::new("/restricted/bam", "published.bam", 10 * MIB)
                .kind(FileSpecKind::PublishedDrive(PartSizes::Uniform(4 * MIB))),
        )
        .file(
            FileSpec::new("/restricted/vcf", "regular.vcf.gz", 2 * MIB)
                .kind(FileSpecKind::PartsMd5(PartSizes::Uniform(MIB))),
        );
    let (sandbox, project, env) = served_env_with(
        SandboxOptions {
            dataset: Dataset::build(21, vec![p]).unwrap(),
            ..SandboxOptions::default()
        },
        "chunk-size = \"4MiB\"\nprogress-step = \"1MiB\"\nmax-verify-retries = 1\n",
    )
    .await;
    let id = sandbox
        .files(&project)
        .into_iter()
        .find(|f| f.name == "published.bam")
        .unwrap()
        .id;
    (sandbox, project, id, env)
}

#[tokio::test]
async fn a_published_file_is_verified_by_its_whole_md5() {
    let (sandbox, project, id, env) = setup().await;
    let summary = env.sync().await.unwrap();
    assert!(summary.is_ok(), "{summary:#?}");
    assert_eq!(assert_mirrored(&sandbox, &env, &project), 2);
    let reader = JournalReader::open(&env.state()).unwrap();
    let row = reader.file(&FileKey::new(&project, &id)).unwrap().unwrap();
    assert_eq!(row.state, FileState::Verified, "{row:?}");
    assert_eq!(row.kind, Some(FileKind::PublishedMd5));
    assert_eq!(row.drive.as_deref(), Some("drive-PUBLISHED"));
}

/// The object behind the published file was overwritten before the transfer: every range
/// matches the `Content-MD5` the storage host states for the bytes it now holds, so only the
/// whole-file md5 can tell, and it does: the file ends corrupt, nothing is published, and the
/// other file is mirrored.
#[tokio::test]
async fn a_published_file_whose_bytes_miss_its_md5_is_never_published() {
    let (sandbox, project, id, env) = setup().await;
    assert!(sandbox.overwrite_object(&id).is_some());
    let summary = env.sync().await.unwrap();
    assert!(!summary.is_ok(), "{summary:#?}");
    let reader = JournalReader::open(&env.state()).unwrap();
    let row = reader.file(&FileKey::new(&project, &id)).unwrap().unwrap();
    assert_eq!(row.state, FileState::Corrupt, "{row:?}");
    let dir = env.project_dir(&project);
    assert!(!dir.join(&row.rel_path).exists());
    assert!(!files_under(&dir)
        .iter()
        .any(|p| p.ends_with("published.bam")));
    let files = reader.files(&project).unwrap();
    let other = files.iter().find(|f| f.file_id != id).unwrap();
    assert_eq!(other.state, FileState::Verified, "{other:?}");
}
