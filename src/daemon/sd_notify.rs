//! `sd_notify`: tells systemd the daemon is ready, what it is doing (`STATUS=`), that it is
//! alive (`WATCHDOG=1`) and that it is stopping.
//!
//! A tiny writer of datagrams to `$NOTIFY_SOCKET` (a path, or `@name` for an abstract
//! socket); without the variable every call is a no-op. It must not fail the daemon: send
//! errors are logged at debug level and otherwise ignored.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::Duration;

/// Where notifications go.
#[derive(Debug, Clone)]
enum Target {
    Path(PathBuf),
    Abstract(Vec<u8>),
}

/// A handle on the service manager's notification socket (cheap to clone).
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    target: Option<Target>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// From `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` (a watchdog meant for another
    /// pid is ignored).
    pub fn from_env() -> Notifier {
        Notifier::from_vars(&|k| std::env::var(k).ok())
    }

    /// From injected variables (for tests).
    pub fn from_vars(env: &dyn Fn(&str) -> Option<String>) -> Notifier {
        let target = env("NOTIFY_SOCKET").and_then(|s| {
            if let Some(name) = s.strip_prefix('@') {
                Some(Target::Abstract(name.as_bytes().to_vec()))
            } else if s.starts_with('/') {
                Some(Target::Path(PathBuf::from(s)))
            } else {
                None
            }
        });
        let pid_ok = env("WATCHDOG_PID")
            .and_then(|p| p.trim().parse::<u32>().ok())
            .is_none_or(|p| p == std::process::id());
        let watchdog = env("WATCHDOG_USEC")
            .and_then(|u| u.trim().parse::<u64>().ok())
            .filter(|u| *u > 0 && pid_ok)
            .map(Duration::from_micros);
        Notifier { target, watchdog }
    }

    /// A notifier that sends nothing.
    pub fn disabled() -> Notifier {
        Notifier::default()
    }

    /// True when a socket is configured.
    pub fn is_enabled(&self) -> bool {
        self.target.is_some()
    }

    /// How often to send `WATCHDOG=1`: half of `WATCHDOG_USEC`, if a watchdog is set.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog.map(|w| w / 2)
    }

    /// `READY=1` with a status line.
    pub fn ready(&self, status: &str) {
        self.send(&format!(
            "READY=1\nSTATUS={}\nMAINPID={}",
            one_line(status),
            std::process::id()
        ));
    }

    /// `STATUS=...` (shown by `systemctl status`).
    pub fn status(&self, status: &str) {
        self.send(&format!("STATUS={}", one_line(status)));
    }

    /// `WATCHDOG=1`.
    pub fn watchdog(&self) {
        self.send("WATCHDOG=1");
    }

    /// `RELOADING=1` (the config is being reloaded).
    pub fn reloading(&self) {
        self.send("RELOADING=1");
    }

    /// `STOPPING=1` with a status line.
    pub fn stopping(&self, status: &str) {
        self.send(&format!("STOPPING=1\nSTATUS={}", one_line(status)));
    }

    fn send(&self, msg: &str) {
        let Some(target) = &self.target else {
            return;
        };
        let res = UnixDatagram::unbound().and_then(|sock| match target {
            Target::Path(p) => sock.send_to(msg.as_bytes(), p),
            Target::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt as _;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                sock.send_to_addr(msg.as_bytes(), &addr)
            }
        });
        if let Err(e) = res {
            tracing::debug!(error = %e, "sd_notify failed");
        }
    }
}

fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_reach_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let sock = UnixDatagram::bind(&path).unwrap();
        let p = path.to_str().unwrap().to_owned();
        let n = Notifier::from_vars(&|k| match k {
            "NOTIFY_SOCKET" => Some(p.clone()),
            "WATCHDOG_USEC" => Some("4000000".into()),
            _ => None,
        });
        assert_eq!(n.watchdog_interval(), Some(Duration::from_secs(2)));
        n.ready("up\nand running");
        let mut buf = [0u8; 512];
        let len = sock.recv(&mut buf).unwrap();
        let msg = std::str::from_utf8(&buf[..len]).unwrap();
        assert!(msg.starts_with("READY=1\nSTATUS=up and running"), "{msg}");
    }

    #[test]
    fn without_socket_nothing_happens_and_foreign_watchdog_is_ignored() {
        let n = Notifier::from_vars(&|k| match k {
            "WATCHDOG_USEC" => Some("1000".into()),
            "WATCHDOG_PID" => Some("1".into()),
            _ => None,
        });
        assert!(!n.is_enabled());
        assert_eq!(n.watchdog_interval(), None);
        n.ready("x");
    }
}
