//! The writer's statements: one function per write, each run inside the batch's transaction
//! (or a savepoint of it) on the writer's connection. Nothing here commits or answers a
//! caller; that is `mod.rs`'s job.

use std::collections::HashMap;

use rusqlite::{params, Connection, OptionalExtension as _};

use crate::clock::now_ms;
use crate::journal::rows::parts_to_json;
use crate::journal::{
    sql_u64, AuditRow, DaemonRow, DeletedRows, EventLevel, FileKey, FileListing, FileState,
    JournalError, ListingDiff, NewAudit, ProjectRow, SqlContext as _, MAX_EVENTS,
};
use crate::model::{FileId, ProjectId};
use crate::planner::FilePlan;

/// Inserts or updates a project; a `dir_name` owned by another project is refused, a
/// decided one is kept.
pub(super) fn upsert_project(conn: &Connection, row: &ProjectRow) -> Result<(), JournalError> {
    if let Some(dir_name) = &row.dir_name {
        let owner: Option<ProjectId> = conn
            .prepare_cached("SELECT id FROM projects WHERE dir_name = ?1 AND id != ?2")
            .sql_ctx("checking a directory name")?
            .query_row(params![dir_name, row.id], |r| r.get(0))
            .optional()
            .sql_ctx("checking a directory name")?;
        if let Some(owner) = owner {
            return Err(JournalError::DirNameTaken {
                dir_name: dir_name.clone(),
                owner,
            });
        }
    }
    conn.prepare_cached(
        "INSERT INTO projects (id, name, dir_name, download_restricted, state, reason, \
             first_seen_ms, last_listed_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
         ON CONFLICT (id) DO UPDATE SET \
             name = CASE WHEN excluded.name = '' THEN projects.name ELSE excluded.name END, \
             dir_name = coalesce(projects.dir_name, excluded.dir_name), \
             download_restricted = excluded.download_restricted, state = excluded.state, \
             reason = excluded.reason, \
             last_listed_ms = coalesce(excluded.last_listed_ms, projects.last_listed_ms)",
    )
    .sql_ctx("upserting a project")?
    .execute(params![
        row.id,
        row.name,
        row.dir_name,
        row.download_restricted,
        row.state,
        row.reason,
        row.first_seen_ms,
        row.last_listed_ms
    ])
    .sql_ctx("upserting a project")?;
    Ok(())
}

