//! Read queries shared by [`Journal`](crate::journal::Journal) (its read connection) and
//! [`JournalReader`](super::JournalReader). Every function takes a `&Connection` and only
//! runs `SELECT`s; nothing here may write.

use std::collections::BTreeMap;

use rusqlite::types::Type;
use rusqlite::{params, Connection, OptionalExtension as _, Row};

use crate::journal::rows::parts_from_json;
use crate::journal::{
    AuditRow, DaemonLive, DaemonRow, EventRow, FileKey, FileRow, FileState, JournalError,
    PausedRow, ProjectRow, ProjectTotals, RunRow, SqlContext as _, StoredPlan,
};
use crate::model::{ByteRange, Digest, FileId, ProjectId, RemoteState};
use crate::planner::{Chunk, FileKind, FilePlan, Segment};

fn conversion(
    idx: usize,
    ty: Type,
    e: impl std::error::Error + Send + Sync + 'static,
) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(idx, ty, Box::new(e))
}

fn get_u64(row: &Row<'_>, idx: usize) -> rusqlite::Result<u64> {
    let v: i64 = row.get(idx)?;
    u64::try_from(v).map_err(|e| conversion(idx, Type::Integer, e))
}

fn get_u32(row: &Row<'_>, idx: usize) -> rusqlite::Result<u32> {
    let v: i64 = row.get(idx)?;
    u32::try_from(v).map_err(|e| conversion(idx, Type::Integer, e))
}

/// A stored value the journal cannot understand.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct BadValue(String);

const PROJECT_COLS: &str =
    "id, name, dir_name, download_restricted, state, reason, first_seen_ms, last_listed_ms";

fn project_row(row: &Row<'_>) -> rusqlite::Result<ProjectRow> {
    Ok(ProjectRow {
        id: row.get(0)?,
        name: row.get(1)?,
        dir_name: row.get(2)?,
        download_restricted: row.get(3)?,
        state: row.get(4)?,
        reason: row.get(5)?,
        first_seen_ms: row.get(6)?,
        last_listed_ms: row.get(7)?,
    })
}

/// All projects, by id.
pub(crate) fn projects(conn: &Connection) -> Result<Vec<ProjectRow>, JournalError> {
    let mut stmt = conn
        .prepare_cached(&format!("SELECT {PROJECT_COLS} FROM projects ORDER BY id"))
        .sql_ctx("reading projects")?;
    let rows = stmt
        .query_map([], project_row)
        .sql_ctx("reading projects")?
        .collect::<Result<Vec<_>, _>>()
        .sql_ctx("reading projects")?;
    Ok(rows)
}

/// One project.
pub(crate) fn project(
    conn: &Connection,
    id: &ProjectId,
) -> Result<Option<ProjectRow>, JournalError> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {PROJECT_COLS} FROM projects WHERE id = ?1"
        ))
        .sql_ctx("reading a project")?;
    stmt.query_row(params![id], project_row)
        .optional()
        .sql_ctx("reading a project")
}

const FILE_COLS: &str = "file_id, project_id, folder, name, size, remote_state, archival_state, \
     created_ms, modified_ms, parts_json, drive, md5, checksum_type, kind, rel_path, state, \
     reason, attempts, sha256, done_ms, updated_ms, last_seen_ms, etag";

fn file_row(row: &Row<'_>) -> rusqlite::Result<FileRow> {
    let remote_state: String = row.get(5)?;
    let parts_json: Option<String> = row.get(9)?;
    let parts = parts_json
        .map(|text| parts_from_json(&text).map_err(|e| conversion(9, Type::Text, e)))
        .transpose()?;
    let kind: Option<String> = row.get(13)?;
    let kind = match kind {
        Some(text) => Some(FileKind::parse(&text).ok_or_else(|| {
            conversion(
                13,
                Type::Text,
                BadValue(format!("unknown file kind {text:?}")),
            )
        })?),
        None => None,
    };
    Ok(FileRow {
        file_id: row.get(0)?,
        project_id: row.get(1)?,
        folder: row.get(2)?,
        name: row.get(3)?,
        size: get_u64(row, 4)?,
        remote_state: RemoteState::parse(&remote_state),
        archival_state: row.get(6)?,
        created_ms: row.get(7)?,
        modified_ms: row.get(8)?,
        parts,
        drive: row.get(10)?,
        md5: row.get(11)?,
        checksum_type: row.get(12)?,
        kind,
        rel_path: row.get(14)?,
        state: row.get(15)?,
        reason: row.get(16)?,
        attempts: get_u32(row, 17)?,
        sha256: row.get(18)?,
        done_ms: row.get(19)?,
        updated_ms: row.get(20)?,
        last_seen_ms: row.get(21)?,
        etag: row.get(22)?,
    })
}

