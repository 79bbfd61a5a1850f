//! dxmirror mirrors St. Jude Cloud data vended through DNAnexus onto an institution's own
//! storage: resumable, verified part by part, journaled in SQLite, and unattended.
//!
//! Bird's-eye view (see `ARCHITECTURE.md` for the invariants):
//! `config` is loaded, `platform` lists a project, `planner` cuts each file into checksum
//! segments and fetch chunks, `transfer` fetches chunks into `store`'s staging files and
//! reports progress to `journal`, `readback` re-reads each finished file, and `store` renames
//! it into place and records its SHA-256. `sync` runs that pipeline once; `sandbox` is a
//! DNAnexus-compatible server on loopback used by tests, `demo` and the benchmark.

pub mod access;
pub mod audit;
pub mod bandwidth;
pub mod clock;
pub mod config;
pub mod counters;
pub mod daemon;
pub mod demo;
pub mod dirs;
pub mod export;
pub mod hashing;
pub mod inbox;
pub mod ipc;
pub mod journal;
pub mod lock;
pub mod metrics;
pub mod notifications;
pub mod pass;
pub mod planner;
pub mod platform;
pub mod purge;
pub mod readback;
pub mod selection;
pub mod status;
pub mod store;
pub mod sync;
pub mod telemetry;
pub mod transfer;
pub mod units;
pub mod verify;

pub use dxmirror_model as model;
pub use dxmirror_sandbox as sandbox;
