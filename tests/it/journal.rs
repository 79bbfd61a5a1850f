//! Integration tests: journal. Real SQLite files in temporary directories.

// Test helpers outside `#[test]` functions unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Instant;

use dxmirror::journal::{
    EventLevel, FileKey, FileListing, FileState, Journal, JournalError, JournalReader, ProjectRow,
    ProjectState, JOURNAL_FILE, MAX_EVENTS,
};
use dxmirror::model::{ArchivalState, RemoteFile, RemotePart, RemoteState, Stated};
use dxmirror::planner::{plan_file, FileKind};
use futures_util::future::join_all;

use dxmirror::model::testing::{file_id as fid, md5_part, project_id as pid, RemoteFileBuilder};

/// The journal key of file `n` in project `p`.
fn key(p: u32, n: u32) -> FileKey {
    FileKey::new(&pid(p), &fid(n))
}

/// The journal key of a remote file in its project.
fn key_of(f: &RemoteFile) -> FileKey {
    FileKey::new(&f.project, &f.id)
}

fn project(n: u32) -> ProjectRow {
    ProjectRow {
        id: pid(n),
        name: format!("Project {n}"),
        dir_name: Some(format!("proj-{n}")),
        download_restricted: false,
        state: ProjectState::Active,
        reason: None,
        first_seen_ms: 1_000,
        last_listed_ms: None,
    }
}

/// A closed, live file of `n_parts` parts of 10 bytes each, with part MD5s.
fn remote(project: u32, n: u32, n_parts: u32) -> RemoteFile {
    let parts = (1..=n_parts)
        .map(|index| md5_part(index, 10, format!("{:032x}", u128::from(index))))
        .collect::<Vec<_>>();
    RemoteFileBuilder::new(&pid(project), n)
        .name(format!("f{n}.bam"))
        .folder("/data")
        .size(10 * u64::from(n_parts))
        .created(5)
        .modified(6)
        .parts(parts)
        .build()
}

fn listing(f: RemoteFile) -> FileListing {
    let rel_path = format!("data/{}", f.name);
    let skip_reason = f.skip_reason();
    FileListing {
        remote: f,
        rel_path,
        kind: None,
        skip_reason,
    }
}

fn user_version(path: &Path) -> i64 {
    rusqlite::Connection::open(path)
        .unwrap()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap()
}

#[tokio::test]
async fn opens_an_empty_file_and_migrates_idempotently() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state/nested");
    std::fs::create_dir_all(&state).unwrap();
    // An empty file is an empty SQLite database: it must be migrated, not refused.
    std::fs::write(state.join(JOURNAL_FILE), b"").unwrap();
    let j = Journal::open(&state).unwrap();
    j.upsert_project(project(1)).await.unwrap();
    j.close().await.unwrap();
    let v = user_version(&state.join(JOURNAL_FILE));
    assert!(v >= 1);
    // Opening again applies nothing and keeps the data.
    let j = Journal::open(&state).unwrap();
    assert_eq!(user_version(&state.join(JOURNAL_FILE)), v);
    assert_eq!(j.projects().unwrap(), vec![project(1)]);
}

#[tokio::test]
async fn creates_the_state_directory_with_mode_0750() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("fresh");
    let j = Journal::open(&state).unwrap();
    let mode = std::fs::metadata(&state).unwrap().permissions().mode() & 0o777;
    // The umask may remove bits but never add them.
    assert_eq!(mode & !0o750, 0, "mode {mode:o}");
    assert!(j.path().ends_with(JOURNAL_FILE));
}

