//! The DNAnexus-compatible sandbox: a server on loopback that tests, `dxmirror demo`, the
//! kill/chaos tests and the benchmark use in place of the platform.
//!
//! Two listeners: the API + download host (`POST /<route>` JSON API, `GET /F/D/...` download
//! URLs, `/_sandbox/*` control) and a separate storage host (`GET /blob/...`, the signed
//! Azure/S3 stand-in that drive-backed files redirect to). Content is synthetic and
//! deterministic ([`dataset`]); faults are injected deterministically ([`faults`]); every byte
//! written to a socket is counted ([`stats`]).
//!
//! This crate must stay faithful to the real platform (the real `dx` client must work against
//! it) and must never reach beyond loopback. It is not the platform client: it shares no code
//! with `platform` beyond the domain types of `dxmirror-model`, its only dxmirror dependency
//! (the `dxmirror` library re-exports it as `dxmirror::sandbox`).

pub mod dataset;
pub mod faults;
pub mod stats;

mod api;
mod download;
mod http;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sha2::Digest as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::model::{ByteRange, FileId, ProjectId};

// The domain types, under the name the rest of dxmirror uses for them.
use dxmirror_model as model;

pub use dataset::{
    BuiltFile, Dataset, DatasetError, FileSpec, FileSpecKind, PartSizes, ProjectSpec,
};
pub use faults::{BodyFault, FaultConfig, FaultError};
pub use stats::{ServeStats, Served};

