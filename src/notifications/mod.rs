//! Notifications: the events an operator is told about (`Kind`), their JSON body (a
//! documented, versioned schema), the outbox every event goes through, and the edge detector
//! that turns a condition seen again and again (a refused token, a full disk) into one event
//! per change.
//!
//! An event is recorded in the journal's outbox with one delivery row per sink *before* it is
//! sent ([`Notifications::send`]); each sink's task (`sink.rs`) delivers its rows in order,
//! deletes each once taken and retries the others with a backoff, so delivery is at least
//! once and survives a restart; the event id lets a receiver drop duplicates. Sinks are
//! webhooks (optionally HMAC-SHA256 signed), healthchecks-style pings and commands run
//! without a shell.
//!
//! It must not decide what the daemon does: the daemon says what happened; this module only
//! records and delivers it. Sink tasks never hold up a transfer: they run on their own and
//! the outbox they read is bounded per sink (`queue-limit`, dropped events counted).

mod sink;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;
use tracing::{debug, warn};

use crate::config::NotifyConfig;
use crate::journal::{Journal, JournalError, NewNotification, OutboxWrite};
use crate::model::{FileId, ProjectId};

pub use sink::{signature, Sink, SinkKind};

/// The version of the JSON body's schema (`schema_version`).
pub const SCHEMA_VERSION: u32 = 1;

/// A sink could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// A webhook's secret could not be read.
    #[error("notify webhook secret {path}: {message}")]
    Secret {
        /// The file (or credential) tried.
        path: PathBuf,
        /// Why (never the secret).
        message: String,
    },
    /// The outbox could not be written.
    #[error(transparent)]
    Journal(JournalError),
    /// The HTTP client could not be built.
    #[error("cannot build the webhook HTTP client: {0}")]
    Client(String),
}

macro_rules! kinds {
    ($($variant:ident => $word:literal: $doc:literal,)*) => {
        /// What an event is about.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Kind {
            $(#[doc = $doc] $variant,)*
        }

        impl Kind {
            /// Every kind.
            pub const ALL: &'static [Kind] = &[$(Kind::$variant,)*];

            /// The word of the body's `kind`, `DXMIRROR_EVENT` and `[notify] disabled`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Kind::$variant => $word,)*
                }
            }
        }
    };
}

kinds! {
    ProjectComplete => "project-complete": "Every eligible file of a project is mirrored (sent when a pass published files and left none to do).",
    FileFailed => "file-failed": "A file ended failed in a pass.",
    FileCorrupt => "file-corrupt": "A file kept failing its checksums and was quarantined.",
    FileFlagged => "file-flagged": "The platform flagged a file (reserved: no emitter yet).",
    VerifyFindings => "verify-findings": "The scheduled verification found damage.",
    TokenRefused => "token-refused": "The API token was refused: no transfer runs.",
    TokenAccepted => "token-accepted": "The API token is accepted again after a refusal.",
    ProjectInaccessible => "project-inaccessible": "A project can no longer be read.",
    ProjectGone => "project-gone": "A project no longer exists.",
    AccessExpiring => "access-expiring": "A project's access-expires date is 30 days away or less.",
    AccessExpired => "access-expired": "A project's access-expires date has passed.",
    AccessHeld => "access-held": "A project whose access expired is held (on-access-expired = hold, or purge before its day): no fetching, the copy kept.",
    AccessPurged => "access-purged": "The local copy of a project whose access expired was deleted (on-access-expired = purge).",
    AccessPurgeFailed => "access-purge-failed": "Deleting the local copy of a project whose access expired failed.",
    Stalled => "stalled": "No byte arrived for [notify] stalled-after while work is pending.",
    DiskWait => "disk-wait": "A file waits for disk space.",
    Throttled => "throttled": "The platform has been throttling for longer than [notify] throttled-after.",
    PassStart => "pass-start": "A project pass starts (sent to ping-url sinks only).",
    PassEnd => "pass-end": "A project pass ended; `ok` says whether it left problems (ping-url sinks only).",
}

impl Kind {
    /// Whether only `ping-url` sinks get this kind (and they get only these).
    pub fn is_ping(self) -> bool {
        matches!(self, Kind::PassStart | Kind::PassEnd)
    }
}