#[tokio::test]
async fn a_newer_journal_is_refused_naming_both_versions() {
    let dir = tempfile::tempdir().unwrap();
    Journal::open(dir.path()).unwrap().close().await.unwrap();
    let path = dir.path().join(JOURNAL_FILE);
    let known = user_version(&path);
    rusqlite::Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", 4242)
        .unwrap();
    let err = Journal::open(dir.path()).unwrap_err();
    assert!(
        matches!(err, JournalError::TooNew { found: 4242, .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("4242") && msg.contains(&format!("version {known}")),
        "{msg}"
    );
    let err = JournalReader::open(dir.path()).unwrap_err();
    assert!(
        matches!(err, JournalError::TooNew { found: 4242, .. }),
        "{err:?}"
    );
    // Refusing did not touch the file.
    assert_eq!(user_version(&path), 4242);
}

#[tokio::test]
async fn a_garbage_file_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(JOURNAL_FILE);
    std::fs::write(
        &path,
        "this is not a database, just some text\n".repeat(100),
    )
    .unwrap();
    let err = Journal::open(dir.path()).unwrap_err();
    assert!(matches!(err, JournalError::NotADatabase { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("not a SQLite database"), "{msg}");
    let err = JournalReader::open(dir.path()).unwrap_err();
    assert!(matches!(err, JournalError::NotADatabase { .. }), "{err:?}");
}

#[test]
fn reader_without_a_journal_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let err = JournalReader::open(dir.path()).unwrap_err();
    assert!(matches!(err, JournalError::Missing(_)));
    assert!(err.to_string().contains(&dir.path().display().to_string()));
}

#[tokio::test]
async fn dir_name_is_decided_once() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path()).unwrap();
    j.upsert_project(project(1)).await.unwrap();
    let mut changed = project(1);
    changed.name = "Renamed".into();
    changed.dir_name = Some("other-dir".into());
    changed.first_seen_ms = 99_999;
    changed.state = ProjectState::Restricted;
    changed.download_restricted = true;
    j.upsert_project(changed).await.unwrap();
    let row = j.project(&pid(1)).unwrap().unwrap();
    assert_eq!(row.dir_name.as_deref(), Some("proj-1"));
    assert_eq!(row.name, "Renamed");
    assert_eq!(row.first_seen_ms, 1_000);
    assert_eq!(row.state, ProjectState::Restricted);
    assert!(row.download_restricted);

    // A project without a dir_name gets one later, then keeps it.
    let mut p2 = project(2);
    p2.dir_name = None;
    j.upsert_project(p2.clone()).await.unwrap();
    assert_eq!(j.project(&pid(2)).unwrap().unwrap().dir_name, None);
    p2.dir_name = Some("proj-1".into());
    let err = j.upsert_project(p2.clone()).await.unwrap_err();
    assert!(
        matches!(err, JournalError::DirNameTaken { ref owner, .. } if *owner == pid(1)),
        "{err:?}"
    );
    p2.dir_name = Some("proj-2".into());
    j.upsert_project(p2.clone()).await.unwrap();
    p2.dir_name = None;
    j.upsert_project(p2).await.unwrap();
    assert_eq!(
        j.project(&pid(2)).unwrap().unwrap().dir_name.as_deref(),
        Some("proj-2")
    );
}

#[tokio::test]
async fn listing_adds_updates_and_reports_removed_without_touching_progress() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path()).unwrap();
    let err = j
        .record_listing(&pid(1), vec![listing(remote(1, 1, 1))])
        .await
        .unwrap_err();
    assert!(matches!(err, JournalError::UnknownProject(_)), "{err:?}");
    j.upsert_project(project(1)).await.unwrap();

    let mut archived = remote(1, 3, 1);
    archived.archival_state = ArchivalState::Archived;
    let first = vec![
        listing(remote(1, 1, 2)),
        listing(remote(1, 2, 1)),
        listing(archived.clone()),
        listing(remote(1, 4, 1)),
    ];
    let diff = j.record_listing(&pid(1), first).await.unwrap();
    assert_eq!(diff.added, vec![fid(1), fid(2), fid(3), fid(4)]);
    assert!(diff.updated.is_empty() && diff.removed.is_empty());
    let f3 = j.file(&key(1, 3)).unwrap().unwrap();
    assert_eq!(f3.state, FileState::Skipped);
    assert_eq!(f3.reason.as_deref(), Some("file is archived (not live)"));
    let f1 = j.file(&key(1, 1)).unwrap().unwrap();
    assert_eq!(f1.rel_path, "data/f1.bam");
    assert_eq!(f1.state, FileState::Pending);
    assert_eq!(f1.remote(), remote(1, 1, 2));
    assert!(j
        .project(&pid(1))
        .unwrap()
        .unwrap()
        .last_listed_ms
        .is_some());

    // File 1 is in progress, file 2 finished, file 4 failed.
    let plan = plan_file(&remote(1, 1, 2), 4).unwrap();
    j.put_plan(&key(1, 1), &plan).await.unwrap();
    j.set_file_state(&key(1, 1), FileState::Fetching, None)
        .await
        .unwrap();
    j.record_chunk_progress(&key(1, 1), 0, 4, 77).await.unwrap();
    assert_eq!(j.add_attempt(&key(1, 1)).await.unwrap(), 1);
    j.mark_done(&key(1, 2), FileState::Verified, "ab".repeat(32))
        .await
        .unwrap();
    j.set_file_state(&key(1, 4), FileState::Failed, Some("HTTP 404".into()))
        .await
        .unwrap();

    // Second listing: file 1 renamed (new rel_path), file 2 unchanged, file 3 now live,
    // file 4 absent, file 5 new.
    let mut renamed = remote(1, 1, 2);
    renamed.name = "renamed.bam".into();
    archived.archival_state = ArchivalState::Live;
    let second = vec![
        listing(renamed.clone()),
        listing(remote(1, 2, 1)),
        listing(archived),
        listing(remote(1, 5, 3)),
    ];
    let diff = j.record_listing(&pid(1), second).await.unwrap();
    assert_eq!(diff.added, vec![fid(5)]);
    assert_eq!(diff.updated, vec![fid(1), fid(3)]);
    assert_eq!(diff.removed, vec![fid(4)]);

    let f1 = j.file(&key(1, 1)).unwrap().unwrap();
    assert_eq!(f1.name, "renamed.bam");
    assert_eq!(f1.rel_path, "data/renamed.bam");
    assert_eq!(f1.state, FileState::Fetching);
    assert_eq!(f1.attempts, 1);
    let stored = j.load_plan(&key(1, 1)).unwrap().unwrap();
    assert_eq!(stored.chunk_done[0], (4, 77));
    let f2 = j.file(&key(1, 2)).unwrap().unwrap();
    assert_eq!(f2.state, FileState::Verified);
    assert_eq!(f2.sha256, Some("ab".repeat(32)));
    assert!(f2.done_ms.is_some());
    let f3 = j.file(&key(1, 3)).unwrap().unwrap();
    assert_eq!((f3.state, f3.reason), (FileState::Pending, None));
    // Removed files are kept as they were, and not marked as seen.
    let f4 = j.file(&key(1, 4)).unwrap().unwrap();
    assert_eq!(f4.state, FileState::Failed);
    assert_eq!(f4.reason.as_deref(), Some("HTTP 404"));
    assert!(f4.last_seen_ms <= f2.last_seen_ms);
    assert_eq!(j.files(&pid(1)).unwrap().len(), 5);
}

