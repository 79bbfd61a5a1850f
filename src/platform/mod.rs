//! The DNAnexus platform client: the only module that knows DNAnexus HTTP routes and JSON.
//!
//! [`DxClient`] lists projects and files, obtains download URLs and performs single ranged GETs,
//! converting wire JSON into the shared types of `crate::model`. API calls retry internally by
//! the table in [`retry`] (backoff with jitter; `Retry-After` honoured without spending the
//! retry budget, within a bounded total wait). Ranged GETs make exactly one attempt: the
//! transfer engine decides what to do with the failure via
//! [`PlatformError::download_disposition`].
//!
//! This module must not write to disk, touch the journal, or plan chunks. The API token goes
//! only to the API host (as `Authorization: Bearer`), never to a download URL or a redirect
//! target, and never into an error message or a log line.

mod error;
mod http;
pub mod retry;
mod wire;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use reqwest::{Client, Url};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use tracing::{debug, warn};

pub use error::{IoKind, PlatformError};
pub use http::{redact_url, DownloadUrl, RangeBody, MAX_REDIRECTS, RANGE_MD5_MAX};
pub use retry::{ApiDisposition, Backoff, DownloadDisposition};
pub use wire::UnreadableResult;

use crate::counters::{ApiErrorKind, Counters};
use crate::model::{ApiToken, ByteRange, FileId, ProjectId, ProjectInfo, RemoteFile};

/// Largest API error body read (the rest is ignored).
const MAX_ERROR_BODY: usize = 64 * 1024;

/// How to reach the platform.
#[derive(Debug, Clone)]
pub struct PlatformConfig {
    /// Base URL of the API server, e.g. `https://api.dnanexus.com`.
    pub api_url: String,
    /// The API token (sent only to `api_url`).
    pub token: ApiToken,
    /// Extra PEM CA certificate(s) to trust, added to the system roots.
    pub ca_file: Option<PathBuf>,
    /// Deadline for establishing a connection.
    pub connect_timeout: Duration,
    /// Deadline for a whole API call (one attempt).
    pub api_timeout: Duration,
    /// Longest tolerated silence while waiting for a download's headers or body bytes.
    pub stall_timeout: Duration,
    /// Transient failures tolerated per API call (Retry-After waits do not count).
    pub max_api_retries: u32,
    /// The `User-Agent` of every request.
    pub user_agent: String,
    /// Backoff schedule of API retries.
    pub backoff: Backoff,
    /// Longest single `Retry-After` wait honoured (longer requests are shortened to this).
    pub max_retry_after: Duration,
    /// Total `Retry-After` waiting allowed per API call before giving up.
    pub retry_after_budget: Duration,
    /// `duration` asked of `/file-xxxx/download`.
    pub url_duration: Duration,
    /// Where API calls, errors and throttled time are counted (shared with the engine).
    pub counters: Arc<Counters>,
}

impl Default for PlatformConfig {
    fn default() -> Self {
        PlatformConfig {
            api_url: "https://api.dnanexus.com".to_owned(),
            token: ApiToken::new(""),
            ca_file: None,
            connect_timeout: Duration::from_secs(30),
            api_timeout: Duration::from_secs(120),
            stall_timeout: Duration::from_secs(60),
            max_api_retries: 8,
            user_agent: format!("dxmirror/{}", env!("CARGO_PKG_VERSION")),
            backoff: Backoff::default(),
            max_retry_after: Duration::from_secs(300),
            retry_after_budget: Duration::from_secs(1800),
            url_duration: Duration::from_secs(24 * 3600),
            counters: Arc::default(),
        }
    }
}

/// A `/system/findProjects` query. `level` is always sent (the platform's default is not VIEW).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectQuery {
    /// Minimum permission level: `VIEW`, `UPLOAD`, `CONTRIBUTE` or `ADMINISTER`.
    pub level: String,
    /// Project name glob (`*` and `?`), when filtering by name.
    pub name_glob: Option<String>,
    /// Tags the project must all carry.
    pub tags: Vec<String>,
    /// Properties the project must carry with exactly these values.
    pub properties: BTreeMap<String, String>,
}