/// What happened, as the daemon says it. Unset fields are `null` in the body.
#[derive(Debug, Clone)]
pub struct Event {
    /// The kind.
    pub kind: Kind,
    /// The project it is about.
    pub project: Option<ProjectId>,
    /// The project's name.
    pub project_name: Option<String>,
    /// The file it is about.
    pub file: Option<FileId>,
    /// Files mirrored.
    pub files_done: Option<u64>,
    /// Files to mirror.
    pub files_total: Option<u64>,
    /// Files failed or corrupt.
    pub files_failed: Option<u64>,
    /// Bytes mirrored.
    pub bytes_done: Option<u64>,
    /// Bytes to mirror.
    pub bytes_total: Option<u64>,
    /// The project's (or file's) local path.
    pub mirror_path: Option<PathBuf>,
    /// For `pass-end`: whether the pass left no problem.
    pub ok: Option<bool>,
    /// One line for a person.
    pub message: String,
}

impl Event {
    /// An event of `kind` with only its message.
    pub fn new(kind: Kind, message: impl Into<String>) -> Event {
        Event {
            kind,
            project: None,
            project_name: None,
            file: None,
            files_done: None,
            files_total: None,
            files_failed: None,
            bytes_done: None,
            bytes_total: None,
            mirror_path: None,
            ok: None,
            message: message.into(),
        }
    }

    /// The same event about `project`.
    pub fn project(mut self, project: &ProjectId) -> Event {
        self.project = Some(project.clone());
        self
    }
}

/// The JSON body, schema version [`SCHEMA_VERSION`]: every field is always present (`null`
/// when unknown). Documented in `docs/notifications.md`.
#[derive(Debug, Serialize)]
struct Body<'a> {
    schema_version: u32,
    id: &'a str,
    kind: &'static str,
    time_ms: i64,
    host: String,
    project_id: Option<String>,
    project_name: Option<&'a str>,
    file_id: Option<String>,
    files_done: Option<u64>,
    files_total: Option<u64>,
    files_failed: Option<u64>,
    bytes_done: Option<u64>,
    bytes_total: Option<u64>,
    mirror_path: Option<String>,
    ok: Option<bool>,
    message: &'a str,
}

/// The body of `event` with id `id` at `time_ms`.
pub fn body(event: &Event, id: &str, time_ms: i64) -> String {
    let body = Body {
        schema_version: SCHEMA_VERSION,
        id,
        kind: event.kind.as_str(),
        time_ms,
        host: std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_default(),
        project_id: event.project.as_ref().map(ToString::to_string),
        project_name: event.project_name.as_deref(),
        file_id: event.file.as_ref().map(ToString::to_string),
        files_done: event.files_done,
        files_total: event.files_total,
        files_failed: event.files_failed,
        bytes_done: event.bytes_done,
        bytes_total: event.bytes_total,
        mirror_path: event.mirror_path.as_ref().map(|p| p.display().to_string()),
        ok: event.ok,
        message: &event.message,
    };
    // A struct of strings, numbers and options always serializes.
    serde_json::to_string(&body).unwrap_or_default()
}

/// A fresh event id: 128 random bits in hex.
fn new_id() -> String {
    format!("{:032x}", fastrand::u128(..))
}

/// The daemon's notification handle: the sinks of the config in force and their tasks.
/// Dropping it stops the tasks (what they had not delivered stays in the outbox).
pub struct Notifications {
    journal: Journal,
    cfg: NotifyConfig,
    sinks: Vec<Arc<Sink>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Notifications {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifications")
            .field("sinks", &self.sinks.len())
            .finish_non_exhaustive()
    }
}

impl Drop for Notifications {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Notifications {
    /// Builds the sinks of `cfg` (reading webhook secrets), drops the undelivered events of
    /// sinks no longer configured (counted as dropped), and starts one delivery task per sink
    /// over the outbox of `journal`.
    pub async fn start(journal: Journal, cfg: &NotifyConfig) -> Result<Notifications, NotifyError> {
        let sinks = sink::build(cfg)?;
        let keep = sinks.iter().map(|s| s.id.clone()).collect();
        journal
            .outbox(OutboxWrite::KeepSinks { keep })
            .await
            .map_err(NotifyError::Journal)?;
        let tasks = sinks
            .iter()
            .map(|s| tokio::spawn(sink::run(Arc::clone(s), journal.clone())))
            .collect();
        Ok(Notifications {
            journal,
            cfg: cfg.clone(),
            sinks,
            tasks,
        })
    }