#[tokio::test]
async fn the_same_file_id_in_two_projects_gets_two_independent_rows() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path()).unwrap();
    j.upsert_project(project(1)).await.unwrap();
    j.upsert_project(project(2)).await.unwrap();

    // File 1 is cloned into both projects (same id, same content), under different folders.
    let in_p1 = remote(1, 1, 2);
    let mut in_p2 = remote(2, 1, 2);
    in_p2.folder = "/clone".into();
    let diff = j
        .record_listing(
            &pid(1),
            vec![listing(in_p1.clone()), listing(remote(1, 2, 1))],
        )
        .await
        .unwrap();
    assert_eq!(diff.added, vec![fid(1), fid(2)]);
    let diff = j
        .record_listing(
            &pid(2),
            vec![listing(in_p2.clone()), listing(remote(2, 9, 1))],
        )
        .await
        .unwrap();
    assert_eq!(diff.added, vec![fid(1), fid(9)]);
    assert!(diff.updated.is_empty() && diff.removed.is_empty());

    let (k1, k2) = (key(1, 1), key(2, 1));
    assert_eq!(j.file(&k1).unwrap().unwrap().remote(), in_p1);
    assert_eq!(j.file(&k2).unwrap().unwrap().remote(), in_p2);
    assert_eq!(j.file(&k2).unwrap().unwrap().key(), k2);
    // A file of one project is unknown under the other.
    assert_eq!(j.file(&key(2, 2)).unwrap(), None);
    let err = j
        .set_file_state(&key(1, 9), FileState::Failed, None)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, JournalError::UnknownFile(k) if *k == key(1, 9)),
        "{err:?}"
    );

    // Different plans, progress and states per project.
    let plan1 = plan_file(&in_p1, 4).unwrap(); // chunks 4,4,2 | 4,4,2
    let plan2 = plan_file(&in_p2, 100).unwrap(); // one chunk per part
    j.put_plan(&k1, &plan1).await.unwrap();
    j.put_plan(&k2, &plan2).await.unwrap();
    j.set_file_state(&k1, FileState::Fetching, None)
        .await
        .unwrap();
    assert_eq!(j.add_attempt(&k1).await.unwrap(), 1);
    assert_eq!(j.add_attempt(&k1).await.unwrap(), 2);
    assert_eq!(j.add_attempt(&k2).await.unwrap(), 1);
    j.record_chunk_progress(&k1, 0, 4, 11).await.unwrap();
    j.record_chunk_progress(&k1, 3, 2, 12).await.unwrap();
    j.record_chunk_progress(&k2, 0, 10, 21).await.unwrap();
    j.record_chunk_progress(&k2, 1, 10, 22).await.unwrap();
    j.set_segment_verified(&k2, 0, true).await.unwrap();
    j.set_segment_verified(&k2, 1, true).await.unwrap();
    j.mark_done(&k2, FileState::Verified, "cd".repeat(32))
        .await
        .unwrap();
    // Project 1's chunk 5 does not exist in project 2's plan (2 chunks).
    let err = j.record_chunk_progress(&k2, 5, 1, 0).await.unwrap_err();
    assert!(
        matches!(&err, JournalError::UnknownChunk { file, chunk_idx: 5 } if *file == k2),
        "{err:?}"
    );

    let s1 = j.load_plan(&k1).unwrap().unwrap();
    assert_eq!(s1.plan, plan1);
    assert_eq!(
        s1.chunk_done,
        vec![(4, 11), (0, 0), (0, 0), (2, 12), (0, 0), (0, 0)]
    );
    assert_eq!(s1.segment_verified, vec![false, false]);
    let s2 = j.load_plan(&k2).unwrap().unwrap();
    assert_eq!(s2.plan, plan2);
    assert_eq!(s2.chunk_done, vec![(10, 21), (10, 22)]);
    assert_eq!(s2.segment_verified, vec![true, true]);

    let f1 = j.file(&k1).unwrap().unwrap();
    let f2 = j.file(&k2).unwrap().unwrap();
    assert_eq!(
        (f1.state, f1.attempts, f1.sha256),
        (FileState::Fetching, 2, None)
    );
    assert_eq!(
        (f2.state, f2.attempts, f2.sha256.as_deref()),
        (FileState::Verified, 1, Some("cd".repeat(32).as_str()))
    );

    // Resetting one project's copy leaves the other alone.
    j.reset_chunks(&k2, vec![1]).await.unwrap();
    assert_eq!(j.load_plan(&k1).unwrap().unwrap(), s1);
    let s2 = j.load_plan(&k2).unwrap().unwrap();
    assert_eq!(s2.chunk_done, vec![(10, 21), (0, 0)]);
    assert_eq!(s2.segment_verified, vec![true, false]);

    // Re-listing project 2 without the clone reports it removed there only; re-listing
    // project 1 touches neither project 2's row nor its progress.
    let diff = j
        .record_listing(&pid(2), vec![listing(remote(2, 9, 1))])
        .await
        .unwrap();
    assert_eq!(diff.removed, vec![fid(1)]);
    let mut renamed = in_p1.clone();
    renamed.name = "renamed.bam".into();
    let diff = j
        .record_listing(&pid(1), vec![listing(renamed), listing(remote(1, 2, 1))])
        .await
        .unwrap();
    assert_eq!(diff.updated, vec![fid(1)]);
    assert!(diff.removed.is_empty());
    assert_eq!(j.file(&k1).unwrap().unwrap().name, "renamed.bam");
    assert_eq!(j.file(&k2).unwrap().unwrap().name, "f1.bam");
    assert_eq!(j.file(&k2).unwrap().unwrap().state, FileState::Verified);
    assert_eq!(j.load_plan(&k2).unwrap().unwrap(), s2);

    // Totals count each project's copy in its own project.
    let reader = JournalReader::open(dir.path()).unwrap();
    assert_eq!(reader.load_plan(&k1).unwrap().unwrap(), s1);
    assert_eq!(
        reader.file(&k2).unwrap().unwrap().state,
        FileState::Verified
    );
    let totals = reader.project_totals().unwrap();
    assert_eq!((totals[0].n_files, totals[1].n_files), (2, 2));
    assert_eq!(totals[0].bytes_done, 4 + 2);
    assert_eq!(totals[1].bytes_done, 20);
    let ids: Vec<_> = reader
        .files(&pid(1))
        .unwrap()
        .into_iter()
        .map(|f| f.key())
        .collect();
    assert_eq!(ids, vec![key(1, 2), key(1, 1)]);
}

