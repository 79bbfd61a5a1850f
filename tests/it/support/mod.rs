//! Shared test support, one file per concern: a temporary mirror set-up and the real binary
//! (`env`), sandboxes in this process and as a child process (`sandbox`), the daemon in this
//! process and the mirrored state several daemon scenarios share (`daemon`), waiting on
//! conditions with a deadline instead of sleeping (`wait`), assertions about a finished mirror
//! (`assert`), whole outputs compared with snapshot files (`snapshot`), and the tests gated on
//! outside tools (`gates`).

#![allow(clippy::unwrap_used)] // Test helpers: a failed unwrap is a failed test.

mod assert;
mod daemon;
mod env;
mod gates;
mod sandbox;
mod snapshot;
mod wait;

pub use assert::*;
pub use daemon::*;
pub use env::*;
pub use gates::*;
pub use sandbox::*;
pub use snapshot::*;
pub use wait::*;
