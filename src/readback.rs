//! Read-back verification of local bytes against a [`FilePlan`]: one segment's platform
//! digest, one chunk's CRC32C, or a whole file in one sequential pass that yields every
//! segment digest, every chunk CRC32C and the whole-file SHA-256 at once; or many files at
//! once ([`read_back_many`]), large ones cut into independent tasks (a sequential SHA-256
//! pass; the MD5 parts, many at a time in SIMD lanes) spread over the rayon pool.
//!
//! Everything here is blocking and CPU-heavy: call it from a rayon pool or a blocking thread,
//! never from the async runtime. Findings (a mismatching segment, a wrong size) are data in
//! the returned structs; [`ReadBackError`] is only for IO that failed. This module never
//! writes, renames or deletes files (that is `store`), and never decides what to refetch.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Instant;

use std::sync::atomic::{AtomicUsize, Ordering};

use rayon::prelude::*;

use crate::hashing::{crc32c_append, Md5Hasher, Md5Lanes, SegmentHasher, Sha256Hasher};
use crate::model::{ByteRange, Digest};
use crate::planner::{FilePlan, Segment};

/// Size of one read in the sequential read-back and in positioned reads.
const BUF_SIZE: usize = 1 << 20;
/// How many read-back buffers may exist at once (bounds memory to `BUF_SIZE * BUFFERS`).
const BUFFERS: usize = 4;

/// Reading the bytes to verify failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadBackError {
    /// An IO operation on a named file failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done (`open`, `read`).
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A positioned read on an already open file failed.
    #[error("{op} at offset {offset}: {source}")]
    ReadAt {
        /// What was being done.
        op: &'static str,
        /// Where the read started.
        offset: u64,
        /// The underlying error.
        source: io::Error,
    },
    /// The file was replaced (another inode at the path) while its pieces were being read.
    #[error("{path} was replaced while it was being verified")]
    Replaced {
        /// The file.
        path: PathBuf,
    },
    /// The file ends before the end of the range that was asked for.
    #[error("file ends at {file_end} inside the range at offset {offset} of {len} bytes")]
    Truncated {
        /// Start of the requested range.
        offset: u64,
        /// Length of the requested range.
        len: u64,
        /// Offset where the data ended.
        file_end: u64,
    },
}

/// The outcome of checking one segment against its platform digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentCheck {
    /// The segment's position in the plan.
    pub idx: u32,
    /// What the platform says the bytes hash to; `None` when it says nothing.
    pub expected: Option<Digest>,
    /// What the local bytes hash to; `None` when there was no expectation to compare with.
    pub actual: Option<Digest>,
    /// True when `actual == expected`, or when there is no expectation.
    pub ok: bool,
}

impl SegmentCheck {
    fn from_hash(idx: u32, expected: Option<Digest>, actual: Option<Digest>) -> SegmentCheck {
        let ok = match (&expected, &actual) {
            (Some(e), Some(a)) => e == a,
            (None, _) => true,
            (Some(_), None) => false,
        };
        SegmentCheck {
            idx,
            expected,
            actual,
            ok,
        }
    }
}

/// Everything one sequential read of a file found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadBack {
    /// True when the file has exactly the planned size.
    pub size_ok: bool,
    /// The number of bytes actually read.
    pub actual_size: u64,
    /// SHA-256 of all bytes read.
    pub sha256: [u8; 32],
    /// One check per plan segment, in plan order.
    pub segments: Vec<SegmentCheck>,
    /// CRC32C of each plan chunk's bytes (of the part present, if the file is short), in plan
    /// order.
    pub chunk_crcs: Vec<u32>,
}

impl ReadBack {
    /// True when the size is right and every segment matches its platform digest.
    pub fn all_ok(&self) -> bool {
        self.size_ok && self.segments.iter().all(|s| s.ok)
    }

    /// The segments whose bytes do not match their platform digest.
    pub fn bad_segments(&self) -> impl Iterator<Item = &SegmentCheck> {
        self.segments.iter().filter(|s| !s.ok)
    }
}

/// Reads `range` of `file` with positioned reads, feeding each piece to `sink`. Returns the
/// number of bytes read, which is less than `range.len` only when the file ends first.
fn read_range(
    file: &File,
    range: ByteRange,
    mut sink: impl FnMut(&[u8]),
) -> Result<u64, ReadBackError> {
    let mut buf = vec![
        0u8;
        BUF_SIZE
            .min(range.len.try_into().unwrap_or(BUF_SIZE))
            .max(1)
    ];
    let mut done = 0u64;
    while done < range.len {
        let want = buf
            .len()
            .min(usize::try_from(range.len - done).unwrap_or(usize::MAX));
        let offset = range.offset + done;
        match file.read_at(&mut buf[..want], offset) {
            Ok(0) => break,
            Ok(n) => {
                sink(&buf[..n]);
                done += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(ReadBackError::ReadAt {
                    op: "read",
                    offset,
                    source,
                })
            }
        }
    }
    Ok(done)
}

/// Checks one segment of an open file against its platform digest with positioned reads. A
/// file that ends inside the segment is a finding (`ok == false`), not an error.
pub fn check_segment(file: &File, seg: &Segment) -> Result<SegmentCheck, ReadBackError> {
    let Some(expected) = &seg.expect else {
        return Ok(SegmentCheck::from_hash(seg.idx, None, None));
    };
    let mut hasher = SegmentHasher::for_digest(expected);
    let got = read_range(file, seg.range, |b| hasher.update(b))?;
    let mut check = SegmentCheck::from_hash(seg.idx, Some(expected.clone()), Some(hasher.finish()));
    if got < seg.range.len {
        check.ok = false;
    }
    tracing::debug!(
        segment = seg.idx,
        offset = seg.range.offset,
        len = seg.range.len,
        ok = check.ok,
        "segment checked"
    );
    Ok(check)
}

/// CRC32C of `range` of an open file, to compare with a journaled chunk digest on resume.
/// A file that ends inside the range is [`ReadBackError::Truncated`].
pub fn chunk_crc(file: &File, range: ByteRange) -> Result<u32, ReadBackError> {
    let mut crc = 0u32;
    let got = read_range(file, range, |b| crc = crc32c_append(crc, b))?;
    if got < range.len {
        return Err(ReadBackError::Truncated {
            offset: range.offset,
            len: range.len,
            file_end: range.offset + got,
        });
    }
    Ok(crc)
}

