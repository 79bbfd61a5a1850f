//! One chunk's fetch loop: take a connection permit, get (or refresh) the download URL, GET the
//! missing byte range, write it at its offset, sync and journal it step by step, and act on
//! every failure by `platform`'s retry table until the chunk is complete.

use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

use super::{EngineConfig, FileOutcome, Progress, TransferError};
use crate::counters::RetryReason;
use crate::hashing::crc32c_append;
use crate::journal::{FileKey, Journal};
use crate::model::ByteRange;
use crate::planner::Chunk;
use crate::platform::{ApiDisposition, DownloadDisposition, DownloadUrl, DxClient, PlatformError};

/// How a chunk task ended.
#[derive(Debug)]
pub(super) enum ChunkEnd {
    /// Every byte of the chunk is in: its done bytes and their CRC32C.
    Done {
        /// Bytes done (the chunk's length).
        bytes: u64,
        /// CRC32C of those bytes, computed as they arrived.
        crc: u32,
    },
    /// The file ends with this outcome.
    File(FileOutcome),
    /// The whole run must stop.
    Run(TransferError),
}

/// Why a chunk stopped without completing (the error side of the fetch loop's steps).
#[derive(Debug)]
enum ChunkFailure {
    /// The file ends with this outcome.
    File(FileOutcome),
    /// The whole run must stop.
    Run(TransferError),
}

/// Fresh download URLs refused in a row, with no byte arriving, before a file fails.
const MAX_FRUITLESS_REFRESHES: u32 = 8;

/// Why one GET stopped: the remote side (handled by the retry table), a range whose bytes
/// arrived but did not match the storage's `Content-MD5`, or this machine.
enum StreamError {
    Remote(PlatformError),
    /// A checked range arrived whole but damaged: a checksum failure, never progress.
    Mismatch(RangeMismatch),
    Local(TransferError),
}

/// A range whose bytes did not match the `Content-MD5` the storage host stated for them.
#[derive(Debug, Clone)]
struct RangeMismatch {
    /// The bytes of the file the GET delivered.
    range: ByteRange,
    /// What the storage host stated.
    expected: [u8; 16],
    /// What the bytes hash to.
    actual: [u8; 16],
}

impl std::fmt::Display for RangeMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "bytes {}..{}: Content-MD5 mismatch (storage stated {}, the bytes that arrived hash to {})",
            self.range.offset,
            self.range.end(),
            hex::encode(self.expected),
            hex::encode(self.actual)
        )
    }
}

/// How often one file's failures of the same kind reach the log: at most once per
/// [`LogLimiter::EVERY`], the others counted and named in the next line.
#[derive(Debug, Default)]
pub(super) struct LogLimiter {
    last: Option<Instant>,
    suppressed: u64,
}

impl LogLimiter {
    /// The shortest time between two lines.
    pub(super) const EVERY: std::time::Duration = std::time::Duration::from_secs(5);