impl Default for ProjectQuery {
    fn default() -> Self {
        ProjectQuery {
            level: "VIEW".to_owned(),
            name_glob: None,
            tags: Vec::new(),
            properties: BTreeMap::new(),
        }
    }
}

impl ProjectQuery {
    fn to_body(&self, starting: Option<&Value>) -> Value {
        let mut body = json!({
            "level": self.level,
            "describe": {"fields": {"name": true, "downloadRestricted": true, "level": true}},
            "limit": 1000,
        });
        if let Some(glob) = &self.name_glob {
            body["name"] = json!({ "glob": glob });
        }
        if !self.tags.is_empty() {
            body["tags"] = json!({ "$and": self.tags });
        }
        if !self.properties.is_empty() {
            body["properties"] = json!(self.properties);
        }
        if let Some(start) = starting {
            body["starting"] = start.clone();
        }
        body
    }
}

struct Inner {
    cfg: PlatformConfig,
    api_base: Url,
    api: Client,
    download: Client,
}

/// A project's listing ([`DxClient::list_files`]): the files, and the results that could not
/// be read as files (each fails only its own file).
#[derive(Debug, Clone, Default)]
pub struct ProjectListing {
    /// The files, deduplicated by id.
    pub files: Vec<RemoteFile>,
    /// Results whose describe could not be read, with the reason.
    pub unreadable: Vec<UnreadableResult>,
}

/// The DNAnexus client. Cheap to clone; clones share connection pools.
#[derive(Clone)]
pub struct DxClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for DxClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DxClient")
            .field("api_url", &self.inner.api_base.as_str())
            .finish_non_exhaustive()
    }
}

/// How far before a crawl's start (our clock) its catch-up query reaches back: the platform's
/// clock may be behind ours by up to this much without a file modified during the crawl being
/// missed. Reaching back further only re-lists the few files modified in that window.
pub const CATCH_UP_MARGIN_MS: i64 = 10 * 60 * 1000;

/// Catch-up queries after a listing at most (each follows one that paged).
pub const MAX_CATCH_UPS: u32 = 4;

/// The `modified.after` of the catch-up for a crawl that started at `start_ms` (our clock).
pub fn catch_up_since(start_ms: i64) -> i64 {
    start_ms.saturating_sub(CATCH_UP_MARGIN_MS)
}

fn client_error(what: &str, e: reqwest::Error) -> PlatformError {
    PlatformError::Config(format!(
        "cannot build the {what} HTTP client: {}",
        http::chain_text(&e)
    ))
}

impl DxClient {
    /// Builds the client: one HTTP client for the API (with the token) and one for downloads
    /// (without). Installs the ring rustls provider if none is; trusts `ca_file` in addition to
    /// the system roots; honours `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY`.
    pub fn new(cfg: PlatformConfig) -> Result<DxClient, PlatformError> {
        http::install_crypto_provider();
        let api_base = Url::parse(cfg.api_url.trim())
            .map_err(|e| PlatformError::Config(format!("api_url {:?}: {e}", cfg.api_url)))?;
        if !matches!(api_base.scheme(), "http" | "https") || api_base.host_str().is_none() {
            return Err(PlatformError::Config(format!(
                "api_url {:?} must be an http(s) URL with a host",
                cfg.api_url
            )));
        }
        if cfg.token.is_empty() {
            return Err(PlatformError::Config("the API token is empty".to_owned()));
        }
        let mut auth =
            HeaderValue::from_str(&format!("Bearer {}", cfg.token.expose())).map_err(|_| {
                PlatformError::Config(
                    "the API token holds characters not allowed in a header".into(),
                )
            })?;
        auth.set_sensitive(true);
        let mut api_headers = HeaderMap::new();
        api_headers.insert(AUTHORIZATION, auth);

        let api = http::base_builder(&cfg.user_agent, cfg.connect_timeout, cfg.ca_file.as_deref())?
            .default_headers(api_headers)
            .timeout(cfg.api_timeout)
            .build()
            .map_err(|e| client_error("API", e))?;
        let download =
            http::base_builder(&cfg.user_agent, cfg.connect_timeout, cfg.ca_file.as_deref())?
                .build()
                .map_err(|e| client_error("download", e))?;
        Ok(DxClient {
            inner: Arc::new(Inner {
                cfg,
                api_base,
                api,
                download,
            }),
        })
    }