/// The files of a project, by `rel_path`.
pub(crate) fn files(conn: &Connection, project: &ProjectId) -> Result<Vec<FileRow>, JournalError> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {FILE_COLS} FROM files WHERE project_id = ?1 ORDER BY rel_path, file_id"
        ))
        .sql_ctx("reading files")?;
    let rows = stmt
        .query_map(params![project], file_row)
        .sql_ctx("reading files")?
        .collect::<Result<Vec<_>, _>>()
        .sql_ctx("reading files")?;
    Ok(rows)
}

/// One file of one project.
pub(crate) fn file(conn: &Connection, key: &FileKey) -> Result<Option<FileRow>, JournalError> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {FILE_COLS} FROM files WHERE project_id = ?1 AND file_id = ?2"
        ))
        .sql_ctx("reading a file")?;
    stmt.query_row(params![key.project, key.file], file_row)
        .optional()
        .sql_ctx("reading a file")
}

/// The stored plan of a file with its progress.
pub(crate) fn load_plan(
    conn: &Connection,
    id: &FileKey,
) -> Result<Option<StoredPlan>, JournalError> {
    let head: Option<(Option<String>, u64)> = conn
        .prepare_cached("SELECT kind, size FROM files WHERE project_id = ?1 AND file_id = ?2")
        .sql_ctx("reading a plan")?
        .query_row(params![id.project, id.file], |r| {
            Ok((r.get(0)?, get_u64(r, 1)?))
        })
        .optional()
        .sql_ctx("reading a plan")?;
    let Some((kind, size)) = head else {
        return Ok(None);
    };

    let mut segments = Vec::new();
    let mut segment_verified = Vec::new();
    {
        let mut stmt = conn
            .prepare_cached(
                "SELECT seg_idx, \"offset\", len, part_index, expect, verified \
                 FROM segments WHERE project_id = ?1 AND file_id = ?2 ORDER BY seg_idx",
            )
            .sql_ctx("reading segments")?;
        let mut rows = stmt
            .query(params![id.project, id.file])
            .sql_ctx("reading segments")?;
        while let Some(row) = rows.next().sql_ctx("reading segments")? {
            let idx = get_u32(row, 0).sql_ctx("reading segments")?;
            let range = ByteRange::new(
                get_u64(row, 1).sql_ctx("reading segments")?,
                get_u64(row, 2).sql_ctx("reading segments")?,
            );
            let part_index: Option<i64> = row.get(3).sql_ctx("reading segments")?;
            let part_index = part_index
                .map(u32::try_from)
                .transpose()
                .map_err(|e| bad_segment(id, idx, e.to_string()))?;
            let expect: Option<String> = row.get(4).sql_ctx("reading segments")?;
            let expect = expect
                .map(|t| Digest::from_tagged(&t))
                .transpose()
                .map_err(|e| bad_segment(id, idx, e.to_string()))?;
            let verified: bool = row.get(5).sql_ctx("reading segments")?;
            if idx as usize != segments.len() {
                return Err(bad_segment(
                    id,
                    idx,
                    "segment indexes are not contiguous".into(),
                ));
            }
            segments.push(Segment {
                idx,
                part_index,
                range,
                expect,
            });
            segment_verified.push(verified);
        }
    }
    if segments.is_empty() {
        return Ok(None);
    }
    let kind = match kind {
        Some(text) => FileKind::parse(&text).ok_or_else(|| JournalError::BadRow {
            table: "files",
            key: id.to_string(),
            detail: format!("unknown file kind {text:?}"),
        })?,
        None => {
            return Err(JournalError::BadRow {
                table: "files",
                key: id.to_string(),
                detail: "a plan is stored but the file has no kind".into(),
            })
        }
    };

    let mut chunks = Vec::new();
    let mut chunk_done = Vec::new();
    {
        let mut stmt = conn
            .prepare_cached(
                "SELECT chunk_idx, seg_idx, \"offset\", len, done_bytes, crc32c \
                 FROM chunks WHERE project_id = ?1 AND file_id = ?2 ORDER BY chunk_idx",
            )
            .sql_ctx("reading chunks")?;
        let rows = stmt
            .query_map(params![id.project, id.file], |r| {
                Ok((
                    Chunk {
                        idx: get_u32(r, 0)?,
                        segment: get_u32(r, 1)?,
                        range: ByteRange::new(get_u64(r, 2)?, get_u64(r, 3)?),
                    },
                    (get_u64(r, 4)?, get_u32(r, 5)?),
                ))
            })
            .sql_ctx("reading chunks")?;
        for row in rows {
            let (chunk, done) = row.sql_ctx("reading chunks")?;
            if chunk.idx as usize != chunks.len() {
                return Err(JournalError::BadRow {
                    table: "chunks",
                    key: format!("{id}/{}", chunk.idx),
                    detail: "chunk indexes are not contiguous".into(),
                });
            }
            chunks.push(chunk);
            chunk_done.push(done);
        }
    }
    Ok(Some(StoredPlan {
        plan: FilePlan {
            kind,
            size,
            segments,
            chunks,
        },
        chunk_done,
        segment_verified,
    }))
}

