//! The control socket, daemon side: `<state-dir>/control.sock` (mode 0660, the service's
//! group), its accept loop, and what the main loop does with each request (`pause`, `resume`,
//! `bwlimit`, `relist`, `verify --queue`, `status`).
//!
//! The accept loop and every connection run in tasks of their own: a connection has
//! `ipc::REQUEST_TIMEOUT` to send its one request (at most `ipc::MAX_FRAME` bytes), at most
//! [`MAX_CLIENTS`] are served at once (more are answered "busy" and closed), and only a
//! well-formed request reaches the main loop, as `Event::Control`. So a client that connects
//! and sends nothing, sends garbage or announces a huge frame never blocks the daemon.
//! The caller is identified by the socket's peer credentials (`SO_PEERCRED`); every action is
//! logged with that user and appended to the audit trail (`control`).
//!
//! It must not write the journal from a connection task (only the main loop writes), nor
//! listen on anything but the Unix socket.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tracing::{debug, info, instrument, warn};

use super::{Daemon, DaemonError, Source};
use crate::bandwidth::Rate;
use crate::ipc::{self, IpcError, LiveStatus, Request, Response};
use crate::journal::NewAudit;
use crate::model::ProjectId;

/// Connections served at once; more are answered "busy".
pub const MAX_CLIENTS: usize = 16;

/// A well-formed request, its caller and where the answer goes.
#[derive(Debug)]
pub struct ControlMsg {
    /// What was asked.
    pub request: Request,
    /// Who asked: `uid N (name)` from the socket's peer credentials.
    pub user: String,
    /// The answer.
    pub reply: oneshot::Sender<Response>,
}

/// Binds the control socket (replacing a stale one: the caller holds the writer lock, so no
/// other daemon uses it) with mode 0660, and serves it in the background; requests arrive on
/// the returned channel.
pub(super) fn listen(
    state_dir: &Path,
) -> Result<(mpsc::Receiver<ControlMsg>, tokio::task::JoinHandle<()>), std::io::Error> {
    let path = ipc::socket_path(state_dir);
    match std::fs::symlink_metadata(&path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(&path)?,
        Ok(_) => {
            return Err(std::io::Error::other(format!(
                "{} exists and is not a socket; move it away",
                path.display()
            )))
        }
        Err(_) => {}
    }
    let listener = UnixListener::bind(&path)?;
    // Until this chmod the socket has the umask's mode (the unit's 0027 gives 0750): no one
    // but the owner may connect, which needs write permission, so there is no window.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o660))?;
    let (tx, rx) = mpsc::channel(MAX_CLIENTS);
    let handle = tokio::spawn(accept_loop(listener, path, tx));
    Ok((rx, handle))
}

async fn accept_loop(listener: UnixListener, path: PathBuf, tx: mpsc::Sender<ControlMsg>) {
    info!(socket = %path.display(), "control socket listening");
    let permits = Arc::new(Semaphore::new(MAX_CLIENTS));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                warn!(error = %e, "control socket: accept failed");
                // Out of file descriptors and the like: do not spin.
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let tx = tx.clone();
        match permits.clone().try_acquire_owned() {
            Ok(permit) => {
                tokio::spawn(async move {
                    serve(stream, tx).await;
                    drop(permit);
                });
            }
            Err(_) => {
                tokio::spawn(async move {
                    let mut stream = stream;
                    let busy = Response::Error {
                        message: "the daemon is serving too many control connections; try again"
                            .into(),
                    };
                    let _ = tokio::time::timeout(
                        ipc::REQUEST_TIMEOUT,
                        ipc::write_message(&mut stream, &busy),
                    )
                    .await;
                });
            }
        }
    }
}

/// The caller of a connection: `uid N (name)`, or `uid N` when the name is unknown.
fn peer_user(stream: &UnixStream) -> String {
    match stream.peer_cred() {
        Ok(cred) => {
            let uid = cred.uid();
            match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
                Ok(Some(user)) => format!("uid {uid} ({})", user.name),
                _ => format!("uid {uid}"),
            }
        }
        Err(_) => "unknown user".into(),
    }
}