/// Per-segment and per-chunk accumulation over a stream of buffers at increasing offsets.
struct PlanHashing<'a> {
    plan: &'a FilePlan,
    hashers: Vec<Option<SegmentHasher>>,
    chunk_crcs: Vec<u32>,
    /// First segment that may still receive bytes.
    seg_cursor: usize,
    /// First chunk that may still receive bytes.
    chunk_cursor: usize,
}

impl<'a> PlanHashing<'a> {
    fn new(plan: &'a FilePlan) -> Self {
        Self::with_md5(plan, true)
    }

    /// Like [`PlanHashing::new`]; without `md5`, segments checked by MD5 are left to others
    /// (their checks come out of [`PlanHashing::finish`] with no actual digest).
    fn with_md5(plan: &'a FilePlan, md5: bool) -> Self {
        PlanHashing {
            plan,
            hashers: plan
                .segments
                .iter()
                .map(|s| match &s.expect {
                    Some(Digest::Md5(_)) if !md5 => None,
                    e => e.as_ref().map(SegmentHasher::for_digest),
                })
                .collect(),
            chunk_crcs: vec![0; plan.chunks.len()],
            seg_cursor: 0,
            chunk_cursor: 0,
        }
    }

    /// The part of `data` (which starts at file offset `pos`) that falls in `range`.
    fn overlap(range: ByteRange, pos: u64, data: &[u8]) -> &[u8] {
        let end = pos + data.len() as u64;
        let lo = range.offset.max(pos);
        let hi = range.end().min(end);
        if lo >= hi {
            return &[];
        }
        // Both bounds are within `data`, whose length fits in usize.
        let a = usize::try_from(lo - pos).unwrap_or(0);
        let b = usize::try_from(hi - pos).unwrap_or(0);
        &data[a..b]
    }

    fn feed(&mut self, pos: u64, data: &[u8]) {
        let end = pos + data.len() as u64;
        let segs = &self.plan.segments;
        while self.seg_cursor < segs.len() && segs[self.seg_cursor].range.end() <= pos {
            self.seg_cursor += 1;
        }
        let mut s = self.seg_cursor;
        while s < segs.len() && segs[s].range.offset < end {
            if let Some(h) = &mut self.hashers[s] {
                h.update(Self::overlap(segs[s].range, pos, data));
            }
            s += 1;
        }
        let chunks = &self.plan.chunks;
        while self.chunk_cursor < chunks.len() && chunks[self.chunk_cursor].range.end() <= pos {
            self.chunk_cursor += 1;
        }
        let mut c = self.chunk_cursor;
        while c < chunks.len() && chunks[c].range.offset < end {
            let part = Self::overlap(chunks[c].range, pos, data);
            self.chunk_crcs[c] = crc32c_append(self.chunk_crcs[c], part);
            c += 1;
        }
    }

    /// Takes segment `s`'s digest (all its bytes have been fed) and checks it.
    fn finish_segment(&mut self, s: usize) -> SegmentCheck {
        let seg = &self.plan.segments[s];
        let actual = self.hashers[s].take().map(SegmentHasher::finish);
        SegmentCheck::from_hash(seg.idx, seg.expect.clone(), actual)
    }

    fn finish(self, actual_size: u64) -> (Vec<SegmentCheck>, Vec<u32>) {
        let checks = self
            .plan
            .segments
            .iter()
            .zip(self.hashers)
            .map(|(seg, h)| {
                let mut check = SegmentCheck::from_hash(
                    seg.idx,
                    seg.expect.clone(),
                    h.map(SegmentHasher::finish),
                );
                // A segment only partly present never passes, even by coincidence.
                if seg.expect.is_some() && seg.range.end() > actual_size {
                    check.ok = false;
                }
                check
            })
            .collect();
        (checks, self.chunk_crcs)
    }
}

/// The read-back's hashing, fed incrementally by a reader that follows the bytes of a file as
/// they are written (in order, from offset 0): each segment is checked as soon as the reader
/// has passed its end, and the chunk CRC32Cs accumulate. The caller hashes the SHA-256 (so that
/// it can run on another thread) and hands it to [`SequentialCheck::finish`].
pub struct SequentialCheck<'a> {
    hashing: PlanHashing<'a>,
    pos: u64,
    reported: usize,
    checks: Vec<SegmentCheck>,
}

impl<'a> SequentialCheck<'a> {
    /// Starts at offset 0 of `plan`'s file.
    pub fn new(plan: &'a FilePlan) -> SequentialCheck<'a> {
        SequentialCheck {
            hashing: PlanHashing::new(plan),
            pos: 0,
            reported: 0,
            checks: Vec::with_capacity(plan.segments.len()),
        }
    }

    /// Bytes fed so far: the offset of the next byte to feed.
    pub fn pos(&self) -> u64 {
        self.pos
    }

    /// Feeds the next bytes of the file and returns the segments they completed.
    pub fn feed(&mut self, data: &[u8]) -> Vec<SegmentCheck> {
        self.hashing.feed(self.pos, data);
        self.pos += data.len() as u64;
        self.take_completed()
    }

    /// Segments completed at the current position and not yet returned (at the start: the
    /// empty segments at offset 0).
    pub fn take_completed(&mut self) -> Vec<SegmentCheck> {
        let mut out = Vec::new();
        let segs = &self.hashing.plan.segments;
        while self.reported < segs.len() && segs[self.reported].range.end() <= self.pos {
            let check = self.hashing.finish_segment(self.reported);
            self.checks.push(check.clone());
            out.push(check);
            self.reported += 1;
        }
        out
    }

    /// The CRC32C of each chunk over the bytes fed so far.
    pub fn chunk_crcs(&self) -> &[u32] {
        &self.hashing.chunk_crcs
    }

    /// The report of the whole pass, once every byte of the file was fed.
    pub fn finish(self, sha256: [u8; 32]) -> ReadBack {
        ReadBack {
            size_ok: self.pos == self.hashing.plan.size,
            actual_size: self.pos,
            sha256,
            segments: self.checks,
            chunk_crcs: self.hashing.chunk_crcs,
        }
    }
}

/// SHA-256 on a thread of its own beside a reader, fed through a small pool of recycled
/// buffers (memory is bounded to `buffers * size`), so that the reader's other digests and the
/// SHA-256 use two cores. Used by [`read_back`] and by the transfer engine's hash cursor.
pub struct ShaBeside {
    to_sha: mpsc::SyncSender<(Vec<u8>, usize)>,
    back: mpsc::Receiver<Vec<u8>>,
    thread: std::thread::JoinHandle<[u8; 32]>,
    allocated: usize,
    buffers: usize,
    size: usize,
}

impl ShaBeside {
    /// Starts the SHA-256 thread; at most `buffers` buffers of `size` bytes will exist.
    pub fn spawn(buffers: usize, size: usize) -> io::Result<ShaBeside> {
        let (to_sha, sha_rx) = mpsc::sync_channel::<(Vec<u8>, usize)>(buffers);
        let (back_tx, back) = mpsc::channel::<Vec<u8>>();
        let thread = std::thread::Builder::new()
            .name("dxmirror-sha256".into())
            .spawn(move || {
                let mut sha = Sha256Hasher::new();
                for (buf, n) in sha_rx {
                    sha.update(&buf[..n]);
                    // The reader may have stopped; then the buffer is simply dropped.
                    let _ = back_tx.send(buf);
                }
                sha.finish()
            })?;
        Ok(ShaBeside {
            to_sha,
            back,
            thread,
            allocated: 0,
            buffers: buffers.max(1),
            size,
        })
    }