    /// Whether a failure at `now` is logged; if so, how many were left out since the last
    /// line.
    pub(super) fn admit(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(at) if now.saturating_duration_since(at) < Self::EVERY => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

impl From<PlatformError> for StreamError {
    fn from(e: PlatformError) -> Self {
        StreamError::Remote(e)
    }
}

/// A cached download URL and a generation counter, so that only the first task to see a
/// URL fail replaces it.
struct UrlSlot {
    url: Option<Arc<DownloadUrl>>,
    generation: u64,
    not_found_refreshes: u32,
}

/// What every chunk task of one file shares.
pub(super) struct ChunkCtx {
    client: DxClient,
    journal: Journal,
    key: FileKey,
    file_size: u64,
    file: Arc<std::fs::File>,
    connections: Arc<Semaphore>,
    progress: Arc<Progress>,
    cfg: EngineConfig,
    url: tokio::sync::Mutex<UrlSlot>,
    last_progress: Mutex<Instant>,
    last_error: Mutex<Option<String>>,
    /// Bounds the log lines of damaged ranges.
    mismatch_log: Mutex<LogLimiter>,
    tracker: Arc<super::cursor::Tracker>,
    reservation: Arc<super::space::Reservation>,
    /// Largest range one GET asks for (4 MiB for drive-backed files, so that Azure states
    /// each range's MD5; unbounded otherwise).
    range_cap: u64,
    /// The backing object's ETag every GET is pinned to (`If-Match`), for drive-backed files
    /// whose describe gave one.
    pin: Option<String>,
    /// Neither sync nor journal progress while fetching: the caller makes the whole file
    /// durable once and journals its chunks with the file's end (small files, at most one
    /// progress step, so a kill loses no more than the usual unsynced step).
    deferred: bool,
}

impl ChunkCtx {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        client: DxClient,
        journal: Journal,
        key: FileKey,
        file_size: u64,
        file: Arc<std::fs::File>,
        connections: Arc<Semaphore>,
        progress: Arc<Progress>,
        cfg: EngineConfig,
        tracker: Arc<super::cursor::Tracker>,
        reservation: Arc<super::space::Reservation>,
    ) -> ChunkCtx {
        ChunkCtx {
            range_cap: u64::MAX,
            pin: None,
            deferred: false,
            client,
            journal,
            key,
            file_size,
            file,
            connections,
            progress,
            cfg,
            url: tokio::sync::Mutex::new(UrlSlot {
                url: None,
                generation: 0,
                not_found_refreshes: 0,
            }),
            last_progress: Mutex::new(Instant::now()),
            last_error: Mutex::new(None),
            mismatch_log: Mutex::new(LogLimiter::default()),
            tracker,
            reservation,
        }
    }

    /// Limits every GET to `cap` bytes.
    pub(super) fn with_range_cap(mut self, cap: u64) -> ChunkCtx {
        self.range_cap = cap.max(1);
        self
    }

    /// Pins every GET to the backing object's `etag` (`If-Match` on every hop).
    pub(super) fn with_pin(mut self, etag: Option<String>) -> ChunkCtx {
        self.pin = etag;
        self
    }

    /// Starts with `url` (asked for ahead of the file's turn) instead of asking for one; it is
    /// used like any URL: refreshed when expired or refused.
    pub(super) fn with_url(self, url: DownloadUrl) -> ChunkCtx {
        if let Ok(mut slot) = self.url.try_lock() {
            slot.url = Some(Arc::new(url));
            slot.generation += 1;
        }
        self
    }

    /// Defers durability to the caller: chunks neither sync nor journal their progress; the
    /// caller calls [`ChunkCtx::sync_file_then`] before it records anything.
    pub(super) fn with_deferred_durability(mut self) -> ChunkCtx {
        self.deferred = true;
        self
    }

    /// The journal key of the file (its project and id).
    pub(super) fn key(&self) -> &FileKey {
        &self.key
    }

    /// Time since any chunk of this file last moved bytes.
    pub(super) fn since_last_progress(&self) -> std::time::Duration {
        self.last_progress
            .lock()
            .map_or(std::time::Duration::ZERO, |t| t.elapsed())
    }

    /// The most recent error any chunk of this file met.
    pub(super) fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }

    fn note_error(&self, e: &dyn std::fmt::Display) {
        if let Ok(mut slot) = self.last_error.lock() {
            *slot = Some(e.to_string());
        }
    }

    fn note_progress(&self) {
        if let Ok(mut t) = self.last_progress.lock() {
            *t = Instant::now();
        }
    }

    /// The current download URL, asking the platform for one if there is none or it expired.
    async fn current_url(&self) -> Result<(Arc<DownloadUrl>, u64), ChunkFailure> {
        let mut slot = self.url.lock().await;
        if let Some(url) = &slot.url {
            if !url.is_expired(SystemTime::now(), std::time::Duration::from_secs(60)) {
                return Ok((url.clone(), slot.generation));
            }
        }
        match self
            .client
            .download_url(&self.key.file, &self.key.project)
            .await
        {
            Ok(url) => {
                let url = Arc::new(url);
                slot.url = Some(url.clone());
                slot.generation += 1;
                Ok((url, slot.generation))
            }
            Err(e) => Err(self.api_failure(e)),
        }
    }

