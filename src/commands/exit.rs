//! The exit statuses of every command, in one place: the table `--help` prints (and the
//! README repeats), the signal handling of `sync`: the first SIGINT/SIGTERM asks for a clean
//! stop, a second one exits at once; and a closed stdout (`dxmirror audit --json | head -1`),
//! which ends the command quietly with 141, as SIGPIPE would.

use std::process::ExitCode;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::oneshot;

/// Success.
pub(crate) const OK: u8 = 0;
/// The command could not do its work (config, lock, journal, token, state directory...).
pub(crate) const ERROR: u8 = 1;
/// It ran, but not everything is right: files not mirrored, verify findings not repaired, a
/// dry run that does not fit, a purge without `--yes`.
pub(crate) const INCOMPLETE: u8 = 3;
/// `check-config`: the state directory or the mirror root is not usable.
pub(crate) const CHECK_DIRS: u8 = 4;
/// `check-config`: no usable token, or the API refused it.
pub(crate) const CHECK_TOKEN: u8 = 5;
/// `check-config --online`: the API cannot be reached.
pub(crate) const CHECK_API: u8 = 6;
/// `check-config --online`: a configured project cannot be mirrored (not found, no access,
/// download-restricted, listing refused).
pub(crate) const CHECK_PROJECT: u8 = 7;

/// 128 + SIGPIPE: what a shell reports for a command whose reader went away.
pub(crate) const CLOSED_PIPE: u8 = 141;

/// Makes a write to a closed stdout (the reader of a pipe gone, as with `| head -1`) end the
/// process quietly with [`CLOSED_PIPE`] instead of a panic: Rust ignores SIGPIPE, so `print!`
/// fails with EPIPE and panics; this panic hook turns that one panic into the conventional
/// exit, and leaves every other panic to the default hook.
pub(crate) fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if is_closed_stdout(message) {
            std::process::exit(i32::from(CLOSED_PIPE));
        }
        default(info);
    }));
}

/// Whether a panic message is `print!`'s on a closed pipe.
fn is_closed_stdout(message: &str) -> bool {
    message.starts_with("failed printing to stdout") && message.contains("Broken pipe")
}

/// The table of exit statuses, as `--help` prints it (`tests/it/cli.rs` checks that the
/// README says the same).
pub(crate) const TABLE: &str = "\
Exit status:
  0    success
  1    error: the command could not do its work (config, lock, journal, token, ...)
  2    bad usage (unknown option or argument)
  3    incomplete: not every eligible file mirrored, verify findings not repaired,
       sync --dry-run does not fit, purge without --yes
  4    check-config: the state directory or the mirror root is not usable
  5    check-config: no usable token, or the API refused it
  6    check-config --online: the API cannot be reached
  7    check-config --online: a configured project cannot be mirrored
  130  interrupted by SIGINT (Ctrl-C); run again to resume
  141  its output went to a closed pipe (| head -1): the rest was not printed
  143  interrupted by SIGTERM; run again to resume
The daemon exits 0 on SIGTERM/SIGINT. status --check follows the monitoring-plugin
convention instead: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.";

/// The signal that asked a one-shot run to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopSignal {
    /// Ctrl-C.
    Int,
    /// `kill`, or systemd stopping the unit.
    Term,
}

impl StopSignal {
    /// 128 + the signal's number, as shells report a process killed by it.
    pub(crate) fn exit_code(self) -> ExitCode {
        ExitCode::from(self.status())
    }

    fn status(self) -> u8 {
        match self {
            StopSignal::Int => 130,
            StopSignal::Term => 143,
        }
    }

    fn name(self) -> &'static str {
        match self {
            StopSignal::Int => "SIGINT",
            StopSignal::Term => "SIGTERM",
        }
    }
}

/// Installs SIGINT/SIGTERM handlers: the first signal is sent on the returned channel (the
/// run stops cleanly), a second one exits the process at once with its status.
pub(crate) fn stop_signals() -> std::io::Result<oneshot::Receiver<StopSignal>> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        let first = tokio::select! {
            _ = term.recv() => StopSignal::Term,
            _ = int.recv() => StopSignal::Int,
        };
        tracing::info!(signal = first.name(), "stop requested");
        eprintln!(
            "{}: stopping (what is synced is kept); send it again to exit at once",
            first.name()
        );
        let _ = tx.send(first);
        let second = tokio::select! {
            _ = term.recv() => StopSignal::Term,
            _ = int.recv() => StopSignal::Int,
        };
        eprintln!("{}: exiting at once", second.name());
        std::process::exit(i32::from(second.status()));
    });
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_prints_panic_on_a_closed_pipe_is_quiet() {
        assert!(is_closed_stdout(
            "failed printing to stdout: Broken pipe (os error 32)"
        ));
        assert!(!is_closed_stdout(
            "failed printing to stdout: No space left on device (os error 28)"
        ));
        assert!(!is_closed_stdout(
            "called `Option::unwrap()` on a `None` value"
        ));
    }
}
