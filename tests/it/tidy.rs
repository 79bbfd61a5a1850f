//! Hygiene of the source tree, checked by plain tests so that `cargo test` is the only gate:
//! every `.rs` file opens with a `//!` module doc, the library's modules form the layered
//! DAG of ARCHITECTURE.md (every `crate::X` edge outside tests goes to a lower layer), and only
//! the binary uses `anyhow`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The library's top-level modules by layer: a module may use only modules of lower layers.
/// Layer 0 are the workspace's other crates, re-exported as `crate::model` and
/// `crate::sandbox`. The binary (`main.rs`, `cli.rs` and `commands/`, see [`BIN_ROOT`]) is the
/// root and may use anything. A new module must be added here.
const LAYERS: &[(u8, &[&str])] = &[
    (0, &["model", "sandbox"]),
    (
        1,
        &["units", "clock", "dirs", "telemetry", "counters", "ipc"],
    ),
    (
        2,
        &[
            "lock",
            "hashing",
            "planner",
            "store",
            "inbox",
            "access",
            "bandwidth",
        ],
    ),
    (3, &["readback", "selection", "platform", "journal"]),
    (4, &["config", "audit", "export"]),
    (
        5,
        &[
            "transfer",
            "verify",
            "purge",
            "status",
            "metrics",
            "notifications",
        ],
    ),
    (6, &["pass"]),
    (7, &["sync", "daemon"]),
    (8, &["demo"]),
];