    /// The configuration the client was built with.
    pub fn config(&self) -> &PlatformConfig {
        &self.inner.cfg
    }

    /// The counters this client (and the engine using it) counts into.
    pub fn counters(&self) -> &Arc<Counters> {
        &self.inner.cfg.counters
    }

    /// `/system/whoami`: the user id the token belongs to (a cheap token check).
    pub async fn whoami(&self) -> Result<String, PlatformError> {
        let who: wire::WhoAmI = self.call("/system/whoami", &json!({})).await?;
        Ok(who.id)
    }

    /// `/project-xxxx/describe`: name, `downloadRestricted` and the caller's level.
    pub async fn describe_project(&self, id: &ProjectId) -> Result<ProjectInfo, PlatformError> {
        let route = format!("/{id}/describe");
        let body = json!({"fields": {"id": true, "name": true, "downloadRestricted": true, "level": true}});
        let d: wire::ProjectDescribe = self.call(&route, &body).await?;
        if &d.id != id {
            return Err(PlatformError::Decode {
                route,
                detail: format!("asked for {id} but got {}", d.id),
            });
        }
        Ok(d.into_info())
    }

    /// Every visible file of a project, in any state, with parts and checksums.
    ///
    /// Pages until `next` is null; a malformed page is an error, never a short listing, but a
    /// malformed result is only that file's: it is returned in
    /// [`ProjectListing::unreadable`] and the listing goes on. Files are deduplicated by id
    /// (keeping the newest description). The rule holds whatever order the pages come in: a
    /// file can only move between pages while the crawl runs if it was modified (or created)
    /// meanwhile, so its `modified` is no earlier than the crawl's start. A crawl of more than
    /// one page is therefore followed by a catch-up query for the files modified since the
    /// crawl's own start ([`catch_up_since`], which allows for the platform's clock being behind
    /// ours), and that one, if it pages too, by another from its own start, at most
    /// [`MAX_CATCH_UPS`] times. A listing of one page is one answer and needs none.
    pub async fn list_files(&self, project: &ProjectId) -> Result<ProjectListing, PlatformError> {
        let started = Instant::now();
        let mut files: Vec<RemoteFile> = Vec::new();
        let mut index: HashMap<FileId, usize> = HashMap::new();
        let mut unreadable = Vec::new();
        let mut since = catch_up_since(crate::clock::now_ms());
        let mut pages = self
            .crawl(project, None, &mut files, &mut index, &mut unreadable)
            .await?;
        let mut total = pages;
        let mut catch_ups = 0u32;
        while pages > 1 {
            if catch_ups == MAX_CATCH_UPS {
                warn!(project_id = %project, catch_ups, "files kept changing during the listing; the next listing will see what this one missed");
                break;
            }
            let next_since = catch_up_since(crate::clock::now_ms());
            pages = self
                .crawl(
                    project,
                    Some(since),
                    &mut files,
                    &mut index,
                    &mut unreadable,
                )
                .await?;
            since = next_since;
            total += pages;
            catch_ups += 1;
        }
        // A result unreadable on one page and read on another (the catch-up) is a file.
        // One entry per unreadable id, however many crawls met it.
        let mut seen = HashSet::new();
        unreadable.retain(|u| {
            seen.insert(u.id.clone())
                && u.id
                    .parse::<FileId>()
                    .map_or(true, |id| !index.contains_key(&id))
        });
        debug!(project_id = %project, n_files = files.len(), n_unreadable = unreadable.len(), pages = total, catch_ups, elapsed_ms = started.elapsed().as_millis() as u64, "listed project");
        Ok(ProjectListing { files, unreadable })
    }

