//! Logging set-up: a `tracing` subscriber writing to stderr, its level chosen by `-v` counts
//! and overridable with `RUST_LOG`. Under systemd (journald sets `JOURNAL_STREAM`) lines carry
//! no ANSI colours and no timestamps, because journald stamps them itself.
//!
//! While a progress bar is on the terminal ([`log_above`]), each line is printed above it
//! (indicatif's `suspend`), so the log does not scroll the bar away.
//!
//! Secrets never reach this layer: tokens are `ApiToken` (which prints `***`) and download URLs
//! are logged without their tokens or query strings by the modules that hold them.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. `verbosity` is the number of `-v` flags; `quiet` lowers the
/// default to warnings. Calling it twice is harmless (the second call does nothing).
pub fn init(verbosity: u8, quiet: bool) {
    let default = match (quiet, verbosity) {
        (true, _) => "warn",
        (false, 0) => "info",
        (false, 1) => "dxmirror=debug,info",
        (false, _) => "dxmirror=trace,debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let under_journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let ansi = !under_journald && std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| AboveBar(Vec::new()))
        .with_ansi(ansi)
        .with_target(false);
    let res = if under_journald {
        builder.without_time().try_init()
    } else {
        builder.try_init()
    };
    // An already-installed subscriber (tests, embedding) is fine.
    drop(res);
}

/// The progress bar log lines are printed above, while one is shown.
static BAR: Mutex<Option<indicatif::ProgressBar>> = Mutex::new(None);

/// Prints log lines above `bar` from now on (`None`: straight to stderr again).
pub fn log_above(bar: Option<indicatif::ProgressBar>) {
    if let Ok(mut slot) = BAR.lock() {
        *slot = bar;
    }
}

/// One log line, collected, then written to stderr in one piece when dropped: above the
/// progress bar when there is one.
struct AboveBar(Vec<u8>);

impl Write for AboveBar {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for AboveBar {
    fn drop(&mut self) {
        let bar = BAR.lock().ok().and_then(|b| b.clone());
        let line = std::mem::take(&mut self.0);
        // A log line that cannot be written has nowhere else to go.
        let write = move || drop(std::io::stderr().write_all(&line));
        match bar {
            Some(bar) => bar.suspend(write),
            None => write(),
        }
    }
}