    /// Drops the URL of `generation` (if nobody replaced it yet).
    async fn invalidate(&self, generation: u64) {
        let mut slot = self.url.lock().await;
        if slot.generation == generation {
            slot.url = None;
        }
    }

    /// Maps an API failure while getting a URL to the file's or the run's end.
    fn api_failure(&self, e: PlatformError) -> ChunkFailure {
        let reason = e.to_string();
        match e.api_disposition() {
            ApiDisposition::BadToken => ChunkFailure::Run(TransferError::BadToken(reason)),
            ApiDisposition::PermissionDenied => {
                ChunkFailure::Run(TransferError::PermissionDenied {
                    project: self.key.project.clone(),
                    message: reason,
                })
            }
            ApiDisposition::NotFound => ChunkFailure::File(FileOutcome::Gone { reason }),
            ApiDisposition::InvalidState => ChunkFailure::File(FileOutcome::Skipped { reason }),
            // The client already retried transient failures as long as the table allows.
            ApiDisposition::Retry | ApiDisposition::RetryAfter(_) | ApiDisposition::Fatal => {
                ChunkFailure::File(FileOutcome::Failed { reason })
            }
        }
    }

    /// Fetches the rest of `chunk`, starting from `done` bytes whose CRC32C is `crc`.
    pub(super) async fn fetch(&self, chunk: Chunk, done: u64, crc: u32) -> ChunkEnd {
        match self.fetch_rest(chunk, done, crc).await {
            Ok((bytes, crc)) => ChunkEnd::Done { bytes, crc },
            Err(ChunkFailure::File(outcome)) => ChunkEnd::File(outcome),
            Err(ChunkFailure::Run(e)) => ChunkEnd::Run(e),
        }
    }

