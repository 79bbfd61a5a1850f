//! The sinks and their delivery tasks: a webhook (`POST` of the JSON body, optionally signed
//! with HMAC-SHA256 in `X-Dxmirror-Signature: sha256=<hex>`), a healthchecks-style ping
//! (`ping-url`: `/start` when a pass starts, the URL itself when it ends clean, `/fail` when
//! it leaves problems), and a command run without a shell with the body's fields as
//! `DXMIRROR_*` variables, killed after its timeout.
//!
//! Each sink has one task ([`run`]) that delivers its outbox rows oldest first; a failed
//! delivery is retried after a backoff (1 s doubling to 10 min) and holds the sink's later
//! rows back, so events reach a receiver in order (a new event wakes the task, which still
//! waits for the head row's retry). It must not log a URL (a ping URL is a
//! secret), a secret or a body.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use hmac::{KeyInit, Mac};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncReadExt;
use tokio::sync::Notify;
use tracing::{info, warn};

use super::{Kind, NotifyError};
use crate::clock::now_ms;
use crate::config::{NotifyCommand, NotifyConfig, WebhookTarget};
use crate::journal::{EventLevel, Journal, OutboxRow, OutboxWrite};

/// The first retry's delay; it doubles up to [`RETRY_MAX`].
const RETRY_MIN: Duration = Duration::from_secs(1);

/// The longest delay between two tries of one delivery.
const RETRY_MAX: Duration = Duration::from_secs(600);

/// Most of a failed command's stderr kept in its error.
const STDERR_KEPT: usize = 2048;

/// How a sink delivers.
pub enum SinkKind {
    /// `POST url` with the body; `secret` signs it.
    Webhook {
        /// The receiver.
        url: String,
        /// The HMAC-SHA256 key.
        secret: Option<Vec<u8>>,
    },
    /// A healthchecks-style ping URL.
    Ping {
        /// The check's URL.
        url: String,
    },
    /// A program and its arguments.
    Command(NotifyCommand),
}

/// One configured sink.
pub struct Sink {
    /// Stable id (`webhook-<hash>`, `ping-<hash>`, `command-<hash>`): its outbox rows' key.
    pub id: String,
    kind: SinkKind,
    timeout: Duration,
    http: reqwest::Client,
    wake: Notify,
}

fn short_hash(text: &str) -> String {
    hex::encode(&Sha256::digest(text.as_bytes())[..6])
}

/// The signature header's value for `body` under `secret`: `sha256=<hex HMAC-SHA256>`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes keys of any length.
    let mut mac = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC accepts every key length"));
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn read_secret(path: &std::path::Path) -> Result<Vec<u8>, NotifyError> {
    let bad = |message: String| NotifyError::Secret {
        path: path.to_owned(),
        message,
    };
    let text = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let trimmed = text.trim_ascii().to_vec();
    if trimmed.is_empty() {
        return Err(bad("the file is empty".into()));
    }
    Ok(trimmed)
}

/// The sinks of `cfg`, their secrets read.
pub(super) fn build(cfg: &NotifyConfig) -> Result<Vec<Arc<Sink>>, NotifyError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder()
        .user_agent(format!("dxmirror/{}", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| NotifyError::Client(e.to_string()))?;
    let mut sinks = Vec::new();
    for w in &cfg.webhooks {
        let secret = match &w.secret_file {
            Some(p) => Some(read_secret(p)?),
            None => None,
        };
        let (id, kind) = match &w.target {
            WebhookTarget::Url(url) => (
                format!("webhook-{}", short_hash(url)),
                SinkKind::Webhook {
                    url: url.clone(),
                    secret,
                },
            ),
            WebhookTarget::Ping(url) => (
                format!("ping-{}", short_hash(url)),
                SinkKind::Ping { url: url.clone() },
            ),
        };
        sinks.push(Arc::new(Sink {
            id,
            kind,
            timeout: w.timeout,
            http: http.clone(),
            wake: Notify::new(),
        }));
    }
    for c in &cfg.commands {
        sinks.push(Arc::new(Sink {
            id: format!("command-{}", short_hash(&c.argv.join("\0"))),
            timeout: c.timeout,
            kind: SinkKind::Command(c.clone()),
            http: http.clone(),
            wake: Notify::new(),
        }));
    }
    Ok(sinks)
}