/// The sandbox could not start or serve.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// A listener could not be bound.
    #[error("cannot bind {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// A dataset could not be built.
    #[error(transparent)]
    Dataset(#[from] DatasetError),
    /// A `--faults` value could not be parsed.
    #[error(transparent)]
    Faults(#[from] FaultError),
    /// A bad command-line value.
    #[error("bad value for --{flag}: {value:?}")]
    BadArg {
        /// The flag.
        flag: &'static str,
        /// The value.
        value: String,
    },
    /// A bad value of `DXMIRROR_SANDBOX_LISTING_ORDER`.
    #[error("bad value for {LISTING_ORDER_ENV}: {0:?} (expected newest-first, oldest-first or scrambled)")]
    BadListingOrder(String),
    /// A project id the sandbox does not have.
    #[error("no such project {0}")]
    NoSuchProject(ProjectId),
    /// Printing the start-up line or waiting for signals failed.
    #[error("sandbox io: {0}")]
    Io(#[from] std::io::Error),
}

/// The environment variable that picks the listing order of a sandbox whose
/// [`SandboxOptions::listing_order`] is `None` (tests and `dxmirror sandbox`): CI runs the
/// listing tests again with it set to `scrambled`.
pub const LISTING_ORDER_ENV: &str = "DXMIRROR_SANDBOX_LISTING_ORDER";

/// The order in which `/system/findDataObjects`, `listFolder` and `resolveDataObjects` give a
/// project's files (each deterministic; the platform documents the first).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ListingOrder {
    /// Newest-modified first, ties by id descending: the platform's documented order.
    #[default]
    NewestFirst,
    /// Oldest-modified first, ties by id ascending: a file modified during a crawl moves to a
    /// page not yet read.
    OldestFirst,
    /// By a hash of the file id, whatever the times: a file modified during a crawl stays where
    /// it was, and no page says anything about another's times.
    Scrambled,
}

impl ListingOrder {
    /// Parses `newest-first`, `oldest-first` or `scrambled`.
    pub fn parse(text: &str) -> Result<ListingOrder, SandboxError> {
        match text {
            "newest-first" => Ok(ListingOrder::NewestFirst),
            "oldest-first" => Ok(ListingOrder::OldestFirst),
            "scrambled" => Ok(ListingOrder::Scrambled),
            other => Err(SandboxError::BadListingOrder(other.to_owned())),
        }
    }

    /// The order named by [`LISTING_ORDER_ENV`] (unset or empty: newest-first).
    pub fn from_env() -> Result<ListingOrder, SandboxError> {
        match std::env::var(LISTING_ORDER_ENV) {
            Ok(v) if !v.is_empty() => ListingOrder::parse(&v),
            _ => Ok(ListingOrder::NewestFirst),
        }
    }

    /// Sorts `order` (indexes into `files`) into this order.
    fn sort(self, order: &mut [usize], files: &[Arc<BuiltFile>]) {
        match self {
            ListingOrder::NewestFirst => order.sort_by(|a, b| {
                let (fa, fb) = (&files[*a], &files[*b]);
                fb.spec
                    .modified_ms
                    .cmp(&fa.spec.modified_ms)
                    .then_with(|| fb.id.cmp(&fa.id))
            }),
            ListingOrder::OldestFirst => order.sort_by(|a, b| {
                let (fa, fb) = (&files[*a], &files[*b]);
                fa.spec
                    .modified_ms
                    .cmp(&fb.spec.modified_ms)
                    .then_with(|| fa.id.cmp(&fb.id))
            }),
            ListingOrder::Scrambled => order.sort_by_cached_key(|i| {
                let digest = sha2::Sha256::digest(files[*i].id.as_str().as_bytes());
                (digest[..8].to_vec(), files[*i].id.clone())
            }),
        }
    }
}

/// Default bearer token of a sandbox.
pub const DEFAULT_TOKEN: &str = "sandbox-token-0123456789abcdef";

/// How to run a sandbox.
#[derive(Debug, Clone)]
pub struct SandboxOptions {
    /// API + download host (default `127.0.0.1:0`).
    pub api_addr: SocketAddr,
    /// Storage host (default `127.0.0.2:0`).
    pub storage_addr: SocketAddr,
    /// The bearer token the API accepts.
    pub token: String,
    /// Projects and files.
    pub dataset: Dataset,
    /// Faults (all off by default).
    pub faults: FaultConfig,
    /// Global cap in bytes/s on download and storage bodies.
    pub bandwidth: Option<u64>,
    /// Cap on download URL lifetime (`duration` is clamped to it).
    pub url_ttl: Duration,
    /// Lifetime of storage URLs behind the 302 of drive-backed files.
    pub storage_url_ttl: Duration,
    /// `Retry-After` of 503/429 answers, in seconds.
    pub retry_after_secs: u64,
    /// An outside content server (e.g. nginx over a directory of the dataset's files, each
    /// named by its file id) that serves the bytes in place of the sandbox: download URLs of
    /// platform-hosted files become `<content_url>/<file-id>`, and the 302 of drive-backed
    /// files points there instead of the storage host. The API (listing, describe, download
    /// URLs, the 302) stays the sandbox's; the content server checks nothing.
    pub content_url: Option<String>,
    /// The order of listings; `None`: [`ListingOrder::from_env`] (newest-first unless
    /// [`LISTING_ORDER_ENV`] says otherwise).
    pub listing_order: Option<ListingOrder>,
}

impl Default for SandboxOptions {
    fn default() -> SandboxOptions {
        SandboxOptions {
            api_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            storage_addr: SocketAddr::from(([127, 0, 0, 2], 0)),
            token: DEFAULT_TOKEN.to_owned(),
            dataset: Dataset::stjude_demo(),
            faults: FaultConfig::default(),
            bandwidth: None,
            url_ttl: Duration::from_secs(365 * 86_400),
            storage_url_ttl: Duration::from_secs(300),
            retry_after_secs: 1,
            content_url: None,
            listing_order: None,
        }
    }
}

/// A file as the sandbox holds it (for tests to compare against).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxFile {
    /// The id.
    pub id: FileId,
    /// The project.
    pub project: ProjectId,
    /// Folder.
    pub folder: String,
    /// Name.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// `closed`, `open`, ...
    pub state: String,
    /// `live`, `archived`, ...
    pub archival_state: String,
    /// Integrity kind.
    pub kind: FileSpecKind,
    /// Part md5s / checksums as described (empty for parts-less symlinks).
    pub parts: Vec<dataset::BuiltPart>,
    /// Whole-file md5 of a symlink.
    pub md5: Option<String>,
}

/// Mutable world: the dataset plus access state and indexes.
///
/// One file id may be listed in several projects (a DNAnexus clone, or one St. Jude file
/// vended into several data requests): `by_id` holds every copy, and lookups that know the
/// project pick the copy in it.
pub(crate) struct World {
    pub token: String,
    pub ds: Dataset,
    pub revoked: HashSet<ProjectId>,
    /// Indexes into `ds.files` of replaced copies (a replacement hides one project's copy only).
    pub removed: HashSet<usize>,
    /// Every copy of each id, in the order they were added.
    pub by_id: HashMap<FileId, Vec<usize>>,
    /// Live files per project, in `listing_order`.
    pub order: HashMap<ProjectId, Vec<usize>>,
    /// The order of listings.
    pub listing_order: ListingOrder,
}

impl World {
    fn new(token: String, ds: Dataset, listing_order: ListingOrder) -> World {
        let mut w = World {
            token,
            ds,
            listing_order,
            revoked: HashSet::new(),
            removed: HashSet::new(),
            by_id: HashMap::new(),
            order: HashMap::new(),
        };
        w.reindex();
        w
    }