    /// Records `event` in the outbox for every sink that takes its kind, then wakes those
    /// sinks. A kind switched off in `[notify] disabled`, or that no sink takes, records
    /// nothing.
    pub async fn send(&self, event: Event) -> Result<(), JournalError> {
        if self.cfg.disabled.iter().any(|k| k == event.kind.as_str()) {
            debug!(kind = event.kind.as_str(), "notification kind disabled");
            return Ok(());
        }
        let takers: Vec<&Arc<Sink>> = self.sinks.iter().filter(|s| s.takes(event.kind)).collect();
        if takers.is_empty() {
            return Ok(());
        }
        let id = new_id();
        let now = crate::clock::now_ms();
        self.journal
            .outbox(OutboxWrite::Record(NewNotification {
                body: body(&event, &id, now),
                id,
                kind: event.kind.as_str().to_owned(),
                project: event.project.clone(),
                sinks: takers.iter().map(|s| s.id.clone()).collect(),
                limit: self.cfg.queue_limit,
            }))
            .await?;
        for s in takers {
            s.wake();
        }
        Ok(())
    }

    /// Events dropped so far (a sink's queue was full, or the sink was removed), over all
    /// sinks, and the sinks that dropped any.
    pub fn dropped(&self) -> (u64, Vec<String>) {
        match self.journal.outbox_counts() {
            Ok(c) => (
                c.iter().map(|s| s.dropped).sum(),
                c.into_iter()
                    .filter(|s| s.dropped > 0)
                    .map(|s| s.sink)
                    .collect(),
            ),
            Err(e) => {
                warn!(error = %e, "cannot read the outbox counts");
                (0, Vec::new())
            }
        }
    }
}

/// Turns conditions seen at every check into edges: [`Edges::set`] says `Some(true)` when a
/// condition starts, `Some(false)` when it ends, `None` while it stays as it was. This is
/// what keeps a flapping token or disk to one notification per change.
#[derive(Debug, Default)]
pub struct Edges {
    on: HashSet<String>,
}

impl Edges {
    /// Records whether `key` holds now; the edge, if it changed.
    pub fn set(&mut self, key: &str, holds: bool) -> Option<bool> {
        match (self.on.contains(key), holds) {
            (false, true) => {
                self.on.insert(key.to_owned());
                Some(true)
            }
            (true, false) => {
                self.on.remove(key);
                Some(false)
            }
            _ => None,
        }
    }

    /// Whether `key` holds.
    pub fn holds(&self, key: &str) -> bool {
        self.on.contains(key)
    }

    /// Ends every condition under `prefix` that is not in `current`.
    pub fn clear_missing(&mut self, prefix: &str, current: &HashSet<String>) {
        self.on
            .retain(|k| !k.starts_with(prefix) || current.contains(k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_words_are_the_configs() {
        let words: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(words, crate::config::NOTIFY_KINDS);
    }

    #[test]
    fn a_condition_is_one_edge_per_change() {
        let mut e = Edges::default();
        assert_eq!(e.set("token", false), None);
        assert_eq!(e.set("token", true), Some(true));
        assert_eq!(e.set("token", true), None);
        assert_eq!(e.set("token", true), None);
        assert_eq!(e.set("token", false), Some(false));
        assert_eq!(e.set("token", false), None);
        assert!(!e.holds("token"));
        e.set("file:p:1", true);
        e.set("file:p:2", true);
        e.set("file:q:1", true);
        e.clear_missing("file:p:", &["file:p:2".to_owned()].into());
        assert!(!e.holds("file:p:1") && e.holds("file:p:2") && e.holds("file:q:1"));
    }

    #[test]
    fn the_body_has_every_field() {
        let p: ProjectId = "project-000000000000000000000001".parse().unwrap();
        let mut ev = Event::new(Kind::ProjectComplete, "done").project(&p);
        ev.files_done = Some(3);
        let v: serde_json::Value = serde_json::from_str(&body(&ev, "abc", 5)).unwrap();
        assert_eq!(v["schema_version"], 1);
        assert_eq!(v["id"], "abc");
        assert_eq!(v["kind"], "project-complete");
        assert_eq!(v["project_id"], p.to_string());
        assert_eq!(v["files_done"], 3);
        assert!(v["bytes_total"].is_null());
        assert_eq!(v.as_object().unwrap().len(), 16);
    }
}
