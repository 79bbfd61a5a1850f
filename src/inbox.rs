//! The drop-in directory ("inbox"): files an operator drops there ask for work. A file is a
//! dxda manifest (bzip2-compressed JSON, see the reference notes) naming project and file
//! ids, or a text file of `project-…` and `project-…:file-…` lines.
//!
//! This module owns parsing those files and moving each one, once judged, to `accepted/` or
//! `rejected/` (with `NAME.reason` beside it) inside the inbox. It never follows a symlink,
//! never reads a file still being written (younger than a threshold), never touches dotfiles
//! or subdirectories, and never writes outside the inbox. It does not queue work: the caller
//! turns the returned items into work.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::Deserialize;

use crate::model::{FileId, ProjectId};

/// Subdirectory of the inbox that receives parsed files.
pub const ACCEPTED_DIR: &str = "accepted";
/// Subdirectory of the inbox that receives files that could not be used.
pub const REJECTED_DIR: &str = "rejected";
/// Largest file read from the inbox.
pub const MAX_INBOX_FILE: u64 = 64 << 20;
/// Largest decompressed manifest.
pub const MAX_MANIFEST_JSON: u64 = 512 << 20;
/// Files modified more recently than this are left for a later scan (still being written).
pub const DEFAULT_MIN_AGE: Duration = Duration::from_secs(2);

/// What a dropped file asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboxItem {
    /// Mirror these projects (whole, subject to their selection rules).
    Projects(Vec<ProjectId>),
    /// Mirror these files of these projects.
    Files(Vec<(ProjectId, FileId)>),
}

/// The inbox itself cannot be used (a single bad file is rejected, not an error).
#[derive(Debug, thiserror::Error)]
pub enum InboxError {
    /// The inbox or one of its subdirectories cannot be read or created.
    #[error("inbox {path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A judged file could not be moved out of the way.
    #[error("inbox: cannot move {from} to {to}: {source}")]
    Move {
        /// The dropped file.
        from: PathBuf,
        /// Where it was to go.
        to: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// What one scan did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ScanReport {
    /// Accepted files (their path under `accepted/`) and what they ask for, in name order. A
    /// text file with both project lines and file lines gives two items with the same path.
    pub accepted: Vec<(PathBuf, InboxItem)>,
    /// Rejected files (their path under `rejected/`) and why.
    pub rejected: Vec<(PathBuf, String)>,
    /// Files left for a later scan because they were modified too recently.
    pub deferred: Vec<PathBuf>,
}

/// Scans the inbox with the default age threshold ([`DEFAULT_MIN_AGE`]) and returns the
/// accepted items (see [`scan_with`]).
pub fn scan(dir: &Path) -> Result<Vec<(PathBuf, InboxItem)>, InboxError> {
    scan_with(dir, DEFAULT_MIN_AGE).map(|r| r.accepted)
}

/// Scans the inbox: every regular, non-hidden file at its top level modified at least
/// `min_age` ago is parsed and moved to `accepted/` or to `rejected/` (with a one-line
/// `NAME.reason`). Symlinks and other non-regular entries are rejected without being
/// opened or followed. `accepted/` and `rejected/` are created (mode 0750) if missing; a
/// name already taken there gets a `.1`, `.2`, ... suffix.
pub fn scan_with(dir: &Path, min_age: Duration) -> Result<ScanReport, InboxError> {
    let dir_err = |path: &Path| {
        let path = path.to_owned();
        move |source| InboxError::Dir { path, source }
    };
    let accepted_dir = dir.join(ACCEPTED_DIR);
    let rejected_dir = dir.join(REJECTED_DIR);
    for d in [&accepted_dir, &rejected_dir] {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(d)
            .map_err(dir_err(d))?;
        // A planted symlink here would move dropped files out of the inbox.
        let meta = std::fs::symlink_metadata(d).map_err(dir_err(d))?;
        if !meta.is_dir() {
            return Err(dir_err(d)(std::io::Error::other(
                "is a symlink or not a directory; refusing to move files through it",
            )));
        }
    }
    let mut names: Vec<std::ffi::OsString> = std::fs::read_dir(dir)
        .map_err(dir_err(dir))?
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .filter(|n| !n.as_encoded_bytes().starts_with(b"."))
        .collect();
    names.sort();
    let now = SystemTime::now();
    let mut report = ScanReport::default();
    for name in names {
        let path = dir.join(&name);
        // lstat: a symlink is judged as itself, never followed.
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue; // vanished meanwhile
        };
        let ft = meta.file_type();
        if ft.is_dir() {
            continue;
        }
        let verdict = if ft.is_symlink() {
            Err("is a symbolic link (links are never followed in the inbox)".to_owned())
        } else if !ft.is_file() {
            Err("is not a regular file".to_owned())
        } else {
            let fresh = meta
                .modified()
                .ok()
                .and_then(|m| now.duration_since(m).ok())
                .is_none_or(|age| age < min_age);
            if fresh {
                report.deferred.push(path);
                continue;
            }
            read_limited(&path).and_then(|bytes| parse(&bytes))
        };
        match verdict {
            Ok(items) => {
                let to = move_unique(&path, &accepted_dir, &name)?;
                tracing::info!(path = %to.display(), "inbox file accepted");
                for item in items {
                    report.accepted.push((to.clone(), item));
                }
            }
            Err(reason) => {
                let to = move_unique(&path, &rejected_dir, &name)?;
                let reason_path = reason_path(&to);
                let line = reason.replace(['\n', '\r'], " ");
                if let Err(e) = write_reason(&reason_path, &line) {
                    tracing::warn!(path = %reason_path.display(), error = %e, "cannot write the reason file");
                }
                tracing::warn!(path = %to.display(), reason = %line, "inbox file rejected");
                report.rejected.push((to, line));
            }
        }
    }
    Ok(report)
}

