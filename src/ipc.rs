//! The control socket's protocol: `<state-dir>/control.sock`, a Unix stream socket on which
//! `dxmirror pause|resume|bwlimit|relist|verify --queue|status` ask the running daemon.
//!
//! One request and one response per connection, each one frame: a 4-byte big-endian length,
//! then that many bytes of JSON, at most [`MAX_FRAME`]. Every frame carries the protocol
//! `version`; a daemon answers a version it does not speak with an error naming both. The
//! daemon reads a request within [`REQUEST_TIMEOUT`] or drops the connection, so a client that
//! connects and sends nothing, sends garbage or announces a huge frame costs one short-lived
//! task and never blocks the daemon's loop.
//!
//! This module owns the wire types and the framing, client and server side; it must not know
//! what the daemon does with a request (that is `daemon::control`), nor open the socket
//! itself beyond the client's connect.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// The largest frame either side accepts (bytes of JSON).
pub const MAX_FRAME: usize = 64 << 10;

/// How long the daemon waits for a client's request once it connected.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a client waits for the daemon's answer.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);

/// The socket's file name in the state directory.
pub const SOCKET_NAME: &str = "control.sock";

/// The control socket of the daemon using `state_dir`.
pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join(SOCKET_NAME)
}

/// What a client asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "kebab-case")]
pub enum Request {
    /// Stop starting and running passes of a project (`None`: every project), until resumed;
    /// recorded in the journal, so it outlives a restart.
    Pause {
        /// A project id, or `None` for `--all`.
        project: Option<String>,
    },
    /// End a pause (`None`: every pause) and queue the project(s) again.
    Resume {
        /// A project id, or `None` for `--all`.
        project: Option<String>,
    },
    /// Put a rate in force (`off` or a size with a unit) until the next timetable entry or
    /// reload.
    Bwlimit {
        /// The rate as written on the command line.
        rate: String,
    },
    /// Queue a pass of a known project now.
    Relist {
        /// The project id.
        project: String,
    },
    /// Verify a project now, in the background (repairing what is damaged, unless
    /// `[verify] repair = false`).
    Verify {
        /// The project id.
        project: String,
    },
    /// The daemon's live figures.
    Status,
}

/// What the daemon answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "response", rename_all = "kebab-case")]
pub enum Response {
    /// Done; what was done.
    Done {
        /// One line for the operator.
        message: String,
    },
    /// The live figures.
    Status(LiveStatus),
    /// Refused; why.
    Error {
        /// One line for the operator.
        message: String,
    },
}

/// The daemon's live figures (`dxmirror status` while it runs).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveStatus {
    /// The global limit in force, bytes per second; `None`: no limit.
    pub limit_bytes_per_s: Option<u64>,
    /// When it next changes (ms since the epoch), if it does.
    pub limit_next_change_ms: Option<i64>,
    /// True when every project is paused (`pause --all`).
    pub paused_all: bool,
    /// Projects paused one by one.
    pub paused: Vec<String>,
    /// Projects with a pass running.
    pub running: Vec<String>,
    /// Projects queued.
    pub queued: Vec<String>,
}

/// One frame's envelope: the version and the message.
#[derive(Debug, Serialize, Deserialize)]
struct Envelope<T> {
    version: u32,
    #[serde(flatten)]
    body: T,
}