/// Records a complete listing of a known project; returns what changed.
pub(super) fn record_listing(
    conn: &Connection,
    project: &ProjectId,
    files: Vec<FileListing>,
) -> Result<ListingDiff, JournalError> {
    let now = now_ms();
    let n = conn
        .prepare_cached("UPDATE projects SET last_listed_ms = ?2 WHERE id = ?1")
        .sql_ctx("recording a listing")?
        .execute(params![project, now])
        .sql_ctx("recording a listing")?;
    if n == 0 {
        return Err(JournalError::UnknownProject(project.clone()));
    }

    let mut known: HashMap<String, FileState> = HashMap::new();
    {
        let mut stmt = conn
            .prepare_cached("SELECT file_id, state FROM files WHERE project_id = ?1")
            .sql_ctx("reading known files")?;
        let rows = stmt
            .query_map(params![project], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, FileState>(1)?))
            })
            .sql_ctx("reading known files")?;
        for row in rows {
            let (id, state) = row.sql_ctx("reading known files")?;
            known.insert(id, state);
        }
    }

    let mut insert = conn
        .prepare_cached(
            "INSERT INTO files (file_id, project_id, folder, name, size, remote_state, \
                 archival_state, created_ms, modified_ms, parts_json, drive, md5, checksum_type, \
                 kind, rel_path, state, reason, attempts, updated_ms, last_seen_ms, etag) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, \
                 0, ?18, ?18, ?19) \
             ON CONFLICT (project_id, file_id) DO NOTHING",
        )
        .sql_ctx("inserting files")?;
    // Updates only when something differs, so `updated` lists real changes. The state
    // moves only between Pending/Skipped/Gone (decided below); progress is never touched.
    let mut update = conn
        .prepare_cached(
            "UPDATE files SET folder = ?2, name = ?3, size = ?4, remote_state = ?5, \
                 archival_state = ?6, created_ms = ?7, modified_ms = ?8, parts_json = ?9, \
                 drive = ?10, md5 = ?11, checksum_type = ?12, kind = coalesce(?13, kind), \
                 rel_path = ?14, state = ?15, reason = ?16, updated_ms = ?17, etag = ?19 \
             WHERE file_id = ?1 AND project_id = ?18 AND (folder IS NOT ?2 OR name IS NOT ?3 OR size IS NOT ?4 \
                 OR remote_state IS NOT ?5 OR archival_state IS NOT ?6 OR created_ms IS NOT ?7 \
                 OR modified_ms IS NOT ?8 OR parts_json IS NOT ?9 OR drive IS NOT ?10 \
                 OR md5 IS NOT ?11 OR checksum_type IS NOT ?12 \
                 OR (?13 IS NOT NULL AND kind IS NOT ?13) OR rel_path IS NOT ?14 \
                 OR state IS NOT ?15 OR reason IS NOT ?16 OR etag IS NOT ?19)",
        )
        .sql_ctx("updating files")?;
    // A file not yet published whose describe changed (a drive-backed object re-vended: new
    // ETag, checksums or parts) starts again: its plan and progress were of the old version.
    let mut stale_plan = conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM files WHERE project_id = ?1 AND file_id = ?2 \
                 AND state NOT IN ('verified', 'unverified') \
                 AND (etag IS NOT ?3 OR md5 IS NOT ?4 OR parts_json IS NOT ?5 \
                     OR checksum_type IS NOT ?6))",
        )
        .sql_ctx("updating files")?;
    let mut keep_reason = conn
        .prepare_cached("SELECT reason FROM files WHERE project_id = ?1 AND file_id = ?2")
        .sql_ctx("updating files")?;

    // Known ids are taken out of `known` as they are listed; what remains was not listed.
    let mut diff = ListingDiff::default();
    for f in files {
        let r = &f.remote;
        let id = r.id.as_str();
        let parts_json = parts_to_json(&r.parts);
        let size = sql_u64(r.size)?;
        let kind = f.kind.map(|k| k.as_str());
        match known.remove(id) {
            None => {
                let (state, reason) = match &f.skip_reason {
                    Some(reason) => (FileState::Skipped, Some(reason.as_str())),
                    None => (FileState::Pending, None),
                };
                let n = insert
                    .execute(params![
                        r.id,
                        project,
                        r.folder,
                        r.name,
                        size,
                        r.state.as_str(),
                        r.archival_state,
                        r.created_ms,
                        r.modified_ms,
                        parts_json,
                        r.drive,
                        r.md5,
                        r.checksum_type,
                        kind,
                        f.rel_path,
                        state,
                        reason,
                        now,
                        r.etag
                    ])
                    .sql_ctx("inserting files")?;
                // n == 0: the platform listed the id twice; the first description wins.
                if n == 1 {
                    diff.added.push(r.id.clone());
                }
            }
            Some(current) => {
                let (state, reason) = match (current, &f.skip_reason) {
                    (FileState::Pending | FileState::Skipped | FileState::Gone, Some(reason)) => {
                        (FileState::Skipped, Some(reason.clone()))
                    }
                    (FileState::Skipped | FileState::Gone, None) => (FileState::Pending, None),
                    (state, _) => {
                        let reason: Option<String> = keep_reason
                            .query_row(params![project, r.id], |row| row.get(0))
                            .sql_ctx("updating files")?;
                        (state, reason)
                    }
                };
                let stale: bool = stale_plan
                    .query_row(
                        params![project, r.id, r.etag, r.md5, parts_json, r.checksum_type],
                        |row| row.get(0),
                    )
                    .sql_ctx("updating files")?;
                if stale {
                    forget_plan(conn, &FileKey::new(project, &r.id))?;
                }
                let n = update
                    .execute(params![
                        r.id,
                        r.folder,
                        r.name,
                        size,
                        r.state.as_str(),
                        r.archival_state,
                        r.created_ms,
                        r.modified_ms,
                        parts_json,
                        r.drive,
                        r.md5,
                        r.checksum_type,
                        kind,
                        f.rel_path,
                        state,
                        reason,
                        now,
                        project,
                        r.etag
                    ])
                    .sql_ctx("updating files")?;
                if n > 0 {
                    diff.updated.push(r.id.clone());
                }
            }
        }
    }

    let mut removed = Vec::with_capacity(known.len());
    for id in known.into_keys() {
        match id.parse::<FileId>() {
            Ok(fid) => removed.push(fid),
            Err(e) => {
                return Err(JournalError::BadRow {
                    table: "files",
                    key: id,
                    detail: e.to_string(),
                })
            }
        }
    }
    removed.sort();
    let removed_json = serde_json::to_string(&removed).unwrap_or_else(|_| "[]".into());
    conn.prepare_cached(
        "UPDATE files SET last_seen_ms = ?2 WHERE project_id = ?1 \
         AND file_id NOT IN (SELECT value FROM json_each(?3))",
    )
    .sql_ctx("updating last_seen")?
    .execute(params![project, now, removed_json])
    .sql_ctx("updating last_seen")?;
    diff.removed = removed;
    Ok(diff)
}