    /// A buffer to read into: one the SHA-256 is done with, a new one while under the cap, or
    /// else the next one to come back. `None` when the thread has ended (it panicked).
    pub fn buffer(&mut self) -> Option<Vec<u8>> {
        match self.back.try_recv() {
            Ok(b) => Some(b),
            Err(_) if self.allocated < self.buffers => {
                self.allocated += 1;
                Some(vec![0u8; self.size])
            }
            Err(_) => self.back.recv().ok(),
        }
    }

    /// Hands the first `n` bytes of `buf` (the next bytes of the stream) to the SHA-256.
    /// False when the thread has ended.
    pub fn hash(&self, buf: Vec<u8>, n: usize) -> bool {
        self.to_sha.send((buf, n)).is_ok()
    }

    /// The SHA-256 of everything handed over; `None` if the thread panicked.
    pub fn finish(self) -> Option<[u8; 32]> {
        drop(self.to_sha);
        self.thread.join().ok()
    }
}

/// Reads a whole file once, sequentially, computing every segment's platform digest, every
/// chunk's CRC32C and the whole-file SHA-256. SHA-256 runs on a second thread fed through a
/// small pool of buffers, so memory stays at a few MiB whatever the file size.
pub fn read_back(path: &Path, plan: &FilePlan) -> Result<ReadBack, ReadBackError> {
    let started = Instant::now();
    let io_err = |op: &'static str| {
        move |source: io::Error| ReadBackError::Io {
            op,
            path: path.to_owned(),
            source,
        }
    };
    // The last component must not be a symlink: only the store's own files are verified.
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
        .map_err(io_err("open"))?;
    // Purely a hint for read-ahead; failure changes nothing.
    let _ = rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::Sequential);

    let mut plan_hashing = PlanHashing::new(plan);
    let hash_err = || ReadBackError::Io {
        op: "hash",
        path: path.to_owned(),
        source: io::Error::other("sha-256 thread failed"),
    };
    let mut sha = ShaBeside::spawn(BUFFERS, BUF_SIZE).map_err(io_err("start hashing"))?;
    let mut actual_size = 0u64;
    loop {
        let Some(mut buf) = sha.buffer() else {
            return Err(hash_err());
        };
        let n = read_full(&mut file, &mut buf).map_err(io_err("read"))?;
        if n == 0 {
            break;
        }
        plan_hashing.feed(actual_size, &buf[..n]);
        actual_size += n as u64;
        if !sha.hash(buf, n) {
            return Err(hash_err());
        }
    }
    let sha256 = sha.finish().ok_or_else(hash_err)?;

    let (segments, chunk_crcs) = plan_hashing.finish(actual_size);
    let report = ReadBack {
        size_ok: actual_size == plan.size,
        actual_size,
        sha256,
        segments,
        chunk_crcs,
    };
    let elapsed_ms = started.elapsed().as_millis() as u64;
    tracing::debug!(
        path = %path.display(),
        len = actual_size,
        elapsed_ms,
        ok = report.all_ok(),
        "read back"
    );
    Ok(report)
}

/// Files at least this large are split into independent tasks (SHA-256 pass, MD5 of the
/// segments); smaller ones are read once by one task.
const SPLIT_MIN: u64 = 16 << 20;
/// Fewer MD5 segments than this in a file are hashed one stream each, as separate tasks; more
/// share SIMD lanes.
const LANES_MIN: usize = 4;
/// At most this many segments share one lanes task (its buffers: `LANES_MAX * LANES_PIECE`).
const LANES_MAX: usize = 32;
/// Read size of a sequential task.
const PIECE: usize = 256 << 10;
/// Read size per stream and round in a lanes task.
const LANES_PIECE: usize = 128 << 10;
/// Task workers per rayon thread (core) in [`read_back_many`].
const WORKERS_PER_CORE: usize = 2;

/// One independent unit of a file's split read-back.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Task {
    /// Reads the file from offset 0 to its end: SHA-256, every chunk's CRC32C, the size, and
    /// the digests of the segments, except the MD5 ones when `md5` is false (other tasks do
    /// those).
    Sequential { md5: bool },
    /// The MD5 of one segment, one stream.
    Md5 { segment: u32 },
    /// The MD5s of several segments, read in interleaved pieces and hashed in SIMD lanes.
    Md5Lanes { segments: Vec<u32> },
}

/// What one task found.
enum TaskOutput {
    Sequential {
        actual_size: u64,
        sha256: [u8; 32],
        segments: Vec<SegmentCheck>,
        chunk_crcs: Vec<u32>,
    },
    /// `(segment, md5 of the bytes present, bytes read)` per segment.
    Md5(Vec<(u32, [u8; 16], u64)>),
}

/// The identity of an open file (device, inode), to see that all tasks read the same file.
type FileIdentity = (u64, u64);