#[tokio::test]
async fn a_size_beyond_sqlite_integers_is_refused_whole() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path()).unwrap();
    j.upsert_project(project(1)).await.unwrap();
    let mut huge = remote(1, 2, 1);
    huge.size = u64::MAX;
    huge.parts = None;
    let err = j
        .record_listing(&pid(1), vec![listing(remote(1, 1, 1)), listing(huge)])
        .await
        .unwrap_err();
    assert!(matches!(err, JournalError::TooLarge(u64::MAX)), "{err:?}");
    // The listing is one transaction: nothing of it was kept.
    assert!(j.files(&pid(1)).unwrap().is_empty());
}

#[tokio::test]
async fn plan_round_trips_through_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path()).unwrap();
    j.upsert_project(project(1)).await.unwrap();

    let parts_md5 = remote(1, 1, 3);
    let mut parts_checksum = remote(1, 2, 1);
    parts_checksum.size = 4;
    parts_checksum.checksum_type = Some(Stated::checksum_type("CRC32C"));
    parts_checksum.parts = Some(vec![RemotePart {
        index: 7,
        size: 4,
        md5: None,
        checksum: Some("ImIEBA==".into()),
    }]);
    let mut whole = remote(1, 3, 1);
    whole.parts = None;
    whole.size = 25;
    whole.drive = Some("drive-xyz".into());
    whole.md5 = Some(Stated::md5("9e107d9d372bb6826bd81d3542a419d6"));
    let mut unverified = remote(1, 4, 1);
    unverified.parts = None;
    unverified.size = 0;

    let files = [parts_md5, parts_checksum, whole, unverified];
    j.record_listing(&pid(1), files.iter().cloned().map(listing).collect())
        .await
        .unwrap();
    for f in &files {
        assert_eq!(j.load_plan(&key_of(f)).unwrap(), None);
        let plan = plan_file(f, 4).unwrap();
        j.put_plan(&key_of(f), &plan).await.unwrap();
        let stored = j.load_plan(&key_of(f)).unwrap().unwrap();
        assert_eq!(stored.plan, plan);
        assert_eq!(stored.chunk_done, vec![(0, 0); plan.chunks.len()]);
        assert_eq!(stored.segment_verified, vec![false; plan.segments.len()]);
        let row = j.file(&key_of(f)).unwrap().unwrap();
        assert_eq!(row.kind, Some(plan.kind));
        assert_eq!(&row.remote(), f);
    }
    let kinds: Vec<_> = files
        .iter()
        .map(|f| j.file(&key_of(f)).unwrap().unwrap().kind.unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            FileKind::PartsMd5,
            FileKind::PartsChecksum,
            FileKind::WholeMd5,
            FileKind::Unverified
        ]
    );

    // Re-planning replaces segments and chunks and resets progress.
    j.record_chunk_progress(&key(1, 1), 2, 2, 5).await.unwrap();
    j.set_segment_verified(&key(1, 1), 0, true).await.unwrap();
    let replanned = plan_file(&files[0], 100).unwrap();
    j.put_plan(&key(1, 1), &replanned).await.unwrap();
    let stored = j.load_plan(&key(1, 1)).unwrap().unwrap();
    assert_eq!(stored.plan, replanned);
    assert_eq!(stored.chunk_done, vec![(0, 0); 3]);
    assert_eq!(stored.segment_verified, vec![false; 3]);

    let err = j.put_plan(&key(1, 99), &replanned).await.unwrap_err();
    assert!(matches!(err, JournalError::UnknownFile(_)), "{err:?}");
}