    fn reindex(&mut self) {
        self.by_id.clear();
        self.order.clear();
        for (i, f) in self.ds.files.iter().enumerate() {
            self.by_id.entry(f.id.clone()).or_default().push(i);
            if !self.removed.contains(&i) {
                self.order.entry(f.project.clone()).or_default().push(i);
            }
        }
        for p in &self.ds.projects {
            self.order.entry(p.id.clone()).or_default();
        }
        let files = &self.ds.files;
        for v in self.order.values_mut() {
            self.listing_order.sort(v, files);
        }
    }

    /// A live (not replaced) copy of a file: the first one added.
    pub fn file(&self, id: &FileId) -> Option<&Arc<BuiltFile>> {
        self.by_id
            .get(id)?
            .iter()
            .find(|i| !self.removed.contains(*i))
            .map(|i| &self.ds.files[*i])
    }

    /// The live copy of a file in `project` when there is one, else any live copy (so that
    /// the caller can tell "not in this project" from "no such file").
    pub fn file_in(&self, id: &FileId, project: Option<&str>) -> Option<&Arc<BuiltFile>> {
        let in_project = project.and_then(|p| {
            self.by_id
                .get(id)?
                .iter()
                .filter(|i| !self.removed.contains(*i))
                .map(|i| &self.ds.files[*i])
                .find(|f| f.project.as_str() == p)
        });
        in_project.or_else(|| self.file(id))
    }

    pub fn project(&self, id: &ProjectId) -> Option<&dataset::BuiltProject> {
        self.ds.projects.iter().find(|p| &p.id == id)
    }
}

/// Global token bucket for the bandwidth cap.
pub(crate) struct Limiter {
    rate: u64,
    next: Mutex<Instant>,
}

impl Limiter {
    /// Waits until `n` bytes may be sent.
    pub async fn take(&self, n: u64) {
        let start = {
            let mut next = match self.next.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            let now = Instant::now();
            let start = (*next).max(now);
            *next = start + Duration::from_secs_f64(n as f64 / self.rate.max(1) as f64);
            start
        };
        tokio::time::sleep_until(start.into()).await;
    }
}

/// Everything the connection tasks share.
pub(crate) struct Shared {
    pub world: RwLock<World>,
    pub faults: RwLock<FaultConfig>,
    pub counters: stats::Counters,
    /// How many times each (file, start, end) was requested.
    pub range_requests: Mutex<HashMap<(String, u64, u64), u64>>,
    /// Pending overwrites of backing objects: the file's object is overwritten once this many
    /// of its bytes were served.
    pub overwrites: Mutex<Vec<(FileId, u64)>>,
    /// Pending modifications during a crawl: the file is modified once this many
    /// `/system/findDataObjects` pages were served (see [`Sandbox::modify_after_pages`]).
    pub modifications: Mutex<Vec<(FileId, u64)>>,
    key: [u8; 32],
    pub api_base: String,
    pub storage_base: String,
    pub url_ttl: Duration,
    pub storage_url_ttl: Duration,
    pub retry_after_secs: u64,
    pub limiter: Option<Limiter>,
    /// `SandboxOptions::content_url`, without a trailing `/`.
    pub content_base: Option<String>,
}

impl Shared {
    /// A keyed digest (hex, 32 chars) of `msg`: the sandbox's signature.
    pub fn sign(&self, msg: &str) -> String {
        let mut h = sha2::Sha256::new();
        h.update(self.key);
        h.update(msg.as_bytes());
        hex::encode(&h.finalize()[..16])
    }

