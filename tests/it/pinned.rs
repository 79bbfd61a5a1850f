//! Drive-backed files pinned to their backing object (`symlinkTargetIdentifier.ETag`): every
//! ranged GET carries `If-Match` on both hops, and an object overwritten behind the platform's
//! back mid-transfer (the sandbox's `overwrite_object_after`) fails that one file with its
//! staged bytes discarded, never published as a mix of two versions; a re-vended describe
//! starts it again.
#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use dxmirror::journal::{AuditAction, EventLevel, FileKey, FileState, JournalReader};
use dxmirror::model::{ByteRange, FileId, ProjectId};
use dxmirror::sandbox::{
    Dataset, FileSpec, FileSpecKind, PartSizes, ProjectSpec, Sandbox, SandboxOptions,
};

use crate::support::{assert_mirrored, files_under, served_env_with, Env};

const MIB: u64 = 1 << 20;

/// The pinned parts-less symlink each test watches: 24 MiB, fetched by one chunk task in
/// 4 MiB ranges, one after the other.
const SYMLINK: &str = "pinned-symlink.bam";

/// One project: a pinned parts-less symlink with a whole-file md5, a pinned drive file with
/// one part, an unpinned drive file and a regular file.
fn dataset() -> Dataset {
    let p = ProjectSpec::new("pinned")
        .file(
            FileSpec::new("/restricted/bam", SYMLINK, 24 * MIB)
                .kind(FileSpecKind::SymlinkWholeMd5)
                .pinned(),
        )
        .file(
            FileSpec::new("/restricted/bam", "pinned-part.bam", 5 * MIB)
                .kind(FileSpecKind::DriveSinglePart)
                .pinned(),
        )
        .file(
            FileSpec::new("/restricted/bam", "unpinned.bam", 3 * MIB)
                .kind(FileSpecKind::SymlinkWholeMd5),
        )
        .file(
            FileSpec::new("/restricted/vcf", "regular.vcf.gz", 2 * MIB)
                .kind(FileSpecKind::PartsMd5(PartSizes::Uniform(MIB))),
        );
    Dataset::build(13, vec![p]).unwrap()
}

/// The sandbox, its project and a mirror set-up (journal progress every 1 MiB, chunks larger
/// than any file here, so each file is one chunk task).
async fn setup() -> (Sandbox, ProjectId, Env) {
    served_env_with(
        SandboxOptions {
            dataset: dataset(),
            ..SandboxOptions::default()
        },
        "chunk-size = \"64MiB\"\nprogress-step = \"1MiB\"\n",
    )
    .await
}

fn file_named(sandbox: &Sandbox, project: &ProjectId, name: &str) -> FileId {
    sandbox
        .files(project)
        .into_iter()
        .find(|f| f.name == name)
        .unwrap()
        .id
}

#[tokio::test]
async fn pinned_files_send_if_match_on_both_hops_and_mirror() {
    let (sandbox, project, env) = setup().await;
    let summary = env.sync().await.unwrap();
    assert!(summary.is_ok(), "{summary:#?}");
    assert_eq!(assert_mirrored(&sandbox, &env, &project), 4);
    let stats = sandbox.stats();
    // 24 MiB + 5 MiB in 4 MiB ranges: 6 + 2 pinned GETs, each through both hosts.
    assert_eq!(stats.if_match("GET storage"), 8, "{stats:#?}");
    assert_eq!(stats.if_match("GET download"), 8, "{stats:#?}");
    // The unpinned drive file went through storage without it.
    assert_eq!(stats.requests("GET storage"), 9, "{stats:#?}");
    assert_eq!(stats.precondition_failed, 0);
    let reader = JournalReader::open(&env.state()).unwrap();
    let id = file_named(&sandbox, &project, SYMLINK);
    let row = reader.file(&FileKey::new(&project, &id)).unwrap().unwrap();
    assert!(
        row.etag.as_deref().is_some_and(|t| t.starts_with("\"0x")),
        "{row:?}"
    );
}

