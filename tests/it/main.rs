//! The one integration-test binary: real SQLite files, real directories, real HTTP on
//! loopback against the crate's DNAnexus sandbox. One binary keeps link times down.

mod audit;
mod bandwidth;
mod chaos;
mod cli;
mod control;
mod daemon;
mod diskspace;
mod dxpy;
mod export;
mod faults;
mod journal;
mod listing_order;
mod logs;
mod metrics;
mod mirror_root;
mod notify;
mod packaging;
mod pinned;
mod platform;
mod published;
mod readback;
mod resume;
mod sandbox;
mod security;
mod selection;
mod status;
mod store;
mod support;
mod sync;
mod throttle;
mod tidy;
mod tolerant;
mod verify;