#[tokio::test]
async fn acked_chunk_progress_survives_drop_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let f = remote(1, 1, 100); // 1000 bytes in 100 parts
    let plan = plan_file(&f, 1).unwrap(); // 1000 chunks of 1 byte
    assert_eq!(plan.chunks.len(), 1000);
    let k = key_of(&f);
    {
        let j = Journal::open(dir.path()).unwrap();
        j.upsert_project(project(1)).await.unwrap();
        j.record_listing(&pid(1), vec![listing(f.clone())])
            .await
            .unwrap();
        j.put_plan(&key_of(&f), &plan).await.unwrap();
        let before = j.stats();
        let started = Instant::now();
        let acks = join_all(
            (0..1000u32)
                .map(|idx| j.record_chunk_progress(&k, idx, 1, idx.wrapping_mul(2_654_435_761))),
        )
        .await;
        let elapsed = started.elapsed();
        assert!(acks.iter().all(Result::is_ok));
        let after = j.stats();
        let commits = after.commits - before.commits;
        assert_eq!(after.commands - before.commands, 1000);
        eprintln!(
            "journal: 1000 chunk updates queued at once took {commits} commits in {:.1} ms \
             ({:.0} updates/s, {:.0} commits/s)",
            elapsed.as_secs_f64() * 1e3,
            1000.0 / elapsed.as_secs_f64(),
            commits as f64 / elapsed.as_secs_f64()
        );
        // Group commit: far fewer transactions than updates.
        assert!(commits <= 250, "{commits} commits for 1000 updates");
        // Dropped without close: acked writes must already be on disk.
    }
    let j = Journal::open(dir.path()).unwrap();
    let stored = j.load_plan(&key_of(&f)).unwrap().unwrap();
    for (idx, done) in stored.chunk_done.iter().enumerate() {
        assert_eq!(*done, (1, (idx as u32).wrapping_mul(2_654_435_761)));
    }
    let reader = JournalReader::open(dir.path()).unwrap();
    assert_eq!(reader.load_plan(&key_of(&f)).unwrap().unwrap(), stored);
}

