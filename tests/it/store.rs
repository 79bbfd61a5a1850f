//! Integration tests: the store on a real filesystem. Hostile names stay inside the project
//! directory, planted symlinks are refused, modes are explicit, publishing never overwrites,
//! and the manifest passes the real `sha256sum -c`.

// Test helpers outside #[test] functions may unwrap too: a failure is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use dxmirror::model::testing::{project_id, RemoteFileBuilder};
use dxmirror::model::{FileId, RemoteFile};
use dxmirror::store::{assign_paths, manifest_name, ProjectStore, RelPath, StoreError};
use md5::Digest as _;

pub(crate) use dxmirror::model::testing::file_id as fid;

pub(crate) fn remote(n: u32, folder: &str, name: &str, created_ms: i64) -> RemoteFile {
    RemoteFileBuilder::new(&project_id(1), n)
        .name(name)
        .folder(folder)
        .created(created_ms)
        .build()
}

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

/// Stages `bytes` for `id` and publishes them at `rel`.
fn stage_and_publish(store: &ProjectStore, id: &FileId, rel: &RelPath, bytes: &[u8]) -> PathBuf {
    let (f, created) = store.open_staging(id, bytes.len() as u64).unwrap();
    assert!(created);
    f.write_all_at(bytes, 0).unwrap();
    drop(f);
    store.publish(id, rel).unwrap()
}

/// Every regular file and directory under `dir`, without following symlinks.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let ft = entry.file_type().unwrap();
        out.push(entry.path());
        if ft.is_dir() {
            walk(&entry.path(), out);
        }
    }
}

#[test]
fn hostile_names_stay_inside_the_project_dir() {
    let root = tempfile::tempdir().unwrap();
    let mirror = root.path().join("mirror");
    fs::create_dir(&mirror).unwrap();
    let long = "n".repeat(300);
    let files = vec![
        remote(1, "/", "..", 0),
        remote(2, "/../../etc", "passwd", 0),
        remote(3, "/", "/abs", 0),
        remote(4, "/", "nul\0byte", 0),
        remote(5, "/", "new\nline", 0),
        remote(6, "/ctl\u{1}", "bell\u{7}", 0),
        remote(7, "/", &long, 0),
        remote(8, "/", ".dxmirror", 0),
        remote(9, "/.dxmirror/staging", "x.part", 0),
        remote(10, "/..", "..", 0),
        remote(11, "/a/../../..", "b", 0),
        remote(12, &format!("/{long}"), "c", 0),
    ];
    let paths = assign_paths(&files);
    assert_eq!(paths.len(), files.len());
    let store = ProjectStore::open(&mirror, "P").unwrap();
    let project = store.dir().canonicalize().unwrap();
    for (i, (id, rel)) in paths.iter().enumerate() {
        let published = stage_and_publish(&store, id, rel, format!("content {i}").as_bytes());
        let canon = published.canonicalize().unwrap();
        assert!(canon.starts_with(&project), "{canon:?} escaped {project:?}");
        assert!(
            !canon.starts_with(project.join(".dxmirror")),
            "{canon:?} is in the hidden dir"
        );
        assert!(rel
            .components()
            .all(|c| c.len() <= 255 && !c.chars().any(char::is_control)));
    }
    // Nothing was written anywhere but the project dir.
    let mut outside = Vec::new();
    walk(root.path(), &mut outside);
    for p in &outside {
        assert!(p.starts_with(&mirror), "{p:?}");
    }
    // Every file is where assign_paths said, and staging is empty again.
    let mut found = Vec::new();
    walk(store.dir(), &mut found);
    let regular = found.iter().filter(|p| p.is_file()).count();
    assert_eq!(regular, files.len());
    assert!(store.list_staging().unwrap().is_empty());
}

#[test]
fn duplicates_keep_the_first_created_name() {
    let root = tempfile::tempdir().unwrap();
    let files = vec![
        remote(7, "/d", "x.bam", 300),
        remote(5, "/d", "x.bam", 100),
        remote(9, "/d/", "x.bam", 100),
        remote(1, "/d", "x.bam", 200),
    ];
    let paths = assign_paths(&files);
    assert_eq!(paths[&fid(5)].as_str(), "d/x.bam");
    assert_eq!(paths[&fid(9)].to_string(), format!("d/{}__x.bam", fid(9)));
    assert_eq!(paths[&fid(1)].to_string(), format!("d/{}__x.bam", fid(1)));
    assert_eq!(paths[&fid(7)].to_string(), format!("d/{}__x.bam", fid(7)));
    let store = ProjectStore::open(root.path(), "P").unwrap();
    for (id, rel) in &paths {
        let p = stage_and_publish(&store, id, rel, id.as_str().as_bytes());
        assert_eq!(fs::read(p).unwrap(), id.as_str().as_bytes());
    }
}