fn reason_path(moved: &Path) -> PathBuf {
    let mut s = moved.as_os_str().to_owned();
    s.push(".reason");
    PathBuf::from(s)
}

fn write_reason(path: &Path, line: &str) -> std::io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o640)
        .open(path)?;
    writeln!(f, "{line}")?;
    f.sync_all()
}

/// Renames `from` into `dir` under `name`, or `name.N` for the first free N (a name is free
/// when neither it nor its `.reason` file exists).
fn move_unique(from: &Path, dir: &Path, name: &std::ffi::OsStr) -> Result<PathBuf, InboxError> {
    for n in 0u32..100_000 {
        let mut candidate = name.to_owned();
        if n > 0 {
            candidate.push(format!(".{n}"));
        }
        let to = dir.join(&candidate);
        if std::fs::symlink_metadata(&to).is_ok()
            || std::fs::symlink_metadata(reason_path(&to)).is_ok()
        {
            continue;
        }
        return std::fs::rename(from, &to)
            .map(|()| to.clone())
            .map_err(|source| InboxError::Move {
                from: from.to_owned(),
                to,
                source,
            });
    }
    Err(InboxError::Move {
        from: from.to_owned(),
        to: dir.join(name),
        source: std::io::Error::new(std::io::ErrorKind::AlreadyExists, "no free name left"),
    })
}

/// Reads a regular file without following a symlink, refusing more than
/// [`MAX_INBOX_FILE`] bytes.
fn read_limited(path: &Path) -> Result<Vec<u8>, String> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags((rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK).bits() as i32)
        .open(path)
        .map_err(|e| format!("cannot be read: {e}"))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot be read: {e}"))?;
    if !meta.is_file() {
        return Err("is not a regular file".into());
    }
    if meta.len() > MAX_INBOX_FILE {
        return Err(format!(
            "is {} bytes, more than the {} bytes an inbox file may have",
            meta.len(),
            MAX_INBOX_FILE
        ));
    }
    let mut buf = Vec::new();
    file.take(MAX_INBOX_FILE + 1)
        .read_to_end(&mut buf)
        .map_err(|e| format!("cannot be read: {e}"))?;
    if buf.len() as u64 > MAX_INBOX_FILE {
        return Err("grew beyond the inbox size limit while being read".into());
    }
    Ok(buf)
}

