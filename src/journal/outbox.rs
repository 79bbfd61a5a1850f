//! The notification outbox: each event is recorded (`notifications`) with one delivery row
//! per sink (`outbox`) in the same transaction, before anything is sent; a delivery row is
//! deleted once its sink took the event, or pushed back with its attempt count and error.
//! `notify_sinks` counts per sink what was delivered and what was dropped.
//!
//! Bounds: a sink holds at most the `limit` given at recording; the oldest deliveries beyond
//! it are dropped and counted. Notifications no delivery row refers to are pruned beyond the
//! newest [`MAX_NOTIFICATIONS`]. The writes run on the writer thread (`Op::Outbox`); the
//! reads on either connection. This file holds the outbox's rows and its SQL, nothing else.

use rusqlite::{params, Connection};

use super::{JournalError, SqlContext as _};
use crate::clock::now_ms;
use crate::model::ProjectId;

/// Delivered notifications kept for history (the ones still pending are always kept).
pub const MAX_NOTIFICATIONS: i64 = 1000;

/// An event to record, with the sinks it goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewNotification {
    /// The event id receivers de-duplicate on.
    pub id: String,
    /// The event kind (`project-complete`, ...).
    pub kind: String,
    /// The project it is about.
    pub project: Option<ProjectId>,
    /// The JSON body, as sent.
    pub body: String,
    /// The sinks to deliver it to.
    pub sinks: Vec<String>,
    /// Most deliveries a sink may hold; the oldest beyond are dropped.
    pub limit: u64,
}

/// A write to the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutboxWrite {
    /// Record an event and its deliveries.
    Record(NewNotification),
    /// `sink` took `event_id`.
    Delivered {
        /// The event.
        event_id: String,
        /// The sink.
        sink: String,
    },
    /// `sink` did not take `event_id`: try again at `next_ms`.
    Retry {
        /// The event.
        event_id: String,
        /// The sink.
        sink: String,
        /// When to try again, ms since the epoch.
        next_ms: i64,
        /// Why it failed (never a secret).
        error: String,
    },
    /// Drop (and count as dropped) the deliveries of every sink not in `keep`: sinks a
    /// reload or restart removed or changed.
    KeepSinks {
        /// The sinks in force.
        keep: Vec<String>,
    },
}

/// One pending delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    /// The event id.
    pub event_id: String,
    /// The sink.
    pub sink: String,
    /// The event kind.
    pub kind: String,
    /// The JSON body.
    pub body: String,
    /// Failed attempts so far.
    pub attempts: u32,
    /// When it is due, ms since the epoch.
    pub next_ms: i64,
}

/// What one sink has been through.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SinkCounts {
    /// The sink.
    pub sink: String,
    /// Events it took.
    pub delivered: u64,
    /// Events dropped because its queue was full.
    pub dropped: u64,
    /// Events waiting for it.
    pub pending: u64,
}

/// Applies one write (on the writer thread).
pub(super) fn write(conn: &Connection, w: OutboxWrite) -> Result<(), JournalError> {
    match w {
        OutboxWrite::Record(n) => record(conn, n),
        OutboxWrite::Delivered { event_id, sink } => {
            conn.execute(
                "DELETE FROM outbox WHERE event_id = ?1 AND sink = ?2",
                params![event_id, sink],
            )
            .sql_ctx("recording a delivery")?;
            bump(conn, &sink, "delivered", 1)
        }
        OutboxWrite::Retry {
            event_id,
            sink,
            next_ms,
            error,
        } => {
            conn.execute(
                "UPDATE outbox SET attempts = attempts + 1, next_ms = ?3, last_error = ?4 \
                 WHERE event_id = ?1 AND sink = ?2",
                params![event_id, sink, next_ms, error],
            )
            .sql_ctx("recording a failed delivery")?;
            Ok(())
        }
        OutboxWrite::KeepSinks { keep } => {
            let gone: Vec<(String, i64)> = conn
                .prepare_cached("SELECT sink, count(*) FROM outbox GROUP BY sink")
                .sql_ctx("reading the outbox")?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .sql_ctx("reading the outbox")?
                .collect::<Result<Vec<_>, _>>()
                .sql_ctx("reading the outbox")?
                .into_iter()
                .filter(|(sink, _)| !keep.contains(sink))
                .collect();
            for (sink, n) in gone {
                conn.execute("DELETE FROM outbox WHERE sink = ?1", params![sink])
                    .sql_ctx("dropping a removed sink's deliveries")?;
                bump(conn, &sink, "dropped", n)?;
            }
            Ok(())
        }
    }
}

