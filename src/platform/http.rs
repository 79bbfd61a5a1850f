//! HTTP plumbing: building the two reqwest clients (API and downloads), the download URL type,
//! the single-attempt ranged GET with manual redirects and strict answer validation, and the
//! streaming body with its stall timeout.
//!
//! This module never retries and never decides what a failure means (`retry.rs` does). The
//! download client carries no `Authorization` header, ever; redirects are followed by hand so
//! that only `Range`, a drive-backed file's `If-Match` (and the user agent) travel to a
//! redirect target. URLs appear in errors
//! and logs only as their origin (`scheme://host:port/…`).

use base64::Engine as _;
use std::fmt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_LENGTH, CONTENT_RANGE};
use reqwest::{Client, Response, StatusCode, Url};

use super::error::{IoKind, PlatformError};
use super::retry::parse_retry_after;
use crate::model::ByteRange;

/// The largest range for which Azure storage returns the range's own `Content-MD5` when asked
/// with `x-ms-range-get-content-md5: true` (Get Blob). St. Jude Cloud's symlinked files redirect
/// to Azure, so ranges up to this size can be checked as they arrive even when the platform's
/// only checksum covers the whole file.
pub const RANGE_MD5_MAX: u64 = 4 << 20;

/// The Azure request header asking for a range's MD5.
const RANGE_MD5_HEADER: &str = "x-ms-range-get-content-md5";

/// Most redirects followed for one ranged GET.
pub const MAX_REDIRECTS: u32 = 5;

/// Installs ring as the process-wide rustls provider; a provider already installed is fine.
pub(crate) fn install_crypto_provider() {
    // Err means some provider is already installed, which is all we need.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Shared builder settings of both clients.
pub(crate) fn base_builder(
    user_agent: &str,
    connect_timeout: Duration,
    ca_file: Option<&Path>,
) -> Result<reqwest::ClientBuilder, PlatformError> {
    let mut builder = Client::builder()
        .user_agent(user_agent)
        .connect_timeout(connect_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .tcp_keepalive(Duration::from_secs(30))
        .pool_idle_timeout(Duration::from_secs(60));
    if let Some(path) = ca_file {
        let pem = std::fs::read(path).map_err(|e| {
            PlatformError::Config(format!("cannot read CA file {}: {e}", path.display()))
        })?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
            PlatformError::Config(format!("CA file {} is not PEM: {e}", path.display()))
        })?;
        if certs.is_empty() {
            return Err(PlatformError::Config(format!(
                "CA file {} holds no certificate",
                path.display()
            )));
        }
        builder = builder.tls_certs_merge(certs);
    }
    Ok(builder)
}

/// The origin of a URL followed by `/…`: safe to log (no path token, no query).
pub fn redact_url(url: &Url) -> String {
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    match url.host_str() {
        Some(host) => format!("{}://{host}{port}/…", url.scheme()),
        None => format!("{}:…", url.scheme()),
    }
}

/// Describes a reqwest error without its URL, with its causes, and guesses its kind.
pub(crate) fn io_error(target: String, err: reqwest::Error) -> PlatformError {
    let kind = io_kind(&err);
    let detail = chain_text(&err.without_url());
    PlatformError::Io {
        target,
        kind,
        detail,
    }
}

fn io_kind(err: &reqwest::Error) -> IoKind {
    if err.is_timeout() {
        return IoKind::Timeout;
    }
    let mut chain = String::new();
    let mut io_kind = None;
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(err);
    while let Some(s) = source {
        chain.push_str(&s.to_string().to_ascii_lowercase());
        chain.push(' ');
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            io_kind.get_or_insert(io.kind());
        }
        source = s.source();
    }
    if chain.contains("dns error") || chain.contains("failed to lookup address") {
        return IoKind::Dns;
    }
    use std::io::ErrorKind as K;
    match io_kind {
        Some(K::TimedOut) => IoKind::Timeout,
        Some(K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::UnexpectedEof) => {
            IoKind::Reset
        }
        Some(K::ConnectionRefused) => IoKind::Connect,
        _ if err.is_connect() => IoKind::Connect,
        _ if chain.contains("reset")
            || chain.contains("closed")
            || chain.contains("incomplete") =>
        {
            IoKind::Reset
        }
        _ => IoKind::Other,
    }
}

/// Renders an error and its causes on one line (used for reqwest errors stripped of their URL).
pub(crate) fn chain_text(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// Reads `Retry-After` from response headers.
pub(crate) fn retry_after_of(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, SystemTime::now()))
}

