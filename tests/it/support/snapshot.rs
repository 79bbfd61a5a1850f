//! Snapshots: a command's whole output compared with a plain file under `tests/it/snapshots/`,
//! after its volatile parts (times, pids, temporary paths, rates) are replaced by placeholders.
//!
//! After an intended change of the output, rewrite the files with
//! `DXMIRROR_UPDATE_SNAPSHOTS=1 cargo test --test it <test>` and review their diff.

use std::path::{Path, PathBuf};

/// The variable that rewrites the snapshots instead of comparing with them.
pub const UPDATE_SNAPSHOTS: &str = "DXMIRROR_UPDATE_SNAPSHOTS";

fn snapshot_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/it/snapshots")
        .join(name)
}

/// Asserts that `actual` equals the snapshot file `name`; with `DXMIRROR_UPDATE_SNAPSHOTS=1`,
/// writes `actual` to it instead.
pub fn assert_snapshot(name: &str, actual: &str) {
    let path = snapshot_path(name);
    if std::env::var(UPDATE_SNAPSHOTS).is_ok_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read the snapshot {}: {e}\n(write it with {UPDATE_SNAPSHOTS}=1)\nactual:\n{actual}",
            path.display()
        )
    });
    if expected != actual {
        panic!(
            "the output differs from the snapshot {} (- snapshot, + actual; if the change is \
             intended, rewrite it with {UPDATE_SNAPSHOTS}=1):\n{}",
            path.display(),
            line_diff(&expected, actual)
        );
    }
}

/// The lines of `expected` and `actual`, those that differ marked `-` and `+` (compared line
/// by line, which is enough for outputs of a few dozen lines).
fn line_diff(expected: &str, actual: &str) -> String {
    let (e, a): (Vec<&str>, Vec<&str>) = (expected.lines().collect(), actual.lines().collect());
    let mut out = String::new();
    for i in 0..e.len().max(a.len()) {
        match (e.get(i), a.get(i)) {
            (Some(x), Some(y)) if x == y => out.push_str(&format!("  {x}\n")),
            (x, y) => {
                if let Some(x) = x {
                    out.push_str(&format!("- {x}\n"));
                }
                if let Some(y) = y {
                    out.push_str(&format!("+ {y}\n"));
                }
            }
        }
    }
    out
}

/// `text` with every `from` of `literals` replaced by its `to` (temporary paths, addresses,
/// ids), then every RFC 3339 time (`2026-01-05T00:00:00Z`) by `<time>` and every `pid N` by
/// `pid <pid>`.
pub fn redact(text: &str, literals: &[(&str, &str)]) -> String {
    let mut text = text.to_owned();
    for (from, to) in literals {
        text = text.replace(from, to);
    }
    let text = replace_times(&text);
    numbers_after(&text, "pid ", "<pid>")
}

/// Replaces `YYYY-MM-DDTHH:MM:SS` followed by `Z` or a fraction and `Z` with `<time>`.
fn replace_times(text: &str) -> String {
    const SHAPE: &[u8] = b"dddd-dd-ddTdd:dd:dd";
    let b = text.as_bytes();
    let fits = |at: usize| {
        b.len() >= at + SHAPE.len()
            && SHAPE.iter().zip(&b[at..]).all(|(s, c)| match s {
                b'd' => c.is_ascii_digit(),
                s => s == c,
            })
    };
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        if fits(i) {
            let mut end = i + SHAPE.len();
            if b.get(end) == Some(&b'.') {
                end += 1;
                while b.get(end).is_some_and(u8::is_ascii_digit) {
                    end += 1;
                }
            }
            if b.get(end) == Some(&b'Z') {
                end += 1;
            }
            out.push_str("<time>");
            i = end;
        } else {
            // `i` only ever moves by whole characters or over matched ASCII.
            let ch = text[i..].chars().next().unwrap();
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

/// `text` with the number after every `word` replaced by `placeholder` (counts that depend on
/// timing, say).
pub fn numbers_after(text: &str, word: &str, placeholder: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(word) {
        let (head, tail) = rest.split_at(at + word.len());
        out.push_str(head);
        let digits = tail.bytes().take_while(u8::is_ascii_digit).count();
        if digits > 0 {
            out.push_str(placeholder);
        }
        rest = &tail[digits..];
    }
    out.push_str(rest);
    out
}

#[test]
fn redact_replaces_times_pids_and_literals() {
    let text =
        "daemon: running (pid 4242, since 2026-01-05T10:11:12Z, at 2026-01-05T10:11:12.345Z)\n\
                in /tmp/.tmpAbC/mirror, pid of none\n";
    assert_eq!(
        redact(text, &[("/tmp/.tmpAbC", "<tmp>")]),
        "daemon: running (pid <pid>, since <time>, at <time>)\nin <tmp>/mirror, pid of none\n"
    );
}