    /// One paged `/system/findDataObjects` crawl, merged into `files`. Returns the number of
    /// pages.
    async fn crawl(
        &self,
        project: &ProjectId,
        modified_after: Option<i64>,
        files: &mut Vec<RemoteFile>,
        index: &mut HashMap<FileId, usize>,
        unreadable: &mut Vec<UnreadableResult>,
    ) -> Result<u32, PlatformError> {
        const ROUTE: &str = "/system/findDataObjects";
        let mut starting: Option<Value> = None;
        let mut cursors: HashSet<String> = HashSet::new();
        let mut pages = 0u32;
        loop {
            let body = wire::find_files_body(project, starting.as_ref(), modified_after);
            let page: wire::FindDataObjectsPage = self.call(ROUTE, &body).await?;
            pages += 1;
            for result in page.results {
                let file = match wire::decode_result(result, project) {
                    Ok(file) => file,
                    Err(bad) => {
                        unreadable.push(bad);
                        continue;
                    }
                };
                match index.get(&file.id) {
                    Some(&at) => {
                        if files[at].modified_ms <= file.modified_ms {
                            files[at] = file;
                        }
                    }
                    None => {
                        index.insert(file.id.clone(), files.len());
                        files.push(file);
                    }
                }
            }
            match page.next {
                None => return Ok(pages),
                Some(next) => {
                    if !cursors.insert(next.to_string()) {
                        return Err(PlatformError::Decode {
                            route: ROUTE.to_owned(),
                            detail: "paging returned a cursor already seen".to_owned(),
                        });
                    }
                    starting = Some(next);
                }
            }
        }
    }

    /// `/system/findProjects` with `level` always sent, paged to the end.
    pub async fn find_projects(&self, q: &ProjectQuery) -> Result<Vec<ProjectInfo>, PlatformError> {
        const ROUTE: &str = "/system/findProjects";
        let mut out: Vec<ProjectInfo> = Vec::new();
        let mut seen: HashSet<ProjectId> = HashSet::new();
        let mut cursors: HashSet<String> = HashSet::new();
        let mut starting: Option<Value> = None;
        loop {
            let page: wire::FindProjectsPage =
                self.call(ROUTE, &q.to_body(starting.as_ref())).await?;
            for p in page.results {
                let info = p.into_info();
                if seen.insert(info.id.clone()) {
                    out.push(info);
                }
            }
            match page.next {
                None => return Ok(out),
                Some(next) => {
                    if !cursors.insert(next.to_string()) {
                        return Err(PlatformError::Decode {
                            route: ROUTE.to_owned(),
                            detail: "paging returned a cursor already seen".to_owned(),
                        });
                    }
                    starting = Some(next);
                }
            }
        }
    }

    /// `/file-xxxx/download` (not preauthenticated): a URL plus the headers every GET must send.
    /// Without an `expires` in the answer, the URL is taken to expire after `url_duration`.
    pub async fn download_url(
        &self,
        file: &FileId,
        project: &ProjectId,
    ) -> Result<DownloadUrl, PlatformError> {
        let route = format!("/{file}/download");
        let asked_at = SystemTime::now();
        let duration = self.inner.cfg.url_duration.as_secs().max(1);
        let body = json!({"project": project.as_str(), "duration": duration});
        let answer: wire::DownloadAnswer = self.call(&route, &body).await?;
        let decode = |detail: String| PlatformError::Decode {
            route: route.clone(),
            detail,
        };
        let url = self
            .inner
            .api_base
            .join(&answer.url)
            .map_err(|e| decode(format!("url is not a URL: {e}")))?;
        let expires = match answer.expires {
            Some(ms) => {
                let ms =
                    u64::try_from(ms).map_err(|_| decode(format!("expires {ms} is negative")))?;
                Some(SystemTime::UNIX_EPOCH + Duration::from_millis(ms))
            }
            None => Some(asked_at + Duration::from_secs(duration)),
        };
        DownloadUrl::new(
            url,
            answer.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            expires,
        )
        .map_err(|e| decode(e.to_string()))
    }

