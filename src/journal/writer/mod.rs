//! The writer thread: owns the read-write connection, takes [`Op`]s over a channel, applies
//! whatever is queued in one transaction (each command in its own savepoint, so one bad
//! command does not undo its neighbours), commits, and only then answers each command.
//!
//! Every [`Op`] carries its own typed reply channel ([`Ack`]); [`apply`] turns an op into a
//! [`Pending`]: its result, held until the batch commits, then sent (or replaced by the
//! failure of the commit). The statements themselves are in `sql.rs`.
//!
//! This is the only code that writes the journal. It must not block on anything but SQLite
//! and its channel, and must never answer before the commit.

mod sql;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rusqlite::{Connection, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};

use super::{
    AuditRow, DaemonRow, DeletedRows, EventLevel, FileKey, FileListing, FileState, JournalError,
    ListingDiff, NewAudit, ProjectRow, MAX_BATCH,
};
use crate::model::{FileId, ProjectId};
use crate::planner::FilePlan;

/// How long the writer keeps draining the queue into one batch.
const MAX_LINGER: Duration = Duration::from_millis(20);

/// Where a command's result goes, once its batch is committed.
pub(crate) type Ack<T> = oneshot::Sender<Result<T, JournalError>>;

/// One write, with the channel its result goes to.
pub(crate) enum Op {
    UpsertProject(ProjectRow, Ack<()>),
    RecordListing {
        project: ProjectId,
        files: Vec<FileListing>,
        ack: Ack<ListingDiff>,
    },
    SetFileState {
        key: FileKey,
        state: FileState,
        reason: Option<String>,
        ack: Ack<()>,
    },
    /// Counts an attempt; answers the new count.
    AddAttempt(FileKey, Ack<u32>),
    /// `AddAttempt`, the state `Fetching` (reason cleared) and, when given, `PutPlan`, at once.
    StartFile {
        key: FileKey,
        plan: Option<FilePlan>,
        ack: Ack<u32>,
    },
    MarkDone {
        key: FileKey,
        state: FileState,
        sha256: String,
        ack: Ack<()>,
    },
    PutPlan {
        key: FileKey,
        plan: FilePlan,
        ack: Ack<()>,
    },
    ChunkProgress {
        key: FileKey,
        chunk_idx: u32,
        done_bytes: u64,
        crc32c: u32,
        ack: Ack<()>,
    },
    ResetChunks {
        key: FileKey,
        chunk_idxs: Vec<u32>,
        ack: Ack<()>,
    },
    ForgetPlan {
        key: FileKey,
        ack: Ack<()>,
    },
    SetSegmentVerified {
        key: FileKey,
        seg_idx: u32,
        verified: bool,
        ack: Ack<()>,
    },
    Event {
        level: EventLevel,
        project: Option<ProjectId>,
        file: Option<FileId>,
        message: String,
        ack: Ack<()>,
    },
    /// Answers the new run's id.
    StartRun {
        command: String,
        ack: Ack<i64>,
    },
    EndRun {
        run: i64,
        outcome: String,
        ack: Ack<()>,
    },
    /// Append an audit record and answer it whole.
    AppendAudit(NewAudit, Ack<AuditRow>),
    /// `MarkDone` and its audit record, atomically; answers the record.
    MarkDoneAudited {
        key: FileKey,
        state: FileState,
        sha256: String,
        audit: NewAudit,
        ack: Ack<AuditRow>,
    },
    /// The chunks' final progress, the segments verified (when `state` is `Verified`),
    /// `MarkDone` and its audit record, atomically; answers the record.
    FinishFile {
        key: FileKey,
        state: FileState,
        sha256: String,
        chunks: Vec<(u32, u64, u32)>,
        audit: NewAudit,
        ack: Ack<AuditRow>,
    },
    /// Delete a project's rows and append the audit record saying so, atomically.
    DeleteProject {
        project: ProjectId,
        audit: NewAudit,
        ack: Ack<DeletedRows>,
    },
    SetRelPath {
        key: FileKey,
        rel_path: String,
        ack: Ack<()>,
    },
    PutDaemon(DaemonRow, Ack<()>),
    Outbox(super::OutboxWrite, Ack<()>),
    AddRequests(Vec<(ProjectId, Option<FileId>)>, Ack<()>),
    /// Pause (`Some(user)`) or resume (`None`) a project (`None`: every project).
    SetPaused {
        project: Option<ProjectId>,
        by: Option<String>,
        ack: Ack<()>,
    },
    /// Commit what came before, answer, and stop.
    Close(Ack<()>),
}

