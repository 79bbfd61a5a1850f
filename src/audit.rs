//! The audit trail's vocabulary, its optional JSON-lines copy, and `dxmirror audit`'s output.
//!
//! Every act an information-security officer may ask about is one append-only row of the
//! journal's `audit` table (the journal owns the SQL and the transaction), written by the code
//! that does the act:
//!
//! - `fetched`: a file was published (by `transfer`) with its size and SHA-256; `detail` says
//!   `verified` (every platform checksum matched) or `unverified` (the platform gives none),
//!   then the local path.
//! - `quarantined`: a file ended `corrupt` (its checksums kept failing); nothing published.
//! - `object-changed`: a pinned drive-backed file's backing object was overwritten under its
//!   transfer (`412` to `If-Match`); its staged bytes were discarded, nothing published.
//! - `repaired`: `verify --repair` put a damaged file back into staging for re-fetching.
//! - `purged`: `dxmirror purge` deleted a project's mirrored data.
//! - `control`: an operator's request through the daemon's control socket (`pause`, `resume`,
//!   `bwlimit`, `relist`, `verify --queue`); the identity is the local user.
//!
//! The identity is the platform user from `/system/whoami` for `fetched`, `quarantined` and `object-changed`
//! (`None` when it could not be asked), the local user ([`local_identity`]) for `repaired` and
//! `purged`.
//!
//! This module owns the record words ([`Action`], defined in `journal` as `AuditAction` because
//! the journal's `NewAudit` carries it), the JSON-lines file (`audit-log` in the config: each
//! record appended as one line, `O_APPEND`, mode 0640, `fsync`ed per line) and the text and
//! JSON rendering. Lines of files finishing at the same moment may be appended in either
//! order; each carries the journal's `id`, which is the order. It holds no SQL and never writes the journal itself; a failure to append
//! to the JSON-lines file is logged and does not undo the journal row, which is the record.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::journal::AuditRow;

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The JSON-lines file could not be opened, written or synced.
    #[error("audit log {path}: {source}")]
    Log {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A record could not be turned into JSON.
    #[error("audit record to JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The journal could not be read.
    #[error("journal: {0}")]
    Journal(#[from] crate::journal::JournalError),
    /// `--since` is neither `YYYY-MM-DD` nor RFC 3339.
    #[error("not a date (YYYY-MM-DD or RFC 3339): {0}")]
    BadDate(String),
}

/// What was done: the `action` column's words (a journal type, since `NewAudit` carries it).
pub use crate::journal::AuditAction as Action;

/// One record as written to the JSON-lines file and printed by `dxmirror audit --json`: the
/// journal row plus its time in RFC 3339.
#[derive(Debug, serde::Serialize)]
struct JsonRecord<'a> {
    time: String,
    #[serde(flatten)]
    row: &'a AuditRow,
}

/// Who runs this process, for the records of local actions (repairs, purges): `user (uid N)`,
/// the name from the user database (not `$USER`, which `sudo` keeps), or `uid N` without one.
pub fn local_identity() -> String {
    crate::dirs::current_user()
}

fn rfc3339(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(t).to_string()
}

/// One record as a JSON object (no trailing newline).
pub fn to_json_line(row: &AuditRow) -> Result<String, AuditError> {
    Ok(serde_json::to_string(&JsonRecord {
        time: rfc3339(row.ts_ms),
        row,
    })?)
}

