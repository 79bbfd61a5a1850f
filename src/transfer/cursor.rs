//! The hash cursor: one thread per file that reads the staging file back, in order, while it
//! is being written, right behind the contiguous prefix of bytes already written.
//!
//! It is the read-back the invariants require (one sequential pass over the bytes as they lie
//! on disk, re-checking every platform checksum and computing the SHA-256), overlapped with the
//! download instead of following it, so every byte is hashed once and a part's checksum is
//! known as soon as the cursor passes the part's end. SHA-256 runs on a second thread fed with
//! the same buffers, so the cursor's two digests use both cores.
//!
//! When the engine resets chunks (a bad part), the tracker's epoch changes and the cursor
//! starts over from offset 0 with fresh digests: a SHA-256 cannot be rewound.

use std::os::unix::fs::FileExt;
use std::sync::{Arc, Condvar, Mutex};

use tokio::sync::mpsc::UnboundedSender;

use crate::planner::FilePlan;
use crate::readback::{ReadBack, SegmentCheck, SequentialCheck, ShaBeside};

/// Size of one read of the cursor.
const BUF_SIZE: usize = 512 << 10;
/// Buffers in flight between the cursor and its SHA-256 thread.
const BUFFERS: usize = 3;

/// What the cursor reports to the engine. Every event carries the epoch it belongs to; the
/// engine ignores events of an epoch it has since reset.
#[derive(Debug)]
pub(super) enum CursorEvent {
    /// A segment's bytes were all read back; with the cursor's CRC32C of each chunk of it.
    Segment {
        epoch: u64,
        check: SegmentCheck,
        chunk_crcs: Vec<(u32, u32)>,
    },
    /// Every byte was read back.
    Finished { epoch: u64, report: ReadBack },
    /// The staging file could not be read.
    Failed { epoch: u64, error: String },
}

impl CursorEvent {
    /// The epoch the event belongs to.
    pub(super) fn epoch(&self) -> u64 {
        match self {
            CursorEvent::Segment { epoch, .. }
            | CursorEvent::Finished { epoch, .. }
            | CursorEvent::Failed { epoch, .. } => *epoch,
        }
    }
}

struct TrackState {
    /// Bytes written of each chunk, from its start.
    done: Vec<u64>,
    /// First chunk not completely written.
    first_incomplete: usize,
    /// Bytes `[0, prefix)` are all written.
    prefix: u64,
    epoch: u64,
    cancelled: bool,
}

/// Which bytes of one file are written, shared by its chunk tasks and its cursor.
pub(super) struct Tracker {
    plan: FilePlan,
    state: Mutex<TrackState>,
    changed: Condvar,
}

enum Wait {
    Upto(u64),
    Restart,
    Cancelled,
}

impl Tracker {
    pub(super) fn new(plan: &FilePlan, done: &[u64]) -> Arc<Tracker> {
        let t = Tracker {
            plan: plan.clone(),
            state: Mutex::new(TrackState {
                done: done.to_vec(),
                first_incomplete: 0,
                prefix: 0,
                epoch: 0,
                cancelled: false,
            }),
            changed: Condvar::new(),
        };
        if let Ok(mut s) = t.state.lock() {
            t.recompute(&mut s);
        }
        Arc::new(t)
    }

    fn recompute(&self, s: &mut TrackState) {
        let chunks = &self.plan.chunks;
        while s.first_incomplete < chunks.len()
            && s.done[s.first_incomplete] >= chunks[s.first_incomplete].range.len
        {
            s.first_incomplete += 1;
        }
        s.prefix = match chunks.get(s.first_incomplete) {
            Some(c) => c.range.offset + s.done[s.first_incomplete],
            None => self.plan.size,
        };
    }

    /// Chunk `idx` now has `done` bytes written.
    pub(super) fn advance(&self, idx: u32, done: u64) {
        if let Ok(mut s) = self.state.lock() {
            if let Some(d) = s.done.get_mut(idx as usize) {
                *d = done;
            }
            self.recompute(&mut s);
            self.changed.notify_all();
        }
    }

    /// These chunks will be written again: the cursor must start over.
    pub(super) fn reset(&self, chunks: &[u32]) {
        if let Ok(mut s) = self.state.lock() {
            for &c in chunks {
                if let Some(d) = s.done.get_mut(c as usize) {
                    *d = 0;
                }
                s.first_incomplete = s.first_incomplete.min(c as usize);
            }
            self.recompute(&mut s);
            s.epoch += 1;
            self.changed.notify_all();
        }
    }