/// What one task gave: the identity of the file it read and its findings.
type TaskResult = Result<(FileIdentity, TaskOutput), ReadBackError>;

/// Cuts one file's read-back into independent tasks.
fn split(plan: &FilePlan, split_min: u64) -> Vec<Task> {
    let md5_segments: Vec<u32> = plan
        .segments
        .iter()
        .filter(|s| matches!(s.expect, Some(Digest::Md5(_))))
        .map(|s| s.idx)
        .collect();
    if plan.size < split_min || md5_segments.is_empty() {
        return vec![Task::Sequential { md5: true }];
    }
    let mut tasks = vec![Task::Sequential { md5: false }];
    if md5_segments.len() < LANES_MIN {
        tasks.extend(
            md5_segments
                .into_iter()
                .map(|segment| Task::Md5 { segment }),
        );
    } else {
        // Even groups of at most LANES_MAX segments, in file order.
        let groups = md5_segments.len().div_ceil(LANES_MAX);
        let per_group = md5_segments.len().div_ceil(groups);
        tasks.extend(md5_segments.chunks(per_group).map(|g| match g {
            [one] => Task::Md5 { segment: *one },
            _ => Task::Md5Lanes {
                segments: g.to_vec(),
            },
        }));
    }
    tasks
}

/// A rough CPU cost of a task (picoseconds on this class of machine), to start the biggest
/// tasks first.
fn cost(plan: &FilePlan, task: &Task) -> u64 {
    const READ: u64 = 100; // copying from the page cache, per byte
    const SHA256: u64 = 480;
    const MD5: u64 = 1050;
    let seg_len = |i: &u32| plan.segments.get(*i as usize).map_or(0, |s| s.range.len);
    match task {
        Task::Sequential { md5 } => {
            let md5_bytes: u64 = if *md5 {
                plan.segments
                    .iter()
                    .filter(|s| matches!(s.expect, Some(Digest::Md5(_))))
                    .map(|s| s.range.len)
                    .sum()
            } else {
                0
            };
            plan.size * (READ + SHA256 + 50) + md5_bytes * MD5
        }
        Task::Md5 { segment } => seg_len(segment) * (READ + MD5),
        Task::Md5Lanes { segments } => {
            // Lanes run about 0.35 of a single stream each, up to LANES_MAX.
            let lanes = segments.len().clamp(1, LANES_MAX) as u64;
            let bytes: u64 = segments.iter().map(seg_len).sum();
            bytes * READ + bytes * MD5 * 20 / (7 * lanes)
        }
    }
}

/// Opens a file to verify: never through a symlink in the last component.
fn open_nofollow(path: &Path) -> Result<(File, FileIdentity), ReadBackError> {
    let io_err = |op: &'static str| {
        move |source: io::Error| ReadBackError::Io {
            op,
            path: path.to_owned(),
            source,
        }
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
        .map_err(io_err("open"))?;
    let stat = rustix::fs::fstat(&file).map_err(|e| io_err("stat")(e.into()))?;
    Ok((file, (stat.st_dev as u64, stat.st_ino as u64)))
}

/// Fills `buf` from `offset` as far as the file allows; fewer bytes only at EOF.
fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], offset + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Runs one task of `path`'s read-back.
fn run_task(path: &Path, plan: &FilePlan, task: &Task) -> TaskResult {
    let (mut file, identity) = open_nofollow(path)?;
    let read_err = |source: io::Error| ReadBackError::Io {
        op: "read",
        path: path.to_owned(),
        source,
    };
    let output = match task {
        Task::Sequential { md5 } => {
            // Purely a hint for read-ahead; failure changes nothing.
            let _ = rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::Sequential);
            let mut hashing = PlanHashing::with_md5(plan, *md5);
            let mut sha = Sha256Hasher::new();
            let mut buf = vec![0u8; PIECE];
            let mut pos = 0u64;
            loop {
                let n = read_full(&mut file, &mut buf).map_err(read_err)?;
                if n == 0 {
                    break;
                }
                hashing.feed(pos, &buf[..n]);
                sha.update(&buf[..n]);
                pos += n as u64;
            }
            let (segments, chunk_crcs) = hashing.finish(pos);
            TaskOutput::Sequential {
                actual_size: pos,
                sha256: sha.finish(),
                segments,
                chunk_crcs,
            }
        }
        Task::Md5 { segment } => {
            let Some(seg) = plan.segments.get(*segment as usize) else {
                return Ok((identity, TaskOutput::Md5(Vec::new())));
            };
            let mut md5 = Md5Hasher::new();
            let got = read_range(&file, seg.range, |b| md5.update(b))?;
            TaskOutput::Md5(vec![(seg.idx, md5.finish(), got)])
        }
        Task::Md5Lanes { segments } => {
            let segs: Vec<&Segment> = segments
                .iter()
                .filter_map(|i| plan.segments.get(*i as usize))
                .collect();
            let mut lanes = Md5Lanes::new(segs.len());
            let mut bufs: Vec<Vec<u8>> = segs
                .iter()
                .map(|s| {
                    let len = usize::try_from(s.range.len).unwrap_or(LANES_PIECE);
                    vec![0u8; len.min(LANES_PIECE)]
                })
                .collect();
            let mut got = vec![0u64; segs.len()];
            let mut ended = vec![false; segs.len()];
            let mut lens = vec![0usize; segs.len()];
            loop {
                let mut any = false;
                for (i, seg) in segs.iter().enumerate() {
                    lens[i] = 0;
                    if ended[i] || got[i] >= seg.range.len {
                        continue;
                    }
                    let want = bufs[i]
                        .len()
                        .min(usize::try_from(seg.range.len - got[i]).unwrap_or(usize::MAX));
                    let n = read_full_at(&file, &mut bufs[i][..want], seg.range.offset + got[i])
                        .map_err(read_err)?;
                    ended[i] = n < want;
                    lens[i] = n;
                    got[i] += n as u64;
                    any |= n > 0;
                }
                if !any {
                    break;
                }
                let inputs: Vec<&[u8]> = bufs.iter().zip(&lens).map(|(b, &n)| &b[..n]).collect();
                lanes.update(&inputs);
            }
            let digests = lanes.finish();
            TaskOutput::Md5(
                segs.iter()
                    .zip(digests)
                    .zip(got)
                    .map(|((s, d), g)| (s.idx, d, g))
                    .collect(),
            )
        }
    };
    Ok((identity, output))
}