/// One connection: one request in, one answer out, each bounded in time.
async fn serve(mut stream: UnixStream, tx: mpsc::Sender<ControlMsg>) {
    let user = peer_user(&stream);
    let request = match tokio::time::timeout(
        ipc::REQUEST_TIMEOUT,
        ipc::read_message::<Request>(&mut stream),
    )
    .await
    {
        Err(_) => {
            debug!(user = %user, "control client sent no request in time");
            return;
        }
        Ok(Err(IpcError::Io(e))) => {
            debug!(user = %user, error = %e, "control client went away");
            return;
        }
        Ok(Err(e)) => {
            warn!(user = %user, error = %e, "control socket: bad request");
            let answer = Response::Error {
                message: format!("bad request: {e}"),
            };
            let _ = tokio::time::timeout(
                ipc::REQUEST_TIMEOUT,
                ipc::write_message(&mut stream, &answer),
            )
            .await;
            return;
        }
        Ok(Ok(request)) => request,
    };
    let (reply, answer) = oneshot::channel();
    let msg = ControlMsg {
        request,
        user,
        reply,
    };
    let answer = if tx.send(msg).await.is_err() {
        Response::Error {
            message: "the daemon is stopping".into(),
        }
    } else {
        match tokio::time::timeout(ipc::RESPONSE_TIMEOUT, answer).await {
            Ok(Ok(a)) => a,
            _ => Response::Error {
                message: "the daemon did not answer".into(),
            },
        }
    };
    let _ = tokio::time::timeout(
        ipc::REQUEST_TIMEOUT,
        ipc::write_message(&mut stream, &answer),
    )
    .await;
}

fn done(message: impl Into<String>) -> Response {
    Response::Done {
        message: message.into(),
    }
}

fn refused(message: impl Into<String>) -> Response {
    Response::Error {
        message: message.into(),
    }
}

impl Daemon {
    /// Handles one request of the control socket and answers it.
    #[instrument(skip_all, fields(user = %msg.user))]
    pub(super) async fn control(&mut self, msg: ControlMsg) -> Result<(), DaemonError> {
        let answer = self.control_answer(&msg.request, &msg.user).await?;
        match &answer {
            Response::Error { message } => {
                info!(request = ?msg.request, error = %message, "control request refused");
            }
            Response::Done { message } => {
                info!(request = ?msg.request, outcome = %message, "control request done")
            }
            Response::Status(_) => debug!("control status"),
        }
        let _ = msg.reply.send(answer);
        Ok(())
    }

    /// Parses a project id of a request; it must be known to the daemon.
    fn known_project(&self, text: &str) -> Result<ProjectId, Response> {
        let id: ProjectId = text
            .parse()
            .map_err(|e| refused(format!("{text:?} is not a project id: {e}")))?;
        if !self.known.contains_key(&id) {
            return Err(refused(format!(
                "{id} is not a project this daemon knows (configure it, or drop it in the inbox)"
            )));
        }
        Ok(id)
    }

    /// Appends a `control` audit record per project concerned.
    async fn audit_control(
        &self,
        projects: &[ProjectId],
        user: &str,
        detail: &str,
    ) -> Result<(), DaemonError> {
        for p in projects {
            self.journal
                .append_audit(NewAudit {
                    action: crate::audit::Action::Control,
                    project_id: p.clone(),
                    file_id: None,
                    identity: Some(user.to_owned()),
                    size: None,
                    sha256: None,
                    detail: detail.to_owned(),
                })
                .await?;
        }
        Ok(())
    }