impl Op {
    /// The op answered with `e`, unapplied (its batch could not be started).
    fn refuse(self, e: JournalError) -> Pending {
        match self {
            Op::UpsertProject(_, ack)
            | Op::SetFileState { ack, .. }
            | Op::MarkDone { ack, .. }
            | Op::PutPlan { ack, .. }
            | Op::ChunkProgress { ack, .. }
            | Op::ResetChunks { ack, .. }
            | Op::ForgetPlan { ack, .. }
            | Op::SetSegmentVerified { ack, .. }
            | Op::Event { ack, .. }
            | Op::EndRun { ack, .. }
            | Op::SetRelPath { ack, .. }
            | Op::PutDaemon(_, ack)
            | Op::Outbox(_, ack)
            | Op::AddRequests(_, ack)
            | Op::SetPaused { ack, .. }
            | Op::Close(ack) => Pending::new(ack, Err(e)),
            Op::AddAttempt(_, ack) | Op::StartFile { ack, .. } => Pending::new(ack, Err(e)),
            Op::StartRun { ack, .. } => Pending::new(ack, Err(e)),
            Op::RecordListing { ack, .. } => Pending::new(ack, Err(e)),
            Op::AppendAudit(_, ack)
            | Op::MarkDoneAudited { ack, .. }
            | Op::FinishFile { ack, .. } => Pending::new(ack, Err(e)),
            Op::DeleteProject { ack, .. } => Pending::new(ack, Err(e)),
        }
    }
}

/// A command's result, held until its batch commits, then sent to its caller; a failure
/// after the command was applied (its savepoint, the commit) replaces it.
struct Pending {
    ok: bool,
    failure: Option<JournalError>,
    send: Box<dyn FnOnce(Option<JournalError>) + Send>,
}

impl Pending {
    /// Holds `res` for `ack`.
    fn new<T: Send + 'static>(ack: Ack<T>, res: Result<T, JournalError>) -> Pending {
        Pending {
            ok: res.is_ok(),
            failure: None,
            send: Box::new(move |failure| {
                let res = match failure {
                    Some(e) => Err(e),
                    None => res,
                };
                // A caller that stopped waiting is not an error for the others.
                let _ = ack.send(res);
            }),
        }
    }

    /// Whether the command succeeded (and no later failure replaced its result).
    fn is_ok(&self) -> bool {
        self.ok && self.failure.is_none()
    }

    /// Replaces the result with `e`.
    fn fail(mut self, e: JournalError) -> Pending {
        self.failure = Some(e);
        self
    }

    /// Sends the result to the caller.
    fn send(self) {
        (self.send)(self.failure)
    }
}

/// Counters of the writer thread (for tests, benches and `status`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Transactions committed.
    pub commits: u64,
    /// Commands applied (successfully or not).
    pub commands: u64,
}

/// The live counters behind [`WriterStats`], shared by the writer and the handle.
#[derive(Default)]
pub(crate) struct StatCounters {
    commits: AtomicU64,
    commands: AtomicU64,
}

impl StatCounters {
    /// The counters so far.
    pub(crate) fn snapshot(&self) -> WriterStats {
        WriterStats {
            commits: self.commits.load(Ordering::Relaxed),
            commands: self.commands.load(Ordering::Relaxed),
        }
    }
}

/// The writer loop; returns when the channel closes or after a `Close` command.
pub(crate) fn run(mut conn: Connection, mut rx: mpsc::Receiver<Op>, stats: &StatCounters) {
    while let Some(first) = rx.blocking_recv() {
        let started = Instant::now();
        let mut closing = matches!(first, Op::Close(..));
        let mut batch = vec![first];
        while !closing && batch.len() < MAX_BATCH && started.elapsed() < MAX_LINGER {
            match rx.try_recv() {
                Ok(op) => {
                    closing = matches!(op, Op::Close(..));
                    batch.push(op);
                }
                Err(_) => break,
            }
        }
        let n_commands = batch.len();
        let results = apply_batch(&mut conn, batch);
        stats.commits.fetch_add(1, Ordering::Relaxed);
        stats
            .commands
            .fetch_add(n_commands as u64, Ordering::Relaxed);
        for pending in results {
            pending.send();
        }
        tracing::trace!(
            n_commands,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "journal batch committed"
        );
        if closing {
            break;
        }
    }
    tracing::debug!("journal writer stopped");
}