/// Overwrites the symlink's object once 8 MiB of it were served, then syncs: returns the
/// file's id.
async fn overwritten_mid_transfer(sandbox: &Sandbox, project: &ProjectId, env: &Env) -> FileId {
    let id = file_named(sandbox, project, SYMLINK);
    sandbox.overwrite_object_after(&id, 8 * MIB);
    let summary = env.sync().await.unwrap();
    assert!(
        !summary.is_ok(),
        "an overwritten object must not pass: {summary:#?}"
    );
    id
}

#[tokio::test]
async fn an_object_overwritten_mid_transfer_fails_only_its_file_and_nothing_mixed_is_published() {
    let (sandbox, project, env) = setup().await;
    let id = overwritten_mid_transfer(&sandbox, &project, &env).await;
    let stats = sandbox.stats();
    assert_eq!(stats.precondition_failed, 1, "{stats:#?}");
    // Two ranges of the old version were served (and staged, and journaled) before it.
    assert_eq!(stats.bytes_served(id.as_str()), 8 * MIB);

    let reader = JournalReader::open(&env.state()).unwrap();
    let key = FileKey::new(&project, &id);
    let row = reader.file(&key).unwrap().unwrap();
    assert_eq!(row.state, FileState::Failed);
    let reason = row.reason.unwrap_or_default();
    assert!(
        reason.contains("overwritten") && reason.contains("re-vended"),
        "{reason}"
    );
    assert!(reason.contains("412"), "{reason}");
    // Nothing staged is claimed any more, and no staging file nor final file exists.
    assert_eq!(reader.load_plan(&key).unwrap(), None);
    let dir = env.project_dir(&project);
    assert!(!dir.join(&row.rel_path).exists());
    assert_eq!(
        files_under(&dir.join(".dxmirror/staging")),
        Vec::<std::path::PathBuf>::new()
    );
    // The event and the audit record name the file.
    let events = reader.recent_events(50).unwrap();
    assert!(
        events.iter().any(|e| e.level == EventLevel::Error
            && e.file_id.as_ref() == Some(&id)
            && e.message.contains("overwritten")),
        "{events:#?}"
    );
    let audit = reader.audit_since(0).unwrap();
    let changed: Vec<_> = audit
        .iter()
        .filter(|a| a.action == AuditAction::ObjectChanged.as_str())
        .collect();
    assert_eq!(changed.len(), 1, "{audit:#?}");
    assert_eq!(changed[0].file_id.as_ref(), Some(&id));
    // The other files of the project are mirrored.
    for f in reader.files(&project).unwrap() {
        if f.file_id != id {
            assert_eq!(
                f.state,
                FileState::Verified,
                "{}: {:?}",
                f.rel_path,
                f.reason
            );
        }
    }
}

#[tokio::test]
async fn a_revended_describe_starts_the_file_again_with_the_new_bytes() {
    let (sandbox, project, env) = setup().await;
    let id = overwritten_mid_transfer(&sandbox, &project, &env).await;
    // Without a new describe the next pass fails the same way, again without publishing.
    let summary = env.sync().await.unwrap();
    assert!(!summary.is_ok());
    assert_eq!(sandbox.stats().precondition_failed, 2);

    assert!(sandbox.revend_object(&id));
    let summary = env.sync().await.unwrap();
    assert!(summary.is_ok(), "{summary:#?}");
    assert_eq!(assert_mirrored(&sandbox, &env, &project), 4);
    let reader = JournalReader::open(&env.state()).unwrap();
    let row = reader.file(&FileKey::new(&project, &id)).unwrap().unwrap();
    let local = std::fs::read(env.project_dir(&project).join(&row.rel_path)).unwrap();
    assert!(local == sandbox.content(&id, ByteRange::new(0, 24 * MIB)));
}