#[test]
fn planted_symlinks_are_refused_and_never_written_through() {
    let root = tempfile::tempdir().unwrap();
    let mirror = root.path().join("mirror");
    fs::create_dir(&mirror).unwrap();
    let elsewhere = root.path().join("elsewhere");
    fs::create_dir_all(&elsewhere).unwrap();
    let store = ProjectStore::open(&mirror, "P").unwrap();

    // A folder component that is a symlink.
    std::os::unix::fs::symlink(&elsewhere, store.dir().join("restricted")).unwrap();
    let rel: RelPath = "restricted/sub/a.bam".parse().unwrap();
    let (f, _) = store.open_staging(&fid(1), 3).unwrap();
    f.write_all_at(b"abc", 0).unwrap();
    let err = store.publish(&fid(1), &rel).unwrap_err();
    assert!(matches!(err, StoreError::NotPlain { .. }), "{err}");
    assert!(err.to_string().contains("restricted"), "{err}");
    // The bytes are still staged, nothing went through the link.
    assert_eq!(store.list_staging().unwrap(), vec![fid(1)]);
    assert_eq!(fs::read_dir(&elsewhere).unwrap().count(), 0);

    // A final name that is a symlink is an existing entry: never replaced or followed.
    let target = elsewhere.join("target");
    fs::write(&target, b"precious").unwrap();
    std::os::unix::fs::symlink(&target, store.dir().join("link.bam")).unwrap();
    let err = store
        .publish(&fid(1), &"link.bam".parse().unwrap())
        .unwrap_err();
    assert!(matches!(err, StoreError::Exists { .. }), "{err}");
    assert_eq!(fs::read(&target).unwrap(), b"precious");

    // A planted staging file symlink.
    let staging_link = store.staging_path(&fid(2));
    std::os::unix::fs::symlink(&target, &staging_link).unwrap();
    let err = store.open_staging(&fid(2), 100).unwrap_err();
    assert!(matches!(err, StoreError::NotPlain { .. }), "{err}");
    assert_eq!(fs::read(&target).unwrap(), b"precious");

    // A project dir or hidden dir that is a symlink.
    std::os::unix::fs::symlink(&elsewhere, mirror.join("Q")).unwrap();
    assert!(matches!(
        ProjectStore::open(&mirror, "Q"),
        Err(StoreError::NotPlain { .. })
    ));
    fs::create_dir(mirror.join("R")).unwrap();
    std::os::unix::fs::symlink(&elsewhere, mirror.join("R/.dxmirror")).unwrap();
    assert!(matches!(
        ProjectStore::open(&mirror, "R"),
        Err(StoreError::NotPlain { .. })
    ));
    assert_eq!(fs::read_dir(&elsewhere).unwrap().count(), 1);
}

#[test]
fn modes_are_explicit() {
    let root = tempfile::tempdir().unwrap();
    let store = ProjectStore::open(root.path(), "P").unwrap();
    let rel: RelPath = "x/y/z.vcf".parse().unwrap();
    let p = stage_and_publish(&store, &fid(1), &rel, b"data");
    assert_eq!(mode(&p), 0o640);
    for d in ["P", "P/x", "P/x/y", "P/.dxmirror", "P/.dxmirror/staging"] {
        assert_eq!(mode(&root.path().join(d)), 0o750, "{d}");
    }
    store
        .write_manifest(&[(rel, [0; 32])], "SHA256SUMS")
        .unwrap();
    assert_eq!(mode(&store.dir().join("SHA256SUMS")), 0o640);
}

#[test]
fn publish_never_overwrites_and_replacing_keeps_the_old_file() {
    let root = tempfile::tempdir().unwrap();
    let store = ProjectStore::open(root.path(), "P").unwrap();
    let rel: RelPath = "d/f.txt".parse().unwrap();
    let p = stage_and_publish(&store, &fid(1), &rel, b"old");

    let (f, _) = store.open_staging(&fid(2), 3).unwrap();
    f.write_all_at(b"new", 0).unwrap();
    let err = store.publish(&fid(2), &rel).unwrap_err();
    assert!(matches!(err, StoreError::Exists { .. }), "{err}");
    assert_eq!(err.path(), p.as_path());
    assert_eq!(fs::read(&p).unwrap(), b"old");
    assert_eq!(store.list_staging().unwrap(), vec![fid(2)]);

    let keep: RelPath = "d/f.txt.old".parse().unwrap();
    store.publish_replacing(&fid(2), &rel, &keep).unwrap();
    assert_eq!(fs::read(&p).unwrap(), b"new");
    assert_eq!(fs::read(store.final_path(&keep)).unwrap(), b"old");
    assert!(store.list_staging().unwrap().is_empty());

    // Replacing onto an existing keep path refuses and changes nothing.
    let (f, _) = store.open_staging(&fid(3), 5).unwrap();
    f.write_all_at(b"newer", 0).unwrap();
    let err = store.publish_replacing(&fid(3), &rel, &keep).unwrap_err();
    assert!(matches!(err, StoreError::Exists { .. }), "{err}");
    assert_eq!(fs::read(&p).unwrap(), b"new");
    assert_eq!(fs::read(store.final_path(&keep)).unwrap(), b"old");
}