fn apply_batch(conn: &mut Connection, batch: Vec<Op>) -> Vec<Pending> {
    let mut tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => {
            tracing::warn!(error = %e, "journal transaction could not start");
            let msg = e.to_string();
            return batch
                .into_iter()
                .map(|op| op.refuse(JournalError::CommitFailed(msg.clone())))
                .collect();
        }
    };
    let mut results = Vec::with_capacity(batch.len());
    let mut events_added = false;
    // A lone command needs no savepoint: on error the whole transaction is rolled back. This
    // spares a big listing the statement journal a savepoint keeps of every page it touches.
    let alone = batch.len() == 1;
    for op in batch {
        events_added |= matches!(op, Op::Event { .. });
        if alone {
            let pending = apply(&tx, op);
            if !pending.is_ok() {
                if let Err(e) = tx.rollback() {
                    tracing::warn!(error = %e, "journal rollback failed");
                }
                return vec![pending];
            }
            results.push(pending);
            continue;
        }
        let pending = match tx.savepoint() {
            Ok(mut sp) => {
                let pending = apply(&sp, op);
                let ended = if pending.is_ok() {
                    sp.commit()
                } else {
                    sp.rollback()
                };
                match ended {
                    Ok(()) => pending,
                    Err(e) => pending.fail(JournalError::Sqlite {
                        op: "ending a savepoint",
                        source: e,
                    }),
                }
            }
            Err(e) => op.refuse(JournalError::Sqlite {
                op: "starting a savepoint",
                source: e,
            }),
        };
        results.push(pending);
    }
    if events_added {
        if let Err(e) = sql::prune_events(&tx) {
            tracing::warn!(error = %e, "journal could not prune events");
        }
    }
    if let Err(e) = tx.commit() {
        tracing::warn!(error = %e, "journal commit failed");
        let msg = e.to_string();
        return results
            .into_iter()
            .map(|pending| pending.fail(JournalError::CommitFailed(msg.clone())))
            .collect();
    }
    results
}

/// Applies one op; its result is held for the commit.
fn apply(conn: &Connection, op: Op) -> Pending {
    match op {
        Op::UpsertProject(row, ack) => Pending::new(ack, sql::upsert_project(conn, &row)),
        Op::RecordListing {
            project,
            files,
            ack,
        } => Pending::new(ack, sql::record_listing(conn, &project, files)),
        Op::SetFileState {
            key,
            state,
            reason,
            ack,
        } => Pending::new(ack, sql::set_file_state(conn, key, state, reason)),
        Op::AddAttempt(key, ack) => Pending::new(ack, sql::add_attempt(conn, &key)),
        Op::StartFile { key, plan, ack } => Pending::new(ack, sql::start_file(conn, key, plan)),
        Op::FinishFile {
            key,
            state,
            sha256,
            chunks,
            audit,
            ack,
        } => Pending::new(
            ack,
            sql::finish_file(conn, key, state, &sha256, chunks, &audit),
        ),
        Op::MarkDone {
            key,
            state,
            sha256,
            ack,
        } => Pending::new(ack, sql::mark_done(conn, key, state, &sha256)),
        Op::MarkDoneAudited {
            key,
            state,
            sha256,
            audit,
            ack,
        } => Pending::new(
            ack,
            sql::mark_done_audited(conn, key, state, &sha256, &audit),
        ),
        Op::PutPlan { key, plan, ack } => Pending::new(ack, sql::put_plan(conn, &key, &plan)),
        Op::ChunkProgress {
            key,
            chunk_idx,
            done_bytes,
            crc32c,
            ack,
        } => Pending::new(
            ack,
            sql::chunk_progress(conn, key, chunk_idx, done_bytes, crc32c),
        ),
        Op::ResetChunks {
            key,
            chunk_idxs,
            ack,
        } => Pending::new(ack, sql::reset_chunks(conn, &key, &chunk_idxs)),
        Op::ForgetPlan { key, ack } => Pending::new(ack, sql::forget_plan(conn, &key)),
        Op::SetSegmentVerified {
            key,
            seg_idx,
            verified,
            ack,
        } => Pending::new(ack, sql::set_segment_verified(conn, key, seg_idx, verified)),
        Op::AppendAudit(rec, ack) => Pending::new(ack, sql::insert_audit_row(conn, &rec)),
        Op::DeleteProject {
            project,
            audit,
            ack,
        } => Pending::new(ack, sql::delete_project(conn, &project, &audit)),
        Op::Event {
            level,
            project,
            file,
            message,
            ack,
        } => Pending::new(
            ack,
            sql::record_event(conn, level, project.as_ref(), file.as_ref(), &message),
        ),
        Op::StartRun { command, ack } => Pending::new(ack, sql::start_run(conn, &command)),
        Op::EndRun { run, outcome, ack } => Pending::new(ack, sql::end_run(conn, run, &outcome)),
        Op::SetRelPath { key, rel_path, ack } => {
            Pending::new(ack, sql::set_rel_path(conn, key, &rel_path))
        }
        Op::AddRequests(reqs, ack) => Pending::new(ack, sql::add_requests(conn, reqs)),
        Op::SetPaused { project, by, ack } => {
            Pending::new(ack, sql::set_paused(conn, project.as_ref(), by.as_deref()))
        }
        Op::PutDaemon(row, ack) => Pending::new(ack, sql::put_daemon(conn, &row)),
        Op::Outbox(w, ack) => Pending::new(ack, super::outbox::write(conn, w)),
        Op::Close(ack) => Pending::new(ack, Ok(())),
    }
}