/// Puts the outputs of one file's tasks together into the report [`read_back`] would give.
fn merge(
    path: &Path,
    plan: &FilePlan,
    outputs: Vec<(FileIdentity, TaskOutput)>,
) -> Result<ReadBack, ReadBackError> {
    if outputs.windows(2).any(|w| w[0].0 != w[1].0) {
        return Err(ReadBackError::Replaced {
            path: path.to_owned(),
        });
    }
    let mut sequential = None;
    let mut md5s = Vec::new();
    for (_, out) in outputs {
        match out {
            TaskOutput::Sequential {
                actual_size,
                sha256,
                segments,
                chunk_crcs,
            } => sequential = Some((actual_size, sha256, segments, chunk_crcs)),
            TaskOutput::Md5(v) => md5s.extend(v),
        }
    }
    let Some((actual_size, sha256, mut segments, chunk_crcs)) = sequential else {
        // Every split has a sequential task; without it nothing was read.
        return Err(ReadBackError::Io {
            op: "read",
            path: path.to_owned(),
            source: io::Error::other("the sequential pass did not run"),
        });
    };
    for (idx, digest, got) in md5s {
        let (Some(seg), Some(check)) = (
            plan.segments.get(idx as usize),
            segments.get_mut(idx as usize),
        ) else {
            continue;
        };
        *check = SegmentCheck::from_hash(idx, seg.expect.clone(), Some(Digest::Md5(digest)));
        // A segment only partly present never passes, even by coincidence.
        if got < seg.range.len || seg.range.end() > actual_size {
            check.ok = false;
        }
    }
    Ok(ReadBack {
        size_ok: actual_size == plan.size,
        actual_size,
        sha256,
        segments,
        chunk_crcs,
    })
}

/// Reads back many files at once: the same report per file as [`read_back`], computed faster.
///
/// Each large file is cut into independent tasks (a sequential pass for its SHA-256, chunk
/// CRC32Cs, size and non-MD5 segments; its MD5 segments, many at a time in SIMD lanes, or one
/// stream each), and all tasks of all files run on the rayon pool, the biggest first, so that
/// every core stays busy to the end (two task workers per rayon thread, in a pool of their
/// own). Memory stays bounded: each worker holds at most `32 × 128 KiB` of buffers (16 MiB in
/// all on two cores). Results come back in the order of `files`.
pub fn read_back_many(files: &[(&Path, &FilePlan)]) -> Vec<Result<ReadBack, ReadBackError>> {
    read_back_many_with(files, SPLIT_MIN)
}

/// [`read_back_many`] splitting files of at least `split_min` bytes.
fn read_back_many_with(
    files: &[(&Path, &FilePlan)],
    split_min: u64,
) -> Vec<Result<ReadBack, ReadBackError>> {
    let started = Instant::now();
    let mut tasks: Vec<(usize, usize, Task, u64)> = Vec::new();
    let mut task_counts = vec![0usize; files.len()];
    for (f, (_, plan)) in files.iter().enumerate() {
        for (pos, task) in split(plan, split_min).into_iter().enumerate() {
            let c = cost(plan, &task);
            tasks.push((f, pos, task, c));
            task_counts[f] += 1;
        }
    }
    // Biggest first (longest-processing-time scheduling), then in file order.
    tasks.sort_by(|a, b| b.3.cmp(&a.3).then(a.0.cmp(&b.0)).then(a.1.cmp(&b.1)));

    let next = AtomicUsize::new(0);
    let run_all = |workers: usize| -> Vec<(usize, usize, TaskResult)> {
        (0..workers.clamp(1, tasks.len().max(1)))
            .into_par_iter()
            .flat_map_iter(|_| {
                let mut out = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((f, pos, task, _)) = tasks.get(i) else {
                        break;
                    };
                    let (path, plan) = files[*f];
                    let task_started = Instant::now();
                    let result = run_task(path, plan, task);
                    tracing::debug!(
                        path = %path.display(),
                        ?task,
                        elapsed_ms = task_started.elapsed().as_millis() as u64,
                        since_start_ms = started.elapsed().as_millis() as u64,
                        "read-back task done"
                    );
                    out.push((*f, *pos, result));
                }
                out
            })
            .collect()
    };
    // Tasks cannot be cut further, so with one worker per core the last ones leave a core
    // idle; two workers per core share the cores to the end (and keep their share of a busy
    // machine). Each worker holds at most LANES_MAX * LANES_PIECE of buffers.
    let workers = WORKERS_PER_CORE * rayon::current_num_threads();
    let mut done = if tasks.len() <= 1 {
        run_all(1)
    } else {
        match rayon::ThreadPoolBuilder::new()
            .num_threads(workers)
            .thread_name(|i| format!("dxmirror-verify-{i}"))
            .build()
        {
            Ok(pool) => pool.install(|| run_all(workers)),
            // No threads to be had: the global pool, one worker per thread.
            Err(_) => run_all(rayon::current_num_threads()),
        }
    };
    done.sort_by_key(|(f, pos, _)| (*f, *pos));

    let mut results = Vec::with_capacity(files.len());
    let mut done = done.into_iter().peekable();
    for (f, (path, plan)) in files.iter().enumerate() {
        let mut outputs = Vec::with_capacity(task_counts[f]);
        let mut error = None;
        while let Some((_, _, r)) = done.next_if(|(g, _, _)| *g == f) {
            match r {
                Ok(o) => outputs.push(o),
                Err(e) => {
                    error.get_or_insert(e);
                }
            }
        }
        let result = match error {
            Some(e) => Err(e),
            None => merge(path, plan, outputs),
        };
        if let Ok(rb) = &result {
            tracing::debug!(
                path = %path.display(),
                len = rb.actual_size,
                tasks = task_counts[f],
                ok = rb.all_ok(),
                "read back"
            );
        }
        results.push(result);
    }
    let elapsed_ms = started.elapsed().as_millis() as u64;
    tracing::debug!(
        files = files.len(),
        tasks = tasks.len(),
        elapsed_ms,
        "read back many"
    );
    results
}