    /// [`ChunkCtx::fetch`]'s loop: the chunk's final (done bytes, CRC32C), or why it stopped.
    async fn fetch_rest(
        &self,
        chunk: Chunk,
        mut done: u64,
        mut crc: u32,
    ) -> Result<(u64, u32), ChunkFailure> {
        let mut attempt: u32 = 0;
        // Fresh URLs refused again and again without a byte arriving: back off, then give up,
        // rather than hammer the API with URL requests.
        let mut refreshes: u32 = 0;
        // Damaged arrivals of the range starting at `done`: only a range that matched its
        // checksum resets this, never bytes merely arriving.
        let mut mismatches: u32 = 0;
        while done < chunk.range.len {
            let done_before = done;
            let permit = self
                .connections
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| {
                    ChunkFailure::File(FileOutcome::Failed {
                        reason: "shutting down".into(),
                    })
                })?;
            let (url, generation) = self.current_url().await?;
            let range = ByteRange::new(
                chunk.range.offset + done,
                (chunk.range.len - done).min(self.range_cap),
            );
            let res = self
                .stream_range(&url, range, chunk, &mut done, &mut crc, &mut attempt)
                .await;
            drop(permit);
            if done > done_before {
                refreshes = 0;
                mismatches = 0;
            }
            let err = match res {
                Ok(()) => continue,
                Err(StreamError::Local(e)) => return Err(ChunkFailure::Run(e)),
                Err(StreamError::Mismatch(m)) => {
                    mismatches += 1;
                    self.client.counters().checksum_mismatch();
                    self.client.counters().chunk_retry(RetryReason::Checksum);
                    self.range_damaged(chunk, &m, mismatches)?;
                    attempt += 1;
                    tokio::time::sleep(self.cfg.backoff.next_delay(attempt)).await;
                    continue;
                }
                Err(StreamError::Remote(e)) => e,
            };
            self.note_error(&err);
            match err.download_disposition() {
                DownloadDisposition::RetryRange => {
                    self.client.counters().chunk_retry(RetryReason::Transient);
                    attempt += 1;
                    let delay = self.cfg.backoff.next_delay(attempt);
                    debug!(chunk_idx = chunk.idx, attempt, error = %err, "range retry");
                    tokio::time::sleep(delay).await;
                }
                DownloadDisposition::RetryAfter(delay) => {
                    self.client.counters().chunk_retry(RetryReason::Throttled);
                    self.client.counters().throttled(delay);
                    debug!(
                        chunk_idx = chunk.idx,
                        delay_ms = delay.as_millis() as u64,
                        "download host asked to wait"
                    );
                    tokio::time::sleep(delay).await;
                }
                DownloadDisposition::RefreshUrl => {
                    self.client.counters().chunk_retry(RetryReason::UrlRefresh);
                    self.client.counters().url_refresh();
                    refreshes += 1;
                    if refreshes > MAX_FRUITLESS_REFRESHES {
                        return Err(ChunkFailure::File(FileOutcome::Failed {
                            reason: format!(
                                "the download host refused {refreshes} fresh URLs in a row: {err}"
                            ),
                        }));
                    }
                    debug!(
                        chunk_idx = chunk.idx,
                        attempt = refreshes,
                        "download URL refused; getting a fresh one"
                    );
                    self.invalidate(generation).await;
                    if refreshes > 1 {
                        tokio::time::sleep(self.cfg.backoff.next_delay(refreshes - 1)).await;
                    }
                }
                DownloadDisposition::RefreshUrlOnce => {
                    let mut slot = self.url.lock().await;
                    if slot.not_found_refreshes >= 1 {
                        return Err(ChunkFailure::File(FileOutcome::Failed {
                            reason: format!(
                                "download URL answers not found even after a refresh: {err}"
                            ),
                        }));
                    }
                    slot.not_found_refreshes += 1;
                    self.client.counters().chunk_retry(RetryReason::UrlRefresh);
                    self.client.counters().url_refresh();
                    if slot.generation == generation {
                        slot.url = None;
                    }
                }
                DownloadDisposition::ObjectChanged => {
                    warn!(chunk_idx = chunk.idx, error = %err, "the backing object changed since its describe");
                    return Err(ChunkFailure::File(FileOutcome::ObjectChanged {
                        reason: format!(
                            "the object behind this drive-backed file was overwritten since the platform described it ({err} to If-Match with the described ETag): the platform's describe no longer matches the bytes, so the file must be re-vended; the bytes staged so far were discarded"
                        ),
                    }));
                }
                DownloadDisposition::Fail => {
                    warn!(chunk_idx = chunk.idx, error = %err, "range failed permanently");
                    return Err(ChunkFailure::File(FileOutcome::Failed {
                        reason: err.to_string(),
                    }));
                }
            }
        }
        Ok((done, crc))
    }

    /// Counts one damaged arrival of a checked range against `max_verify_retries` (the same
    /// bound as a segment's re-fetches): logged at a bounded rate, and once the bound is
    /// passed the file ends corrupt with the evidence.
    fn range_damaged(
        &self,
        chunk: Chunk,
        m: &RangeMismatch,
        mismatches: u32,
    ) -> Result<(), ChunkFailure> {
        self.note_error(m);
        let admitted = self
            .mismatch_log
            .lock()
            .ok()
            .and_then(|mut l| l.admit(Instant::now()));
        if let Some(suppressed) = admitted {
            warn!(chunk_idx = chunk.idx, offset = m.range.offset, len = m.range.len, attempt = mismatches, suppressed, error = %m, "range damaged in transit; fetching it again");
        }
        let bound = self.cfg.max_verify_retries;
        if mismatches > bound {
            return Err(ChunkFailure::File(FileOutcome::Corrupt {
                reason: format!(
                    "{m}; still wrong after {bound} re-fetches (max-verify-retries): the storage keeps serving bytes that do not match its own checksum"
                ),
            }));
        }
        Ok(())
    }

    /// One GET of `range` (the missing tail of `chunk`): writes what arrives, syncing and
    /// journaling every `progress_step` bytes and at the end. `done`/`crc` advance with every
    /// byte written, so a retry continues where this attempt stopped.
    async fn stream_range(
        &self,
        url: &DownloadUrl,
        range: ByteRange,
        chunk: Chunk,
        done: &mut u64,
        crc: &mut u32,
        attempt: &mut u32,
    ) -> Result<(), StreamError> {
        let mut body = self
            .client
            .get_range_pinned(url, range, self.file_size, self.pin.as_deref())
            .await?;
        if let Some(expected) = body.content_md5() {
            return self
                .stream_checked_range(&mut body, expected, chunk, done, crc, attempt)
                .await;
        }
        let mut buf: Vec<u8> = Vec::with_capacity(self.cfg.write_buffer);
        let mut unsynced: u64 = 0;
        let step = self.cfg.progress_step;
        loop {
            let next = body.next_chunk().await;
            let bytes = match next {
                Ok(Some(b)) => Some(b),
                Ok(None) => None,
                Err(e) => {
                    // Keep what arrived: write it so the retry resumes after it.
                    self.flush(&mut buf, chunk, done, crc).await?;
                    return Err(StreamError::Remote(e));
                }
            };
            let finished = bytes.is_none();
            if let Some(b) = bytes {
                // The rate limit holds the read back, which TCP turns into a slower sender.
                self.cfg
                    .bandwidth
                    .admit(&self.key.project, b.len() as u64)
                    .await;
                buf.extend_from_slice(&b);
                if *attempt > 0 {
                    *attempt = 0;
                }
            }
            if buf.len() >= self.cfg.write_buffer || (finished && !buf.is_empty()) {
                unsynced += buf.len() as u64;
                self.flush(&mut buf, chunk, done, crc).await?;
            }
            if unsynced >= step || (finished && unsynced > 0) {
                self.sync_and_journal(chunk, *done, *crc).await?;
                unsynced = 0;
            }
            if finished {
                return Ok(());
            }
        }
    }

    /// A range the storage host stated an MD5 for (`Content-MD5`, at most 4 MiB): its bytes are
    /// written as they arrive but count (digest, cursor, journal) only once the whole range
    /// matches the MD5. A mismatch or a cut leaves `done` where it was: the range is fetched
    /// again and its bytes overwritten, so a byte damaged in transit is caught here, to the
    /// range, even where the platform's only checksum covers the whole file.
    async fn stream_checked_range(
        &self,
        body: &mut crate::platform::RangeBody,
        expected: [u8; 16],
        chunk: Chunk,
        done: &mut u64,
        crc: &mut u32,
        attempt: &mut u32,
    ) -> Result<(), StreamError> {
        let mut md5 = crate::hashing::Md5Hasher::new();
        let mut held: u64 = 0;
        let mut held_crc = *crc;
        let mut buf: Vec<u8> = Vec::with_capacity(self.cfg.write_buffer);
        loop {
            let bytes = body.next_chunk().await.map_err(StreamError::Remote)?;
            let finished = bytes.is_none();
            if let Some(b) = bytes {
                self.cfg
                    .bandwidth
                    .admit(&self.key.project, b.len() as u64)
                    .await;
                buf.extend_from_slice(&b);
            }
            if buf.len() >= self.cfg.write_buffer || (finished && !buf.is_empty()) {
                let offset = chunk.range.offset + *done + held;
                let mut data = self
                    .write_at(std::mem::take(&mut buf), chunk, offset)
                    .await?;
                md5.update(&data);
                held_crc = crc32c_append(held_crc, &data);
                held += data.len() as u64;
                data.clear();
                buf = data;
                // Not progress yet: these bytes count only once the range matches.
            }
            if finished {
                break;
            }
        }
        let got = md5.finish();
        if got != expected {
            return Err(StreamError::Mismatch(RangeMismatch {
                range: ByteRange::new(chunk.range.offset + *done, held),
                expected,
                actual: got,
            }));
        }
        *done += held;
        *crc = held_crc;
        // A range that matched its checksum is what proves the connection works again.
        *attempt = 0;
        self.counted(chunk, *done, held);
        if held > 0 {
            self.sync_and_journal(chunk, *done, *crc).await?;
        }
        Ok(())
    }

    /// Writes the buffer at its offset and advances `done` and `crc`.
    async fn flush(
        &self,
        buf: &mut Vec<u8>,
        chunk: Chunk,
        done: &mut u64,
        crc: &mut u32,
    ) -> Result<(), StreamError> {
        if buf.is_empty() {
            return Ok(());
        }
        let data = self
            .write_at(std::mem::take(buf), chunk, chunk.range.offset + *done)
            .await?;
        *crc = crc32c_append(*crc, &data);
        *done += data.len() as u64;
        self.counted(chunk, *done, data.len() as u64);
        // Reuse the allocation for the next fill.
        let mut data = data;
        data.clear();
        *buf = data;
        Ok(())
    }

    /// Bytes `..done` of `chunk` are written and count: the hash cursor may read them back.
    fn counted(&self, chunk: Chunk, done: u64, n: u64) {
        self.tracker.advance(chunk.idx, done);
        self.progress.add_bytes(n);
        self.client.counters().fetched(n);
        self.reservation.consumed(n);
        self.note_progress();
    }

    /// Writes `data` at `offset` of the staging file, pausing while the disk is full, and hands
    /// the buffer back.
    async fn write_at(
        &self,
        mut data: Vec<u8>,
        chunk: Chunk,
        offset: u64,
    ) -> Result<Vec<u8>, StreamError> {
        let mut paused_since: Option<Instant> = None;
        loop {
            let file = self.file.clone();
            let (back, res) = tokio::task::spawn_blocking(move || {
                let res = file.write_all_at(&data, offset);
                (data, res)
            })
            .await
            .map_err(|e| {
                StreamError::Local(TransferError::Io(format!("write task failed: {e}")))
            })?;
            data = back;
            match res {
                Ok(()) => break,
                Err(e) => match TransferError::from_write(&self.key.file, e) {
                    // The whole buffer is written again at the same offset once space returns;
                    // `done` has not moved, so nothing unwritten is counted.
                    TransferError::DiskFull(msg) => {
                        self.pause_for_disk(chunk, offset, &msg, &mut paused_since)
                            .await?
                    }
                    other => return Err(StreamError::Local(other)),
                },
            }
        }
        self.resumed_after_disk(chunk, paused_since);
        Ok(data)
    }

    /// One pause of a chunk whose write or sync found the disk full: reported (log and journal
    /// event) on the first pause only, then waits `disk_poll` before the caller tries again.
    /// Waiting for space is not a lack of progress: the file's patience clock is held.
    async fn pause_for_disk(
        &self,
        chunk: Chunk,
        offset: u64,
        msg: &str,
        paused_since: &mut Option<Instant>,
    ) -> Result<(), StreamError> {
        if paused_since.is_none() {
            *paused_since = Some(Instant::now());
            warn!(chunk_idx = chunk.idx, offset, error = %msg, "disk full; transfer paused until space returns");
            self.journal
                .record_event(
                    crate::journal::EventLevel::Warn,
                    Some(&self.key.project),
                    Some(&self.key.file),
                    format!("disk full; transfer paused until space returns: {msg}"),
                )
                .await
                .map_err(|e| StreamError::Local(TransferError::Journal(e)))?;
        }
        self.note_progress();
        tokio::time::sleep(self.cfg.disk_poll).await;
        self.note_progress();
        Ok(())
    }

    /// Logs the end of a disk-full pause, if there was one.
    fn resumed_after_disk(&self, chunk: Chunk, paused_since: Option<Instant>) {
        if let Some(since) = paused_since {
            info!(
                chunk_idx = chunk.idx,
                elapsed_ms = since.elapsed().as_millis() as u64,
                "disk space returned; transfer resumed"
            );
        }
    }

    /// Makes the written bytes durable, then records them in the journal (and waits for the
    /// commit). Never the other way round.
    /// A sync failing for lack of space is retried once space returns (nothing is journaled
    /// before it succeeds); should the kernel have dropped pages with the failure, the hash
    /// cursor's read-back finds the segment wrong and it is fetched again, never published.
    async fn sync_and_journal(&self, chunk: Chunk, done: u64, crc: u32) -> Result<(), StreamError> {
        if self.deferred {
            return Ok(());
        }
        self.sync_pausing(chunk, chunk.range.offset + done).await?;
        self.journal
            .record_chunk_progress(&self.key, chunk.idx, done, crc)
            .await
            .map_err(|e| StreamError::Local(TransferError::Journal(e)))?;
        Ok(())
    }

    /// `fdatasync`s the staging file, pausing (reported once) while the disk is full.
    async fn sync_pausing(&self, chunk: Chunk, offset: u64) -> Result<(), StreamError> {
        self.sync_then(chunk, offset, |_| ()).await
    }

    /// `fdatasync`s the staging file, pausing (reported once) while the disk is full, then runs
    /// `then` on the synced file on the same blocking thread (one hand-off for both).
    async fn sync_then<T: Send + 'static>(
        &self,
        chunk: Chunk,
        offset: u64,
        then: impl Fn(&std::fs::File) -> T + Send + Sync + 'static,
    ) -> Result<T, StreamError> {
        let then = Arc::new(then);
        let mut paused_since: Option<Instant> = None;
        loop {
            let (file, then) = (self.file.clone(), then.clone());
            let res = tokio::task::spawn_blocking(move || file.sync_data().map(|()| then(&file)))
                .await
                .map_err(|e| {
                    StreamError::Local(TransferError::Io(format!("sync task failed: {e}")))
                })?;
            match res {
                Ok(out) => {
                    self.resumed_after_disk(chunk, paused_since);
                    return Ok(out);
                }
                Err(e) => match TransferError::from_write(&self.key.file, e) {
                    TransferError::DiskFull(msg) => {
                        self.pause_for_disk(chunk, offset, &msg, &mut paused_since)
                            .await?
                    }
                    other => return Err(StreamError::Local(other)),
                },
            }
        }
    }

    /// Makes every byte written so far durable (`fdatasync`, pausing while the disk is full)
    /// for a file whose chunks defer durability, then runs `then` on the synced file (the
    /// read-back) on the same blocking thread. `chunk` only labels the log lines.
    pub(super) async fn sync_file_then<T: Send + 'static>(
        &self,
        chunk: Chunk,
        then: impl Fn(&std::fs::File) -> T + Send + Sync + 'static,
    ) -> Result<T, TransferError> {
        match self.sync_then(chunk, chunk.range.offset, then).await {
            Ok(out) => Ok(out),
            Err(StreamError::Local(e)) => Err(e),
            Err(StreamError::Remote(e)) => Err(TransferError::Io(e.to_string())),
            Err(StreamError::Mismatch(m)) => Err(TransferError::Io(m.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn log_limiter_admits_one_line_per_interval_and_counts_the_rest() {
        let t0 = Instant::now();
        let mut l = LogLimiter::default();
        assert_eq!(l.admit(t0), Some(0));
        assert_eq!(l.admit(t0 + Duration::from_secs(1)), None);
        assert_eq!(l.admit(t0 + Duration::from_secs(4)), None);
        assert_eq!(l.admit(t0 + LogLimiter::EVERY), Some(2));
        assert_eq!(l.admit(t0 + LogLimiter::EVERY * 3), Some(0));
    }

    #[test]
    fn mismatch_names_the_range_and_both_digests() {
        let m = RangeMismatch {
            range: ByteRange::new(4096, 100),
            expected: [0xab; 16],
            actual: [0x01; 16],
        };
        let text = m.to_string();
        assert!(
            text.starts_with("bytes 4096..4196: Content-MD5 mismatch"),
            "{text}"
        );
        assert!(text.contains(&"ab".repeat(16)), "{text}");
        assert!(text.contains(&"01".repeat(16)), "{text}");
    }
}
