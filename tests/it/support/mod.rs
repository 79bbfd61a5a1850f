//! Shared test support, one file per concern: a temporary mirror set-up and the real binary
//! (`env`), sandboxes in this process and as a child process (`sandbox`), the daemon in this
//! process (`daemon`), waiting on conditions with a deadline instead of sleeping (`wait`),
//! assertions about a finished mirror (`assert`), and the tests gated on outside tools
//! (`gates`).

#![allow(clippy::unwrap_used)] // Test helpers: a failed unwrap is a failed test.

mod assert;
mod daemon;
mod env;
mod gates;
mod sandbox;
mod wait;

pub use assert::*;
pub use daemon::*;
pub use env::*;
pub use gates::*;
pub use sandbox::*;
pub use wait::*;