/// A URL from `/file-xxxx/download` with the headers that must accompany every GET.
///
/// Both the URL's path/query and the headers are secret: `Debug` shows only the origin and the
/// header names.
#[derive(Clone)]
pub struct DownloadUrl {
    url: Url,
    headers: Vec<(HeaderName, HeaderValue)>,
    expires: Option<SystemTime>,
}

impl DownloadUrl {
    /// Builds a download URL from its parts (as the platform returns them).
    pub fn from_parts<'a>(
        url: &str,
        headers: impl IntoIterator<Item = (&'a str, &'a str)>,
        expires: Option<SystemTime>,
    ) -> Result<DownloadUrl, PlatformError> {
        let url = Url::parse(url).map_err(|e| {
            PlatformError::InvalidRequest(format!("download URL is not a URL: {e}"))
        })?;
        DownloadUrl::new(url, headers, expires)
    }

    pub(crate) fn new<'a>(
        url: Url,
        headers: impl IntoIterator<Item = (&'a str, &'a str)>,
        expires: Option<SystemTime>,
    ) -> Result<DownloadUrl, PlatformError> {
        if url.scheme() != "http" && url.scheme() != "https" {
            return Err(PlatformError::InvalidRequest(format!(
                "download URL scheme {:?} is not http(s)",
                url.scheme()
            )));
        }
        let mut out = Vec::new();
        for (name, value) in headers {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                PlatformError::InvalidRequest(format!("download header name {name:?} is invalid"))
            })?;
            let mut value = HeaderValue::from_str(value).map_err(|_| {
                PlatformError::InvalidRequest(format!(
                    "download header {name} has an invalid value"
                ))
            })?;
            value.set_sensitive(true);
            out.push((name, value));
        }
        Ok(DownloadUrl {
            url,
            headers: out,
            expires,
        })
    }

    /// The URL's origin, safe to log.
    pub fn redacted(&self) -> String {
        redact_url(&self.url)
    }

    /// When the URL stops being usable, if known.
    pub fn expires(&self) -> Option<SystemTime> {
        self.expires
    }

    /// True when the URL expires within `margin` of `now` (never, when no expiry is known).
    pub fn is_expired(&self, now: SystemTime, margin: Duration) -> bool {
        self.expires.is_some_and(|e| now + margin >= e)
    }

    /// Names of the headers sent with every GET (values are secret).
    pub fn header_names(&self) -> Vec<&str> {
        self.headers.iter().map(|(n, _)| n.as_str()).collect()
    }
}

impl fmt::Debug for DownloadUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DownloadUrl")
            .field("url", &self.redacted())
            .field(
                "headers",
                &self
                    .headers
                    .iter()
                    .map(|(n, _)| format!("{n}: ***"))
                    .collect::<Vec<_>>(),
            )
            .field("expires", &self.expires)
            .finish()
    }
}

fn is_redirect(status: StatusCode) -> bool {
    matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308)
}

/// Headers from the platform that must not override what we send.
fn reserved_header(name: &HeaderName) -> bool {
    name == reqwest::header::RANGE
        || name == reqwest::header::HOST
        || name == CONTENT_LENGTH
        || name == reqwest::header::IF_MATCH
}

