//! `dxmirror export PROJECT --format md5sum|sha256sum|dxda|tsv|json`: manifests of a
//! project's mirrored files for downstream tools, from the journal (read-only).
//!
//! Paths are relative to the project directory, so `md5sum -c` and `sha256sum -c` work from
//! there; a name with a backslash or a newline is written as coreutils does (the line starts
//! with `\`, and `\\`, `\n` stand for them). Only files that are mirrored (`verified` or
//! `unverified`) are listed, in path order. `dxda` is the download agent's manifest JSON
//! (`{ "project-…": [ {"id", "name", "folder", "parts": {"1": {"size", "md5"}}} ] }`; bzip2 it
//! for dxda). `tsv` and `json` carry every file's journal facts and, joined by `file_id`
//! (else a unique `file_path`, an index file following its data file), every column of its
//! `SAMPLE_INFO.txt` row.
//!
//! Rendering is pure ([`render`]); the whole-file MD5, which the platform states only for
//! single-part and drive-backed files, is asked of the caller, who hashes the file on disk.

use std::collections::BTreeMap;
use std::path::Path;

use crate::hashing::Md5Hasher;
use crate::journal::{FileRow, FileState};
use crate::model::Digest;
use crate::selection::{is_sample_info, sample_rows, SampleInfo};
use crate::store::sum_line;

/// An export format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `md5sum -c` input.
    Md5sum,
    /// `sha256sum -c` input.
    Sha256sum,
    /// A dxda manifest (JSON; bzip2 it for dxda).
    Dxda,
    /// Tab-separated, one header row, SAMPLE_INFO.txt columns joined.
    Tsv,
    /// A JSON array, SAMPLE_INFO.txt columns joined.
    Json,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Format, String> {
        Ok(match s {
            "md5sum" => Format::Md5sum,
            "sha256sum" => Format::Sha256sum,
            "dxda" => Format::Dxda,
            "tsv" => Format::Tsv,
            "json" => Format::Json,
            other => {
                return Err(format!(
                    "unknown format {other:?}: md5sum, sha256sum, dxda, tsv or json"
                ))
            }
        })
    }
}

/// Why an export could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// A file's whole-file MD5 could not be had.
    #[error("MD5 of {path}: {reason}")]
    Md5 {
        /// The file, relative to the project directory.
        path: String,
        /// Why.
        reason: String,
    },
    /// A file has no recorded SHA-256.
    #[error("{0} has no recorded SHA-256 (run `dxmirror verify`)")]
    NoSha256(String),
    /// JSON encoding failed.
    #[error("encoding JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// The files an export lists: mirrored ones, by path.
pub fn mirrored(mut rows: Vec<FileRow>) -> Vec<FileRow> {
    rows.retain(|r| matches!(r.state, FileState::Verified | FileState::Unverified));
    rows.sort_by(|a, b| a.rel_path.cmp(&b.rel_path));
    rows
}

/// The whole-file MD5 the platform stated: a drive-backed file's `md5`, or a single-part
/// file's part MD5.
pub fn stated_md5(row: &FileRow) -> Option<String> {
    if let Some(Ok(Digest::Md5(d))) = row.md5.as_ref().map(|m| m.get()) {
        return Some(hex::encode(d));
    }
    match row.parts.as_deref() {
        Some([only]) if only.size == row.size => only.md5.clone(),
        _ => None,
    }
}

/// The MD5 of a file on disk (hex).
pub fn md5_of_file(path: &Path) -> Result<String, std::io::Error> {
    use std::io::Read as _;
    let mut f = std::fs::File::open(path)?;
    let mut h = Md5Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finish()))
}

/// A TSV cell: tabs and line breaks become spaces, so that a row stays one line.
fn cell(s: &str) -> String {
    s.replace(['\t', '\n', '\r'], " ")
}