/// Sets a file's state and reason.
pub(super) fn set_file_state(
    conn: &Connection,
    key: FileKey,
    state: FileState,
    reason: Option<String>,
) -> Result<(), JournalError> {
    let n = conn
        .prepare_cached(
            "UPDATE files SET state = ?3, reason = ?4, updated_ms = ?5 \
             WHERE project_id = ?1 AND file_id = ?2",
        )
        .sql_ctx("setting a file state")?
        .execute(params![key.project, key.file, state, reason, now_ms()])
        .sql_ctx("setting a file state")?;
    known_file(n, key)
}

/// Counts one more attempt of a file; returns the new count.
pub(super) fn add_attempt(conn: &Connection, key: &FileKey) -> Result<u32, JournalError> {
    let n: Option<i64> = conn
        .prepare_cached(
            "UPDATE files SET attempts = attempts + 1, updated_ms = ?3 \
             WHERE project_id = ?1 AND file_id = ?2 RETURNING attempts",
        )
        .sql_ctx("counting an attempt")?
        .query_row(params![key.project, key.file, now_ms()], |r| r.get(0))
        .optional()
        .sql_ctx("counting an attempt")?;
    match n {
        Some(n) => Ok(u32::try_from(n).unwrap_or(u32::MAX)),
        None => Err(JournalError::UnknownFile(key.clone())),
    }
}

/// Counts an attempt, sets the state `Fetching` (reason cleared) and, when given, stores the
/// plan; returns the attempt count.
pub(super) fn start_file(
    conn: &Connection,
    key: FileKey,
    plan: Option<FilePlan>,
) -> Result<u32, JournalError> {
    let attempts = add_attempt(conn, &key)?;
    let n = conn
        .prepare_cached(
            "UPDATE files SET state = ?3, reason = NULL, updated_ms = ?4 \
             WHERE project_id = ?1 AND file_id = ?2",
        )
        .sql_ctx("starting a file")?
        .execute(params![
            key.project,
            key.file,
            FileState::Fetching,
            now_ms()
        ])
        .sql_ctx("starting a file")?;
    known_file(n, key.clone())?;
    if let Some(plan) = plan {
        put_plan(conn, &key, &plan)?;
    }
    Ok(attempts)
}