/// Parses a dropped file's bytes: a bzip2 manifest (`BZh` magic), a plain JSON manifest (a
/// `{` first), or a text list of ids. The error is the one-line reason for rejection.
pub fn parse(bytes: &[u8]) -> Result<Vec<InboxItem>, String> {
    if bytes.starts_with(b"BZh") {
        let json = decompress(bytes)?;
        return parse_manifest_json(&json).map(|files| vec![InboxItem::Files(files)]);
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|_| "is neither a bzip2 dxda manifest nor UTF-8 text".to_owned())?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text.trim_start().starts_with('{') {
        return parse_manifest_json(text.as_bytes()).map(|files| vec![InboxItem::Files(files)]);
    }
    parse_id_list(text)
}

fn decompress(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    bzip2::read::MultiBzDecoder::new(bytes)
        .take(MAX_MANIFEST_JSON + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("bzip2 manifest cannot be decompressed: {e}"))?;
    if out.len() as u64 > MAX_MANIFEST_JSON {
        return Err(format!(
            "manifest decompresses to more than {MAX_MANIFEST_JSON} bytes"
        ));
    }
    Ok(out)
}

/// One file entry of a dxda manifest (extra keys such as `parts` are ignored: the platform
/// listing is authoritative).
#[derive(Deserialize)]
struct ManifestEntry {
    id: String,
    name: Option<String>,
    folder: Option<String>,
}

/// Parses a dxda manifest's JSON: `{ "project-…": [ {"id": "file-…", "name", "folder", ...} ] }`.
pub fn parse_manifest_json(json: &[u8]) -> Result<Vec<(ProjectId, FileId)>, String> {
    let doc: BTreeMap<String, Vec<ManifestEntry>> = serde_json::from_slice(json)
        .map_err(|e| format!("manifest is not dxda manifest JSON: {e}"))?;
    let mut out = Vec::new();
    for (project, entries) in doc {
        if project.starts_with("container-") {
            return Err(format!(
                "manifest names container {project:?}: only project ids can be mirrored"
            ));
        }
        let project: ProjectId = project
            .parse()
            .map_err(|e| format!("manifest has an invalid project id: {e}"))?;
        for (i, e) in entries.into_iter().enumerate() {
            let file: FileId =
                e.id.parse()
                    .map_err(|err| format!("manifest entry {i} of {project}: {err}"))?;
            if let Some(folder) = &e.folder {
                if !folder.starts_with('/') {
                    return Err(format!(
                        "manifest entry {i} of {project} ({file}): folder {:?} does not start with /",
                        folder.chars().take(100).collect::<String>()
                    ));
                }
            }
            if e.name.as_deref().is_some_and(str::is_empty) {
                return Err(format!(
                    "manifest entry {i} of {project} ({file}): empty name"
                ));
            }
            if !out.contains(&(project.clone(), file.clone())) {
                out.push((project.clone(), file));
            }
        }
    }
    if out.is_empty() {
        return Err("manifest lists no files".into());
    }
    Ok(out)
}