fn bad_segment(id: &FileKey, idx: u32, detail: String) -> JournalError {
    JournalError::BadRow {
        table: "segments",
        key: format!("{id}/{idx}"),
        detail,
    }
}

/// Per-project totals.
pub(crate) fn project_totals(conn: &Connection) -> Result<Vec<ProjectTotals>, JournalError> {
    let mut totals: BTreeMap<ProjectId, ProjectTotals> = projects(conn)?
        .into_iter()
        .map(|p| {
            (
                p.id.clone(),
                ProjectTotals {
                    project: p,
                    files_by_state: BTreeMap::new(),
                    n_files: 0,
                    bytes_total: 0,
                    bytes_done: 0,
                    bytes_skipped: 0,
                    n_failed: 0,
                    n_corrupt: 0,
                },
            )
        })
        .collect();

    let mut stmt = conn
        .prepare_cached(
            "SELECT project_id, state, count(*), coalesce(sum(size), 0) \
             FROM files GROUP BY project_id, state",
        )
        .sql_ctx("summing files")?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, ProjectId>(0)?,
                r.get::<_, FileState>(1)?,
                get_u64(r, 2)?,
                get_u64(r, 3)?,
            ))
        })
        .sql_ctx("summing files")?;
    for row in rows {
        let (project, state, n, bytes) = row.sql_ctx("summing files")?;
        let Some(t) = totals.get_mut(&project) else {
            continue;
        };
        t.files_by_state.insert(state, n);
        t.n_files += n;
        match state {
            FileState::Skipped => t.bytes_skipped += bytes,
            FileState::Gone => {}
            _ => t.bytes_total += bytes,
        }
        if state.is_finished() {
            t.bytes_done += bytes;
        }
        match state {
            FileState::Failed => t.n_failed += n,
            FileState::Corrupt => t.n_corrupt += n,
            _ => {}
        }
    }

    // Chunk progress of the files still in the works (finished ones count their full size).
    let mut stmt = conn
        .prepare_cached(
            "SELECT f.project_id, coalesce(sum(c.done_bytes), 0) \
             FROM files f \
             JOIN chunks c ON c.project_id = f.project_id AND c.file_id = f.file_id \
             WHERE f.state IN ('pending', 'fetching', 'corrupt', 'failed') \
             GROUP BY f.project_id",
        )
        .sql_ctx("summing chunk progress")?;
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, ProjectId>(0)?, get_u64(r, 1)?)))
        .sql_ctx("summing chunk progress")?;
    for row in rows {
        let (project, done) = row.sql_ctx("summing chunk progress")?;
        if let Some(t) = totals.get_mut(&project) {
            t.bytes_done += done;
        }
    }
    Ok(totals.into_values().collect())
}

