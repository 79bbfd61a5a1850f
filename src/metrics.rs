//! The daemon's optional OpenMetrics endpoint (`[metrics] listen`): `GET /metrics` answers
//! the exposition text of what the process counted ([`Counters`]) and what the journal, the
//! config and the file systems say at the moment of the scrape.
//!
//! Every metric is built afresh at each scrape with `prometheus-client` (its text encoder
//! writes the OpenMetrics format Prometheus reads), so nothing here keeps state of its own
//! beyond [`MetricsSource`]. Labels are project ids and the fixed words of `counters`,
//! `journal::FileState` and the file-system names, never file ids or paths: the cardinality
//! is bounded by the number of projects.
//!
//! It only reads: nothing here writes the journal or decides what runs. The listener is the
//! daemon's to start and stop ([`serve`]); it answers one small request per connection.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, warn};

use crate::config::Config;
use crate::counters::Counters;
use crate::journal::{DaemonState, Journal, JournalError};

/// The content type of the exposition text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Largest request head read from a scraper.
const MAX_REQUEST: usize = 8 << 10;

/// How long a scraper may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A scrape could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The journal could not be read.
    #[error("journal: {0}")]
    Journal(#[from] JournalError),
    /// The text encoder failed.
    #[error("cannot encode the metrics: {0}")]
    Encode(std::fmt::Error),
    /// The endpoint could not listen.
    #[error("cannot listen on {addr} for metrics: {source}")]
    Listen {
        /// The address of `[metrics] listen`.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// What a scrape reads: the process's counters, the journal, the config in force, and the
/// daemon's live gauges. The daemon owns it and updates the config on reload.
#[derive(Debug)]
pub struct MetricsSource {
    /// The cumulative counters.
    pub counters: Arc<Counters>,
    /// The journal (read only here).
    pub journal: Journal,
    config: Mutex<Config>,
    queue_depth: AtomicI64,
    running: AtomicI64,
    dropped: AtomicI64,
}

impl MetricsSource {
    /// A source over `journal` and `counters` with the config in force.
    pub fn new(counters: Arc<Counters>, journal: Journal, cfg: Config) -> MetricsSource {
        MetricsSource {
            counters,
            journal,
            config: Mutex::new(cfg),
            queue_depth: AtomicI64::new(0),
            running: AtomicI64::new(0),
            dropped: AtomicI64::new(0),
        }
    }

    /// Puts a reloaded config in force (paths and `access-expires` are read from it).
    pub fn set_config(&self, cfg: Config) {
        *self.config.lock().unwrap_or_else(PoisonError::into_inner) = cfg;
    }

    /// Records the projects queued and running now.
    pub fn set_queue(&self, queued: usize, running: usize) {
        self.queue_depth.store(queued as i64, Ordering::Relaxed);
        self.running.store(running as i64, Ordering::Relaxed);
    }

    /// Records how many notifications were dropped so far (a full outbox).
    pub fn set_notifications_dropped(&self, n: u64) {
        self.dropped.store(n as i64, Ordering::Relaxed);
    }

    fn config(&self) -> Config {
        self.config
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

type Labels = Vec<(&'static str, String)>;

fn gauge_family(
    reg: &mut Registry,
    name: &str,
    help: &str,
    unit: Option<Unit>,
) -> Family<Labels, Gauge> {
    let family = Family::<Labels, Gauge>::default();
    match unit {
        Some(u) => reg.register_with_unit(name, help, u, family.clone()),
        None => reg.register(name, help, family.clone()),
    }
    family
}

fn counter(reg: &mut Registry, name: &str, help: &str, unit: Option<Unit>, value: u64) {
    let c = Counter::<u64>::default();
    c.inc_by(value);
    match unit {
        Some(u) => reg.register_with_unit(name, help, u, c),
        None => reg.register(name, help, c),
    }
}

fn gauge(reg: &mut Registry, name: &str, help: &str, unit: Option<Unit>, value: i64) {
    let g = Gauge::<i64>::default();
    g.set(value);
    match unit {
        Some(u) => reg.register_with_unit(name, help, u, g),
        None => reg.register(name, help, g),
    }
}

fn seconds(ms: i64) -> i64 {
    ms.div_euclid(1000)
}

/// The exposition text of one scrape.
pub fn render(src: &MetricsSource) -> Result<String, MetricsError> {
    let cfg = src.config();
    let c = src.counters.snapshot();
    let mut reg = Registry::with_prefix("dxmirror");
    counter(
        &mut reg,
        "fetched",
        "Bytes received that counted (written to staging files)",
        Some(Unit::Bytes),
        c.bytes_fetched,
    );
    counter(
        &mut reg,
        "refetched",
        "Bytes thrown away to be fetched again (a bad segment, damage on disk)",
        Some(Unit::Bytes),
        c.bytes_refetched,
    );
    let retries = Family::<Labels, Counter>::default();
    for (reason, n) in &c.chunk_retries {
        retries
            .get_or_create(&vec![("reason", reason.as_str().to_owned())])
            .inc_by(*n);
    }
    reg.register(
        "chunk_retries",
        "Chunk ranges asked for again, by reason",
        retries,
    );
    counter(
        &mut reg,
        "checksum_mismatches",
        "Segments and checked ranges whose checksum did not match",
        None,
        c.checksum_mismatches,
    );
    counter(
        &mut reg,
        "url_refreshes",
        "Fresh download URLs asked for after a refusal",
        None,
        c.url_refreshes,
    );
    counter(
        &mut reg,
        "api_calls",
        "DNAnexus API call attempts",
        None,
        c.api_calls,
    );
    let errors = Family::<Labels, Counter>::default();
    for (kind, n) in &c.api_errors {
        errors
            .get_or_create(&vec![("kind", kind.as_str().to_owned())])
            .inc_by(*n);
    }
    reg.register(
        "api_errors",
        "Failed DNAnexus API call attempts, by kind",
        errors,
    );
    let throttled = Counter::<f64, std::sync::atomic::AtomicU64>::default();
    throttled.inc_by(c.throttled_ms as f64 / 1000.0);
    reg.register_with_unit(
        "throttled",
        "Time spent waiting as a host's Retry-After told",
        Unit::Seconds,
        throttled,
    );

    let daemon = src.journal.daemon()?;
    gauge(
        &mut reg,
        "throughput",
        "Download rate over the last few seconds",
        Some(Unit::Other("bytes_per_second".into())),
        daemon.as_ref().and_then(|d| d.bytes_per_s).unwrap_or(0),
    );
    gauge(
        &mut reg,
        "queue_depth",
        "Projects queued for a pass",
        None,
        src.queue_depth.load(Ordering::Relaxed),
    );
    gauge(
        &mut reg,
        "passes_running",
        "Project passes running",
        None,
        src.running.load(Ordering::Relaxed),
    );
    gauge(
        &mut reg,
        "token_ok",
        "1 while the API token is accepted, 0 while it is refused",
        None,
        i64::from(
            daemon
                .as_ref()
                .is_none_or(|d| d.state != DaemonState::BadToken),
        ),
    );
    if let Some(ms) = daemon.as_ref().and_then(|d| d.last_discovery_ms) {
        gauge(
            &mut reg,
            "last_discovery",
            "Last successful project discovery (Unix time)",
            Some(Unit::Other("timestamp_seconds".into())),
            seconds(ms),
        );
    }
    let free = gauge_family(
        &mut reg,
        "free",
        "Free space on the mirror's and the journal's file systems",
        Some(Unit::Bytes),
    );
    for (fs, path) in [("mirror", &cfg.mirror_root), ("state", &cfg.state_dir)] {
        if let Ok(n) = crate::store::free_space(path) {
            free.get_or_create(&vec![("filesystem", fs.to_owned())])
                .set(n.min(i64::MAX as u64) as i64);
        }
    }
    counter(
        &mut reg,
        "notifications_dropped",
        "Notifications dropped because the outbox was full",
        None,
        src.dropped.load(Ordering::Relaxed).max(0) as u64,
    );

    let files = gauge_family(&mut reg, "files", "Files by project and state", None);
    let size = gauge_family(
        &mut reg,
        "project_size",
        "Bytes to mirror, by project",
        Some(Unit::Bytes),
    );
    let done = gauge_family(
        &mut reg,
        "project_done",
        "Bytes on disk, by project",
        Some(Unit::Bytes),
    );
    let listed = gauge_family(
        &mut reg,
        "last_listing",
        "Last successful listing of each project (Unix time)",
        Some(Unit::Other("timestamp_seconds".into())),
    );
    for t in src.journal.project_totals()? {
        let p = t.project.id.to_string();
        for (state, n) in &t.files_by_state {
            files
                .get_or_create(&vec![
                    ("project", p.clone()),
                    ("state", state.as_str().to_owned()),
                ])
                .set(*n as i64);
        }
        size.get_or_create(&vec![("project", p.clone())])
            .set(t.bytes_total as i64);
        done.get_or_create(&vec![("project", p.clone())])
            .set(t.bytes_done as i64);
        if let Some(ms) = t.project.last_listed_ms {
            listed.get_or_create(&vec![("project", p)]).set(seconds(ms));
        }
    }
    let expiry = gauge_family(
        &mut reg,
        "access_expiry",
        "Start of the day the data access agreement ends (Unix time)",
        Some(Unit::Other("timestamp_seconds".into())),
    );
    for (p, s) in &cfg.project_settings {
        if let Some(date) = s.access_expires {
            expiry
                .get_or_create(&vec![("project", p.to_string())])
                .set(date.days * 86_400);
        }
    }
    let mut out = String::new();
    encode(&mut out, &reg).map_err(MetricsError::Encode)?;
    Ok(out)
}

/// Binds the endpoint's listener.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, MetricsError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| MetricsError::Listen { addr, source })
}

/// Answers scrapes on `listener` until the task is aborted.
pub async fn serve(listener: TcpListener, src: Arc<MetricsSource>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let src = Arc::clone(&src);
                tokio::spawn(async move {
                    if let Err(e) = answer(stream, src).await {
                        debug!(%peer, error = %e, "metrics request failed");
                    }
                });
            }
            Err(e) => {
                // Out of file descriptors and the like: wait a little instead of spinning.
                warn!(error = %e, "metrics endpoint cannot accept");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Reads one request head and answers it: `GET /metrics` with the exposition, anything else
/// with 404 or 405.
async fn answer(mut stream: TcpStream, src: Arc<MetricsSource>) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let head = tokio::time::timeout(REQUEST_TIMEOUT, async {
        loop {
            let mut chunk = [0u8; 1024];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(None);
            }
            buf.extend_from_slice(&chunk[..n]);
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(&buf) {
                Ok(httparse::Status::Complete(_)) => {
                    return Ok(Some((
                        req.method.unwrap_or("").to_owned(),
                        req.path.unwrap_or("").to_owned(),
                    )))
                }
                Ok(httparse::Status::Partial) if buf.len() < MAX_REQUEST => {}
                _ => return Ok(None),
            }
        }
    })
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "request head"))??;
    let Some((method, path)) = head else {
        return respond(
            &mut stream,
            "400 Bad Request",
            "text/plain",
            "bad request\n",
        )
        .await;
    };
    let path = path.split('?').next().unwrap_or("");
    if path != "/metrics" {
        return respond(&mut stream, "404 Not Found", "text/plain", "try /metrics\n").await;
    }
    if method != "GET" {
        return respond(
            &mut stream,
            "405 Method Not Allowed",
            "text/plain",
            "GET only\n",
        )
        .await;
    }
    let rendered = tokio::task::spawn_blocking(move || render(&src)).await;
    match rendered {
        Ok(Ok(text)) => respond(&mut stream, "200 OK", CONTENT_TYPE, &text).await,
        Ok(Err(e)) => {
            warn!(error = %e, "cannot render the metrics");
            respond(
                &mut stream,
                "500 Internal Server Error",
                "text/plain",
                &format!("{e}\n"),
            )
            .await
        }
        Err(e) => {
            warn!(error = %e, "the metrics task failed");
            respond(
                &mut stream,
                "500 Internal Server Error",
                "text/plain",
                "internal error\n",
            )
            .await
        }
    }
}

async fn respond(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}