/// Parses a text list: one `project-…` or `project-…:file-…` per line; `#` starts a comment;
/// blank lines are ignored.
pub fn parse_id_list(text: &str) -> Result<Vec<InboxItem>, String> {
    let mut projects: Vec<ProjectId> = Vec::new();
    let mut files: Vec<(ProjectId, FileId)> = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let shown: String = line.chars().take(80).collect();
        let bad = |why: &str| format!("line {}: {shown:?}: {why}", n + 1);
        match line.split_once(':') {
            Some((p, f)) => {
                let p: ProjectId = p
                    .trim()
                    .parse()
                    .map_err(|e: crate::model::IdError| bad(&e.to_string()))?;
                let f: FileId = f
                    .trim()
                    .parse()
                    .map_err(|e: crate::model::IdError| bad(&e.to_string()))?;
                if !files.contains(&(p.clone(), f.clone())) {
                    files.push((p, f));
                }
            }
            None if line.starts_with("file-") => {
                return Err(bad("a file id needs its project: write project-…:file-…"));
            }
            None => {
                let p: ProjectId = line
                    .parse()
                    .map_err(|e: crate::model::IdError| bad(&e.to_string()))?;
                if !projects.contains(&p) {
                    projects.push(p);
                }
            }
        }
    }
    let mut out = Vec::new();
    if !projects.is_empty() {
        out.push(InboxItem::Projects(projects));
    }
    if !files.is_empty() {
        out.push(InboxItem::Files(files));
    }
    if out.is_empty() {
        return Err("names no project or file id".into());
    }
    Ok(out)
}