/// Fills `buf` as far as the file allows; returns fewer bytes than `buf.len()` only at EOF.
fn read_full(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::testing::{md5_part, project_id, RemoteFileBuilder};
    use crate::model::{ChecksumType, RemoteFile, RemotePart, Stated};
    use crate::planner::{plan_file, FileKind};
    use md5::Digest as _;
    use std::io::Write;

    fn data(len: usize, seed: u64) -> Vec<u8> {
        let mut rng = fastrand::Rng::with_seed(seed);
        (0..len).map(|_| rng.u8(..)).collect()
    }

    fn md5_hex(b: &[u8]) -> String {
        hex::encode(md5::Md5::digest(b))
    }

    /// A plan with md5 parts of the given sizes over `bytes`.
    fn md5_plan(bytes: &[u8], part_sizes: &[u64], chunk: u64) -> FilePlan {
        let mut parts = Vec::new();
        let mut at = 0usize;
        for (i, &s) in part_sizes.iter().enumerate() {
            let s = s as usize;
            parts.push(md5_part(
                i as u32 + 1,
                s as u64,
                md5_hex(&bytes[at..at + s]),
            ));
            at += s;
        }
        plan_file(&remote(bytes.len() as u64, Some(parts), None, None), chunk).unwrap()
    }

    fn remote(
        size: u64,
        parts: Option<Vec<RemotePart>>,
        md5: Option<String>,
        checksum_type: Option<&str>,
    ) -> RemoteFile {
        let mut f = RemoteFileBuilder::new(&project_id(1), 1)
            .name("x")
            .size(size)
            .parts(parts)
            .build();
        f.md5 = md5.map(Stated::md5);
        f.checksum_type = checksum_type.map(Stated::checksum_type);
        f
    }

    fn write(dir: &Path, bytes: &[u8]) -> PathBuf {
        let p = dir.join("f");
        let mut f = File::create(&p).unwrap();
        f.write_all(bytes).unwrap();
        p
    }

    /// Fed in pieces of any size, the incremental check reports every segment once, in
    /// order, as soon as its end is passed, and ends with exactly the one-shot read-back.
    #[test]
    fn sequential_check_equals_read_back_whatever_the_pieces() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = data(700_001, 9);
        let plan = md5_plan(&bytes, &[300_000, 0, 250_000, 150_001], 64 << 10);
        bytes[400_000] ^= 1; // damage part 3
        let path = write(dir.path(), &bytes);
        let expected = read_back(&path, &plan).unwrap();
        for piece in [1usize, 4096, 65_537, 300_000, 1 << 20] {
            let mut check = SequentialCheck::new(&plan);
            let mut reported: Vec<SegmentCheck> = check.take_completed();
            let mut sha = crate::hashing::Sha256Hasher::new();
            for slice in bytes.chunks(piece) {
                let before = check.pos();
                for c in check.feed(slice) {
                    // Reported exactly when the fed bytes passed the segment's end.
                    let end = plan.segments[c.idx as usize].range.end();
                    assert!(
                        end > before || end == 0 && before == 0,
                        "late report of {}",
                        c.idx
                    );
                    assert!(end <= check.pos());
                    reported.push(c);
                }
                sha.update(slice);
            }
            assert_eq!(reported, expected.segments, "piece {piece}");
            assert_eq!(check.finish(sha.finish()), expected, "piece {piece}");
        }
        assert!(!expected.all_ok());
        assert_eq!(
            expected.bad_segments().map(|s| s.idx).collect::<Vec<_>>(),
            vec![2]
        );
    }

    #[test]
    fn read_back_agrees_with_positioned_checks() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = data(3 * BUF_SIZE + 12345, 1);
        let sizes = [
            BUF_SIZE as u64 + 7,
            1000,
            0,
            (2 * BUF_SIZE + 12345 - 1007) as u64,
        ];
        let plan = md5_plan(&bytes, &sizes, 300_000);
        let path = write(dir.path(), &bytes);
        let rb = read_back(&path, &plan).unwrap();
        assert!(rb.all_ok(), "{rb:?}");
        assert_eq!(rb.actual_size, bytes.len() as u64);
        assert_eq!(rb.sha256, <[u8; 32]>::from(sha2::Sha256::digest(&bytes)));
        let file = File::open(&path).unwrap();
        for seg in &plan.segments {
            assert_eq!(
                check_segment(&file, seg).unwrap(),
                rb.segments[seg.idx as usize]
            );
        }
        for c in &plan.chunks {
            let want = crc32c::crc32c(&bytes[c.range.offset as usize..c.range.end() as usize]);
            assert_eq!(rb.chunk_crcs[c.idx as usize], want);
            assert_eq!(chunk_crc(&file, c.range).unwrap(), want);
        }
    }

    #[test]
    fn flipped_byte_is_found_in_its_segment_and_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = data(100_000, 2);
        let plan = md5_plan(&bytes, &[40_000, 40_000, 20_000], 8192);
        bytes[50_000] ^= 0x01;
        let path = write(dir.path(), &bytes);
        let rb = read_back(&path, &plan).unwrap();
        assert!(rb.size_ok);
        assert!(!rb.all_ok());
        let bad: Vec<u32> = rb.bad_segments().map(|s| s.idx).collect();
        assert_eq!(bad, vec![1]);
        let file = File::open(&path).unwrap();
        assert!(!check_segment(&file, &plan.segments[1]).unwrap().ok);
        assert!(check_segment(&file, &plan.segments[0]).unwrap().ok);
        let chunk = plan
            .chunks
            .iter()
            .find(|c| c.range.offset <= 50_000 && 50_000 < c.range.end());
        let chunk = chunk.unwrap();
        let original = data(100_000, 2);
        let good =
            crc32c::crc32c(&original[chunk.range.offset as usize..chunk.range.end() as usize]);
        assert_ne!(rb.chunk_crcs[chunk.idx as usize], good);
    }

    #[test]
    fn short_and_long_files_are_findings() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = data(10_000, 3);
        let plan = md5_plan(&bytes, &[5_000, 5_000], 4096);
        let short = write(dir.path(), &bytes[..7_000]);
        let rb = read_back(&short, &plan).unwrap();
        assert!(!rb.size_ok);
        assert_eq!(rb.actual_size, 7_000);
        assert!(rb.segments[0].ok && !rb.segments[1].ok);
        let file = File::open(&short).unwrap();
        assert!(!check_segment(&file, &plan.segments[1]).unwrap().ok);
        assert!(matches!(
            chunk_crc(&file, ByteRange::new(4096, 4096)),
            Err(ReadBackError::Truncated { file_end: 7000, .. })
        ));

        let mut longer = bytes.clone();
        longer.push(0);
        let long = write(dir.path(), &longer);
        let rb = read_back(&long, &plan).unwrap();
        assert!(!rb.size_ok && rb.segments.iter().all(|s| s.ok));
        assert!(!rb.all_ok());
    }

    #[test]
    fn zero_byte_and_unverified_files() {
        let dir = tempfile::tempdir().unwrap();
        let empty = write(dir.path(), b"");
        let plan = md5_plan(b"", &[0], 10);
        let rb = read_back(&empty, &plan).unwrap();
        assert!(rb.all_ok());
        assert!(rb.chunk_crcs.is_empty());
        assert_eq!(
            hex::encode(rb.sha256),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );

        let bytes = data(3000, 4);
        let plan = plan_file(&remote(3000, None, None, None), 1000).unwrap();
        assert_eq!(plan.kind, FileKind::Unverified);
        let path = write(dir.path(), &bytes);
        let rb = read_back(&path, &plan).unwrap();
        assert!(rb.all_ok());
        assert_eq!(rb.segments[0].actual, None);
        assert_eq!(rb.chunk_crcs.len(), 3);
    }

    #[test]
    fn checksum_parts_and_whole_md5() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = data(9000, 5);
        let path = write(dir.path(), &bytes);
        let b64 = |b: &[u8]| {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.encode(b)
        };
        let parts = vec![
            RemotePart {
                index: 1,
                size: 4000,
                md5: None,
                checksum: Some(b64(&crc64fast_nvme_sum(&bytes[..4000]).to_be_bytes())),
            },
            RemotePart {
                index: 2,
                size: 5000,
                md5: None,
                checksum: Some(b64(&crc64fast_nvme_sum(&bytes[4000..]).to_be_bytes())),
            },
        ];
        let plan = plan_file(&remote(9000, Some(parts), None, Some("CRC64NVME")), 3000).unwrap();
        let rb = read_back(&path, &plan).unwrap();
        assert!(rb.all_ok(), "{rb:?}");
        assert_eq!(
            rb.segments[0].actual.as_ref().map(Digest::algorithm),
            Some(ChecksumType::Crc64Nvme.as_str())
        );

        let plan = plan_file(&remote(9000, None, Some(md5_hex(&bytes)), None), 4096).unwrap();
        assert!(read_back(&path, &plan).unwrap().all_ok());
        let plan = plan_file(&remote(9000, None, Some(md5_hex(b"x")), None), 4096).unwrap();
        assert!(!read_back(&path, &plan).unwrap().all_ok());
    }

    fn crc64fast_nvme_sum(b: &[u8]) -> u64 {
        let mut d = crc64fast_nvme::Digest::new();
        d.write(b);
        d.sum64()
    }

    #[test]
    fn missing_file_is_an_error_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let plan = md5_plan(b"", &[0], 10);
        let err = read_back(&dir.path().join("nope"), &plan).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
        assert!(matches!(err, ReadBackError::Io { op: "open", .. }));

        let target = write(dir.path(), b"");
        std::os::unix::fs::symlink(&target, dir.path().join("link")).unwrap();
        assert!(read_back(&dir.path().join("link"), &plan).is_err());
        assert!(read_back(&target, &plan).unwrap().all_ok());
    }

    /// A plan with md5 parts of the given sizes, and the file's bytes.
    fn md5_parts_case(len: usize, parts: &[u64], chunk: u64, seed: u64) -> (Vec<u8>, FilePlan) {
        let bytes = data(len, seed);
        let plan = md5_plan(&bytes, parts, chunk);
        (bytes, plan)
    }

    fn write_named(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    /// Whatever the split, the tasks put together give exactly the one-pass read-back, for
    /// every kind of file, damaged, short, long, empty, missing or a symlink.
    #[test]
    fn read_back_many_equals_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut cases: Vec<(PathBuf, FilePlan)> = Vec::new();
        let mut add = |name: &str, bytes: &[u8], plan: FilePlan| {
            cases.push((write_named(dir.path(), name, bytes), plan));
        };
        // 40 parts of uneven sizes (two lanes tasks), one of them damaged.
        let mut sizes: Vec<u64> = (0..40).map(|i| 10_000 + (i * 7919) % 30_000).collect();
        sizes[7] = 0;
        sizes[8] = 1;
        sizes[9] = 64;
        let total: u64 = sizes.iter().sum();
        let (mut bytes, plan) = md5_parts_case(total as usize, &sizes, 8192, 20);
        add("many-ok", &bytes, plan.clone());
        bytes[(sizes[..20].iter().sum::<u64>() + 5) as usize] ^= 0x40;
        add("many-bad", &bytes, plan.clone());
        add("many-short", &bytes[..bytes.len() - 20_000], plan.clone());
        let mut longer = bytes.clone();
        longer.extend_from_slice(b"tail");
        add("many-long", &longer, plan);
        // Parts longer than one read: several interleaved rounds, then uneven last pieces.
        let sizes = [600_000, 600_000, 600_000, 600_000, 599_999, 1];
        let (mut bytes, plan) = md5_parts_case(3_000_000, &sizes, 1 << 20, 30);
        add("rounds-ok", &bytes, plan.clone());
        bytes[1_000_000] ^= 1;
        add("rounds-bad", &bytes, plan);
        // 5 parts: one lanes task; 2 and 3 parts: single-stream tasks.
        let (bytes, plan) =
            md5_parts_case(300_000, &[100_000, 90_000, 60_000, 49_999, 1], 65_536, 21);
        add("five", &bytes, plan);
        let (bytes, plan) = md5_parts_case(300_000, &[150_000, 150_000], 65_536, 22);
        add("two", &bytes, plan.clone());
        add("two-short", &bytes[..200_000], plan);
        let (bytes, plan) = md5_parts_case(300_000, &[100_000, 100_000, 100_000], 40_000, 23);
        add("three", &bytes, plan);
        // A whole-file md5 (a symlinked file), right and wrong; one part.
        let bytes = data(250_000, 24);
        let plan = plan_file(&remote(250_000, None, Some(md5_hex(&bytes)), None), 30_000).unwrap();
        add("whole", &bytes, plan);
        let plan = plan_file(&remote(250_000, None, Some(md5_hex(b"y")), None), 30_000).unwrap();
        add("whole-bad", &bytes, plan);
        let (bytes, plan) = md5_parts_case(250_000, &[250_000], 100_000, 25);
        add("one-part", &bytes, plan);
        // Nothing to check against; an empty file.
        let plan = plan_file(&remote(250_000, None, None, None), 30_000).unwrap();
        add("unverified", &bytes, plan);
        add("empty", b"", md5_plan(b"", &[0], 10));
        // Checksum parts mixed with md5 parts.
        let b64 = |b: &[u8]| {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.encode(b)
        };
        let bytes = data(90_000, 26);
        let parts = (0..9)
            .map(|i| {
                let r = &bytes[i * 10_000..(i + 1) * 10_000];
                RemotePart {
                    index: i as u32 + 1,
                    size: 10_000,
                    md5: (i % 2 == 0).then(|| md5_hex(r)),
                    checksum: Some(b64(&crc64fast_nvme_sum(r).to_be_bytes())),
                }
            })
            .collect();
        let plan = plan_file(&remote(90_000, Some(parts), None, Some("CRC64NVME")), 4096).unwrap();
        add("mixed", &bytes, plan);

        let (target_path, target_plan) = cases[0].clone();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target_path, &link).unwrap();
        let missing = dir.path().join("missing");
        let mut all: Vec<(&Path, &FilePlan)> =
            cases.iter().map(|(p, plan)| (p.as_path(), plan)).collect();
        all.push((&link, &target_plan));
        all.push((&missing, &target_plan));

        let want: Vec<_> = all.iter().map(|(p, plan)| read_back(p, plan)).collect();
        for split_min in [0, 100_000, u64::MAX, SPLIT_MIN] {
            let got = read_back_many_with(&all, split_min);
            assert_eq!(got.len(), want.len());
            for ((g, w), (p, _)) in got.iter().zip(&want).zip(&all) {
                match (g, w) {
                    (Ok(g), Ok(w)) => assert_eq!(g, w, "{} split at {split_min}", p.display()),
                    (Err(g), Err(w)) => assert_eq!(g.to_string(), w.to_string()),
                    _ => panic!("{}: {g:?} vs {w:?}", p.display()),
                }
            }
        }
        // The findings the cases were built for are there.
        let got = read_back_many_with(&all, 0);
        let ok: Vec<bool> = got
            .iter()
            .map(|r| r.as_ref().is_ok_and(ReadBack::all_ok))
            .collect();
        assert_eq!(
            ok,
            [
                true, false, false, false, true, false, true, true, false, true, true, false, true,
                true, true, true, false, false
            ]
        );
        let bad = got[1].as_ref().unwrap();
        assert_eq!(bad.bad_segments().map(|s| s.idx).collect::<Vec<_>>(), [20]);
        assert_eq!(
            got[5]
                .as_ref()
                .unwrap()
                .bad_segments()
                .map(|s| s.idx)
                .collect::<Vec<_>>(),
            [1]
        );
        assert!(matches!(got[17], Err(ReadBackError::Io { op: "open", .. })));
        assert!(read_back_many(&[]).is_empty());
    }

    #[test]
    fn split_uses_lanes_for_many_md5_parts_only() {
        let sizes = vec![1000u64; 70];
        let (_, plan) = md5_parts_case(70_000, &sizes, 4096, 27);
        let tasks = split(&plan, 0);
        assert_eq!(tasks[0], Task::Sequential { md5: false });
        // 70 segments: three lanes tasks of at most 32, as even as possible, in order.
        let lanes: Vec<Vec<u32>> = tasks[1..]
            .iter()
            .map(|t| match t {
                Task::Md5Lanes { segments } => segments.clone(),
                t => panic!("{t:?}"),
            })
            .collect();
        assert_eq!(lanes.iter().map(Vec::len).collect::<Vec<_>>(), [24, 24, 22]);
        assert_eq!(lanes.concat(), (0..70).collect::<Vec<u32>>());
        assert_eq!(split(&plan, 70_001), [Task::Sequential { md5: true }]);

        let (_, plan) = md5_parts_case(3000, &[1000, 1000, 1000], 4096, 28);
        assert_eq!(
            split(&plan, 0),
            [
                Task::Sequential { md5: false },
                Task::Md5 { segment: 0 },
                Task::Md5 { segment: 1 },
                Task::Md5 { segment: 2 }
            ]
        );
        let plan = plan_file(&remote(3000, None, None, None), 1000).unwrap();
        assert_eq!(split(&plan, 0), [Task::Sequential { md5: true }]);
    }

    #[test]
    fn tasks_that_saw_different_files_are_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let (bytes, plan) = md5_parts_case(5000, &[1000; 5], 4096, 29);
        let a = write_named(dir.path(), "a", &bytes);
        let b = write_named(dir.path(), "b", &bytes);
        let tasks = split(&plan, 0);
        let run_all = || -> Vec<_> {
            tasks
                .iter()
                .map(|t| run_task(&a, &plan, t).unwrap())
                .collect()
        };
        assert!(merge(&a, &plan, run_all()).unwrap().all_ok());
        let mut outputs = run_all();
        outputs[1] = run_task(&b, &plan, &tasks[1]).unwrap();
        assert!(matches!(
            merge(&a, &plan, outputs),
            Err(ReadBackError::Replaced { .. })
        ));
    }

    /// Prints throughput; asserts only correctness (tests never time things).
    #[test]
    fn read_back_throughput() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = data(32 << 20, 6);
        let plan = md5_plan(&bytes, &[16 << 20, 16 << 20], 8 << 20);
        let path = write(dir.path(), &bytes);
        let started = Instant::now();
        let rb = read_back(&path, &plan).unwrap();
        let secs = started.elapsed().as_secs_f64().max(1e-9);
        eprintln!("read_back: {:.0} MB/s", bytes.len() as f64 / secs / 1e6);
        assert!(rb.all_ok());
    }
}
