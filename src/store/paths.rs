//! Where a remote file lands, relative to its project directory: the validated [`RelPath`]
//! type, the deterministic sanitising of untrusted folder and file names, duplicate handling,
//! and the choice of project directory and manifest names.
//!
//! Pure: no IO. Nothing here can produce a path that leaves the project directory, whatever
//! the platform says a name or folder is.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use sha2::Digest as _;

use super::StoreError;
use crate::model::{FileId, ProjectId, RemoteFile};

/// The hidden directory inside each project directory that holds dxmirror's own files.
pub const HIDDEN_DIR: &str = ".dxmirror";
/// Longest file name most POSIX filesystems accept, in bytes.
const NAME_MAX: usize = 255;
/// Longest extension kept when a long name is truncated, in bytes (including the dot).
const EXT_MAX: usize = 16;

/// A path relative to a project directory whose components are all safe: none is empty,
/// `.` or `..`, none contains `/` or NUL or exceeds 255 bytes, and the first is not the hidden
/// `.dxmirror` directory. Joining it to the project directory can never leave it.
///
/// Control characters are legal in POSIX names and so allowed here (the manifest escapes
/// them); [`assign_paths`] never produces them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelPath(String);

impl RelPath {
    /// Validates a `/`-separated relative path.
    pub fn new(path: &str) -> Result<RelPath, StoreError> {
        let bad = |reason: &'static str| StoreError::UnsafePath {
            path: path.chars().take(300).collect(),
            reason,
        };
        if path.is_empty() {
            return Err(bad("empty path"));
        }
        for (i, comp) in path.split('/').enumerate() {
            if let Err(reason) = check_component(comp) {
                return Err(bad(reason));
            }
            if i == 0 && comp == HIDDEN_DIR {
                return Err(bad("the hidden .dxmirror directory is reserved"));
            }
        }
        Ok(RelPath(path.to_owned()))
    }

    /// The path as text (`/`-separated, no leading `/`).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The path for joining onto a project directory.
    pub fn as_path(&self) -> &Path {
        Path::new(&self.0)
    }

    /// The components, outermost first (never empty).
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// The folders above the file and the file name.
    pub fn split_parent(&self) -> (Vec<&str>, &str) {
        let mut comps: Vec<&str> = self.components().collect();
        let name = comps.pop().unwrap_or_default();
        (comps, name)
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for RelPath {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<RelPath, StoreError> {
        RelPath::new(s)
    }
}

/// Why one path component is unsafe, if it is.
fn check_component(comp: &str) -> Result<(), &'static str> {
    if comp.is_empty() {
        return Err("empty component");
    }
    if comp == "." || comp == ".." {
        return Err("dot component");
    }
    if comp.contains('\0') {
        return Err("NUL in component");
    }
    if comp.len() > NAME_MAX {
        return Err("component longer than 255 bytes");
    }
    Ok(())
}

/// True when a project's name can be its directory name as it is.
fn safe_dir_name(name: &str) -> bool {
    check_component(name).is_ok()
        && !name.starts_with('.')
        && !name.contains('/')
        && !name.chars().any(char::is_control)
}

/// The directory name of a project under the mirror root: its name when that is a safe path
/// component not already in `taken` (and not some other project's id), else its id.
pub fn project_dir_name(
    project_name: &str,
    project_id: &ProjectId,
    taken: &HashSet<String>,
) -> String {
    let looks_like_other_id = project_name
        .parse::<ProjectId>()
        .is_ok_and(|other| &other != project_id);
    if safe_dir_name(project_name) && !taken.contains(project_name) && !looks_like_other_id {
        project_name.to_owned()
    } else {
        project_id.as_str().to_owned()
    }
}