/// Failed, corrupt and skipped files.
pub(crate) fn problems(conn: &Connection, limit: usize) -> Result<Vec<FileRow>, JournalError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {FILE_COLS} FROM files WHERE state IN ('failed', 'corrupt', 'skipped') \
             ORDER BY CASE state WHEN 'failed' THEN 0 WHEN 'corrupt' THEN 1 ELSE 2 END, \
             updated_ms DESC, file_id, project_id LIMIT ?1"
        ))
        .sql_ctx("reading problems")?;
    let rows = stmt
        .query_map(params![limit], file_row)
        .sql_ctx("reading problems")?
        .collect::<Result<Vec<_>, _>>()
        .sql_ctx("reading problems")?;
    Ok(rows)
}

/// The newest events.
pub(crate) fn recent_events(
    conn: &Connection,
    limit: usize,
) -> Result<Vec<EventRow>, JournalError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut stmt = conn
        .prepare_cached(
            "SELECT id, ts_ms, level, project_id, file_id, message FROM events \
             ORDER BY id DESC LIMIT ?1",
        )
        .sql_ctx("reading events")?;
    let rows = stmt
        .query_map(params![limit], |r| {
            Ok(EventRow {
                id: r.get(0)?,
                ts_ms: r.get(1)?,
                level: r.get(2)?,
                project_id: r.get(3)?,
                file_id: r.get(4)?,
                message: r.get(5)?,
            })
        })
        .sql_ctx("reading events")?
        .collect::<Result<Vec<_>, _>>()
        .sql_ctx("reading events")?;
    Ok(rows)
}

/// The latest run.
pub(crate) fn last_run(conn: &Connection) -> Result<Option<RunRow>, JournalError> {
    conn.prepare_cached(
        "SELECT id, started_ms, ended_ms, version, command, pid, outcome FROM runs \
         ORDER BY id DESC LIMIT 1",
    )
    .sql_ctx("reading runs")?
    .query_row([], |r| {
        Ok(RunRow {
            id: r.get(0)?,
            started_ms: r.get(1)?,
            ended_ms: r.get(2)?,
            version: r.get(3)?,
            command: r.get(4)?,
            pid: get_u32(r, 5)?,
            outcome: r.get(6)?,
        })
    })
    .optional()
    .sql_ctx("reading runs")
}

/// Audit records at or after `since_ms`, oldest first.
pub(crate) fn audit(conn: &Connection, since_ms: i64) -> Result<Vec<AuditRow>, JournalError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT id, ts_ms, action, project_id, file_id, identity, size, sha256, detail \
             FROM audit WHERE ts_ms >= ?1 ORDER BY id",
        )
        .sql_ctx("reading the audit trail")?;
    let rows = stmt
        .query_map(params![since_ms], |r| {
            let size: Option<i64> = r.get(6)?;
            Ok(AuditRow {
                id: r.get(0)?,
                ts_ms: r.get(1)?,
                action: r.get(2)?,
                project_id: r.get(3)?,
                file_id: r.get(4)?,
                identity: r.get(5)?,
                size: size.map(|s| u64::try_from(s).unwrap_or(0)),
                sha256: r.get(7)?,
                detail: r.get(8)?,
            })
        })
        .sql_ctx("reading the audit trail")?
        .collect::<Result<Vec<_>, _>>()
        .sql_ctx("reading the audit trail")?;
    Ok(rows)
}

pub(crate) fn daemon(conn: &Connection) -> Result<Option<DaemonRow>, JournalError> {
    conn.prepare_cached(
        "SELECT pid, started_ms, updated_ms, state, status, last_discovery_ms, last_error, \
         last_error_ms, stopped_ms, bytes_per_s, live FROM daemon WHERE id = 1",
    )
    .sql_ctx("reading the daemon state")?
    .query_row([], |r| {
        Ok(DaemonRow {
            pid: get_u32(r, 0)?,
            started_ms: r.get(1)?,
            updated_ms: r.get(2)?,
            state: r.get(3)?,
            status: r.get(4)?,
            last_discovery_ms: r.get(5)?,
            last_error: r.get(6)?,
            last_error_ms: r.get(7)?,
            stopped_ms: r.get(8)?,
            bytes_per_s: r.get(9)?,
            live: DaemonLive::from_json(r.get::<_, Option<String>>(10)?.as_deref()),
        })
    })
    .optional()
    .sql_ctx("reading the daemon state")
}