/// Files and folders of `src/` that form the binary rather than the library: exempt from the
/// layering, and the only code that may use `anyhow`.
const BIN_ROOT: &[&str] = &["main", "cli", "commands"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every `.rs` file of the library, the binary, the member crates and the tests.
fn all_sources() -> Vec<PathBuf> {
    let root = root();
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    rust_files(&root.join("tests"), &mut files);
    let crates = std::fs::read_dir(root.join("crates")).expect("crates/ exists");
    for krate in crates {
        rust_files(
            &krate.expect("directory entry").path().join("src"),
            &mut files,
        );
    }
    files.sort();
    files
}

#[test]
fn every_source_file_opens_with_a_module_doc() {
    let root = root();
    let files = all_sources();
    assert!(files.len() > 50, "found only {} files", files.len());
    let missing: Vec<String> = files
        .iter()
        .filter(|p| {
            let text = std::fs::read_to_string(p).expect("readable source");
            !text.starts_with("//!")
        })
        .map(|p| p.strip_prefix(&root).unwrap_or(p).display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "files whose first line is not a `//!` doc: {missing:?}"
    );
}

/// Whether `b[i]` starts a token (after nothing, or after a non-identifier, or after the `b`
/// of a raw byte string).
fn starts_token(b: &[char], i: usize) -> bool {
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    match i.checked_sub(1).map(|p| b[p]) {
        None => true,
        Some('b') => !i.checked_sub(2).is_some_and(|p| ident(b[p])),
        Some(c) => !ident(c),
    }
}

/// `text` without comments, string and character literals, so that only code remains.
fn strip_comments_and_literals(text: &str) -> String {
    let b: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == '/' && b.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if b[i] == '*' && b.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if c == 'r' && (next == Some('"') || next == Some('#')) && starts_token(&b, i) {
            // A raw string: r"…" or r#"…"#.
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                if j >= b.len() {
                    break;
                }
                if b[j] == '"' && (1..=hashes).all(|k| b.get(j + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            out.push_str("\"\"");
            i = j;
        } else if c == '"' {
            i += 1;
            while i < b.len() && b[i] != '"' {
                if b[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == '\'' {
            // A character literal ('x', '\n', '\u{1F600}'), else a lifetime or label.
            if next == Some('\\') {
                let mut j = i + 3;
                while j < b.len() && b[j] != '\'' {
                    j += 1;
                }
                i = j + 1;
                out.push_str("' '");
            } else if b.get(i + 2) == Some(&'\'') {
                i += 3;
                out.push_str("' '");
            } else {
                out.push(c);
                i += 1;
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// `code` without the items under `#[cfg(test)]` (test modules and test-only helpers).
fn strip_test_items(code: &str) -> String {
    const ATTR: &str = "#[cfg(test)]";
    let mut out = String::with_capacity(code.len());
    let mut rest = code;
    while let Some(at) = rest.find(ATTR) {
        out.push_str(&rest[..at]);
        let item = &rest[at + ATTR.len()..];
        // The item ends at a `;` or at the `}` closing its first top-level brace.
        let mut depth = 0i32;
        let mut end = item.len();
        for (k, ch) in item.char_indices() {
            match ch {
                '(' | '[' | '{' => depth += 1,
                ')' | ']' => depth -= 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = k + 1;
                        break;
                    }
                }
                ';' if depth == 0 => {
                    end = k + 1;
                    break;
                }
                _ => {}
            }
        }
        rest = &item[end..];
    }
    out.push_str(rest);
    out
}

fn ident_at(code: &[u8], mut i: usize) -> (String, usize) {
    while i < code.len() && code[i].is_ascii_whitespace() {
        i += 1;
    }
    let start = i;
    while i < code.len() && (code[i].is_ascii_alphanumeric() || code[i] == b'_') {
        i += 1;
    }
    (String::from_utf8_lossy(&code[start..i]).into_owned(), i)
}

/// The top-level modules that `code` names through `crate::X` or `use crate::{X, …}`.
fn crate_edges(code: &str) -> BTreeSet<String> {
    let bytes = code.as_bytes();
    let mut edges = BTreeSet::new();
    let mut from = 0;
    while let Some(at) = code[from..].find("crate::") {
        let at = from + at;
        from = at + "crate::".len();
        let before = at.checked_sub(1).map(|p| bytes[p]);
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'$') {
            continue;
        }
        let mut i = from;
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if bytes.get(i) == Some(&b'{') {
            // `use crate::{a, b::c, d::{e, f}}`: the first segment of each top-level path.
            let mut depth = 0;
            let mut expect_ident = true;
            while i < bytes.len() {
                match bytes[i] {
                    b'{' => {
                        depth += 1;
                        expect_ident = depth == 1;
                        i += 1;
                    }
                    b'}' => {
                        depth -= 1;
                        i += 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    b',' => {
                        expect_ident = depth == 1;
                        i += 1;
                    }
                    c if c.is_ascii_whitespace() => i += 1,
                    _ if expect_ident => {
                        let (id, j) = ident_at(bytes, i);
                        if !id.is_empty() {
                            edges.insert(id);
                        }
                        expect_ident = false;
                        i = j.max(i + 1);
                    }
                    _ => i += 1,
                }
            }
        } else {
            let (id, _) = ident_at(bytes, i);
            if !id.is_empty() {
                edges.insert(id);
            }
        }
    }
    edges
}

/// The top-level module (or binary part) of a file at `rel` under `src/`: `sync` for
/// `sync.rs`, `journal` for `journal/read.rs`.
fn top_module(rel: &Path) -> String {
    let first = rel
        .components()
        .next()
        .expect("a file")
        .as_os_str()
        .to_string_lossy()
        .into_owned();
    first.strip_suffix(".rs").unwrap_or(&first).to_owned()
}

fn layer_of(module: &str) -> Option<u8> {
    LAYERS
        .iter()
        .find(|(_, mods)| mods.contains(&module))
        .map(|(l, _)| *l)
}

#[test]
fn library_modules_only_use_lower_layers() {
    let src = root().join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut problems = Vec::new();
    let mut edges_seen = 0;
    for path in &files {
        let rel = path.strip_prefix(&src).expect("under src/");
        let module = top_module(rel);
        if module == "lib" || BIN_ROOT.contains(&module.as_str()) {
            continue;
        }
        let Some(layer) = layer_of(&module) else {
            problems.push(format!(
                "src/{}: module `{module}` is not in tidy.rs' LAYERS",
                rel.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(path).expect("readable source");
        let code = strip_test_items(&strip_comments_and_literals(&text));
        for target in crate_edges(&code) {
            if target == module {
                continue;
            }
            edges_seen += 1;
            match layer_of(&target) {
                Some(l) if l < layer => {}
                Some(l) => problems.push(format!(
                    "src/{}: `{module}` (layer {layer}) uses `{target}` (layer {l})",
                    rel.display()
                )),
                None => problems.push(format!(
                    "src/{}: `{module}` uses `{target}`, which is not in tidy.rs' LAYERS",
                    rel.display()
                )),
            }
        }
    }
    assert!(edges_seen > 20, "found only {edges_seen} edges");
    assert!(
        problems.is_empty(),
        "the module layering is broken:\n{}",
        problems.join("\n")
    );
}

#[test]
fn anyhow_is_used_only_by_the_binary() {
    let root = root();
    let src = root.join("src");
    // The library's and the member crates' code (tests may use what they like).
    let files: Vec<PathBuf> = all_sources()
        .into_iter()
        .filter(|p| !p.starts_with(root.join("tests")))
        .collect();
    let (binary, library): (Vec<_>, Vec<_>) = files.iter().partition(|p| {
        p.strip_prefix(&src)
            .is_ok_and(|rel| BIN_ROOT.contains(&top_module(rel).as_str()))
    });
    assert!(
        binary.len() >= 3 && library.len() > 40,
        "binary {binary:?}, {} library files",
        library.len()
    );
    let offenders: Vec<String> = library
        .iter()
        .filter(|p| {
            let text = std::fs::read_to_string(p).expect("readable source");
            strip_comments_and_literals(&text).contains("anyhow")
        })
        .map(|p| p.strip_prefix(&root).unwrap_or(p).display().to_string())
        .collect();
    assert!(
        offenders.is_empty(),
        "library code uses anyhow (typed errors at module boundaries; anyhow is the binary's): {offenders:?}"
    );
}

#[test]
fn the_edge_scanner_sees_paths_and_skips_tests_and_comments() {
    let code = r#"
        use crate::journal::{Journal, JournalError};
        use crate::{config::Config, model::{FileId, ProjectId}, store};
        // crate::daemon in a comment
        /* crate::sync in a block */
        fn f() -> crate::platform::PlatformError { let s = "crate::status"; let c = '{'; todo!() }
        macro_rules! m { () => { $crate::units::x() } }
        #[cfg(test)]
        mod tests { use crate::purge; fn g() { let _ = '}'; } }
        fn h<'a>(x: &'a str) -> crate::audit::Action { todo!() }
    "#;
    let code = strip_test_items(&strip_comments_and_literals(code));
    let got: Vec<String> = crate_edges(&code).into_iter().collect();
    assert_eq!(
        got,
        ["audit", "config", "journal", "model", "platform", "store"]
    );
}