/// Renders `rows` (already [`mirrored`]) of `project` in `format`; `md5` gives a file's
/// whole-file MD5 when [`stated_md5`] has none (the caller hashes it on disk).
pub fn render(
    format: Format,
    project: &str,
    rows: &[FileRow],
    info: Option<&SampleInfo>,
    md5: &mut dyn FnMut(&FileRow) -> Result<String, String>,
) -> Result<String, ExportError> {
    let mut out = String::new();
    match format {
        Format::Md5sum => {
            for r in rows {
                let hex = match stated_md5(r) {
                    Some(h) => h,
                    None => md5(r).map_err(|reason| ExportError::Md5 {
                        path: r.rel_path.clone(),
                        reason,
                    })?,
                };
                out.push_str(&sum_line(&hex, &r.rel_path));
            }
        }
        Format::Sha256sum => {
            for r in rows {
                let hex = r
                    .sha256
                    .as_deref()
                    .ok_or_else(|| ExportError::NoSha256(r.rel_path.clone()))?;
                out.push_str(&sum_line(hex, &r.rel_path));
            }
        }
        Format::Dxda => {
            let entries: Vec<serde_json::Value> = rows
                .iter()
                .map(|r| {
                    let parts: BTreeMap<String, serde_json::Value> = r
                        .parts
                        .iter()
                        .flatten()
                        .map(|p| {
                            (
                                p.index.to_string(),
                                serde_json::json!({"size": p.size, "md5": p.md5}),
                            )
                        })
                        .collect();
                    serde_json::json!({
                        "id": r.file_id.as_str(),
                        "name": r.name,
                        "folder": r.folder,
                        "parts": parts,
                    })
                })
                .collect();
            let doc = serde_json::json!({ project: entries });
            out = serde_json::to_string_pretty(&doc)?;
            out.push('\n');
        }
        Format::Tsv | Format::Json => {
            let columns: Vec<String> = info.map(|i| i.columns().to_vec()).unwrap_or_default();
            let fixed = [
                "path", "file_id", "size", "state", "md5", "sha256", "modified",
            ];
            let remotes: Vec<_> = rows.iter().map(FileRow::remote).collect();
            let samples = match info {
                Some(i) => sample_rows(i, &remotes),
                None => vec![None; rows.len()],
            };
            let mut records = Vec::new();
            for ((r, remote), sample) in rows.iter().zip(&remotes).zip(samples) {
                let sample = sample.filter(|_| !is_sample_info(remote));
                let modified = humantime::format_rfc3339_millis(
                    std::time::UNIX_EPOCH
                        + std::time::Duration::from_millis(
                            u64::try_from(r.modified_ms).unwrap_or(0),
                        ),
                )
                .to_string();
                let mut rec: Vec<(String, String)> = vec![
                    ("path".into(), r.rel_path.clone()),
                    ("file_id".into(), r.file_id.to_string()),
                    ("size".into(), r.size.to_string()),
                    ("state".into(), r.state.as_str().to_owned()),
                    ("md5".into(), stated_md5(r).unwrap_or_default()),
                    ("sha256".into(), r.sha256.clone().unwrap_or_default()),
                    ("modified".into(), modified),
                ];
                for (i, c) in columns.iter().enumerate() {
                    let v = sample
                        .and_then(|s| s.cells.get(i))
                        .cloned()
                        .unwrap_or_default();
                    // A SAMPLE_INFO column named like one of ours keeps its own name prefixed.
                    let name = if fixed.contains(&c.as_str()) {
                        format!("sample_{c}")
                    } else {
                        c.clone()
                    };
                    rec.push((name, v));
                }
                records.push(rec);
            }
            if format == Format::Tsv {
                let header: Vec<String> = fixed
                    .iter()
                    .map(|s| (*s).to_owned())
                    .chain(columns.iter().map(|c| {
                        if fixed.contains(&c.as_str()) {
                            format!("sample_{c}")
                        } else {
                            cell(c)
                        }
                    }))
                    .collect();
                out.push_str(&header.join("\t"));
                out.push('\n');
                for rec in &records {
                    let line: Vec<String> = rec.iter().map(|(_, v)| cell(v)).collect();
                    out.push_str(&line.join("\t"));
                    out.push('\n');
                }
            } else {
                let arr: Vec<serde_json::Map<String, serde_json::Value>> = records
                    .into_iter()
                    .map(|rec| {
                        rec.into_iter()
                            .map(|(k, v)| (k, serde_json::Value::String(v)))
                            .collect()
                    })
                    .collect();
                out = serde_json::to_string_pretty(&arr)?;
                out.push('\n');
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_backslashes_or_newlines_are_escaped_as_coreutils_does() {
        assert_eq!(sum_line("ab", "a/b.txt"), "ab  a/b.txt\n");
        assert_eq!(sum_line("ab", "a\\b\nc"), "\\ab  a\\\\b\\nc\n");
    }

    #[test]
    fn formats_parse_and_an_unknown_one_names_the_choices() {
        assert_eq!("tsv".parse::<Format>().unwrap(), Format::Tsv);
        let e = "csv".parse::<Format>().unwrap_err();
        assert!(e.contains("md5sum, sha256sum, dxda, tsv or json"), "{e}");
    }
}