/// One ranged GET (no retry): follows up to [`MAX_REDIRECTS`] redirects by hand and validates
/// the answer before handing out the body.
///
/// With `if_match` (a drive-backed file's ETag, verbatim), every hop carries `If-Match`, so
/// that a backing object overwritten since its describe answers `412` instead of other bytes.
pub(crate) async fn get_range(
    client: &Client,
    stall: Duration,
    url: &DownloadUrl,
    range: ByteRange,
    file_size: u64,
    if_match: Option<&str>,
) -> Result<RangeBody, PlatformError> {
    let shown = url.redacted();
    let if_match = match if_match {
        None => None,
        Some(tag) => Some(HeaderValue::from_str(tag).map_err(|_| {
            PlatformError::InvalidRequest(
                "the file's ETag cannot be sent as an If-Match header".to_owned(),
            )
        })?),
    };
    let Some(range_header) = range.http_header() else {
        return Err(PlatformError::InvalidRequest(format!(
            "empty range at offset {} of {shown}",
            range.offset
        )));
    };
    if range.end() > file_size {
        return Err(PlatformError::InvalidRequest(format!(
            "range {}..{} lies past the end of a {file_size}-byte file",
            range.offset,
            range.end()
        )));
    }
    let mut target = url.url.clone();
    let mut hops = 0u32;
    loop {
        let mut req = client
            .get(target.clone())
            .header(reqwest::header::RANGE, &range_header);
        // The pin travels on every hop: the storage host is the one that can check it.
        if let Some(tag) = &if_match {
            req = req.header(reqwest::header::IF_MATCH, tag);
        }
        // The platform's headers go to the platform URL only, never to a redirect target.
        if hops == 0 {
            for (name, value) in &url.headers {
                if !reserved_header(name) {
                    req = req.header(name, value);
                }
            }
        } else if range.len <= RANGE_MD5_MAX {
            // A storage host: ask for the range's MD5 (Azure answers with `Content-MD5`; other
            // stores ignore the header).
            req = req.header(RANGE_MD5_HEADER, "true");
        }
        let resp = match tokio::time::timeout(stall, req.send()).await {
            Err(_) => {
                return Err(PlatformError::Stalled {
                    url: redact_url(&target),
                    after: stall,
                    received: 0,
                })
            }
            Ok(Err(e)) => return Err(io_error(redact_url(&target), e)),
            Ok(Ok(resp)) => resp,
        };
        let status = resp.status();
        if is_redirect(status) {
            hops += 1;
            if hops > MAX_REDIRECTS {
                return Err(PlatformError::Redirect {
                    url: shown,
                    what: format!("more than {MAX_REDIRECTS} redirects"),
                });
            }
            let location = resp
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| PlatformError::Redirect {
                    url: shown.clone(),
                    what: format!("HTTP {} without a usable Location", status.as_u16()),
                })?;
            let next = target.join(location).map_err(|e| PlatformError::Redirect {
                url: shown.clone(),
                what: format!("unusable Location: {e}"),
            })?;
            if next.scheme() != "http" && next.scheme() != "https" {
                return Err(PlatformError::Redirect {
                    url: shown,
                    what: format!("redirect to a {:?} URL", next.scheme()),
                });
            }
            tracing::trace!(hop = hops, to = %redact_url(&next), "following download redirect");
            target = next;
            continue;
        }
        return validate(resp, &redact_url(&target), stall, range, file_size);
    }
}

/// Parses `bytes a-b/total`.
fn parse_content_range(value: &str) -> Option<(u64, u64, u64)> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (span, total) = rest.split_once('/')?;
    let (a, b) = span.split_once('-')?;
    Some((
        a.trim().parse().ok()?,
        b.trim().parse().ok()?,
        total.trim().parse().ok()?,
    ))
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// Checks status, `Content-Range` and `Content-Length` against the request.
fn validate(
    resp: Response,
    shown: &str,
    stall: Duration,
    range: ByteRange,
    file_size: u64,
) -> Result<RangeBody, PlatformError> {
    let status = resp.status();
    let headers = resp.headers();
    let bad = |what: String| PlatformError::BadResponse {
        url: shown.to_owned(),
        what,
    };
    let asked = format!(
        "bytes {}-{}/{file_size}",
        range.offset,
        range.end().saturating_sub(1)
    );
    match status.as_u16() {
        206 => {
            let value = headers
                .get(CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| bad(format!("HTTP 206 without Content-Range (asked {asked})")))?;
            let (a, b, total) = parse_content_range(value)
                .ok_or_else(|| bad(format!("unparsable Content-Range {value:?}")))?;
            if a != range.offset || b + 1 != range.end() || total != file_size {
                return Err(bad(format!("Content-Range {value:?} but asked {asked}")));
            }
        }
        200 => {
            if range.offset != 0 || range.len != file_size {
                return Err(bad(format!(
                    "HTTP 200 (whole object) for a partial range (asked {asked})"
                )));
            }
        }
        s if status.is_success() => {
            return Err(bad(format!(
                "unexpected HTTP {s} for a range (asked {asked})"
            )))
        }
        s => {
            return Err(PlatformError::Http {
                url: shown.to_owned(),
                status: s,
                retry_after: retry_after_of(headers),
            })
        }
    }
    match content_length(headers) {
        Some(n) if n == range.len => {}
        Some(n) => {
            return Err(bad(format!(
                "Content-Length {n} but the range has {} bytes",
                range.len
            )))
        }
        None => {
            return Err(bad(format!(
                "no Content-Length for a {}-byte range",
                range.len
            )))
        }
    }
    // A `Content-MD5` of a 206 is the range's (asked for above); of a 200, the object's.
    let content_md5 = headers
        .get("content-md5")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            base64::engine::general_purpose::STANDARD
                .decode(v.trim())
                .ok()
        })
        .and_then(|raw| <[u8; 16]>::try_from(raw.as_slice()).ok());
    Ok(RangeBody {
        resp,
        url: shown.to_owned(),
        expected: range.len,
        received: 0,
        stall,
        done: false,
        content_md5,
    })
}

/// The body of a validated ranged GET, read chunk by chunk.
pub struct RangeBody {
    resp: Response,
    url: String,
    expected: u64,
    received: u64,
    stall: Duration,
    done: bool,
    content_md5: Option<[u8; 16]>,
}