/// Marks a file mirrored in `state`, with its SHA-256; clears the reason.
pub(super) fn mark_done(
    conn: &Connection,
    key: FileKey,
    state: FileState,
    sha256: &str,
) -> Result<(), JournalError> {
    let now = now_ms();
    let n = conn
        .prepare_cached(
            "UPDATE files SET state = ?3, sha256 = ?4, done_ms = ?5, updated_ms = ?5, \
             reason = NULL WHERE project_id = ?1 AND file_id = ?2",
        )
        .sql_ctx("marking a file done")?
        .execute(params![key.project, key.file, state, sha256, now])
        .sql_ctx("marking a file done")?;
    known_file(n, key)
}

/// Forgets a file's plan and progress (its chunks and segments): its next run plans again
/// from the listed describe and fetches from zero.
pub(super) fn forget_plan(conn: &Connection, key: &FileKey) -> Result<(), JournalError> {
    for sql in [
        "DELETE FROM chunks WHERE project_id = ?1 AND file_id = ?2",
        "DELETE FROM segments WHERE project_id = ?1 AND file_id = ?2",
    ] {
        conn.prepare_cached(sql)
            .sql_ctx("forgetting a plan")?
            .execute(params![key.project, key.file])
            .sql_ctx("forgetting a plan")?;
    }
    Ok(())
}

/// Replaces a file's plan (segments and chunks, no progress) and sets its kind.
pub(super) fn put_plan(
    conn: &Connection,
    key: &FileKey,
    plan: &FilePlan,
) -> Result<(), JournalError> {
    let n = conn
        .prepare_cached(
            "UPDATE files SET kind = ?3, updated_ms = ?4 WHERE project_id = ?1 AND file_id = ?2",
        )
        .sql_ctx("storing a plan")?
        .execute(params![key.project, key.file, plan.kind.as_str(), now_ms()])
        .sql_ctx("storing a plan")?;
    if n == 0 {
        return Err(JournalError::UnknownFile(key.clone()));
    }
    conn.prepare_cached("DELETE FROM chunks WHERE project_id = ?1 AND file_id = ?2")
        .sql_ctx("storing a plan")?
        .execute(params![key.project, key.file])
        .sql_ctx("storing a plan")?;
    conn.prepare_cached("DELETE FROM segments WHERE project_id = ?1 AND file_id = ?2")
        .sql_ctx("storing a plan")?
        .execute(params![key.project, key.file])
        .sql_ctx("storing a plan")?;
    let mut seg = conn
        .prepare_cached(
            "INSERT INTO segments (project_id, file_id, seg_idx, \"offset\", len, part_index, \
                 expect, verified) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0)",
        )
        .sql_ctx("storing segments")?;
    for s in &plan.segments {
        seg.execute(params![
            key.project,
            key.file,
            s.idx,
            sql_u64(s.range.offset)?,
            sql_u64(s.range.len)?,
            s.part_index,
            s.expect.as_ref().map(|d| d.to_tagged())
        ])
        .sql_ctx("storing segments")?;
    }
    let mut chunk = conn
        .prepare_cached(
            "INSERT INTO chunks (project_id, file_id, chunk_idx, seg_idx, \"offset\", len, \
                 done_bytes, crc32c) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, 0)",
        )
        .sql_ctx("storing chunks")?;
    for c in &plan.chunks {
        chunk
            .execute(params![
                key.project,
                key.file,
                c.idx,
                c.segment,
                sql_u64(c.range.offset)?,
                sql_u64(c.range.len)?
            ])
            .sql_ctx("storing chunks")?;
    }
    Ok(())
}