/// Writes `json` bzip2-compressed to `path`, as dxda manifests are (for tests and tools).
pub fn write_bzip2(path: &Path, json: &[u8]) -> std::io::Result<()> {
    let file = File::create(path)?;
    let mut enc = bzip2::write::BzEncoder::new(file, bzip2::Compression::default());
    enc.write_all(json)?;
    enc.finish()?.sync_all()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const P1: &str = "project-FK411f80BbkqJxkX35p73660";
    const P2: &str = "project-B0vY9x9Q0b1QKq2F3Y4Z5a6b";
    const F1: &str = "file-FK41Q8Q0BbkqJxkX35p736BJ";
    const F2: &str = "file-FgBkfJj04J980yX164B4Jqkq";

    fn manifest_json() -> String {
        format!(
            r#"{{ "{P1}": [
                {{ "id": "{F1}", "name": "single_file.bin", "folder": "/",
                   "parts": {{ "1": {{"md5": "e87f25a78becb7c91cf426177d67792b", "size": 9998336}},
                              "11": {{"md5": "e26c3b025471bff27a0a9f3d51f468d6", "size": 16640}} }} }},
                {{ "id": "{F2}", "name": "x.bam", "folder": "/symlinks" }} ] }}"#
        )
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn text_lists_parse() {
        let items = parse_id_list(&format!(
            "# request 42\n{P1}\n\n  {P2}  # extension\n{P1}:{F1}\n{P1}\n"
        ))
        .unwrap();
        assert_eq!(
            items,
            vec![
                InboxItem::Projects(vec![P1.parse().unwrap(), P2.parse().unwrap()]),
                InboxItem::Files(vec![(P1.parse().unwrap(), F1.parse().unwrap())]),
            ]
        );
        let err = parse_id_list(&format!("{P1}\nproject-short\n")).unwrap_err();
        assert!(err.starts_with("line 2:"), "{err}");
        let err = parse_id_list(&format!("{F1}\n")).unwrap_err();
        assert!(err.contains("needs its project"), "{err}");
        assert!(parse_id_list("# nothing\n\n")
            .unwrap_err()
            .contains("no project"));
    }

    #[test]
    fn manifests_parse() {
        let files = parse_manifest_json(manifest_json().as_bytes()).unwrap();
        assert_eq!(
            files,
            vec![
                (P1.parse().unwrap(), F1.parse().unwrap()),
                (P1.parse().unwrap(), F2.parse().unwrap())
            ]
        );
        let err =
            parse_manifest_json(br#"{"container-FK411f80BbkqJxkX35p73660": []}"#).unwrap_err();
        assert!(err.contains("container"), "{err}");
        let err = parse_manifest_json(format!(r#"{{"{P1}": [{{"id": "file-x"}}]}}"#).as_bytes())
            .unwrap_err();
        assert!(err.contains("file-x"), "{err}");
        let err = parse_manifest_json(
            format!(r#"{{"{P1}": [{{"id": "{F1}", "folder": "x"}}]}}"#).as_bytes(),
        )
        .unwrap_err();
        assert!(err.contains("folder"), "{err}");
        assert!(parse_manifest_json(format!(r#"{{"{P1}": []}}"#).as_bytes())
            .unwrap_err()
            .contains("no files"));
        assert!(parse_manifest_json(b"[1,2]").is_err());
    }

    #[test]
    fn scan_accepts_rejects_defers_and_ignores() {
        let tmp = tempfile::tempdir().unwrap();
        let inbox = tmp.path().join("inbox");
        std::fs::create_dir(&inbox).unwrap();
        write_bzip2(
            &inbox.join("req.manifest.json.bz2"),
            manifest_json().as_bytes(),
        )
        .unwrap();
        std::fs::write(inbox.join("ids.txt"), format!("{P2}\n{P1}:{F2}\n")).unwrap();
        std::fs::write(inbox.join("bad.txt"), "hello world\n").unwrap();
        std::fs::write(inbox.join("empty"), "").unwrap();
        write_bzip2(&inbox.join("broken.bz2"), b"{ not json").unwrap();
        std::fs::write(inbox.join("truncated.bz2"), b"BZh91AY&SY garbage").unwrap();
        std::fs::write(inbox.join(".hidden"), format!("{P1}\n")).unwrap();
        std::fs::create_dir(inbox.join("subdir")).unwrap();
        let outside = tmp.path().join("outside.txt");
        std::fs::write(&outside, format!("{P1}\n")).unwrap();
        std::os::unix::fs::symlink(&outside, inbox.join("link.txt")).unwrap();

        // With the default threshold everything just written is still "being written".
        let report = scan_with(&inbox, Duration::from_secs(3600)).unwrap();
        assert!(report.accepted.is_empty());
        // A symlink is judged at once: it is never opened, so its age does not matter.
        assert_eq!(report.rejected.len(), 1);
        assert!(report.rejected[0].1.contains("symbolic link"));
        assert_eq!(report.deferred.len(), 6, "{:?}", report.deferred);

        let report = scan_with(&inbox, Duration::ZERO).unwrap();
        let acc: Vec<(String, InboxItem)> = report
            .accepted
            .iter()
            .map(|(p, i)| {
                (
                    p.file_name().unwrap().to_string_lossy().into_owned(),
                    i.clone(),
                )
            })
            .collect();
        assert_eq!(
            acc,
            vec![
                (
                    "ids.txt".to_owned(),
                    InboxItem::Projects(vec![P2.parse().unwrap()])
                ),
                (
                    "ids.txt".to_owned(),
                    InboxItem::Files(vec![(P1.parse().unwrap(), F2.parse().unwrap())])
                ),
                (
                    "req.manifest.json.bz2".to_owned(),
                    InboxItem::Files(vec![
                        (P1.parse().unwrap(), F1.parse().unwrap()),
                        (P1.parse().unwrap(), F2.parse().unwrap())
                    ])
                ),
            ]
        );
        assert!(report.accepted[0].0.starts_with(inbox.join(ACCEPTED_DIR)));
        assert_eq!(
            names(&inbox.join(ACCEPTED_DIR)),
            ["ids.txt", "req.manifest.json.bz2"]
        );
        assert_eq!(
            names(&inbox.join(REJECTED_DIR)),
            [
                "bad.txt",
                "bad.txt.reason",
                "broken.bz2",
                "broken.bz2.reason",
                "empty",
                "empty.reason",
                "link.txt",
                "link.txt.reason",
                "truncated.bz2",
                "truncated.bz2.reason"
            ]
        );
        let reason = |n: &str| std::fs::read_to_string(inbox.join(REJECTED_DIR).join(n)).unwrap();
        assert!(
            reason("bad.txt.reason").contains("line 1"),
            "{}",
            reason("bad.txt.reason")
        );
        assert!(reason("empty.reason").contains("no project"));
        assert!(reason("broken.bz2.reason").contains("not dxda manifest JSON"));
        assert!(reason("truncated.bz2.reason").contains("bzip2"));
        assert!(reason("link.txt.reason").contains("symbolic link"));
        assert_eq!(reason("bad.txt.reason").lines().count(), 1);
        // The symlink was moved as a link; its target is untouched.
        assert!(
            std::fs::symlink_metadata(inbox.join(REJECTED_DIR).join("link.txt"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(
            std::fs::read_to_string(&outside).unwrap(),
            format!("{P1}\n")
        );
        // Hidden files and directories are left alone.
        assert_eq!(
            names(&inbox),
            [".hidden", ACCEPTED_DIR, REJECTED_DIR, "subdir"]
        );

        // A second drop with a taken name gets a suffix.
        std::fs::write(inbox.join("bad.txt"), "again\n").unwrap();
        std::fs::write(inbox.join("ids.txt"), format!("{P1}\n")).unwrap();
        let report = scan_with(&inbox, Duration::ZERO).unwrap();
        assert_eq!(
            report.rejected[0].0,
            inbox.join(REJECTED_DIR).join("bad.txt.1")
        );
        assert_eq!(
            report.accepted[0].0,
            inbox.join(ACCEPTED_DIR).join("ids.txt.1")
        );
        assert!(inbox.join(REJECTED_DIR).join("bad.txt.1.reason").is_file());
    }

    #[test]
    fn a_symlinked_accepted_dir_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let inbox = tmp.path().join("inbox");
        let elsewhere = tmp.path().join("elsewhere");
        std::fs::create_dir_all(&inbox).unwrap();
        std::fs::create_dir_all(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, inbox.join(ACCEPTED_DIR)).unwrap();
        std::fs::write(inbox.join("ids.txt"), format!("{P1}\n")).unwrap();
        let err = scan_with(&inbox, Duration::ZERO).unwrap_err().to_string();
        assert!(err.contains("symlink"), "{err}");
        assert!(inbox.join("ids.txt").is_file());
        assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
    }

    #[test]
    fn oversized_files_are_rejected_unread() {
        let tmp = tempfile::tempdir().unwrap();
        let f = File::create(tmp.path().join("huge")).unwrap();
        f.set_len(MAX_INBOX_FILE + 1).unwrap();
        drop(f);
        let report = scan_with(tmp.path(), Duration::ZERO).unwrap();
        assert!(
            report.rejected[0].1.contains("more than"),
            "{:?}",
            report.rejected
        );
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
                let _ = parse(&bytes);
            }

            #[test]
            fn bzip2_prefixed_noise_never_panics(tail in proptest::collection::vec(any::<u8>(), 0..300)) {
                let mut bytes = b"BZh9".to_vec();
                bytes.extend(tail);
                let _ = parse(&bytes);
            }

            #[test]
            fn manifest_json_noise_never_panics(text in r#"[{}\[\]",:a-z0-9 -]{0,200}"#) {
                let _ = parse_manifest_json(text.as_bytes());
                let _ = parse_id_list(&text);
            }

            #[test]
            fn generated_manifests_round_trip(ids in proptest::collection::btree_set("[A-Za-z0-9]{24}", 1..20)) {
                let entries: Vec<String> = ids.iter().map(|t| format!(r#"{{"id":"file-{t}","name":"n","folder":"/f"}}"#)).collect();
                let json = format!(r#"{{"{P1}":[{}]}}"#, entries.join(","));
                let mut enc = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
                enc.write_all(json.as_bytes()).unwrap();
                let compressed = enc.finish().unwrap();
                let items = parse(&compressed).unwrap();
                let InboxItem::Files(files) = &items[0] else { panic!("not files") };
                let got: Vec<String> = files.iter().map(|(_, f)| f.as_str()[5..].to_owned()).collect();
                let want: Vec<String> = ids.iter().cloned().collect();
                prop_assert_eq!(got, want);
            }
        }
    }
}