/// Percent-escapes the bytes of characters that must not appear in a name (`/`, NUL, control
/// characters) and `.`/`..`, deterministically.
fn escape_component(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        if c == '/' || c.is_control() {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    if out == "." || out == ".." {
        out = out.replace('.', "%2E");
    }
    out
}

/// Largest index `<= max` that is a char boundary of `s`.
fn floor_boundary(s: &str, max: usize) -> usize {
    let mut i = max.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Shortens `name` to at most `max` bytes by cutting its stem and inserting `tag` before
/// a short extension, when it is too long; otherwise returns it as it is.
fn fit(name: &str, max: usize, tag: &str) -> String {
    if name.len() <= max {
        return name.to_owned();
    }
    let ext = match name.rfind('.') {
        Some(dot) if dot > 0 && name.len() - dot <= EXT_MAX => &name[dot..],
        _ => "",
    };
    let stem = &name[..name.len() - ext.len()];
    let budget = max.saturating_sub(tag.len() + ext.len());
    format!("{}{tag}{ext}", &stem[..floor_boundary(stem, budget)])
}

/// A folder component made safe. Long ones get a tag from a hash of the original, so every
/// file of the folder lands in the same directory.
fn folder_component(raw: &str, at_root: bool) -> String {
    let mut comp = escape_component(raw);
    if at_root && comp == HIDDEN_DIR {
        comp = format!("%2E{}", &HIDDEN_DIR[1..]);
    }
    let hash = hex::encode(sha2::Sha256::digest(raw.as_bytes()));
    fit(&comp, NAME_MAX, &format!("~{}", &hash[..16]))
}

/// A file name made safe. Long ones get the file id as a tag.
fn file_name(raw: &str, id: &FileId, at_root: bool) -> String {
    if raw.is_empty() {
        return id.as_str().to_owned();
    }
    let mut name = escape_component(raw);
    if at_root && name == HIDDEN_DIR {
        name = format!("%2E{}", &HIDDEN_DIR[1..]);
    }
    fit(&name, NAME_MAX, &format!("~{id}"))
}

/// The safe folder components of a platform folder (`/a/b/`); empty ones are dropped.
fn folder_components(folder: &str) -> Vec<String> {
    folder
        .split('/')
        .filter(|c| !c.is_empty())
        .enumerate()
        .map(|(i, c)| folder_component(c, i == 0))
        .collect()
}

fn join(folder: &[String], name: &str) -> String {
    if folder.is_empty() {
        name.to_owned()
    } else {
        format!("{}/{name}", folder.join("/"))
    }
}

/// Assigns every file a safe path relative to the project directory, deterministically.
///
/// Unsafe folder components and names are escaped (`%XX` for `/`, NUL and control characters,
/// `%2E` for `.`/`..` and a root `.dxmirror`); names over 255 bytes are cut, keeping a short
/// extension and adding `~<file-id>`. When several files end up at the same path, the one
/// created first (ties: smaller file id) keeps it and each other becomes `<file-id>__<name>`
/// in the same folder. A file whose path is also a folder of another file is renamed likewise.
pub fn assign_paths(files: &[RemoteFile]) -> BTreeMap<FileId, RelPath> {
    let mut order: Vec<&RemoteFile> = files.iter().collect();
    order.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));

    let candidates: Vec<(Vec<String>, String)> = order
        .iter()
        .map(|f| {
            let folder = folder_components(&f.folder);
            let name = file_name(&f.name, &f.id, folder.is_empty());
            (folder, name)
        })
        .collect();
    // Every directory some file needs: a file may not take one of these paths.
    let mut dirs: HashSet<String> = HashSet::new();
    for (folder, _) in &candidates {
        for depth in 1..=folder.len() {
            dirs.insert(folder[..depth].join("/"));
        }
    }

    let mut taken: HashSet<String> = HashSet::new();
    let mut out = BTreeMap::new();
    for (file, (folder, name)) in order.iter().zip(candidates) {
        let mut path = join(&folder, &name);
        let mut attempt = 0u32;
        while taken.contains(&path) || dirs.contains(&path) {
            let prefix = if attempt == 0 {
                format!("{}__", file.id)
            } else {
                format!("{}__{attempt}__", file.id)
            };
            let renamed = format!("{prefix}{}", fit(&name, NAME_MAX - prefix.len(), "~"));
            path = join(&folder, &renamed);
            attempt += 1;
        }
        match RelPath::new(&path) {
            Ok(rel) => {
                taken.insert(path);
                out.insert(file.id.clone(), rel);
            }
            // Unreachable by construction (every component is escaped and fitted); a file id
            // is always a safe name, so fall back to it rather than panic or drop the file.
            Err(err) => {
                tracing::error!(file_id = %file.id, error = %err, "sanitised path rejected");
                let fallback = format!("{}__{}", file.id, taken.len());
                taken.insert(fallback.clone());
                out.insert(file.id.clone(), RelPath(fallback));
            }
        }
    }
    out
}