    pub fn read_world(&self) -> std::sync::RwLockReadGuard<'_, World> {
        match self.world.read() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    fn write_world(&self) -> std::sync::RwLockWriteGuard<'_, World> {
        match self.world.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    pub fn faults(&self) -> FaultConfig {
        match self.faults.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    pub fn set_faults(&self, faults: FaultConfig) {
        match self.faults.write() {
            Ok(mut g) => *g = faults,
            Err(p) => *p.into_inner() = faults,
        }
    }

    /// Overwrites the backing object of a drive-backed file behind the platform's back: new
    /// bytes and a new object ETag, its describe (ETag, checksums) unchanged. Every copy of the
    /// id changes (they share one object). Returns the object's new ETag.
    pub fn overwrite_object(&self, id: &FileId) -> Option<String> {
        let mut w = self.write_world();
        let idxs = w.by_id.get(id)?.clone();
        let mut etag = None;
        for i in idxs {
            let mut file = (*w.ds.files[i]).clone();
            file.content_key = file
                .content_key
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .wrapping_add(1);
            // The precomputed range MD5s were of the old bytes; the storage host now
            // computes them from the new ones.
            file.block_md5.clear();
            let tag = format!("\"0x8D{:014X}\"", file.content_key & 0x00FF_FFFF_FFFF_FFFF);
            file.object_etag = Some(tag.clone());
            etag = Some(tag);
            w.ds.files[i] = Arc::new(file);
        }
        etag
    }

    /// Re-vends a file whose backing object was overwritten: its describe (ETag, md5, part
    /// checksums) now states the object's current bytes. False for an unknown file.
    pub fn revend_object(&self, id: &FileId) -> bool {
        let mut w = self.write_world();
        let Some(idxs) = w.by_id.get(id).cloned() else {
            return false;
        };
        for i in idxs {
            w.ds.files[i] = Arc::new(w.ds.files[i].revended());
        }
        true
    }

    /// The file a storage request serves, after any overwrite of its object that is due
    /// (see [`Sandbox::overwrite_object_after`]).
    pub fn overwrite_if_due(&self, found: Option<Arc<BuiltFile>>) -> Option<Arc<BuiltFile>> {
        let file = found?;
        let due = {
            let mut pending = match self.overwrites.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            let served = || self.counters.snapshot().bytes_served(file.id.as_str());
            match pending
                .iter()
                .position(|(id, at)| id == &file.id && served() >= *at)
            {
                Some(pos) => {
                    pending.remove(pos);
                    true
                }
                None => false,
            }
        };
        if !due {
            return Some(file);
        }
        self.overwrite_object(&file.id);
        self.read_world()
            .file_in(&file.id, Some(file.project.as_str()))
            .cloned()
    }

    /// Applies the modifications due now that another `/system/findDataObjects` page was
    /// served (see [`Sandbox::modify_after_pages`]); called after each page, outside the
    /// world's lock.
    pub fn modify_if_due(&self) {
        let due: Vec<FileId> = {
            let mut pending = match self.modifications.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            if pending.is_empty() {
                return;
            }
            let pages = self.counters.snapshot().requests("/system/findDataObjects");
            let (due, keep): (Vec<_>, Vec<_>) = pending.drain(..).partition(|(_, at)| pages >= *at);
            *pending = keep;
            due.into_iter().map(|(id, _)| id).collect()
        };
        if due.is_empty() {
            return;
        }
        let mut w = self.write_world();
        for id in &due {
            for i in w.by_id.get(id).cloned().unwrap_or_default() {
                let mut file = (*w.ds.files[i]).clone();
                // Modified now (and never earlier than it was): it moves within the order.
                file.spec.modified_ms = now_ms().max(file.spec.modified_ms + 1);
                w.ds.files[i] = Arc::new(file);
            }
        }
        w.reindex();
    }

    /// Counts a request of `[start, end)` of `file` and returns how many came before it.
    pub fn nth_request(&self, file: &str, start: u64, end: u64) -> u64 {
        let mut map = match self.range_requests.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let n = map.entry((file.to_owned(), start, end)).or_insert(0);
        *n += 1;
        *n - 1
    }
}

/// Milliseconds since the epoch, now.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Which listener a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Host {
    Api,
    Storage,
}

/// A running sandbox. Dropping it (or [`Sandbox::shutdown`]) stops both servers.
pub struct Sandbox {
    shared: Arc<Shared>,
    api_addr: SocketAddr,
    storage_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("api_addr", &self.api_addr)
            .finish_non_exhaustive()
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    host: Host,
    shutdown: watch::Receiver<bool>,
) {
    loop {
        let (stream, _peer) = match listener.accept().await {
            Ok(s) => s,
            Err(err) => {
                tracing::warn!(error = %err, "sandbox accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = serve_connection(stream, shared, host) => {}
                _ = shutdown.wait_for(|stop| *stop) => {}
            }
        });
    }
}

async fn serve_connection(mut stream: TcpStream, shared: Arc<Shared>, host: Host) {
    let mut buf = Vec::new();
    let mut body_buf = Vec::new();
    loop {
        let req = match http::read_request(&mut stream, &mut buf).await {
            Ok(Some(req)) => req,
            Ok(None) => return,
            Err(err) => {
                tracing::debug!(error = %err, "sandbox connection closed");
                return;
            }
        };
        let keep = match host {
            Host::Api => {
                if req.path().starts_with("/F/D/") {
                    download::handle_download(&mut stream, &shared, &req, &mut body_buf).await
                } else {
                    api::handle(&mut stream, &shared, &req).await
                }
            }
            Host::Storage => {
                download::handle_storage(&mut stream, &shared, &req, &mut body_buf).await
            }
        };
        match keep {
            Ok(true) if req.keep_alive => {}
            _ => return,
        }
    }
}