#[test]
fn unstage_moves_a_file_back_for_repair() {
    let root = tempfile::tempdir().unwrap();
    let store = ProjectStore::open(root.path(), "P").unwrap();
    let rel: RelPath = "a/b.bin".parse().unwrap();
    let p = stage_and_publish(&store, &fid(1), &rel, b"0123456789");
    let staged = store.unstage(&rel, &fid(1)).unwrap();
    assert!(!p.exists());
    assert_eq!(staged, store.staging_path(&fid(1)));
    let (f, created) = store.open_staging(&fid(1), 10).unwrap();
    assert!(!created);
    let mut buf = [0u8; 10];
    f.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(&buf, b"0123456789");
    // Unstaging again: nothing is there.
    assert!(store.unstage(&rel, &fid(1)).is_err());
}

#[test]
fn manifest_is_accepted_by_sha256sum() {
    let root = tempfile::tempdir().unwrap();
    let store = ProjectStore::open(root.path(), "P").unwrap();
    let names = [
        "plain.bam",
        "with space.txt",
        "dir with space/ünïcødé 名前.vcf",
        "back\\slash",
        "new\nline",
        "both\\and\nmore",
        "cr\rinside",
        "ends in cr\r",
    ];
    let mut entries = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let rel: RelPath = name.parse().unwrap();
        let bytes = format!("file number {i}\n").repeat(i + 1);
        stage_and_publish(&store, &fid(i as u32 + 1), &rel, bytes.as_bytes());
        entries.push((
            rel,
            <[u8; 32]>::from(sha2::Sha256::digest(bytes.as_bytes())),
        ));
    }
    let name = manifest_name(entries.iter().map(|(r, _)| r));
    assert_eq!(name, "SHA256SUMS");
    store.write_manifest(&entries, name).unwrap();

    let check = |dir: &Path| {
        Command::new("sha256sum")
            .args(["-c", "--strict", "SHA256SUMS"])
            .current_dir(dir)
            .output()
            .unwrap()
    };
    let out = check(store.dir());
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.matches(": OK").count(), names.len(), "{stdout}");

    // Lines are sorted by path and the temp file is gone.
    let text = fs::read_to_string(store.dir().join("SHA256SUMS")).unwrap();
    assert_eq!(
        text.lines().count(),
        names.len(),
        "newlines in names are escaped"
    );
    let listed: Vec<&str> = text
        .lines()
        .map(|l| l.split_once("  ").unwrap().1)
        .collect();
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(listed, sorted);
    assert!(text.contains("  new\\nline\n"), "{text}");
    assert!(text.contains("  back\\\\slash\n"), "{text}");
    assert!(!store.dir().join(".dxmirror/SHA256SUMS.tmp").exists());

    // A changed file makes the real tool fail: the manifest really checks content.
    fs::write(store.dir().join("with space.txt"), b"tampered").unwrap();
    assert!(!check(store.dir()).status.success());

    // Rewriting replaces the manifest atomically.
    store.write_manifest(&entries[..1], name).unwrap();
    assert_eq!(
        fs::read_to_string(store.dir().join("SHA256SUMS"))
            .unwrap()
            .lines()
            .count(),
        1
    );
}

#[test]
fn assigned_paths_round_trip_through_text() {
    let files: Vec<RemoteFile> = (1..=20)
        .map(|n| {
            remote(
                n,
                &format!("/f{}/../x\t", n % 3),
                &format!("n\n{}", n % 4),
                n as i64,
            )
        })
        .collect();
    let paths: BTreeMap<FileId, RelPath> = assign_paths(&files);
    for rel in paths.values() {
        assert_eq!(&rel.to_string().parse::<RelPath>().unwrap(), rel);
    }
    let unique: std::collections::HashSet<&RelPath> = paths.values().collect();
    assert_eq!(unique.len(), files.len());
}
