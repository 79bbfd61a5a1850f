//! Listings decoded tolerantly: a describe without `archivalState` is a live file, unknown
//! fields and states never fail a listing, and a result that cannot be read fails only its
//! own file (reported in the summary and the journal's events) while the rest of the project
//! is mirrored, with no retries of the listing.
#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use dxmirror::journal::{EventLevel, FileKey, FileState, JournalReader};
use dxmirror::model::FileId;
use dxmirror::sandbox::{Dataset, FileSpec, PartSizes, ProjectSpec, SandboxOptions};
use serde_json::json;

use crate::support::served_env_with;

const MIB: u64 = 1 << 20;

#[tokio::test]
async fn one_unreadable_describe_fails_only_its_file() {
    let parts = dxmirror::sandbox::FileSpecKind::PartsMd5(PartSizes::Uniform(MIB));
    let p = ProjectSpec::new("tolerant")
        // A region without archival: no `archivalState`.
        .file(
            FileSpec::new("/", "no-archival.bam", 2 * MIB)
                .kind(parts.clone())
                .describe_without("archivalState"),
        )
        // A platform release with new fields and a new kind of value in an old one.
        .file(
            FileSpec::new("/", "new-fields.bam", MIB)
                .kind(parts.clone())
                .describe_set("storageTier", json!({"tier": "cool", "since": 5}))
                .describe_set("sponsored", json!("partially")),
        )
        // A describe that cannot be read: its size is not a number.
        .file(
            FileSpec::new("/", "garbled.bam", MIB)
                .kind(parts.clone())
                .describe_set("size", json!("one mebibyte")),
        )
        .file(FileSpec::new("/", "plain.bam", MIB).kind(parts));
    let (sandbox, project, env) = served_env_with(
        SandboxOptions {
            dataset: Dataset::build(31, vec![p]).unwrap(),
            ..SandboxOptions::default()
        },
        "",
    )
    .await;
    let id_of = |name: &str| -> FileId {
        sandbox
            .files(&project)
            .into_iter()
            .find(|f| f.name == name)
            .unwrap()
            .id
    };
    let garbled = id_of("garbled.bam");

    let summary = env.sync().await.unwrap();
    // One listing, not retried: a bad result is not a bad page.
    assert_eq!(
        sandbox.stats().requests("/system/findDataObjects"),
        1,
        "{summary:#?}"
    );
    let project_summary = &summary.projects[0];
    assert!(project_summary.error.is_none(), "{summary:#?}");
    assert_eq!(project_summary.verified, 3, "{summary:#?}");
    assert_eq!(project_summary.problems.len(), 1, "{summary:#?}");
    let problem = &project_summary.problems[0];
    assert_eq!(problem.file_id, garbled.as_str());
    assert_eq!(problem.state, "failed");
    assert!(
        problem.reason.contains("could not be read") && problem.reason.contains("size"),
        "{problem:?}"
    );
    // The exit status says so.
    assert!(!summary.is_ok());

    let reader = JournalReader::open(&env.state()).unwrap();
    for name in ["no-archival.bam", "new-fields.bam", "plain.bam"] {
        let row = reader
            .file(&FileKey::new(&project, &id_of(name)))
            .unwrap()
            .unwrap();
        assert_eq!(row.state, FileState::Verified, "{name}: {row:?}");
    }
    assert!(reader
        .file(&FileKey::new(&project, &garbled))
        .unwrap()
        .is_none());
    let events = reader.recent_events(50).unwrap();
    assert!(
        events.iter().any(|e| e.level == EventLevel::Error
            && e.file_id.as_ref() == Some(&garbled)
            && e.message.contains("could not be read")),
        "{events:#?}"
    );
    let dir = env.project_dir(&project);
    assert!(dir.join("no-archival.bam").is_file());
    assert!(!dir.join("garbled.bam").exists());
}
