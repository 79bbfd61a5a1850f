//! The journal's schema: the ordered, append-only list of migrations, the `migrate()` that
//! applies them on `PRAGMA user_version`, and the one place connections are set up.
//!
//! Rules (cargo's `util/sqlite.rs`): never edit or reorder an entry of [`migrations`]; a
//! change is a new entry appended at the end. New columns must be NULL-able or have a default.
//! This module must not know about rows or states beyond the DDL that stores them.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use super::{JournalError, SqlContext as _};

/// How long a connection waits for a lock held by another connection before giving up.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// The migrations, in order. Entry `n` takes the journal from `user_version` `n` to `n + 1`.
pub(crate) fn migrations() -> &'static [&'static str] {
    &[
        // 1: the initial schema.
        r#"
        CREATE TABLE projects (
            id                  TEXT PRIMARY KEY NOT NULL,
            name                TEXT NOT NULL,
            dir_name            TEXT UNIQUE,
            download_restricted INTEGER NOT NULL DEFAULT 0,
            state               TEXT NOT NULL,
            reason              TEXT,
            first_seen_ms       INTEGER NOT NULL,
            last_listed_ms      INTEGER
        ) STRICT;

        CREATE TABLE files (
            project_id     TEXT NOT NULL REFERENCES projects(id),
            file_id        TEXT NOT NULL,
            folder         TEXT NOT NULL,
            name           TEXT NOT NULL,
            size           INTEGER NOT NULL,
            remote_state   TEXT NOT NULL,
            archival_state TEXT NOT NULL,
            created_ms     INTEGER NOT NULL,
            modified_ms    INTEGER NOT NULL,
            parts_json     TEXT,
            drive          TEXT,
            md5            TEXT,
            checksum_type  TEXT,
            kind           TEXT,
            rel_path       TEXT NOT NULL,
            state          TEXT NOT NULL,
            reason         TEXT,
            attempts       INTEGER NOT NULL DEFAULT 0,
            sha256         TEXT,
            done_ms        INTEGER,
            updated_ms     INTEGER NOT NULL,
            last_seen_ms   INTEGER NOT NULL,
            PRIMARY KEY (project_id, file_id)
        ) STRICT;
        CREATE INDEX files_by_project_state ON files(project_id, state);
        CREATE INDEX files_by_state ON files(state, updated_ms);

        CREATE TABLE segments (
            project_id TEXT NOT NULL,
            file_id    TEXT NOT NULL,
            seg_idx    INTEGER NOT NULL,
            "offset"   INTEGER NOT NULL,
            len        INTEGER NOT NULL,
            part_index INTEGER,
            expect     TEXT,
            verified   INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (project_id, file_id, seg_idx),
            FOREIGN KEY (project_id, file_id) REFERENCES files(project_id, file_id)
                ON DELETE CASCADE
        ) STRICT, WITHOUT ROWID;

        CREATE TABLE chunks (
            project_id TEXT NOT NULL,
            file_id    TEXT NOT NULL,
            chunk_idx  INTEGER NOT NULL,
            seg_idx    INTEGER NOT NULL,
            "offset"   INTEGER NOT NULL,
            len        INTEGER NOT NULL,
            done_bytes INTEGER NOT NULL DEFAULT 0,
            crc32c     INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (project_id, file_id, chunk_idx),
            FOREIGN KEY (project_id, file_id, seg_idx)
                REFERENCES segments(project_id, file_id, seg_idx) ON DELETE CASCADE
        ) STRICT, WITHOUT ROWID;
        CREATE INDEX chunks_by_segment ON chunks(project_id, file_id, seg_idx);

        CREATE TABLE events (
            id         INTEGER PRIMARY KEY,
            ts_ms      INTEGER NOT NULL,
            level      TEXT NOT NULL,
            project_id TEXT,
            file_id    TEXT,
            message    TEXT NOT NULL
        ) STRICT;

        CREATE TABLE runs (
            id         INTEGER PRIMARY KEY,
            started_ms INTEGER NOT NULL,
            ended_ms   INTEGER,
            version    TEXT NOT NULL,
            command    TEXT NOT NULL,
            pid        INTEGER NOT NULL,
            outcome    TEXT
        ) STRICT;
        "#,
        // 2: the append-only audit trail (purges now; issue 5 adds more actions). No foreign
        // key: a record outlives the project it describes. Triggers refuse UPDATE and DELETE.
        r#"
        CREATE TABLE audit (
            id         INTEGER PRIMARY KEY,
            ts_ms      INTEGER NOT NULL,
            action     TEXT NOT NULL,
            project_id TEXT NOT NULL,
            file_id    TEXT,
            identity   TEXT,
            size       INTEGER,
            sha256     TEXT,
            detail     TEXT NOT NULL
        ) STRICT;
        CREATE INDEX audit_by_time ON audit(ts_ms);
        CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
            BEGIN SELECT RAISE(ABORT, 'the audit table is append-only'); END;
        CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
            BEGIN SELECT RAISE(ABORT, 'the audit table is append-only'); END;
        "#,
        // 3: the daemon's state, one row (`dxmirror status` shows it).
        r#"
        CREATE TABLE daemon (
            id                INTEGER PRIMARY KEY CHECK (id = 1),
            pid               INTEGER NOT NULL,
            started_ms        INTEGER NOT NULL,
            updated_ms        INTEGER NOT NULL,
            state             TEXT NOT NULL,
            status            TEXT,
            last_discovery_ms INTEGER,
            last_error        TEXT,
            last_error_ms     INTEGER,
            stopped_ms        INTEGER,
            bytes_per_s       INTEGER
        ) STRICT;
        -- Work dropped in the daemon's inbox: a whole project (file_id '') or single files.
        CREATE TABLE requests (
            project_id TEXT NOT NULL,
            file_id    TEXT NOT NULL,
            ts_ms      INTEGER NOT NULL,
            PRIMARY KEY (project_id, file_id)
        ) STRICT, WITHOUT ROWID;
        "#,
        // 4: the backing object's ETag of a drive-backed file (`symlinkTargetIdentifier`), as
        // listed: the version its plan and progress are pinned to.
        r#"
        ALTER TABLE files ADD COLUMN etag TEXT;
        "#,
        // 5: the daemon's live figures for `status` (per-project rates, last progress, and
        // what later issues add), one JSON object (`DaemonLive`), so adding a figure needs no
        // migration.
        r#"
        ALTER TABLE daemon ADD COLUMN live TEXT;
        "#,
        // 6: the notification outbox (issue 15): each event recorded before it is sent, one
        // delivery row per sink until the sink took it, and per-sink counts.
        r#"
        CREATE TABLE notifications (
            id         TEXT PRIMARY KEY NOT NULL,
            ts_ms      INTEGER NOT NULL,
            kind       TEXT NOT NULL,
            project_id TEXT,
            body       TEXT NOT NULL
        ) STRICT;
        CREATE TABLE outbox (
            event_id   TEXT NOT NULL REFERENCES notifications(id) ON DELETE CASCADE,
            sink       TEXT NOT NULL,
            seq        INTEGER NOT NULL UNIQUE,
            attempts   INTEGER NOT NULL DEFAULT 0,
            next_ms    INTEGER NOT NULL,
            last_error TEXT,
            PRIMARY KEY (event_id, sink)
        ) STRICT, WITHOUT ROWID;
        CREATE INDEX outbox_by_sink ON outbox(sink, seq);
        CREATE TABLE notify_sinks (
            sink      TEXT PRIMARY KEY NOT NULL,
            delivered INTEGER NOT NULL DEFAULT 0,
            dropped   INTEGER NOT NULL DEFAULT 0
        ) STRICT;
        "#,
        // 7: projects paused through the control socket (`dxmirror pause`), so that they stay
        // paused across a restart: one row per project, project_id '*' for `--all`; who
        // paused it and when.
        r#"
        CREATE TABLE paused (
            project_id TEXT PRIMARY KEY NOT NULL,
            ts_ms      INTEGER NOT NULL,
            by_user    TEXT NOT NULL
        ) STRICT, WITHOUT ROWID;
        "#,
    ]
}