    /// One ranged GET of `range` of a `file_size`-byte file (no retry inside).
    ///
    /// Sends `Range` and the URL's headers (never the API token); follows up to
    /// [`MAX_REDIRECTS`] redirects by hand, sending only `Range` to each target; checks the
    /// status, `Content-Range` and `Content-Length` before handing out the body.
    pub async fn get_range(
        &self,
        url: &DownloadUrl,
        range: ByteRange,
        file_size: u64,
    ) -> Result<RangeBody, PlatformError> {
        self.get_range_pinned(url, range, file_size, None).await
    }

    /// [`DxClient::get_range`] pinned to a drive-backed file's backing object: `If-Match:
    /// <etag>` (verbatim) goes to the platform URL and to every redirect target, so that an
    /// object overwritten since its describe answers `412` (`ObjectChanged` in the retry
    /// table) rather than bytes of another version.
    pub async fn get_range_pinned(
        &self,
        url: &DownloadUrl,
        range: ByteRange,
        file_size: u64,
        etag: Option<&str>,
    ) -> Result<RangeBody, PlatformError> {
        http::get_range(
            &self.inner.download,
            self.inner.cfg.stall_timeout,
            url,
            range,
            file_size,
            etag,
        )
        .await
    }

    /// One API call with the retry table applied.
    async fn call<T: DeserializeOwned>(
        &self,
        route: &str,
        body: &Value,
    ) -> Result<T, PlatformError> {
        let cfg = &self.inner.cfg;
        let mut attempts = 0u32;
        let mut retries = 0u32;
        let mut waited = Duration::ZERO;
        loop {
            attempts += 1;
            let started = Instant::now();
            cfg.counters.api_call();
            let err = match self.call_once(route, body).await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            cfg.counters.api_error(match err.api_disposition() {
                ApiDisposition::Retry => ApiErrorKind::Transient,
                ApiDisposition::RetryAfter(_) => ApiErrorKind::Throttled,
                ApiDisposition::BadToken => ApiErrorKind::Auth,
                ApiDisposition::PermissionDenied => ApiErrorKind::Permission,
                ApiDisposition::NotFound => ApiErrorKind::NotFound,
                ApiDisposition::InvalidState | ApiDisposition::Fatal => ApiErrorKind::Other,
            });
            let elapsed_ms = started.elapsed().as_millis() as u64;
            let status = err.status().unwrap_or(0);
            let delay = match err.api_disposition() {
                ApiDisposition::Retry if retries < cfg.max_api_retries => {
                    retries += 1;
                    cfg.backoff.next_delay(retries)
                }
                ApiDisposition::Retry => {
                    return Err(PlatformError::RetriesExhausted {
                        route: route.to_owned(),
                        attempts,
                        last: Box::new(err),
                    })
                }
                ApiDisposition::RetryAfter(told) => {
                    let wait = told.min(cfg.max_retry_after);
                    if waited.saturating_add(wait) > cfg.retry_after_budget {
                        return Err(PlatformError::ThrottleBudgetExhausted {
                            route: route.to_owned(),
                            attempts,
                            budget: cfg.retry_after_budget,
                            last: Box::new(err),
                        });
                    }
                    waited += wait;
                    cfg.counters.throttled(wait);
                    wait
                }
                _ => return Err(err),
            };
            warn!(route, attempt = attempts, status, elapsed_ms, delay_ms = delay.as_millis() as u64, error = %err, "API call failed, retrying");
            tokio::time::sleep(delay).await;
        }
    }