impl Sink {
    /// Whether this sink gets events of `kind`: pings get only the pass events, the others
    /// everything else.
    pub fn takes(&self, kind: Kind) -> bool {
        matches!(self.kind, SinkKind::Ping { .. }) == kind.is_ping()
    }

    /// Makes its task look at the outbox now.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Delivers one row; the error says why not (never a URL or a secret).
    async fn deliver(&self, row: &OutboxRow) -> Result<(), String> {
        match &self.kind {
            SinkKind::Webhook { url, secret } => {
                let mut req = self
                    .http
                    .post(url)
                    .timeout(self.timeout)
                    .header("Content-Type", "application/json")
                    .header("X-Dxmirror-Event", &row.kind)
                    .header("X-Dxmirror-Event-Id", &row.event_id);
                if let Some(secret) = secret {
                    req = req.header(
                        "X-Dxmirror-Signature",
                        signature(secret, row.body.as_bytes()),
                    );
                }
                self.http_send(req.body(row.body.clone())).await
            }
            SinkKind::Ping { url } => {
                let ok = serde_json::from_str::<serde_json::Value>(&row.body)
                    .ok()
                    .and_then(|v| v["ok"].as_bool());
                let base = url.trim_end_matches('/');
                let target = match (row.kind.as_str(), ok) {
                    ("pass-start", _) => format!("{base}/start"),
                    (_, Some(false)) => format!("{base}/fail"),
                    _ => base.to_owned(),
                };
                let req = self
                    .http
                    .post(target)
                    .timeout(self.timeout)
                    .header("X-Dxmirror-Event-Id", &row.event_id)
                    .body(row.body.clone());
                self.http_send(req).await
            }
            SinkKind::Command(c) => run_command(c, self.timeout, row).await,
        }
    }

    async fn http_send(&self, req: reqwest::RequestBuilder) -> Result<(), String> {
        match req.send().await {
            Ok(resp) if resp.status().is_success() => Ok(()),
            Ok(resp) => Err(format!("the receiver answered {}", resp.status())),
            // Without the URL: a ping URL is a secret.
            Err(e) => Err(format!("cannot reach the receiver: {}", e.without_url())),
        }
    }
}