impl fmt::Debug for RangeBody {
    // Hand-written: the response's own Debug would print the signed URL.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RangeBody")
            .field("url", &self.url)
            .field("expected", &self.expected)
            .field("received", &self.received)
            .finish_non_exhaustive()
    }
}

impl RangeBody {
    /// The MD5 the storage host stated for exactly these bytes (`Content-MD5`), when it did.
    pub fn content_md5(&self) -> Option<[u8; 16]> {
        self.content_md5
    }

    /// The number of bytes this body will yield in total.
    pub fn expected_len(&self) -> u64 {
        self.expected
    }

    /// Bytes yielded so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// The next piece of the body; `None` once exactly [`RangeBody::expected_len`] bytes were
    /// yielded. Fails with `Stalled` when no byte arrives within the stall timeout, and with
    /// `TruncatedBody` when the body ends or breaks early. Never yields bytes past the range.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, PlatformError> {
        loop {
            if self.done || self.received >= self.expected {
                self.done = true;
                return Ok(None);
            }
            let next = match tokio::time::timeout(self.stall, self.resp.chunk()).await {
                Err(_) => {
                    self.done = true;
                    return Err(PlatformError::Stalled {
                        url: self.url.clone(),
                        after: self.stall,
                        received: self.received,
                    });
                }
                Ok(r) => r,
            };
            match next {
                Ok(Some(mut bytes)) => {
                    if bytes.is_empty() {
                        continue;
                    }
                    let room = self.expected - self.received;
                    if bytes.len() as u64 > room {
                        // Content-Length was checked, so this cannot happen with a sane HTTP
                        // stack; never hand out bytes past the range anyway.
                        bytes.truncate(usize::try_from(room).unwrap_or(usize::MAX));
                    }
                    self.received += bytes.len() as u64;
                    return Ok(Some(bytes));
                }
                Ok(None) => {
                    self.done = true;
                    return Err(PlatformError::TruncatedBody {
                        url: self.url.clone(),
                        expected: self.expected,
                        received: self.received,
                        detail: None,
                    });
                }
                Err(e) => {
                    self.done = true;
                    return Err(PlatformError::TruncatedBody {
                        url: self.url.clone(),
                        expected: self.expected,
                        received: self.received,
                        detail: Some(chain_text(&e.without_url())),
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_keeps_only_the_origin() {
        let u = Url::parse("https://dl.dnanex.us/F/D/SECRETTOKEN/x.bam?sig=SECRET").unwrap();
        assert_eq!(redact_url(&u), "https://dl.dnanex.us/…");
        let u = Url::parse("http://127.0.0.1:8080/a?b=c").unwrap();
        assert_eq!(redact_url(&u), "http://127.0.0.1:8080/…");
    }

    #[test]
    fn download_url_debug_hides_secrets() {
        let d = DownloadUrl::from_parts(
            "https://dl.example/F/D/SECRETTOKEN/x.bam?sig=QUERYSECRET",
            [("X-Auth", "HEADERSECRET")],
            None,
        )
        .unwrap();
        let shown = format!("{d:?}");
        assert!(!shown.contains("SECRET"), "{shown}");
        assert!(shown.contains("x-auth"), "{shown}");
        assert_eq!(d.header_names(), vec!["x-auth"]);
    }

    #[test]
    fn expiry() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let d = DownloadUrl::from_parts("https://h/x", [], Some(now + Duration::from_secs(100)))
            .unwrap();
        assert!(!d.is_expired(now, Duration::from_secs(60)));
        assert!(d.is_expired(now, Duration::from_secs(100)));
        assert!(d.is_expired(now + Duration::from_secs(200), Duration::ZERO));
        let never = DownloadUrl::from_parts("https://h/x", [], None).unwrap();
        assert!(!never.is_expired(now, Duration::from_secs(1_000_000)));
    }

    #[test]
    fn bad_download_urls() {
        assert!(DownloadUrl::from_parts("not a url", [], None).is_err());
        assert!(DownloadUrl::from_parts("ftp://h/x", [], None).is_err());
        assert!(DownloadUrl::from_parts("https://h/x", [("bad name", "v")], None).is_err());
        assert!(DownloadUrl::from_parts("https://h/x", [("n", "bad\nvalue")], None).is_err());
    }

    #[test]
    fn content_range_parsing() {
        assert_eq!(parse_content_range("bytes 0-9/100"), Some((0, 9, 100)));
        assert_eq!(parse_content_range("bytes 10-19/*"), None);
        assert_eq!(parse_content_range("items 0-9/100"), None);
        assert_eq!(parse_content_range("bytes 0-x/100"), None);
    }
}