#[tokio::test]
async fn reset_chunks_clears_progress_and_unverifies_segments() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path()).unwrap();
    j.upsert_project(project(1)).await.unwrap();
    let f = remote(1, 1, 2);
    j.record_listing(&pid(1), vec![listing(f.clone())])
        .await
        .unwrap();
    let plan = plan_file(&f, 4).unwrap(); // segments of 10: chunks 4,4,2 | 4,4,2
    j.put_plan(&key_of(&f), &plan).await.unwrap();
    for c in &plan.chunks {
        j.record_chunk_progress(&key_of(&f), c.idx, c.range.len, 1000 + c.idx)
            .await
            .unwrap();
    }
    j.set_segment_verified(&key_of(&f), 0, true).await.unwrap();
    j.set_segment_verified(&key_of(&f), 1, true).await.unwrap();

    j.reset_chunks(&key_of(&f), vec![4]).await.unwrap();
    let stored = j.load_plan(&key_of(&f)).unwrap().unwrap();
    assert_eq!(stored.segment_verified, vec![true, false]);
    assert_eq!(
        stored.chunk_done,
        vec![
            (4, 1000),
            (4, 1001),
            (2, 1002),
            (4, 1003),
            (0, 0),
            (2, 1005)
        ]
    );

    let err = j.reset_chunks(&key_of(&f), vec![6]).await.unwrap_err();
    assert!(
        matches!(err, JournalError::UnknownChunk { chunk_idx: 6, .. }),
        "{err:?}"
    );
    let err = j
        .record_chunk_progress(&key_of(&f), 0, 5, 0)
        .await
        .unwrap_err();
    assert!(
        matches!(err, JournalError::ProgressBeyondChunk { len: 4, .. }),
        "{err:?}"
    );
    let err = j
        .set_segment_verified(&key_of(&f), 2, true)
        .await
        .unwrap_err();
    assert!(
        matches!(err, JournalError::UnknownSegment { seg_idx: 2, .. }),
        "{err:?}"
    );
    // The failed commands changed nothing.
    assert_eq!(j.load_plan(&key_of(&f)).unwrap().unwrap(), stored);
}

#[tokio::test]
async fn a_failing_command_does_not_undo_its_batch_neighbours() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path()).unwrap();
    j.upsert_project(project(1)).await.unwrap();
    let f = remote(1, 1, 1);
    j.record_listing(&pid(1), vec![listing(f.clone())])
        .await
        .unwrap();
    j.put_plan(&key_of(&f), &plan_file(&f, 10).unwrap())
        .await
        .unwrap();
    let k = key_of(&f);
    let unknown = key(1, 42);
    let (good, bad, good2) = tokio::join!(
        j.record_chunk_progress(&k, 0, 3, 9),
        j.set_file_state(&unknown, FileState::Failed, None),
        j.add_attempt(&k),
    );
    good.unwrap();
    assert!(matches!(bad, Err(JournalError::UnknownFile(_))));
    assert_eq!(good2.unwrap(), 1);
    assert_eq!(
        j.load_plan(&key_of(&f)).unwrap().unwrap().chunk_done,
        vec![(3, 9)]
    );
    let err = j
        .mark_done(&key_of(&f), FileState::Fetching, String::new())
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        JournalError::NotFinished(FileState::Fetching)
    ));
}