fn bump(conn: &Connection, sink: &str, column: &str, n: i64) -> Result<(), JournalError> {
    // `column` is one of two literals of this file, never input.
    let sql = format!(
        "INSERT INTO notify_sinks (sink, {column}) VALUES (?1, ?2) \
         ON CONFLICT(sink) DO UPDATE SET {column} = {column} + excluded.{column}"
    );
    conn.execute(&sql, params![sink, n])
        .sql_ctx("counting deliveries")?;
    Ok(())
}

fn record(conn: &Connection, n: NewNotification) -> Result<(), JournalError> {
    let now = now_ms();
    conn.execute(
        "INSERT INTO notifications (id, ts_ms, kind, project_id, body) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![n.id, now, n.kind, n.project, n.body],
    )
    .sql_ctx("recording a notification")?;
    let limit = i64::try_from(n.limit).unwrap_or(i64::MAX);
    for sink in &n.sinks {
        conn.execute(
            "INSERT INTO outbox (event_id, sink, seq, next_ms) \
             VALUES (?1, ?2, (SELECT coalesce(max(seq), 0) + 1 FROM outbox), ?3)",
            params![n.id, sink, now],
        )
        .sql_ctx("queueing a notification")?;
        let dropped = conn
            .execute(
                "DELETE FROM outbox WHERE sink = ?1 AND seq NOT IN \
                 (SELECT seq FROM outbox WHERE sink = ?1 ORDER BY seq DESC LIMIT ?2)",
                params![sink, limit],
            )
            .sql_ctx("bounding the outbox")?;
        if dropped > 0 {
            bump(conn, sink, "dropped", dropped as i64)?;
        }
    }
    conn.execute(
        "DELETE FROM notifications WHERE id NOT IN (SELECT event_id FROM outbox) \
         AND ts_ms < (SELECT min(ts_ms) FROM (SELECT ts_ms FROM notifications \
                      ORDER BY ts_ms DESC LIMIT ?1))",
        params![MAX_NOTIFICATIONS],
    )
    .sql_ctx("pruning notifications")?;
    Ok(())
}

/// The oldest `limit` deliveries of `sink`, in order (due or not: the sink delivers them in
/// this order, so a delivery waiting for its retry holds the later ones back).
pub(super) fn head(
    conn: &Connection,
    sink: &str,
    limit: u32,
) -> Result<Vec<OutboxRow>, JournalError> {
    conn.prepare_cached(
        "SELECT o.event_id, o.sink, n.kind, n.body, o.attempts, o.next_ms \
         FROM outbox o JOIN notifications n ON n.id = o.event_id \
         WHERE o.sink = ?1 ORDER BY o.seq LIMIT ?2",
    )
    .sql_ctx("reading the outbox")?
    .query_map(params![sink, limit], |r| {
        Ok(OutboxRow {
            event_id: r.get(0)?,
            sink: r.get(1)?,
            kind: r.get(2)?,
            body: r.get(3)?,
            attempts: r.get(4)?,
            next_ms: r.get(5)?,
        })
    })
    .sql_ctx("reading the outbox")?
    .collect::<Result<Vec<_>, _>>()
    .sql_ctx("reading the outbox")
}