impl Sandbox {
    /// Binds both listeners and starts serving.
    pub async fn start(opts: SandboxOptions) -> Result<Sandbox, SandboxError> {
        let listing_order = match opts.listing_order {
            Some(order) => order,
            None => ListingOrder::from_env()?,
        };
        let api = TcpListener::bind(opts.api_addr)
            .await
            .map_err(|source| SandboxError::Bind {
                addr: opts.api_addr,
                source,
            })?;
        let storage = TcpListener::bind(opts.storage_addr)
            .await
            .map_err(|source| SandboxError::Bind {
                addr: opts.storage_addr,
                source,
            })?;
        let api_addr = api.local_addr()?;
        let storage_addr = storage.local_addr()?;
        let mut key = [0u8; 32];
        let entropy = format!(
            "{:?}{}{:?}",
            SystemTime::now(),
            std::process::id(),
            api_addr
        );
        key.copy_from_slice(&sha2::Sha256::digest(entropy.as_bytes()));
        let shared = Arc::new(Shared {
            world: RwLock::new(World::new(opts.token, opts.dataset, listing_order)),
            faults: RwLock::new(opts.faults),
            counters: stats::Counters::default(),
            range_requests: Mutex::new(HashMap::new()),
            overwrites: Mutex::new(Vec::new()),
            modifications: Mutex::new(Vec::new()),
            key,
            api_base: format!("http://{api_addr}"),
            storage_base: format!("http://{storage_addr}"),
            url_ttl: opts.url_ttl,
            storage_url_ttl: opts.storage_url_ttl,
            retry_after_secs: opts.retry_after_secs,
            limiter: opts.bandwidth.map(|rate| Limiter {
                rate,
                next: Mutex::new(Instant::now()),
            }),
            content_base: opts.content_url.map(|u| u.trim_end_matches('/').to_owned()),
        });
        let (tx, rx) = watch::channel(false);
        let tasks = vec![
            tokio::spawn(accept_loop(api, shared.clone(), Host::Api, rx.clone())),
            tokio::spawn(accept_loop(storage, shared.clone(), Host::Storage, rx)),
        ];
        tracing::info!(%api_addr, %storage_addr, "sandbox started");
        Ok(Sandbox {
            shared,
            api_addr,
            storage_addr,
            shutdown: tx,
            tasks,
        })
    }

    /// Stops the servers and every open connection.
    pub async fn shutdown(mut self) {
        self.stop();
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
    }