/// The schema version this build writes and reads (the number of migrations).
pub(crate) fn current_version() -> i64 {
    migrations().len() as i64
}

/// Brings the journal up to [`current_version`] inside one EXCLUSIVE transaction, so two
/// processes racing to migrate cannot both apply an entry. Refuses a newer journal.
pub(crate) fn migrate(conn: &mut Connection, path: &Path) -> Result<(), JournalError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Exclusive)
        .map_err(|e| not_a_database(path, e))?;
    let found: i64 = tx
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| not_a_database(path, e))?;
    let supported = current_version();
    if found > supported {
        return Err(JournalError::TooNew {
            path: path.to_owned(),
            found,
            supported,
        });
    }
    if found < 0 {
        return Err(JournalError::NotADatabase {
            path: path.to_owned(),
            detail: format!("negative schema version {found}"),
        });
    }
    for (n, sql) in migrations().iter().enumerate().skip(found as usize) {
        tx.execute_batch(sql).sql_ctx("applying a migration")?;
        tracing::info!(version = n + 1, "journal migrated");
    }
    if found != supported {
        tx.pragma_update(None, "user_version", supported)
            .sql_ctx("setting user_version")?;
    }
    tx.commit().sql_ctx("committing migrations")
}

/// Maps an error from the first statements run on a file: `SQLITE_NOTADB` and friends mean
/// the file is not a journal; anything else is passed through.
pub(crate) fn not_a_database(path: &Path, e: rusqlite::Error) -> JournalError {
    use rusqlite::ffi::ErrorCode;
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) | Some(ErrorCode::DatabaseCorrupt) => {
            JournalError::NotADatabase {
                path: path.to_owned(),
                detail: e.to_string(),
            }
        }
        _ => JournalError::Sqlite {
            op: "opening the journal",
            source: e,
        },
    }
}