    /// Stops the cursor.
    pub(super) fn cancel(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.cancelled = true;
            self.changed.notify_all();
        }
    }

    /// The current epoch.
    pub(super) fn epoch(&self) -> u64 {
        self.state.lock().map_or(0, |s| s.epoch)
    }

    /// Blocks until bytes past `pos` are written, the epoch moves on, or the cursor is
    /// cancelled.
    fn wait_beyond(&self, pos: u64, epoch: u64) -> Wait {
        let Ok(mut s) = self.state.lock() else {
            return Wait::Cancelled;
        };
        loop {
            if s.cancelled {
                return Wait::Cancelled;
            }
            if s.epoch != epoch {
                return Wait::Restart;
            }
            if s.prefix > pos {
                return Wait::Upto(s.prefix);
            }
            s = match self.changed.wait(s) {
                Ok(s) => s,
                Err(_) => return Wait::Cancelled,
            };
        }
    }
}

/// Cancels the cursor when the file's run ends, however it ends.
pub(super) struct CursorGuard(pub(super) Arc<Tracker>);

impl Drop for CursorGuard {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// Starts the cursor thread of one file.
pub(super) fn spawn(
    file: Arc<std::fs::File>,
    tracker: Arc<Tracker>,
    events: UnboundedSender<CursorEvent>,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("dxmirror-cursor".into())
        .spawn(move || run(&file, &tracker, &events))
        .map(|_| ())
}

fn run(file: &std::fs::File, tracker: &Tracker, events: &UnboundedSender<CursorEvent>) {
    let plan = &tracker.plan;
    loop {
        let epoch = tracker.epoch();
        match one_pass(file, tracker, plan, epoch, events) {
            Wait::Restart => continue,
            Wait::Cancelled | Wait::Upto(_) => return,
        }
    }
}

/// One pass from offset 0 in `epoch`. Returns `Restart` when the epoch changed, `Cancelled`
/// when the cursor must stop.
fn one_pass(
    file: &std::fs::File,
    tracker: &Tracker,
    plan: &FilePlan,
    epoch: u64,
    events: &UnboundedSender<CursorEvent>,
) -> Wait {
    let mut check = SequentialCheck::new(plan);
    let send_segments = |check: &SequentialCheck, done: Vec<SegmentCheck>| -> bool {
        for c in done {
            let chunk_crcs = if c.ok {
                Vec::new()
            } else {
                plan.chunks_of(c.idx)
                    .map(|ch| (ch.idx, check.chunk_crcs()[ch.idx as usize]))
                    .collect()
            };
            let ev = CursorEvent::Segment {
                epoch,
                check: c,
                chunk_crcs,
            };
            if events.send(ev).is_err() {
                return false;
            }
        }
        true
    };
    let first = check.take_completed();
    if !send_segments(&check, first) {
        return Wait::Cancelled;
    }

    let mut sha = match ShaBeside::spawn(BUFFERS, BUF_SIZE) {
        Ok(sha) => sha,
        Err(e) => {
            let _ = events.send(CursorEvent::Failed {
                epoch,
                error: format!("cannot start the SHA-256 thread: {e}"),
            });
            return Wait::Cancelled;
        }
    };
    let outcome = loop {
        if check.pos() == plan.size {
            break None;
        }
        let upto = match tracker.wait_beyond(check.pos(), epoch) {
            Wait::Upto(p) => p,
            other => break Some(other),
        };
        while check.pos() < upto {
            let Some(mut buf) = sha.buffer() else {
                return Wait::Cancelled;
            };
            let want = (upto - check.pos()).min(BUF_SIZE as u64) as usize;
            if let Err(e) = file.read_exact_at(&mut buf[..want], check.pos()) {
                let _ = events.send(CursorEvent::Failed {
                    epoch,
                    error: format!(
                        "reading the staging file back at offset {}: {e}",
                        check.pos()
                    ),
                });
                return Wait::Cancelled;
            }
            let done = check.feed(&buf[..want]);
            if !sha.hash(buf, want) {
                return Wait::Cancelled;
            }
            if !send_segments(&check, done) {
                return Wait::Cancelled;
            }
        }
    };
    let Some(sha256) = sha.finish() else {
        return Wait::Cancelled;
    };
    if let Some(stop) = outcome {
        return stop;
    }
    if events
        .send(CursorEvent::Finished {
            epoch,
            report: check.finish(sha256),
        })
        .is_err()
    {
        return Wait::Cancelled;
    }
    // Done; a later reset (the engine found damage) starts a new pass.
    match tracker.wait_beyond(plan.size, epoch) {
        Wait::Upto(_) => Wait::Cancelled,
        other => other,
    }
}