#[tokio::test]
async fn reader_reads_while_a_journal_writes() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path()).unwrap();
    let reader = JournalReader::open(dir.path()).unwrap();
    assert!(reader.projects().unwrap().is_empty());
    j.upsert_project(project(1)).await.unwrap();
    let run = j.start_run("daemon").await.unwrap();

    let writer = {
        let j = j.clone();
        tokio::spawn(async move {
            for batch in 0..20u32 {
                // Each listing is complete (all files so far), so 50 are new each time.
                let files: Vec<_> = (0..=batch * 50 + 49)
                    .map(|n| listing(remote(1, n, 1)))
                    .collect();
                let diff = j.record_listing(&pid(1), files).await.unwrap();
                assert_eq!(diff.added.len(), 50);
            }
        })
    };
    // Poll the reader while the writer runs: counts only grow and never exceed the end.
    let mut last = 0;
    loop {
        let n = reader.files(&pid(1)).unwrap().len();
        assert!(n >= last && n <= 1000, "{n} after {last}");
        last = n;
        if writer.is_finished() {
            break;
        }
        tokio::task::yield_now().await;
    }
    writer.await.unwrap();
    assert_eq!(reader.files(&pid(1)).unwrap().len(), 1000);
    let totals = reader.project_totals().unwrap();
    assert_eq!(totals.len(), 1);
    assert_eq!(totals[0].n_files, 1000);
    assert_eq!(totals[0].bytes_total, 10_000);
    assert_eq!(reader.last_run().unwrap().unwrap().id, run);
    j.end_run(run, "ok").await.unwrap();
    let last_run = reader.last_run().unwrap().unwrap();
    assert_eq!(last_run.outcome.as_deref(), Some("ok"));
    assert_eq!(last_run.command, "daemon");
    assert_eq!(last_run.pid, std::process::id());
    assert!(last_run.ended_ms.is_some());
    j.close().await.unwrap();
    // The reader keeps working after the writer is gone, and a new one opens too.
    assert_eq!(reader.files(&pid(1)).unwrap().len(), 1000);
    assert_eq!(
        JournalReader::open(dir.path())
            .unwrap()
            .projects()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn totals_problems_and_bounded_events() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path()).unwrap();
    j.upsert_project(project(1)).await.unwrap();
    j.upsert_project(project(2)).await.unwrap();
    let mut skipped = remote(1, 4, 1);
    skipped.state = RemoteState::Open;
    j.record_listing(
        &pid(1),
        vec![
            listing(remote(1, 1, 3)),
            listing(remote(1, 2, 2)),
            listing(remote(1, 3, 1)),
            listing(skipped),
            listing(remote(1, 5, 1)),
        ],
    )
    .await
    .unwrap();
    // File 1: 30 bytes, 12 done in chunks. File 2: verified (20). File 3: failed with 5 done.
    // File 4: skipped (10). File 5: corrupt.
    let p1 = plan_file(&remote(1, 1, 3), 4).unwrap();
    j.put_plan(&key(1, 1), &p1).await.unwrap();
    j.set_file_state(&key(1, 1), FileState::Fetching, None)
        .await
        .unwrap();
    j.record_chunk_progress(&key(1, 1), 0, 4, 0).await.unwrap();
    j.record_chunk_progress(&key(1, 1), 1, 4, 0).await.unwrap();
    j.record_chunk_progress(&key(1, 1), 3, 4, 0).await.unwrap();
    let p2 = plan_file(&remote(1, 2, 2), 4).unwrap();
    j.put_plan(&key(1, 2), &p2).await.unwrap();
    for c in &p2.chunks {
        j.record_chunk_progress(&key(1, 2), c.idx, c.range.len, 0)
            .await
            .unwrap();
    }
    j.mark_done(&key(1, 2), FileState::Verified, "00".repeat(32))
        .await
        .unwrap();
    let p3 = plan_file(&remote(1, 3, 1), 100).unwrap();
    j.put_plan(&key(1, 3), &p3).await.unwrap();
    j.record_chunk_progress(&key(1, 3), 0, 5, 0).await.unwrap();
    j.set_file_state(&key(1, 3), FileState::Failed, Some("HTTP 403".into()))
        .await
        .unwrap();
    j.set_file_state(
        &key(1, 5),
        FileState::Corrupt,
        Some("part 1 md5 mismatch".into()),
    )
    .await
    .unwrap();

    let reader = JournalReader::open(dir.path()).unwrap();
    let totals = reader.project_totals().unwrap();
    assert_eq!(totals.len(), 2);
    let t = &totals[0];
    assert_eq!(t.project.id, pid(1));
    assert_eq!(t.n_files, 5);
    assert_eq!(t.bytes_total, 30 + 20 + 10 + 10);
    assert_eq!(t.bytes_skipped, 10);
    assert_eq!(t.bytes_done, 12 + 20 + 5);
    assert_eq!((t.n_failed, t.n_corrupt), (1, 1));
    assert_eq!(t.files_by_state.get(&FileState::Verified), Some(&1));
    assert_eq!(t.files_by_state.get(&FileState::Skipped), Some(&1));
    assert_eq!(t.files_by_state.get(&FileState::Pending), None);
    assert_eq!(j.project_totals().unwrap(), totals);
    assert_eq!(totals[1].n_files, 0);

    let problems = reader.problems(10).unwrap();
    let ids: Vec<_> = problems
        .iter()
        .map(|f| (f.file_id.clone(), f.state))
        .collect();
    assert_eq!(
        ids,
        vec![
            (fid(3), FileState::Failed),
            (fid(5), FileState::Corrupt),
            (fid(4), FileState::Skipped)
        ]
    );
    assert_eq!(
        problems[2].reason.as_deref(),
        Some("file is open (not closed)")
    );
    assert_eq!(reader.problems(1).unwrap().len(), 1);

    let n_events = MAX_EVENTS as usize + 25;
    let file1 = fid(1);
    let project1 = pid(1);
    join_all((0..n_events).map(|i| {
        j.record_event(
            if i % 2 == 0 {
                EventLevel::Info
            } else {
                EventLevel::Warn
            },
            Some(&project1),
            if i % 3 == 0 { Some(&file1) } else { None },
            format!("event {i}"),
        )
    }))
    .await
    .into_iter()
    .collect::<Result<Vec<_>, _>>()
    .unwrap();
    let all = reader.recent_events(usize::MAX).unwrap();
    assert_eq!(all.len(), MAX_EVENTS as usize);
    // Concurrent submissions have no defined order, but ids do: the newest are kept.
    assert_eq!(all[0].id, n_events as i64);
    assert!(all.windows(2).all(|w| w[0].id == w[1].id + 1));
    j.record_event(EventLevel::Error, None, Some(&file1), "the last one".into())
        .await
        .unwrap();
    let all = reader.recent_events(usize::MAX).unwrap();
    assert_eq!(all.len(), MAX_EVENTS as usize);
    assert_eq!(all[0].message, "the last one");
    assert_eq!(all[0].level, EventLevel::Error);
    assert_eq!(
        (all[0].project_id.clone(), all[0].file_id.clone()),
        (None, Some(fid(1)))
    );
    let newest = reader.recent_events(2).unwrap();
    assert_eq!(newest.len(), 2);
    assert_eq!(newest[0].message, "the last one");
    assert_eq!(newest[1].project_id, Some(pid(1)));
}