/// Appends `row` as one line to the JSON-lines file at `path` (created 0640 if missing),
/// and `fsync`s it.
pub fn append_json_line(path: &Path, row: &AuditRow) -> Result<(), AuditError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut line = to_json_line(row)?;
    line.push('\n');
    let io = |source| AuditError::Log {
        path: path.to_owned(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .open(path)
        .map_err(io)?;
    // One write call per line: with O_APPEND, concurrent writers never interleave a line.
    f.write_all(line.as_bytes()).map_err(io)?;
    f.sync_data().map_err(io)
}

/// [`append_json_line`] when a log is configured; a failure is logged, not returned (the
/// journal row is the record).
pub fn append_logged(path: Option<&Path>, row: &AuditRow) {
    if let Some(path) = path {
        if let Err(e) = append_json_line(path, row) {
            tracing::error!(error = %e, audit_id = row.id, "cannot append to the audit log");
        }
    }
}

/// Parses `--since`: `YYYY-MM-DD` (midnight UTC) or RFC 3339 (`Z` or `±HH:MM`); returns ms
/// since the epoch.
pub fn parse_since(s: &str) -> Result<i64, AuditError> {
    let bad = || AuditError::BadDate(s.to_owned());
    let s = s.trim();
    let (base, offset_s): (String, i64) = if s.len() == 10 {
        (format!("{s}T00:00:00Z"), 0)
    } else if s.ends_with('Z') || s.ends_with('z') {
        (s.to_owned(), 0)
    } else if s.len() > 6 && matches!(s.as_bytes()[s.len() - 6], b'+' | b'-') {
        let (b, off) = s.split_at(s.len() - 6);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let (h, m) = off[1..].split_once(':').ok_or_else(bad)?;
        let h: i64 = h.parse().map_err(|_| bad())?;
        let m: i64 = m.parse().map_err(|_| bad())?;
        (format!("{b}Z"), sign * (h * 3600 + m * 60))
    } else {
        return Err(bad());
    };
    let t: SystemTime = humantime::parse_rfc3339_weak(&base).map_err(|_| bad())?;
    let ms = t.duration_since(UNIX_EPOCH).map_err(|_| bad())?.as_millis();
    let ms = i64::try_from(ms).map_err(|_| bad())?;
    Ok(ms - offset_s * 1000)
}

/// `dxmirror audit`: reads the records at or after `since_ms` from the journal in
/// `state_dir` (read-only) and renders them as text or, with `json`, a JSON array.
pub fn report(state_dir: &Path, since_ms: i64, json: bool) -> Result<String, AuditError> {
    let reader = crate::journal::JournalReader::open(state_dir)?;
    let rows = reader.audit_since(since_ms)?;
    if json {
        Ok(render_json(&rows)? + "\n")
    } else {
        Ok(render_text(&rows))
    }
}

/// `dxmirror audit --json`: a JSON array of the records.
pub fn render_json(rows: &[AuditRow]) -> Result<String, AuditError> {
    let recs: Vec<JsonRecord<'_>> = rows
        .iter()
        .map(|row| JsonRecord {
            time: rfc3339(row.ts_ms),
            row,
        })
        .collect();
    Ok(serde_json::to_string_pretty(&recs)?)
}

/// `dxmirror audit`: a text table, one record per line.
pub fn render_text(rows: &[AuditRow]) -> String {
    let mut out = format!(
        "{:<24}  {:<11}  {:<28}  {:<28}  {:<20}  {:>14}  {:<64}  {}\n",
        "TIME", "ACTION", "PROJECT", "FILE", "IDENTITY", "SIZE", "SHA256", "DETAIL"
    );
    for r in rows {
        let file = r.file_id.as_ref().map(|f| f.to_string());
        let size = r.size.map(|s| s.to_string());
        out.push_str(&format!(
            "{:<24}  {:<11}  {:<28}  {:<28}  {:<20}  {:>14}  {:<64}  {}\n",
            rfc3339(r.ts_ms),
            r.action,
            r.project_id,
            file.as_deref().unwrap_or("-"),
            r.identity.as_deref().unwrap_or("-"),
            size.as_deref().unwrap_or("-"),
            r.sha256.as_deref().unwrap_or("-"),
            r.detail
        ));
    }
    if rows.is_empty() {
        out.push_str("(no audit records)\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> AuditRow {
        AuditRow {
            id: 7,
            ts_ms: 1_700_000_000_123,
            action: Action::Fetched.as_str().into(),
            project_id: "project-BZ5pq1j0b1QK58vJ0x8qyQ4Q".parse().unwrap(),
            file_id: Some("file-BZ5pq1j0b1QK58vJ0x8qyQ4Q".parse().unwrap()),
            identity: Some("user-alice".into()),
            size: Some(42),
            sha256: Some("ab".repeat(32)),
            detail: "verified a/b.bam".into(),
        }
    }

    #[test]
    fn since_accepts_dates_and_rfc3339() {
        assert_eq!(parse_since("1970-01-02").unwrap(), 86_400_000);
        assert_eq!(parse_since("1970-01-02T00:00:01Z").unwrap(), 86_401_000);
        assert_eq!(
            parse_since("1970-01-02T01:00:00+01:00").unwrap(),
            86_400_000
        );
        assert_eq!(
            parse_since("1970-01-01T23:00:00-01:00").unwrap(),
            86_400_000
        );
        assert!(parse_since("yesterday").is_err());
        assert!(parse_since("2024-13-01").is_err());
    }

    #[test]
    fn json_lines_append_with_mode_0640() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        append_json_line(&path, &row()).unwrap();
        append_json_line(&path, &row()).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(v["action"], "fetched");
        assert_eq!(v["size"], 42);
        assert_eq!(v["identity"], "user-alice");
        assert_eq!(v["time"], "2023-11-14T22:13:20.123Z");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
    }

    #[test]
    fn text_lists_every_record() {
        let t = render_text(&[row()]);
        assert!(t.contains("fetched") && t.contains("user-alice") && t.contains(&"ab".repeat(32)));
        assert!(render_text(&[]).contains("no audit records"));
    }
}