/// Records a chunk's progress; more bytes than the chunk holds is an error.
pub(super) fn chunk_progress(
    conn: &Connection,
    key: FileKey,
    chunk_idx: u32,
    done_bytes: u64,
    crc32c: u32,
) -> Result<(), JournalError> {
    let done = sql_u64(done_bytes)?;
    let n = conn
        .prepare_cached(
            "UPDATE chunks SET done_bytes = ?4, crc32c = ?5 \
             WHERE project_id = ?1 AND file_id = ?2 AND chunk_idx = ?3 AND ?4 <= len",
        )
        .sql_ctx("recording chunk progress")?
        .execute(params![key.project, key.file, chunk_idx, done, crc32c])
        .sql_ctx("recording chunk progress")?;
    if n > 0 {
        return Ok(());
    }
    let len: Option<i64> = conn
        .prepare_cached(
            "SELECT len FROM chunks WHERE project_id = ?1 AND file_id = ?2 AND chunk_idx = ?3",
        )
        .sql_ctx("recording chunk progress")?
        .query_row(params![key.project, key.file, chunk_idx], |r| r.get(0))
        .optional()
        .sql_ctx("recording chunk progress")?;
    match len {
        Some(len) => Err(JournalError::ProgressBeyondChunk {
            file: key,
            chunk_idx,
            done_bytes,
            len: u64::try_from(len).unwrap_or(0),
        }),
        None => Err(JournalError::UnknownChunk {
            file: key,
            chunk_idx,
        }),
    }
}

/// Forgets the progress of chunks and un-verifies their segments.
pub(super) fn reset_chunks(
    conn: &Connection,
    key: &FileKey,
    chunk_idxs: &[u32],
) -> Result<(), JournalError> {
    let mut reset = conn
        .prepare_cached(
            "UPDATE chunks SET done_bytes = 0, crc32c = 0 \
             WHERE project_id = ?1 AND file_id = ?2 AND chunk_idx = ?3 RETURNING seg_idx",
        )
        .sql_ctx("resetting chunks")?;
    let mut unverify = conn
        .prepare_cached(
            "UPDATE segments SET verified = 0 \
             WHERE project_id = ?1 AND file_id = ?2 AND seg_idx = ?3",
        )
        .sql_ctx("resetting chunks")?;
    for &chunk_idx in chunk_idxs {
        let seg_idx: Option<i64> = reset
            .query_row(params![key.project, key.file, chunk_idx], |r| r.get(0))
            .optional()
            .sql_ctx("resetting chunks")?;
        let Some(seg_idx) = seg_idx else {
            return Err(JournalError::UnknownChunk {
                file: key.clone(),
                chunk_idx,
            });
        };
        unverify
            .execute(params![key.project, key.file, seg_idx])
            .sql_ctx("resetting chunks")?;
    }
    Ok(())
}

/// Records whether a segment's checksum was verified.
pub(super) fn set_segment_verified(
    conn: &Connection,
    key: FileKey,
    seg_idx: u32,
    verified: bool,
) -> Result<(), JournalError> {
    let n = conn
        .prepare_cached(
            "UPDATE segments SET verified = ?4 \
             WHERE project_id = ?1 AND file_id = ?2 AND seg_idx = ?3",
        )
        .sql_ctx("marking a segment")?
        .execute(params![key.project, key.file, seg_idx, verified])
        .sql_ctx("marking a segment")?;
    if n == 0 {
        return Err(JournalError::UnknownSegment { file: key, seg_idx });
    }
    Ok(())
}