    fn stop(&mut self) {
        let _ = self.shutdown.send(true);
        for t in &self.tasks {
            t.abort();
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn api_url(&self) -> String {
        self.shared.api_base.clone()
    }

    /// The API listener's address.
    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    /// `http://127.0.0.2:PORT`, the storage host.
    pub fn storage_url(&self) -> String {
        self.shared.storage_base.clone()
    }

    /// The storage listener's address.
    pub fn storage_addr(&self) -> SocketAddr {
        self.storage_addr
    }

    /// The bearer token currently accepted.
    pub fn token(&self) -> String {
        self.shared.read_world().token.clone()
    }

    /// Every project id, in dataset order.
    pub fn projects(&self) -> Vec<ProjectId> {
        self.shared
            .read_world()
            .ds
            .projects
            .iter()
            .map(|p| p.id.clone())
            .collect()
    }

    /// Live files of a project, newest-modified first (as the API lists them).
    pub fn files(&self, project: &ProjectId) -> Vec<SandboxFile> {
        let w = self.shared.read_world();
        w.order
            .get(project)
            .map(|v| v.iter().map(|i| sandbox_file(&w.ds.files[*i])).collect())
            .unwrap_or_default()
    }

    /// One file by id (also a replaced one); for an id in several projects, the first copy.
    pub fn file(&self, id: &FileId) -> Option<SandboxFile> {
        let w = self.shared.read_world();
        w.by_id
            .get(id)
            .and_then(|v| v.first())
            .map(|i| sandbox_file(&w.ds.files[*i]))
    }

    /// The copy of a file listed in `project` (also a replaced one).
    pub fn file_in(&self, project: &ProjectId, id: &FileId) -> Option<SandboxFile> {
        let w = self.shared.read_world();
        w.by_id
            .get(id)?
            .iter()
            .map(|i| &w.ds.files[*i])
            .find(|f| &f.project == project)
            .map(|f| sandbox_file(f))
    }

    /// The true bytes of `range` of a file (clamped to its size; empty if unknown).
    pub fn content(&self, file: &FileId, range: ByteRange) -> Vec<u8> {
        let f = {
            let w = self.shared.read_world();
            match w.by_id.get(file).and_then(|v| v.first()) {
                Some(i) => w.ds.files[*i].clone(),
                None => return Vec::new(),
            }
        };
        let start = range.offset.min(f.spec.size);
        let end = range.end().min(f.spec.size);
        let mut out = vec![0u8; (end - start) as usize];
        f.fill(start, &mut out);
        out
    }

    /// Overwrites a drive-backed file's backing object now, as someone overwriting the blob
    /// in its bucket would: the storage host serves new bytes under a new ETag, while the
    /// platform's describe (ETag, md5, parts) stays as it was. Returns the new object ETag,
    /// `None` for an unknown file.
    pub fn overwrite_object(&self, file: &FileId) -> Option<String> {
        self.shared.overwrite_object(file)
    }

    /// Overwrites the backing object (as [`Sandbox::overwrite_object`]) at the first storage
    /// request of the file after `bytes` of it were served: a transfer is then cut in two
    /// versions at a known point, without any timing.
    pub fn overwrite_object_after(&self, file: &FileId, bytes: u64) {
        let mut pending = match self.shared.overwrites.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        pending.push((file.clone(), bytes));
    }

    /// Modifies `file` (its `modified` becomes now, as a rename, a tag or a property would
    /// make it on the platform) right after the `pages`th `/system/findDataObjects` page is
    /// served: a crawl then sees the file move between its pages at a known point, without
    /// any timing. Off unless asked for.
    pub fn modify_after_pages(&self, file: &FileId, pages: u64) {
        let mut pending = match self.shared.modifications.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        pending.push((file.clone(), pages));
    }

    /// Re-vends a file after [`Sandbox::overwrite_object`]: its describe (ETag, md5, part
    /// checksums) becomes that of the object's current bytes, as a new describe would.
    pub fn revend_object(&self, file: &FileId) -> bool {
        self.shared.revend_object(file)
    }

    /// A snapshot of the serve counters.
    pub fn stats(&self) -> ServeStats {
        self.shared.counters.snapshot()
    }

    /// Replaces the fault configuration (takes effect for the next request).
    pub fn set_faults(&self, faults: FaultConfig) {
        self.shared.set_faults(faults);
    }

    /// The current fault configuration.
    pub fn faults(&self) -> FaultConfig {
        self.shared.faults()
    }

    /// Adds a project (with its files); returns its id.
    pub fn add_project(&self, spec: ProjectSpec) -> Result<ProjectId, SandboxError> {
        let mut w = self.shared.write_world();
        let id = w.ds.add_project(spec)?;
        w.reindex();
        Ok(id)
    }

    /// Adds files to a project; returns their ids.
    pub fn add_files(
        &self,
        project: &ProjectId,
        files: Vec<FileSpec>,
    ) -> Result<Vec<FileId>, SandboxError> {
        let mut w = self.shared.write_world();
        if w.project(project).is_none() {
            return Err(SandboxError::NoSuchProject(project.clone()));
        }
        let ids = w.ds.add_files(project, files)?;
        w.reindex();
        Ok(ids)
    }

    /// Replaces whatever lives at `spec.folder`/`spec.name` in `project` by a new file (new id,
    /// modified now unless the spec says later). Returns the new id.
    pub fn replace_file(
        &self,
        project: &ProjectId,
        mut spec: FileSpec,
    ) -> Result<FileId, SandboxError> {
        let mut w = self.shared.write_world();
        if w.project(project).is_none() {
            return Err(SandboxError::NoSuchProject(project.clone()));
        }
        let old: Vec<usize> = w
            .ds
            .files
            .iter()
            .enumerate()
            .filter(|(_, f)| {
                &f.project == project && f.spec.folder == spec.folder && f.spec.name == spec.name
            })
            .map(|(i, _)| i)
            .collect();
        w.removed.extend(old);
        let now = now_ms();
        spec.modified_ms = spec.modified_ms.max(now);
        spec.created_ms = spec.created_ms.max(now);
        spec.id = None;
        let ids = w.ds.add_files(project, vec![spec])?;
        w.reindex();
        ids.into_iter()
            .next()
            .ok_or_else(|| SandboxError::NoSuchProject(project.clone()))
    }

    /// Revokes (true) or restores (false) the token's access to a project: revoked projects
    /// answer `PermissionDenied` and vanish from `findProjects`.
    pub fn set_revoked(&self, project: &ProjectId, revoked: bool) {
        let mut w = self.shared.write_world();
        if revoked {
            w.revoked.insert(project.clone());
        } else {
            w.revoked.remove(project);
        }
    }

    /// Changes the accepted token (the old one then gets `InvalidAuthentication`).
    pub fn set_token(&self, token: &str) {
        self.shared.write_world().token = token.to_owned();
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.stop();
    }
}

fn sandbox_file(f: &BuiltFile) -> SandboxFile {
    SandboxFile {
        id: f.id.clone(),
        project: f.project.clone(),
        folder: f.spec.folder.clone(),
        name: f.spec.name.clone(),
        size: f.spec.size,
        state: f.spec.state.clone(),
        archival_state: f.spec.archival_state.clone(),
        kind: f.spec.kind.clone(),
        parts: f.parts.clone(),
        md5: f.md5.clone(),
    }
}

/// `dxmirror sandbox`: run a sandbox as its own process.
#[derive(Debug, Clone, clap::Args)]
pub struct SandboxArgs {
    /// Port of the API + download host on 127.0.0.1 (0 = any).
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Port of the storage host on 127.0.0.2 (0 = any).
    #[arg(long, default_value_t = 0)]
    pub storage_port: u16,
    /// Bearer token to accept.
    #[arg(long, default_value = DEFAULT_TOKEN)]
    pub token: String,
    /// Dataset: `demo`, `large[:SIZE]`, `small[:N]`, `many[:N]`, `mixed[:SIZE]`.
    #[arg(long, default_value = "demo")]
    pub dataset: String,
    /// Faults, e.g. "reset=0.05,flip=0.01,seed=7".
    #[arg(long, default_value = "")]
    pub faults: String,
    /// Bandwidth cap in bytes/s (human sizes ok: 10M).
    #[arg(long)]
    pub bandwidth: Option<String>,
    /// Cap on download URL lifetime (e.g. 60s, 1h).
    #[arg(long)]
    pub url_ttl: Option<String>,
    /// Lifetime of storage URLs (e.g. 300s).
    #[arg(long)]
    pub storage_url_ttl: Option<String>,
    /// Retry-After seconds of 503/429 answers.
    #[arg(long, default_value_t = 1)]
    pub retry_after: u64,
    /// Serve the bytes from this loopback content server instead (`URL/<file-id>`, e.g. nginx
    /// over the dataset's files): platform-hosted files' download URLs point there, and
    /// drive-backed files' 302 does. The benchmark's second backend.
    #[arg(long)]
    pub content_url: Option<String>,
}

fn parse_duration(flag: &'static str, v: &str) -> Result<Duration, SandboxError> {
    if let Ok(secs) = v.trim().parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(v.trim()).map_err(|_| SandboxError::BadArg {
        flag,
        value: v.to_owned(),
    })
}

impl SandboxArgs {
    /// Options from the flags.
    pub fn to_options(&self) -> Result<SandboxOptions, SandboxError> {
        let mut opts = SandboxOptions {
            api_addr: SocketAddr::from(([127, 0, 0, 1], self.port)),
            storage_addr: SocketAddr::from(([127, 0, 0, 2], self.storage_port)),
            token: self.token.clone(),
            dataset: Dataset::from_name(&self.dataset)?,
            faults: FaultConfig::parse(&self.faults)?,
            retry_after_secs: self.retry_after,
            content_url: self.content_url.clone(),
            ..SandboxOptions::default()
        };
        if let Some(b) = &self.bandwidth {
            opts.bandwidth = Some(dataset::parse_size(b).ok_or_else(|| SandboxError::BadArg {
                flag: "bandwidth",
                value: b.clone(),
            })?);
        }
        if let Some(t) = &self.url_ttl {
            opts.url_ttl = parse_duration("url-ttl", t)?;
        }
        if let Some(t) = &self.storage_url_ttl {
            opts.storage_url_ttl = parse_duration("storage-url-ttl", t)?;
        }
        Ok(opts)
    }
}

/// Runs a sandbox until SIGTERM/SIGINT. Prints one JSON line to stdout first:
/// `{"api_url":..,"storage_url":..,"token":..,"projects":[..]}`.
pub async fn serve(args: SandboxArgs) -> Result<(), SandboxError> {
    let sandbox = Sandbox::start(args.to_options()?).await?;
    let mut files: BTreeMap<String, usize> = BTreeMap::new();
    for p in sandbox.projects() {
        files.insert(p.to_string(), sandbox.files(&p).len());
    }
    let line = serde_json::json!({
        "api_url": sandbox.api_url(),
        "storage_url": sandbox.storage_url(),
        "token": sandbox.token(),
        "projects": sandbox.projects(),
        "files": files,
    });
    {
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}")?;
        out.flush()?;
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    sandbox.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(dataset: &str, faults: &str) -> SandboxArgs {
        SandboxArgs {
            port: 0,
            storage_port: 0,
            token: "t".into(),
            dataset: dataset.into(),
            faults: faults.into(),
            bandwidth: Some("10M".into()),
            url_ttl: Some("90s".into()),
            storage_url_ttl: Some("5".into()),
            retry_after: 2,
            content_url: None,
        }
    }

    #[test]
    fn args_become_options() {
        let o = args("small:3", "reset=0.5,seed=4").to_options().unwrap();
        assert_eq!(o.dataset.files.len(), 3);
        assert_eq!((o.faults.reset, o.faults.seed), (0.5, 4));
        assert_eq!(o.bandwidth, Some(10 << 20));
        assert_eq!(o.url_ttl, Duration::from_secs(90));
        assert_eq!(o.storage_url_ttl, Duration::from_secs(5));
        assert!(args("bogus", "").to_options().is_err());
        assert!(args("demo", "reset=x").to_options().is_err());
    }

    #[tokio::test]
    async fn replaced_and_revoked_files_stop_downloading() {
        let sb = Sandbox::start(SandboxOptions::default()).await.unwrap();
        let pid = sb.projects()[0].clone();
        let before = sb.files(&pid).len();
        let old = sb
            .files(&pid)
            .into_iter()
            .find(|f| f.name == "SAMPLE_INFO.txt")
            .unwrap();
        let new = sb
            .replace_file(&pid, FileSpec::new("/", "SAMPLE_INFO.txt", 10))
            .unwrap();
        let files = sb.files(&pid);
        assert_eq!(files.len(), before);
        assert_eq!(files[0].id, new, "newest first");
        assert!(files.iter().all(|f| f.id != old.id));
        assert_eq!(sb.content(&new, ByteRange::new(0, 100)).len(), 10);
        assert!(sb
            .add_files(&"project-B0vY9x9Q0b1QKq2F3Y4Z5a6b".parse().unwrap(), vec![])
            .is_err());
    }

    #[tokio::test]
    async fn a_cloned_file_id_lives_in_each_project_on_its_own() {
        let id: FileId = format!("file-{}", "C".repeat(24)).parse().unwrap();
        let spec = |folder: &str| FileSpec::new(folder, "clone.txt", 500).id(id.clone());
        let ds = Dataset::build(
            3,
            vec![
                ProjectSpec::new("a").file(spec("/x")),
                ProjectSpec::new("b").file(spec("/y")),
            ],
        )
        .unwrap();
        let sb = Sandbox::start(SandboxOptions {
            dataset: ds,
            ..SandboxOptions::default()
        })
        .await
        .unwrap();
        let (pa, pb) = (sb.projects()[0].clone(), sb.projects()[1].clone());
        for (p, folder) in [(&pa, "/x"), (&pb, "/y")] {
            let listed = sb.files(p);
            assert_eq!(listed.len(), 1);
            assert_eq!((&listed[0].id, listed[0].folder.as_str()), (&id, folder));
            assert_eq!(sb.file_in(p, &id).unwrap().folder, folder);
        }
        {
            let w = sb.shared.read_world();
            assert_eq!(w.by_id[&id].len(), 2);
            assert_eq!(w.file_in(&id, Some(pb.as_str())).unwrap().project, pb);
            assert_eq!(w.file_in(&id, None).unwrap().project, pa);
        }

        // Replacing the copy in one project leaves the other project's copy alone.
        let new = sb
            .replace_file(&pa, FileSpec::new("/x", "clone.txt", 10))
            .unwrap();
        assert_ne!(new, id);
        assert_eq!(sb.files(&pa)[0].id, new);
        assert_eq!(sb.files(&pb)[0].id, id);
        let w = sb.shared.read_world();
        // Project a no longer has it: lookups fall back to b's copy, which the API then
        // refuses for project a.
        assert_eq!(w.file_in(&id, Some(pa.as_str())).unwrap().project, pb);
        assert_eq!(w.file(&id).unwrap().project, pb);
    }
}