    async fn control_answer(
        &mut self,
        request: &Request,
        user: &str,
    ) -> Result<Response, DaemonError> {
        let all: Vec<ProjectId> = self.known.keys().cloned().collect();
        Ok(match request {
            Request::Status => Response::Status(self.live_status()),
            Request::Pause { project } => {
                let target = match project.as_deref().map(|p| self.known_project(p)) {
                    Some(Err(r)) => return Ok(r),
                    Some(Ok(p)) => Some(p),
                    None => None,
                };
                self.journal
                    .set_paused(target.clone(), Some(user.to_owned()))
                    .await?;
                let concerned = match &target {
                    Some(p) => {
                        self.paused.insert(p.clone());
                        vec![p.clone()]
                    }
                    None => {
                        self.paused_all = true;
                        all
                    }
                };
                let stopped = self.stop_passes(&concerned);
                self.audit_control(&concerned, user, "pause").await?;
                done(format!(
                    "paused {} ({} running pass(es) interrupted; their progress is journaled)",
                    target.map_or_else(|| "every project".to_owned(), |p| p.to_string()),
                    stopped
                ))
            }
            Request::Resume { project } => {
                let target = match project.as_deref().map(|p| self.known_project(p)) {
                    Some(Err(r)) => return Ok(r),
                    Some(Ok(p)) => Some(p),
                    None => None,
                };
                if target.as_ref().is_some_and(|p| !self.paused.contains(p)) && !self.paused_all {
                    return Ok(refused(format!(
                        "{} is not paused",
                        target.map_or_else(String::new, |p| p.to_string())
                    )));
                }
                self.journal.set_paused(target.clone(), None).await?;
                let concerned = match &target {
                    Some(p) => {
                        self.paused.remove(p);
                        vec![p.clone()]
                    }
                    None => {
                        self.paused_all = false;
                        self.paused.clear();
                        all
                    }
                };
                self.due.extend(concerned.iter().cloned());
                self.audit_control(&concerned, user, "resume").await?;
                let still = if self.paused_all {
                    " (every project stays paused: `dxmirror resume --all`)"
                } else {
                    ""
                };
                done(format!(
                    "resumed {}{still}",
                    target.map_or_else(|| "every project".to_owned(), |p| p.to_string())
                ))
            }
            Request::Bwlimit { rate } => {
                let rate = match Rate::parse(rate) {
                    Ok(r) => r,
                    Err(e) => return Ok(refused(e)),
                };
                let limiter = self.bandwidth.global();
                limiter.set_manual(rate);
                let f = limiter.in_force();
                let until = match f.next {
                    Some((at, next)) => format!(
                        " until {} (then {next})",
                        humantime::format_rfc3339_seconds(
                            std::time::UNIX_EPOCH
                                + std::time::Duration::from_millis(u64::try_from(at).unwrap_or(0))
                        )
                    ),
                    None => " until the next reload".to_owned(),
                };
                self.audit_control(&all, user, &format!("bwlimit {}", rate.to_config()))
                    .await?;
                done(format!("bandwidth limit {rate}{until}"))
            }
            Request::Relist { project } => {
                let p = match self.known_project(project) {
                    Ok(p) => p,
                    Err(r) => return Ok(r),
                };
                self.due.insert(p.clone());
                self.audit_control(std::slice::from_ref(&p), user, "relist")
                    .await?;
                let note = if self.is_paused(&p) {
                    " (it is paused: it runs once resumed)"
                } else if self.running.contains(&p) {
                    " (a pass is running: the next one follows it)"
                } else {
                    ""
                };
                done(format!("{p} queued for a pass{note}"))
            }
            Request::Verify { project } => {
                let p = match self.known_project(project) {
                    Ok(p) => p,
                    Err(r) => return Ok(r),
                };
                self.verify_requested.insert(p.clone());
                self.audit_control(std::slice::from_ref(&p), user, "verify --queue")
                    .await?;
                done(format!(
                    "verification of {p} queued: it starts when no verification and no pass of it runs; findings go to the log, the journal and `dxmirror status`"
                ))
            }
        })
    }

    /// True when `p` may not run now (paused itself, or everything paused).
    pub(super) fn is_paused(&self, p: &ProjectId) -> bool {
        self.paused_all || self.paused.contains(p)
    }

    /// Interrupts the running passes of `projects` (an abort is safe at any await point: the
    /// journal never claims unsynced bytes); returns how many were running.
    fn stop_passes(&mut self, projects: &[ProjectId]) -> usize {
        let mut n = 0;
        for p in projects {
            if let Some(handle) = self.aborts.remove(p) {
                handle.abort();
                n += 1;
            }
        }
        n
    }

    /// The live figures `dxmirror status` shows while the daemon runs.
    fn live_status(&self) -> LiveStatus {
        let f = self.bandwidth.global().in_force();
        let mut running: Vec<String> = self.running.iter().map(|p| p.to_string()).collect();
        running.sort();
        LiveStatus {
            limit_bytes_per_s: f.rate.bytes_per_sec(),
            limit_next_change_ms: f.next.map(|(at, _)| at),
            paused_all: self.paused_all,
            paused: self.paused.iter().map(|p| p.to_string()).collect(),
            running,
            queued: self.due.iter().map(|p| p.to_string()).collect(),
        }
    }

    /// Restores the pauses the journal holds (they outlive a restart).
    pub(super) fn restore_pauses(&mut self) -> Result<(), DaemonError> {
        for row in self.journal.paused()? {
            match row.project {
                None => self.paused_all = true,
                Some(p) => {
                    self.known.entry(p.clone()).or_insert(Source::Journal);
                    self.paused.insert(p);
                }
            }
        }
        if self.paused_all || !self.paused.is_empty() {
            info!(
                all = self.paused_all,
                projects = self.paused.len(),
                "paused projects stay paused (`dxmirror resume`)"
            );
        }
        Ok(())
    }
}