/// Appends an event.
pub(super) fn record_event(
    conn: &Connection,
    level: EventLevel,
    project: Option<&ProjectId>,
    file: Option<&FileId>,
    message: &str,
) -> Result<(), JournalError> {
    conn.prepare_cached(
        "INSERT INTO events (ts_ms, level, project_id, file_id, message) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .sql_ctx("recording an event")?
    .execute(params![now_ms(), level, project, file, message])
    .sql_ctx("recording an event")?;
    Ok(())
}

/// Deletes the events beyond the newest [`MAX_EVENTS`].
pub(super) fn prune_events(conn: &Connection) -> Result<(), rusqlite::Error> {
    conn.execute(
        "DELETE FROM events WHERE id <= (SELECT max(id) FROM events) - ?1",
        params![MAX_EVENTS],
    )?;
    Ok(())
}

/// Records the start of a run by this process; returns its id.
pub(super) fn start_run(conn: &Connection, command: &str) -> Result<i64, JournalError> {
    conn.prepare_cached(
        "INSERT INTO runs (started_ms, version, command, pid) VALUES (?1, ?2, ?3, ?4) \
         RETURNING id",
    )
    .sql_ctx("starting a run")?
    .query_row(
        params![
            now_ms(),
            env!("CARGO_PKG_VERSION"),
            command,
            std::process::id()
        ],
        |r| r.get(0),
    )
    .sql_ctx("starting a run")
}

/// Records the end of a run.
pub(super) fn end_run(conn: &Connection, run: i64, outcome: &str) -> Result<(), JournalError> {
    conn.prepare_cached("UPDATE runs SET ended_ms = ?2, outcome = ?3 WHERE id = ?1")
        .sql_ctx("ending a run")?
        .execute(params![run, now_ms(), outcome])
        .sql_ctx("ending a run")?;
    Ok(())
}

/// Appends an audit record; returns it as stored.
pub(super) fn insert_audit_row(
    conn: &Connection,
    rec: &NewAudit,
) -> Result<AuditRow, JournalError> {
    let size = rec.size.map(sql_u64).transpose()?;
    let ts_ms = now_ms();
    let id = conn
        .prepare_cached(
            "INSERT INTO audit (ts_ms, action, project_id, file_id, identity, size, sha256, detail) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) RETURNING id",
        )
        .sql_ctx("writing an audit record")?
        .query_row(
            params![
                ts_ms,
                rec.action,
                rec.project_id,
                rec.file_id,
                rec.identity,
                size,
                rec.sha256,
                rec.detail
            ],
            |r| r.get(0),
        )
        .sql_ctx("writing an audit record")?;
    Ok(AuditRow {
        id,
        ts_ms,
        action: rec.action.as_str().to_owned(),
        project_id: rec.project_id.clone(),
        file_id: rec.file_id.clone(),
        identity: rec.identity.clone(),
        size: rec.size,
        sha256: rec.sha256.clone(),
        detail: rec.detail.clone(),
    })
}

/// The file done and its audit record; returns the record.
pub(super) fn mark_done_audited(
    conn: &Connection,
    key: FileKey,
    state: FileState,
    sha256: &str,
    audit: &NewAudit,
) -> Result<AuditRow, JournalError> {
    mark_done(conn, key, state, sha256)?;
    insert_audit_row(conn, audit)
}

/// The chunks' final progress, the segments with a checksum verified (when `state` is
/// `Verified`), the file done and its audit record; returns the record.
pub(super) fn finish_file(
    conn: &Connection,
    key: FileKey,
    state: FileState,
    sha256: &str,
    chunks: Vec<(u32, u64, u32)>,
    audit: &NewAudit,
) -> Result<AuditRow, JournalError> {
    for (chunk_idx, done_bytes, crc32c) in chunks {
        chunk_progress(conn, key.clone(), chunk_idx, done_bytes, crc32c)?;
    }
    if state == FileState::Verified {
        conn.prepare_cached(
            "UPDATE segments SET verified = 1 \
             WHERE project_id = ?1 AND file_id = ?2 AND expect IS NOT NULL",
        )
        .sql_ctx("marking segments")?
        .execute(params![key.project, key.file])
        .sql_ctx("marking segments")?;
    }
    mark_done(conn, key, state, sha256)?;
    insert_audit_row(conn, audit)
}

/// Deletes a project's rows (and its inbox requests) and appends the audit record.
pub(super) fn delete_project(
    conn: &Connection,
    project: &ProjectId,
    audit: &NewAudit,
) -> Result<DeletedRows, JournalError> {
    let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
    let del = |sql: &str| -> Result<u64, JournalError> {
        conn.prepare_cached(sql)
            .sql_ctx("deleting a project")?
            .execute(params![project])
            .map(count)
            .sql_ctx("deleting a project")
    };
    let chunks = del("DELETE FROM chunks WHERE project_id = ?1")?;
    let segments = del("DELETE FROM segments WHERE project_id = ?1")?;
    let files = del("DELETE FROM files WHERE project_id = ?1")?;
    let events = del("DELETE FROM events WHERE project_id = ?1")?;
    // The daemon must not bring a purged project back from an old inbox request.
    del("DELETE FROM requests WHERE project_id = ?1")?;
    let projects = del("DELETE FROM projects WHERE id = ?1")?;
    if projects == 0 {
        return Err(JournalError::UnknownProject(project.clone()));
    }
    let audit_id = insert_audit_row(conn, audit)?.id;
    Ok(DeletedRows {
        files,
        segments,
        chunks,
        events,
        audit_id,
    })
}

/// Changes a file's local path.
pub(super) fn set_rel_path(
    conn: &Connection,
    key: FileKey,
    rel_path: &str,
) -> Result<(), JournalError> {
    let n = conn
        .prepare_cached(
            "UPDATE files SET rel_path = ?3, updated_ms = ?4 \
             WHERE project_id = ?1 AND file_id = ?2",
        )
        .sql_ctx("setting a file path")?
        .execute(params![key.project, key.file, rel_path, now_ms()])
        .sql_ctx("setting a file path")?;
    known_file(n, key)
}

/// Writes the one `daemon` row (`updated_ms` now).
pub(super) fn put_daemon(conn: &Connection, row: &DaemonRow) -> Result<(), JournalError> {
    conn.prepare_cached(
        "INSERT OR REPLACE INTO daemon (id, pid, started_ms, updated_ms, state, status, \
         last_discovery_ms, last_error, last_error_ms, stopped_ms, bytes_per_s, live) \
         VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )
    .sql_ctx("recording the daemon state")?
    .execute(params![
        row.pid,
        row.started_ms,
        now_ms(),
        row.state,
        row.status,
        row.last_discovery_ms,
        row.last_error,
        row.last_error_ms,
        row.stopped_ms,
        row.bytes_per_s,
        row.live.to_json()
    ])
    .sql_ctx("recording the daemon state")?;
    Ok(())
}

/// Records inbox requests (a whole project as an empty `file_id`); known ones are kept.
pub(super) fn add_requests(
    conn: &Connection,
    reqs: Vec<(ProjectId, Option<FileId>)>,
) -> Result<(), JournalError> {
    let mut stmt = conn
        .prepare_cached(
            "INSERT OR IGNORE INTO requests (project_id, file_id, ts_ms) VALUES (?1, ?2, ?3)",
        )
        .sql_ctx("recording inbox requests")?;
    let now = now_ms();
    for (p, f) in reqs {
        let f = f.map(|f| f.as_str().to_owned()).unwrap_or_default();
        stmt.execute(params![p, f, now])
            .sql_ctx("recording inbox requests")?;
    }
    Ok(())
}

/// Records a pause (`by`: who) or its end (`None`) of `project` (`None`: every project, the
/// row `*`). Resuming every project also ends each project's own pause.
pub(super) fn set_paused(
    conn: &Connection,
    project: Option<&ProjectId>,
    by: Option<&str>,
) -> Result<(), JournalError> {
    let key = project.map_or("*", |p| p.as_str());
    match by {
        Some(user) => conn
            .execute(
                "INSERT OR REPLACE INTO paused (project_id, ts_ms, by_user) VALUES (?1, ?2, ?3)",
                params![key, now_ms(), user],
            )
            .map(|_| ())
            .sql_ctx("recording a pause")?,
        None if project.is_none() => conn
            .execute("DELETE FROM paused", [])
            .map(|_| ())
            .sql_ctx("recording a resume")?,
        None => conn
            .execute("DELETE FROM paused WHERE project_id = ?1", params![key])
            .map(|_| ())
            .sql_ctx("recording a resume")?,
    }
    Ok(())
}

/// `UnknownFile` when the statement changed no row.
fn known_file(n_changed: usize, key: FileKey) -> Result<(), JournalError> {
    if n_changed == 0 {
        Err(JournalError::UnknownFile(key))
    } else {
        Ok(())
    }
}