/// A failure of the control protocol.
#[derive(Debug, thiserror::Error)]
pub enum IpcError {
    /// No daemon listens on the socket.
    #[error("no daemon is running (nothing listens on {path}): {source}")]
    NoDaemon {
        /// The socket.
        path: PathBuf,
        /// Why the connect failed.
        source: std::io::Error,
    },
    /// Reading or writing the socket failed.
    #[error("control socket: {0}")]
    Io(#[from] std::io::Error),
    /// A frame announced more than [`MAX_FRAME`] bytes.
    #[error("frame of {0} bytes refused (at most {MAX_FRAME})")]
    TooLarge(u64),
    /// A frame is not a message of this protocol.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The other side speaks another protocol version.
    #[error("protocol version {got} is not {PROTOCOL_VERSION} (dxmirror and its daemon differ: restart the daemon after an upgrade)")]
    Version {
        /// The version received.
        got: u32,
    },
    /// The other side did not send its frame in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// Writes one frame holding `body`.
pub async fn write_message<T: Serialize>(
    w: &mut (impl AsyncWrite + Unpin),
    body: &T,
) -> Result<(), IpcError> {
    let bytes = serde_json::to_vec(&Envelope {
        version: PROTOCOL_VERSION,
        body,
    })
    .map_err(|e| IpcError::Malformed(e.to_string()))?;
    if bytes.len() > MAX_FRAME {
        return Err(IpcError::TooLarge(bytes.len() as u64));
    }
    let len = u32::try_from(bytes.len()).map_err(|_| IpcError::TooLarge(bytes.len() as u64))?;
    w.write_all(&len.to_be_bytes()).await?;
    w.write_all(&bytes).await?;
    w.flush().await?;
    Ok(())
}

/// Reads one frame and decodes its message; refuses a frame over [`MAX_FRAME`] before
/// reading it, and another protocol version.
pub async fn read_message<T: for<'de> Deserialize<'de>>(
    r: &mut (impl AsyncRead + Unpin),
) -> Result<T, IpcError> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len);
    if len as usize > MAX_FRAME {
        return Err(IpcError::TooLarge(u64::from(len)));
    }
    let mut bytes = vec![0u8; len as usize];
    r.read_exact(&mut bytes).await?;
    #[derive(Deserialize)]
    struct Version {
        version: u32,
    }
    let v: Version =
        serde_json::from_slice(&bytes).map_err(|e| IpcError::Malformed(e.to_string()))?;
    if v.version != PROTOCOL_VERSION {
        return Err(IpcError::Version { got: v.version });
    }
    let env: Envelope<T> =
        serde_json::from_slice(&bytes).map_err(|e| IpcError::Malformed(e.to_string()))?;
    Ok(env.body)
}

/// Asks the daemon behind `socket` and returns its answer.
pub async fn ask(socket: &Path, request: &Request) -> Result<Response, IpcError> {
    let mut stream = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(|source| IpcError::NoDaemon {
            path: socket.to_owned(),
            source,
        })?;
    write_message(&mut stream, request).await?;
    tokio::time::timeout(RESPONSE_TIMEOUT, read_message(&mut stream))
        .await
        .map_err(|_| IpcError::Timeout(RESPONSE_TIMEOUT))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn messages_round_trip_with_their_version() {
        let (mut a, mut b) = tokio::io::duplex(1 << 20);
        let req = Request::Pause {
            project: Some("project-x".into()),
        };
        write_message(&mut a, &req).await.unwrap();
        assert_eq!(read_message::<Request>(&mut b).await.unwrap(), req);
        write_message(&mut a, &Request::Status).await.unwrap();
        assert_eq!(
            read_message::<Request>(&mut b).await.unwrap(),
            Request::Status
        );
        let resp = Response::Status(LiveStatus {
            paused_all: true,
            ..LiveStatus::default()
        });
        write_message(&mut a, &resp).await.unwrap();
        assert_eq!(read_message::<Response>(&mut b).await.unwrap(), resp);
    }

    async fn raw(bytes: &[u8]) -> Result<Request, IpcError> {
        let (mut a, mut b) = tokio::io::duplex(1 << 20);
        a.write_all(bytes).await.unwrap();
        drop(a);
        read_message::<Request>(&mut b).await
    }

    fn frame(json: &str) -> Vec<u8> {
        let mut v = (json.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(json.as_bytes());
        v
    }

    #[tokio::test]
    async fn bad_frames_are_refused_with_the_reason() {
        // A huge length is refused before anything is read or allocated.
        let err = raw(&u32::MAX.to_be_bytes()).await.unwrap_err();
        assert!(
            matches!(err, IpcError::TooLarge(n) if n == u64::from(u32::MAX)),
            "{err}"
        );
        let err = raw(&frame("not json")).await.unwrap_err();
        assert!(matches!(err, IpcError::Malformed(_)), "{err}");
        let err = raw(&frame(r#"{"version":2,"request":"status"}"#))
            .await
            .unwrap_err();
        assert!(matches!(err, IpcError::Version { got: 2 }), "{err}");
        assert!(err.to_string().contains("restart the daemon"), "{err}");
        let err = raw(&frame(r#"{"version":1,"request":"format-disk"}"#))
            .await
            .unwrap_err();
        assert!(matches!(err, IpcError::Malformed(_)), "{err}");
        // A frame cut short.
        let mut cut = frame(r#"{"version":1,"request":"status"}"#);
        cut.truncate(10);
        assert!(matches!(raw(&cut).await.unwrap_err(), IpcError::Io(_)));
        assert_eq!(
            raw(&frame(r#"{"version":1,"request":"status"}"#))
                .await
                .unwrap(),
            Request::Status
        );
    }
}