/// Opens the read-write connection the writer thread owns: creates the file, checks it is a
/// healthy SQLite database, switches to WAL and migrates.
/// Creates the journal file 0640 if it is missing, and takes away any access by others from an
/// existing one.
fn restrict_mode(path: &Path) -> Result<(), JournalError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let io = |e: std::io::Error| JournalError::NotADatabase {
        path: path.to_owned(),
        detail: format!("cannot create or protect the file: {e}"),
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o640)
        .open(path)
        .map_err(io)?;
    let mode = file.metadata().map_err(io)?.permissions().mode();
    if mode & 0o007 != 0 {
        file.set_permissions(std::fs::Permissions::from_mode(mode & 0o770))
            .map_err(io)?;
    }
    Ok(())
}

pub(crate) fn open_writer(path: &Path) -> Result<Connection, JournalError> {
    // The journal names controlled-access files: it is created (and kept) 0640, and SQLite
    // gives its -wal and -shm files the database file's mode.
    restrict_mode(path)?;
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut conn = Connection::open_with_flags(path, flags).map_err(|e| not_a_database(path, e))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .sql_ctx("setting busy_timeout")?;
    // The first read of the file: a non-database fails here with SQLITE_NOTADB.
    let check: String = conn
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(|e| not_a_database(path, e))?;
    if check != "ok" {
        return Err(JournalError::NotADatabase {
            path: path.to_owned(),
            detail: format!("quick_check: {check}"),
        });
    }
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(|e| not_a_database(path, e))?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(journal_mode = %mode, "journal could not switch to WAL");
    }
    conn.pragma_update(None, "synchronous", "NORMAL")
        .sql_ctx("setting synchronous")?;
    conn.pragma_update(None, "foreign_keys", true)
        .sql_ctx("enabling foreign keys")?;
    conn.pragma_update(None, "cache_size", -32_768)
        .sql_ctx("setting cache_size")?;
    conn.set_prepared_statement_cache_capacity(64);
    migrate(&mut conn, path)?;
    Ok(conn)
}

/// Opens a read-only connection (`SQLITE_OPEN_READ_ONLY`) and checks the schema version is
/// exactly the one this build knows: a newer one is refused, an older one must first be
/// migrated by a writing command (a reader never writes).
pub(crate) fn open_reader(path: &Path) -> Result<Connection, JournalError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| not_a_database(path, e))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .sql_ctx("setting busy_timeout")?;
    conn.pragma_update(None, "foreign_keys", true)
        .sql_ctx("enabling foreign keys")?;
    conn.set_prepared_statement_cache_capacity(32);
    let found: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| not_a_database(path, e))?;
    let supported = current_version();
    if found > supported {
        return Err(JournalError::TooNew {
            path: path.to_owned(),
            found,
            supported,
        });
    }
    if found < supported {
        return Err(JournalError::TooOld {
            path: path.to_owned(),
            found,
            supported,
        });
    }
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrate_twice_is_a_no_op() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.sqlite3");
        let mut conn = open_writer(&path).unwrap();
        migrate(&mut conn, &path).unwrap();
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, current_version());
        let n_tables: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n_tables, 13);
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }

    #[test]
    fn a_version_1_journal_gains_the_daemon_table() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.sqlite3");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(migrations()[0]).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
        }
        let conn = open_writer(&path).unwrap();
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, current_version());
        let n: i64 = conn
            .query_row("SELECT count(*) FROM daemon", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 0);
    }

    #[test]
    fn newer_version_is_refused_by_writer_and_reader() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.sqlite3");
        {
            let conn = open_writer(&path).unwrap();
            conn.pragma_update(None, "user_version", current_version() + 7)
                .unwrap();
        }
        let err = open_writer(&path).unwrap_err();
        assert!(
            matches!(err, JournalError::TooNew { found, .. } if found == current_version() + 7)
        );
        let msg = err.to_string();
        assert!(msg.contains(&(current_version() + 7).to_string()), "{msg}");
        assert!(msg.contains(&current_version().to_string()), "{msg}");
        assert!(matches!(
            open_reader(&path).unwrap_err(),
            JournalError::TooNew { .. }
        ));
    }

    #[test]
    fn reader_refuses_an_unmigrated_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.sqlite3");
        Connection::open(&path)
            .unwrap()
            .execute_batch("CREATE TABLE t(x)")
            .unwrap();
        assert!(matches!(
            open_reader(&path).unwrap_err(),
            JournalError::TooOld { found: 0, .. }
        ));
    }
}