/// Journaled bytes of a project's unfinished files (chunk progress), by file.
pub(crate) fn file_progress(
    conn: &Connection,
    project: &ProjectId,
) -> Result<BTreeMap<FileId, u64>, JournalError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT c.file_id, coalesce(sum(c.done_bytes), 0) FROM chunks c \
             JOIN files f ON c.project_id = f.project_id AND c.file_id = f.file_id \
             WHERE f.project_id = ?1 AND f.state IN ('pending', 'fetching', 'corrupt', 'failed') \
             GROUP BY c.file_id",
        )
        .sql_ctx("summing file progress")?;
    let rows = stmt
        .query_map(params![project], |r| {
            Ok((r.get::<_, FileId>(0)?, get_u64(r, 1)?))
        })
        .sql_ctx("summing file progress")?;
    let mut out = BTreeMap::new();
    for row in rows {
        let (file, done) = row.sql_ctx("summing file progress")?;
        out.insert(file, done);
    }
    Ok(out)
}

/// Files waiting for disk space (in `fetching` with the reason the engine records), by
/// project.
pub(crate) fn disk_waits(conn: &Connection) -> Result<BTreeMap<ProjectId, u64>, JournalError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT project_id, count(*) FROM files \
             WHERE state = 'fetching' AND reason LIKE 'waiting for disk space%' \
             GROUP BY project_id",
        )
        .sql_ctx("counting disk waits")?;
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, ProjectId>(0)?, get_u64(r, 1)?)))
        .sql_ctx("counting disk waits")?;
    let mut out = BTreeMap::new();
    for row in rows {
        let (project, n) = row.sql_ctx("counting disk waits")?;
        out.insert(project, n);
    }
    Ok(out)
}

/// What is paused: `(project, by, since_ms)`, the project `None` for every project (`--all`).
pub(crate) fn paused(conn: &Connection) -> Result<Vec<PausedRow>, JournalError> {
    let rows: Vec<(String, String, i64)> = conn
        .prepare_cached("SELECT project_id, by_user, ts_ms FROM paused ORDER BY project_id")
        .sql_ctx("reading paused projects")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .sql_ctx("reading paused projects")?
        .collect::<Result<Vec<_>, _>>()
        .sql_ctx("reading paused projects")?;
    rows.into_iter()
        .map(|(p, by, since_ms)| {
            let project = if p == "*" {
                None
            } else {
                Some(
                    p.parse()
                        .map_err(|e: crate::model::IdError| JournalError::BadRow {
                            table: "paused",
                            key: p.clone(),
                            detail: e.to_string(),
                        })?,
                )
            };
            Ok(PausedRow {
                project,
                by,
                since_ms,
            })
        })
        .collect()
}

pub(crate) fn requests(
    conn: &Connection,
) -> Result<Vec<(ProjectId, Option<FileId>)>, JournalError> {
    let rows: Vec<(ProjectId, String)> = conn
        .prepare_cached("SELECT project_id, file_id FROM requests ORDER BY project_id, file_id")
        .sql_ctx("reading inbox requests")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .sql_ctx("reading inbox requests")?
        .collect::<Result<Vec<_>, _>>()
        .sql_ctx("reading inbox requests")?;
    rows.into_iter()
        .map(|(p, f)| {
            if f.is_empty() {
                return Ok((p, None));
            }
            let id: FileId =
                f.parse()
                    .map_err(|e: crate::model::IdError| JournalError::BadRow {
                        table: "requests",
                        key: format!("{p}:{f}"),
                        detail: e.to_string(),
                    })?;
            Ok((p, Some(id)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{schema, JOURNAL_FILE};

    #[test]
    fn bad_stored_rows_are_errors_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(JOURNAL_FILE);
        let conn = schema::open_writer(&path).unwrap();
        conn.execute_batch(
            "INSERT INTO projects (id, name, state, first_seen_ms) \
                 VALUES ('project-000000000000000000000001', 'p', 'exploded', 0);",
        )
        .unwrap();
        let err = projects(&conn).unwrap_err();
        assert!(err.to_string().contains("exploded"), "{err}");
    }
}