/// Every sink's counts, by sink.
pub(crate) fn counts(conn: &Connection) -> Result<Vec<SinkCounts>, JournalError> {
    conn.prepare_cached(
        "SELECT s.sink, s.delivered, s.dropped, \
                (SELECT count(*) FROM outbox o WHERE o.sink = s.sink) \
         FROM (SELECT sink, delivered, dropped FROM notify_sinks \
               UNION SELECT DISTINCT sink, 0, 0 FROM outbox \
               WHERE sink NOT IN (SELECT sink FROM notify_sinks)) s ORDER BY s.sink",
    )
    .sql_ctx("reading the outbox counts")?
    .query_map([], |r| {
        Ok(SinkCounts {
            sink: r.get(0)?,
            delivered: r.get::<_, i64>(1)?.max(0) as u64,
            dropped: r.get::<_, i64>(2)?.max(0) as u64,
            pending: r.get::<_, i64>(3)?.max(0) as u64,
        })
    })
    .sql_ctx("reading the outbox counts")?
    .collect::<Result<Vec<_>, _>>()
    .sql_ctx("reading the outbox counts")
}

/// Every recorded notification (id, kind, body), oldest first: for `status` and tests.
pub(crate) fn notifications(
    conn: &Connection,
) -> Result<Vec<(String, String, String)>, JournalError> {
    conn.prepare_cached("SELECT id, kind, body FROM notifications ORDER BY ts_ms, rowid")
        .sql_ctx("reading notifications")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .sql_ctx("reading notifications")?
        .collect::<Result<Vec<_>, _>>()
        .sql_ctx("reading notifications")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::schema::{migrate, open_writer};

    fn event(id: &str, sinks: &[&str], limit: u64) -> OutboxWrite {
        OutboxWrite::Record(NewNotification {
            id: id.into(),
            kind: "stalled".into(),
            project: None,
            body: format!("{{\"id\":\"{id}\"}}"),
            sinks: sinks.iter().map(|s| (*s).to_owned()).collect(),
            limit,
        })
    }

    fn ids(conn: &Connection, sink: &str) -> Vec<String> {
        head(conn, sink, 100)
            .unwrap()
            .into_iter()
            .map(|r| r.event_id)
            .collect()
    }

    #[test]
    fn a_full_queue_drops_its_oldest_and_a_removed_sink_its_all() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.sqlite3");
        let mut conn = open_writer(&path).unwrap();
        migrate(&mut conn, &path).unwrap();
        for id in ["e1", "e2", "e3"] {
            write(&conn, event(id, &["a", "b"], 2)).unwrap();
        }
        // Each sink keeps its newest two, in order; the oldest is counted as dropped.
        assert_eq!(ids(&conn, "a"), ["e2", "e3"]);
        assert_eq!(ids(&conn, "b"), ["e2", "e3"]);
        write(
            &conn,
            OutboxWrite::Retry {
                event_id: "e2".into(),
                sink: "a".into(),
                next_ms: 7,
                error: "down".into(),
            },
        )
        .unwrap();
        let h = head(&conn, "a", 1).unwrap();
        assert_eq!((h[0].attempts, h[0].next_ms), (1, 7));
        write(
            &conn,
            OutboxWrite::Delivered {
                event_id: "e2".into(),
                sink: "a".into(),
            },
        )
        .unwrap();
        assert_eq!(ids(&conn, "a"), ["e3"]);
        // `b` is no longer configured: its two pending events are dropped.
        write(
            &conn,
            OutboxWrite::KeepSinks {
                keep: vec!["a".into()],
            },
        )
        .unwrap();
        assert!(ids(&conn, "b").is_empty());
        let c = counts(&conn).unwrap();
        let by = |s: &str| c.iter().find(|c| c.sink == s).cloned().unwrap();
        assert_eq!(
            (by("a").delivered, by("a").dropped, by("a").pending),
            (1, 1, 1)
        );
        assert_eq!(
            (by("b").delivered, by("b").dropped, by("b").pending),
            (0, 3, 0)
        );
        // Every event is still recorded, oldest first (e1 has no delivery left, but is kept
        // for history under MAX_NOTIFICATIONS).
        let n: Vec<String> = notifications(&conn)
            .unwrap()
            .into_iter()
            .map(|(id, _, _)| id)
            .collect();
        assert_eq!(n, ["e1", "e2", "e3"]);
    }
}