/// The manifest's file name: `SHA256SUMS`, or `SHA256SUMS.dxmirror` when a project file is
/// itself at the root `SHA256SUMS`.
pub fn manifest_name<'a>(paths: impl IntoIterator<Item = &'a RelPath>) -> &'static str {
    if paths.into_iter().any(|p| p.as_str() == "SHA256SUMS") {
        "SHA256SUMS.dxmirror"
    } else {
        "SHA256SUMS"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::testing::{file_id as fid, project_id, RemoteFileBuilder};

    fn rf(n: u32, folder: &str, name: &str, created_ms: i64) -> RemoteFile {
        RemoteFileBuilder::new(&project_id(1), n)
            .name(name)
            .folder(folder)
            .created(created_ms)
            .build()
    }

    fn assigned(files: &[RemoteFile]) -> Vec<String> {
        let map = assign_paths(files);
        files.iter().map(|f| map[&f.id].to_string()).collect()
    }

    #[test]
    fn ordinary_paths_are_kept() {
        let files = [
            rf(1, "/", "a.bam", 0),
            rf(2, "/x/y/", "b.vcf.gz", 0),
            rf(3, "/x", "c", 0),
        ];
        assert_eq!(assigned(&files), vec!["a.bam", "x/y/b.vcf.gz", "x/c"]);
    }

    #[test]
    fn hostile_names_are_escaped() {
        let files = [
            rf(1, "/", "..", 0),
            rf(2, "/../../etc", "passwd", 0),
            rf(3, "/", "/abs", 0),
            rf(4, "/", "a\0b", 0),
            rf(5, "/", "new\nline", 0),
            rf(6, "/", ".dxmirror", 0),
            rf(7, "/.dxmirror/staging", "x", 0),
            rf(8, "/", "", 0),
            rf(9, "//a//./", ".", 0),
            rf(10, "/", "tab\tdel\u{7f}", 0),
            rf(11, "/ok", ".dxmirror", 0),
        ];
        assert_eq!(
            assigned(&files),
            vec![
                // Also the escaped folder of file 2, so it yields to the folder.
                "file-000000000000000000000001__%2E%2E",
                "%2E%2E/%2E%2E/etc/passwd",
                "%2Fabs",
                "a%00b",
                "new%0Aline",
                "file-000000000000000000000006__%2Edxmirror",
                "%2Edxmirror/staging/x",
                "file-000000000000000000000008",
                "a/%2E/%2E",
                "tab%09del%7F",
                "ok/.dxmirror",
            ]
        );
    }

    #[test]
    fn long_names_are_cut_keeping_the_extension() {
        let long = format!("{}.bam", "é".repeat(200));
        let map = assign_paths(&[rf(1, &format!("/{}", "d".repeat(300)), &long, 0)]);
        let rel = &map[&fid(1)];
        let (folder, name) = rel.split_parent();
        assert!(name.len() <= 255 && folder[0].len() <= 255);
        assert!(name.ends_with(&format!("~{}.bam", fid(1))), "{name}");
        assert!(folder[0].starts_with("ddd") && folder[0].contains('~'));
        // Deterministic.
        assert_eq!(
            assign_paths(&[rf(1, &format!("/{}", "d".repeat(300)), &long, 0)]),
            map
        );
    }

    #[test]
    fn duplicates_first_created_keeps_the_name() {
        let files = [
            rf(3, "/d", "x.txt", 5),
            rf(1, "/d", "x.txt", 9),
            rf(2, "/d", "x.txt", 5),
            // Same after sanitising: both become a%2Fb.
            rf(4, "/", "a/b", 1),
            rf(5, "/", "a%2Fb", 2),
        ];
        let got = assigned(&files);
        assert_eq!(got[2], "d/x.txt");
        assert_eq!(got[0], format!("d/{}__x.txt", fid(3)));
        assert_eq!(got[1], format!("d/{}__x.txt", fid(1)));
        assert_eq!(got[3], "a%2Fb");
        assert_eq!(got[4], format!("{}__a%2Fb", fid(5)));
    }

    #[test]
    fn a_file_cannot_take_a_folder_path() {
        let files = [rf(1, "/", "a", 0), rf(2, "/a", "b", 1)];
        let got = assigned(&files);
        assert_eq!(got, vec![format!("{}__a", fid(1)), "a/b".to_owned()]);
    }

    #[test]
    fn relpath_validation() {
        for bad in [
            "",
            "/abs",
            "a//b",
            "a/../b",
            ".",
            "..",
            "a\0",
            ".dxmirror/x",
            "a/",
        ] {
            assert!(RelPath::new(bad).is_err(), "{bad:?}");
        }
        assert!(RelPath::new(&"x".repeat(256)).is_err());
        for good in ["a", "a/b c/ü", "x/.dxmirror", "new\nline", "back\\slash"] {
            assert_eq!(RelPath::new(good).unwrap().as_str(), good);
        }
    }

    #[test]
    fn project_dir_names() {
        let id: ProjectId = "project-000000000000000000000001".parse().unwrap();
        let none = HashSet::new();
        assert_eq!(project_dir_name("PCGP", &id, &none), "PCGP");
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "a/b",
            "a\0b",
            "a\nb",
            &"x".repeat(256),
        ] {
            assert_eq!(project_dir_name(bad, &id, &none), id.as_str(), "{bad:?}");
        }
        let taken: HashSet<String> = ["PCGP".to_owned()].into();
        assert_eq!(project_dir_name("PCGP", &id, &taken), id.as_str());
        assert_eq!(
            project_dir_name("project-000000000000000000000002", &id, &none),
            id.as_str()
        );
    }

    #[test]
    fn manifest_name_avoids_a_project_file() {
        let map = assign_paths(&[rf(1, "/", "SHA256SUMS", 0), rf(2, "/x", "SHA256SUMS", 0)]);
        assert_eq!(manifest_name(map.values()), "SHA256SUMS.dxmirror");
        let map = assign_paths(&[rf(2, "/x", "SHA256SUMS", 0)]);
        assert_eq!(manifest_name(map.values()), "SHA256SUMS");
    }
}