#[tokio::test]
async fn closed_journal_refuses_writes_but_still_reads() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path()).unwrap();
    j.upsert_project(project(1)).await.unwrap();
    let clone = j.clone();
    j.close().await.unwrap();
    let err = clone.upsert_project(project(2)).await.unwrap_err();
    assert!(matches!(err, JournalError::Closed), "{err:?}");
    assert_eq!(clone.projects().unwrap().len(), 1);
    // Closing twice is harmless.
    clone.close().await.unwrap();
}

#[tokio::test]
async fn hundred_thousand_file_listing_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path()).unwrap();
    j.upsert_project(project(1)).await.unwrap();
    let files: Vec<FileListing> = (0..100_000).map(|n| listing(remote(1, n, 1))).collect();

    let started = Instant::now();
    let diff = j.record_listing(&pid(1), files.clone()).await.unwrap();
    let insert_ms = started.elapsed().as_secs_f64() * 1e3;
    assert_eq!(diff.added.len(), 100_000);

    let started = Instant::now();
    let diff = j
        .record_listing(&pid(1), files[1..].to_vec())
        .await
        .unwrap();
    let relist_ms = started.elapsed().as_secs_f64() * 1e3;
    assert!(diff.added.is_empty() && diff.updated.is_empty());
    assert_eq!(diff.removed, vec![fid(0)]);

    let reader = JournalReader::open(dir.path()).unwrap();
    let started = Instant::now();
    let rows = reader.files(&pid(1)).unwrap();
    let read_ms = started.elapsed().as_secs_f64() * 1e3;
    assert_eq!(rows.len(), 100_000);
    let started = Instant::now();
    let totals = reader.project_totals().unwrap();
    let problems = reader.problems(50).unwrap();
    let status_ms = started.elapsed().as_secs_f64() * 1e3;
    assert_eq!(
        totals[0].files_by_state.get(&FileState::Pending),
        Some(&100_000)
    );
    assert!(problems.is_empty());
    for row in &rows {
        let n: u32 = row.file_id.as_str()[5..].parse().unwrap();
        assert_eq!(row.remote(), remote(1, n, 1));
        assert_eq!(row.rel_path, format!("data/f{n}.bam"));
    }
    drop(reader);
    j.close().await.unwrap();
    drop(j);
    let started = Instant::now();
    let j = Journal::open(dir.path()).unwrap();
    let open_ms = started.elapsed().as_secs_f64() * 1e3;
    assert_eq!(
        j.file(&key(1, 0)).unwrap().unwrap().state,
        FileState::Pending
    );
    eprintln!(
        "journal: 100k-file listing: insert {insert_ms:.0} ms, re-list {relist_ms:.0} ms, \
         read back {read_ms:.0} ms, totals+problems {status_ms:.1} ms, \
         reopen (quick_check) {open_ms:.0} ms"
    );
}

/// A journal written by each released schema version is kept under `tests/it/data/` and must
/// keep opening, migrating and reading with every later build. `journal_v3.sqlite3` is the
/// journal of a `dxmirror demo` sync (18 files, chunks, an audit trail) written by the first
/// release's schema; versions 1 and 2 were never released.
#[tokio::test]
async fn journals_of_released_schemas_migrate_and_read() {
    for (fixture, n_files) in [("journal_v3.sqlite3", 18)] {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/it/data")
            .join(fixture);
        std::fs::copy(&src, state.join(dxmirror::journal::JOURNAL_FILE)).unwrap();

        let journal = Journal::open(&state).unwrap_or_else(|e| panic!("{fixture}: {e}"));
        let projects = journal.projects().unwrap();
        assert_eq!(projects.len(), 1, "{fixture}");
        let files = journal.files(&projects[0].id).unwrap();
        assert_eq!(files.len(), n_files, "{fixture}");
        let verified: Vec<_> = files
            .iter()
            .filter(|f| f.state == FileState::Verified)
            .collect();
        assert!(!verified.is_empty(), "{fixture}");
        for f in &verified {
            assert!(f.sha256_bytes().is_some(), "{fixture}: {}", f.rel_path);
            assert!(
                journal.load_plan(&f.key()).unwrap().is_some(),
                "{fixture}: {}",
                f.rel_path
            );
        }
        journal.close().await.unwrap();
        let reader = JournalReader::open(&state).unwrap();
        assert!(!reader.audit_since(0).unwrap().is_empty(), "{fixture}");
        assert_eq!(reader.project_totals().unwrap().len(), 1, "{fixture}");
    }
}