/// The `DXMIRROR_*` variables of a body: every non-null field as `DXMIRROR_<FIELD>`, plus
/// `DXMIRROR_EVENT` (the kind) and `DXMIRROR_EVENT_ID`.
pub(super) fn command_env(row: &OutboxRow) -> Vec<(String, String)> {
    let mut env = vec![
        ("DXMIRROR_EVENT".to_owned(), row.kind.clone()),
        ("DXMIRROR_EVENT_ID".to_owned(), row.event_id.clone()),
    ];
    if let Ok(serde_json::Value::Object(map)) = serde_json::from_str(&row.body) {
        for (k, v) in map {
            let value = match v {
                serde_json::Value::Null => continue,
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            env.push((format!("DXMIRROR_{}", k.to_ascii_uppercase()), value));
        }
    }
    env
}

/// Runs the command with the event in its environment; a non-zero exit or a hang past
/// `timeout` (then it is killed) is an error.
async fn run_command(c: &NotifyCommand, timeout: Duration, row: &OutboxRow) -> Result<(), String> {
    let Some((program, args)) = c.argv.split_first() else {
        return Err("empty argv".into());
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .envs(command_env(row))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {program}: {e}"))?;
    let mut stderr = child.stderr.take();
    let waited = tokio::time::timeout(timeout, async {
        let mut err = Vec::new();
        if let Some(s) = stderr.as_mut() {
            let _ = s.take(STDERR_KEPT as u64).read_to_end(&mut err).await;
        }
        (child.wait().await, err)
    })
    .await;
    match waited {
        Err(_) => {
            // `kill_on_drop` would too, but say so and reap it now.
            let _ = child.start_kill();
            let _ = child.wait().await;
            Err(format!(
                "{program} did not finish within {}s and was killed",
                timeout.as_secs_f64()
            ))
        }
        Ok((Err(e), _)) => Err(format!("waiting for {program}: {e}")),
        Ok((Ok(status), _)) if status.success() => Ok(()),
        Ok((Ok(status), err)) => Err(format!(
            "{program} failed ({status}): {}",
            String::from_utf8_lossy(&err).trim()
        )),
    }
}

/// The delay before try `attempts + 1` of one delivery.
fn backoff(attempts: u32) -> Duration {
    RETRY_MIN
        .saturating_mul(1u32 << attempts.min(20))
        .min(RETRY_MAX)
}

/// The sink's delivery loop: its rows in order; a row not yet due (waiting for its retry)
/// or a failed delivery (recorded with its next try) ends the round, so later rows wait
/// behind it. Sleeps until the head row is due or a wake-up.
pub(super) async fn run(sink: Arc<Sink>, journal: Journal) {
    loop {
        let rows = match journal.outbox_head(&sink.id, 32) {
            Ok(rows) => rows,
            Err(e) => {
                warn!(sink = %sink.id, error = %e, "cannot read the outbox");
                tokio::time::sleep(RETRY_MAX).await;
                continue;
            }
        };
        let mut wait_until = None;
        for row in &rows {
            if row.next_ms > now_ms() {
                wait_until = Some(row.next_ms);
                break;
            }
            match sink.deliver(row).await {
                Ok(()) => {
                    info!(sink = %sink.id, kind = %row.kind, event_id = %row.event_id, "notification delivered");
                    let write = OutboxWrite::Delivered {
                        event_id: row.event_id.clone(),
                        sink: sink.id.clone(),
                    };
                    if let Err(e) = journal.outbox(write).await {
                        warn!(sink = %sink.id, error = %e, "cannot record a delivery");
                    }
                }
                Err(error) => {
                    let wait = backoff(row.attempts);
                    let next_ms = now_ms() + wait.as_millis() as i64;
                    warn!(sink = %sink.id, kind = %row.kind, event_id = %row.event_id, attempt = row.attempts + 1, retry_in_ms = wait.as_millis() as u64, %error, "notification not delivered");
                    if row.attempts == 0 {
                        // Reported once per event, in the journal's history that `status` shows.
                        let message = format!(
                            "notification {} ({}) not delivered by {}: {error}",
                            row.event_id, row.kind, sink.id
                        );
                        if let Err(e) = journal
                            .record_event(EventLevel::Warn, None, None, message)
                            .await
                        {
                            warn!(sink = %sink.id, error = %e, "cannot record a failed delivery");
                        }
                    }
                    let write = OutboxWrite::Retry {
                        event_id: row.event_id.clone(),
                        sink: sink.id.clone(),
                        next_ms,
                        error,
                    };
                    if let Err(e) = journal.outbox(write).await {
                        warn!(sink = %sink.id, error = %e, "cannot record a failed delivery");
                    }
                    wait_until = Some(next_ms);
                    break;
                }
            }
        }
        let sleep = match (wait_until, rows.len()) {
            // A full round delivered: there may be more.
            (None, 32) => continue,
            (None, _) => RETRY_MAX,
            (Some(t), _) => Duration::from_millis((t - now_ms()).max(0) as u64),
        };
        tokio::select! {
            _ = sink.wake.notified() => {}
            _ = tokio::time::sleep(sleep) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_of_the_body() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn backoff_doubles_to_its_cap() {
        assert_eq!(backoff(0), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(8));
        assert_eq!(backoff(30), RETRY_MAX);
    }

    #[test]
    fn the_command_sees_the_body_as_variables() {
        let row = OutboxRow {
            event_id: "e1".into(),
            sink: "command-x".into(),
            kind: "project-complete".into(),
            body: r#"{"kind":"project-complete","files_done":3,"project_name":"SJ","ok":null}"#
                .into(),
            attempts: 0,
            next_ms: 0,
        };
        let env = command_env(&row);
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("DXMIRROR_EVENT"), Some("project-complete"));
        assert_eq!(get("DXMIRROR_EVENT_ID"), Some("e1"));
        assert_eq!(get("DXMIRROR_FILES_DONE"), Some("3"));
        assert_eq!(get("DXMIRROR_PROJECT_NAME"), Some("SJ"));
        assert_eq!(get("DXMIRROR_OK"), None);
    }
}