    /// One attempt of an API call.
    async fn call_once<T: DeserializeOwned>(
        &self,
        route: &str,
        body: &Value,
    ) -> Result<T, PlatformError> {
        let url = self.api_url(route)?;
        // A transport failure names the API host too (its origin only): an admin reads which
        // server could not be reached.
        let target = format!(
            "{route} at {}",
            http::redact_url(&url).trim_end_matches("/…")
        );
        let resp = self
            .inner
            .api
            .post(url)
            .json(body)
            .send()
            .await
            .map_err(|e| http::io_error(target.clone(), e))?;
        let status = resp.status();
        if status.is_success() {
            let bytes = resp.bytes().await.map_err(|e| http::io_error(target, e))?;
            return serde_json::from_slice(&bytes).map_err(|e| PlatformError::Decode {
                route: route.to_owned(),
                detail: e.to_string(),
            });
        }
        let retry_after = http::retry_after_of(resp.headers());
        let body = read_capped(resp, MAX_ERROR_BODY).await;
        let (error_type, message) = wire::decode_error(&body).unwrap_or((None, None));
        Err(PlatformError::Api {
            route: route.to_owned(),
            status: status.as_u16(),
            error_type,
            message: message
                .map(|m| m.chars().take(500).collect())
                .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_owned()),
            retry_after,
        })
    }

    fn api_url(&self, route: &str) -> Result<Url, PlatformError> {
        let base = self.inner.api_base.as_str().trim_end_matches('/');
        Url::parse(&format!("{base}{route}"))
            .map_err(|e| PlatformError::InvalidRequest(format!("route {route}: {e}")))
    }
}

/// Reads at most `cap` bytes of a body; a broken body just ends early.
async fn read_capped(mut resp: reqwest::Response, cap: usize) -> Vec<u8> {
    let mut out = Vec::new();
    while out.len() < cap {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                let room = cap - out.len();
                out.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok(None) | Err(_) => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_query_always_sends_level() {
        let body = ProjectQuery::default().to_body(None);
        assert_eq!(body["level"], "VIEW");
        assert!(body.get("name").is_none());
        assert!(body.get("tags").is_none());
        let mut q = ProjectQuery {
            level: "UPLOAD".into(),
            name_glob: Some("SJ*".into()),
            tags: vec!["sjcp-project-data".into(), "x".into()],
            ..ProjectQuery::default()
        };
        q.properties.insert("k".into(), "v".into());
        let next = json!("cursor");
        let body = q.to_body(Some(&next));
        assert_eq!(body["level"], "UPLOAD");
        assert_eq!(body["name"]["glob"], "SJ*");
        assert_eq!(body["tags"]["$and"][1], "x");
        assert_eq!(body["properties"]["k"], "v");
        assert_eq!(body["starting"], "cursor");
        assert_eq!(body["describe"]["fields"]["downloadRestricted"], true);
    }

    #[test]
    fn new_rejects_bad_config() {
        let bad_url = PlatformConfig {
            api_url: "not a url".into(),
            token: ApiToken::new("t"),
            ..PlatformConfig::default()
        };
        assert!(matches!(
            DxClient::new(bad_url),
            Err(PlatformError::Config(_))
        ));
        let no_token = PlatformConfig::default();
        assert!(matches!(
            DxClient::new(no_token),
            Err(PlatformError::Config(_))
        ));
        let bad_token = PlatformConfig {
            token: ApiToken::new("a\nb"),
            ..PlatformConfig::default()
        };
        let err = DxClient::new(bad_token).unwrap_err();
        assert!(!err.to_string().contains("a\nb"));
        let dir = tempfile::tempdir().unwrap();
        let not_pem = dir.path().join("ca.pem");
        std::fs::write(&not_pem, "hello").unwrap();
        let bad_ca = PlatformConfig {
            token: ApiToken::new("t"),
            ca_file: Some(not_pem),
            ..PlatformConfig::default()
        };
        assert!(matches!(
            DxClient::new(bad_ca),
            Err(PlatformError::Config(_))
        ));
        let missing_ca = PlatformConfig {
            token: ApiToken::new("t"),
            ca_file: Some(dir.path().join("missing.pem")),
            ..PlatformConfig::default()
        };
        assert!(matches!(
            DxClient::new(missing_ca),
            Err(PlatformError::Config(_))
        ));
    }

    #[test]
    fn routes_join_the_base() {
        let c = DxClient::new(PlatformConfig {
            api_url: "http://127.0.0.1:9/".into(),
            token: ApiToken::new("SECRETTOKEN"),
            ..PlatformConfig::default()
        })
        .unwrap();
        assert_eq!(
            c.api_url("/system/whoami").unwrap().as_str(),
            "http://127.0.0.1:9/system/whoami"
        );
        assert!(!format!("{c:?}").contains("SECRETTOKEN"));
    }
}
