//! Logging set-up: a `tracing` subscriber writing to stderr, its level chosen by `-v` counts
//! and overridable with `RUST_LOG`. Under systemd (journald sets `JOURNAL_STREAM`) lines carry
//! no ANSI colours and no timestamps, because journald stamps them itself.
//!
//! Secrets never reach this layer: tokens are `ApiToken` (which prints `***`) and download URLs
//! are logged without their tokens or query strings by the modules that hold them.

use std::io::IsTerminal;

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
        .with_writer(std::io::stderr)
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
