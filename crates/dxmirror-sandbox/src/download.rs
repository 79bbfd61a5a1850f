//! Download URLs and the storage host: issuing and checking signed URLs, the 302 of
//! drive-backed files, Range semantics, fault injection on bodies and byte counting.
//!
//! Bodies are generated into a reusable per-connection buffer and written in big slices. Every
//! byte handed to the socket is counted, with whether a fault spoiled the response. This module
//! never logs a URL token, a signature or a download header value.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::dataset::BuiltFile;
use super::dataset::BLOCK_MD5_SIZE;
use super::faults::BodyFault;
use super::http::{self, Request};
use super::stats::InFlight;
use super::{now_ms, Shared};
use crate::model::FileId;

/// Header a non-preauthenticated download URL requires.
pub(crate) const DOWNLOAD_HEADER: &str = "X-DNAnexus-Download-Token";

/// What a download URL token carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UrlClaims {
    pub file: String,
    pub project: String,
    pub expires_ms: i64,
    pub preauth: bool,
}

impl UrlClaims {
    fn payload(&self) -> String {
        format!(
            "{}:{}:{}:{}",
            self.file,
            self.project,
            self.expires_ms,
            u8::from(self.preauth)
        )
    }
}

/// Issues a download URL: `(url, headers)`.
pub(crate) fn issue_url(
    shared: &Shared,
    claims: &UrlClaims,
    filename: &str,
) -> (String, Vec<(String, String)>) {
    let payload = claims.payload();
    let token = format!(
        "{}.{}",
        hex::encode(payload.as_bytes()),
        shared.sign(&payload)
    );
    // A name of `.` or `..` would be eaten by URL normalisation (WHATWG treats `%2e%2e` as
    // `..` too), taking the token with it; such names get the file id in the URL instead.
    let shown = if filename == "." || filename == ".." || filename.is_empty() {
        claims.file.as_str()
    } else {
        filename
    };
    let url = format!(
        "{}/F/D/{}/{}",
        shared.api_base,
        token,
        http::encode_segment(shown)
    );
    let headers = if claims.preauth {
        Vec::new()
    } else {
        vec![(
            DOWNLOAD_HEADER.to_owned(),
            shared.sign(&format!("hdr:{payload}")),
        )]
    };
    (url, headers)
}

fn check_token(shared: &Shared, token: &str) -> Option<UrlClaims> {
    let (hex_payload, sig) = token.split_once('.')?;
    let payload = String::from_utf8(hex::decode(hex_payload).ok()?).ok()?;
    if shared.sign(&payload) != sig {
        return None;
    }
    let mut it = payload.split(':');
    let claims = UrlClaims {
        file: it.next()?.to_owned(),
        project: it.next()?.to_owned(),
        expires_ms: it.next()?.parse().ok()?,
        preauth: it.next()? == "1",
    };
    Some(claims)
}

async fn refuse(stream: &mut TcpStream, status: u16, msg: &str, keep: bool) -> io::Result<bool> {
    let headers = [("Content-Type", "text/plain".to_owned())];
    http::write_simple(stream, status, &headers, msg.as_bytes(), keep).await?;
    Ok(keep)
}

/// `GET /F/D/<token>/<name>` on the API host.
pub(crate) async fn handle_download(
    stream: &mut TcpStream,
    shared: &Arc<Shared>,
    req: &Request,
    buf: &mut Vec<u8>,
) -> io::Result<bool> {
    shared.counters.request("GET download");
    if req.header("if-match").is_some() {
        shared.counters.if_match("GET download");
    }
    if req.method != "GET" && req.method != "HEAD" {
        return refuse(stream, 405, "method not allowed", true).await;
    }
    let rest = req.path().trim_start_matches("/F/D/");
    let token = rest.split('/').next().unwrap_or("");
    let Some(claims) = check_token(shared, token) else {
        return refuse(stream, 403, "AccessDenied: bad signature", true).await;
    };
    if now_ms() > claims.expires_ms {
        return refuse(stream, 403, "AccessDenied: URL expired", true).await;
    }
    if !claims.preauth {
        let expect = shared.sign(&format!("hdr:{}", claims.payload()));
        if req.header(DOWNLOAD_HEADER) != Some(expect.as_str()) {
            return refuse(stream, 403, "AccessDenied: missing download header", true).await;
        }
    }
    let found = {
        let world = shared.read_world();
        let revoked = world.revoked.iter().any(|p| p.as_str() == claims.project);
        claims
            .file
            .parse::<FileId>()
            .ok()
            .and_then(|fid| world.file_in(&fid, Some(&claims.project)).cloned())
            .filter(|f| !revoked && f.project.as_str() == claims.project)
    };
    let Some(file) = found else {
        return refuse(stream, 403, "AccessDenied: no access to the file", true).await;
    };
    if file.spec.kind.is_drive() {
        let location = match &shared.content_base {
            Some(base) => format!("{base}/{}", file.id),
            None => {
                let se = now_ms() + shared.storage_url_ttl.as_millis() as i64;
                let sig = shared.sign(&format!("blob:{}:{se}", file.id));
                format!("{}/blob/{}?se={se}&sig={sig}", shared.storage_base, file.id)
            }
        };
        let headers = [
            ("Location", location),
            ("Content-Type", "text/plain".to_owned()),
        ];
        http::write_simple(stream, 302, &headers, b"", true).await?;
        return Ok(true);
    }
    serve_body(stream, shared, &file, req, buf, false).await
}

/// `GET /blob/<file-id>?se=..&sig=..` on the storage host.
pub(crate) async fn handle_storage(
    stream: &mut TcpStream,
    shared: &Arc<Shared>,
    req: &Request,
    buf: &mut Vec<u8>,
) -> io::Result<bool> {
    shared.counters.request("GET storage");
    if req.header("authorization").is_some() {
        shared.counters.auth_refused();
        let body = "<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>InvalidAuthenticationInfo</Code><Message>Authentication information is not given in the correct format.</Message></Error>";
        let headers = [("Content-Type", "application/xml".to_owned())];
        http::write_simple(stream, 400, &headers, body.as_bytes(), true).await?;
        return Ok(true);
    }
    if req.method != "GET" && req.method != "HEAD" {
        return refuse(stream, 405, "method not allowed", true).await;
    }
    let id = req.path().trim_start_matches("/blob/");
    let mut se: Option<i64> = None;
    let mut sig = "";
    for kv in req.query().unwrap_or("").split('&') {
        match kv.split_once('=') {
            Some(("se", v)) => se = v.parse().ok(),
            Some(("sig", v)) => sig = v,
            _ => {}
        }
    }
    let Some(se) = se else {
        return refuse(stream, 403, "AuthenticationFailed", true).await;
    };
    if shared.sign(&format!("blob:{id}:{se}")) != sig {
        return refuse(stream, 403, "AuthenticationFailed: bad signature", true).await;
    }
    if now_ms() > se {
        return refuse(
            stream,
            403,
            "AuthenticationFailed: signed URL expired",
            true,
        )
        .await;
    }
    let found = {
        let world = shared.read_world();
        id.parse::<FileId>()
            .ok()
            .and_then(|fid| world.file(&fid).cloned())
    };
    let Some(file) = shared.overwrite_if_due(found) else {
        return refuse(stream, 404, "BlobNotFound", true).await;
    };
    if let Some(asked) = req.header("if-match") {
        shared.counters.if_match("GET storage");
        if asked.trim() != "*" && asked != object_etag(&file) {
            // Azure's answer when the blob changed since the client learnt its ETag.
            shared.counters.precondition_failed();
            let body = "<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>ConditionNotMet</Code><Message>The condition specified using HTTP conditional header(s) is not met.</Message></Error>";
            let headers = [
                ("Content-Type", "application/xml".to_owned()),
                ("ETag", object_etag(&file)),
            ];
            http::write_simple(stream, 412, &headers, body.as_bytes(), true).await?;
            return Ok(true);
        }
    }
    // Azure's Get Blob: `x-ms-range-get-content-md5: true` asks for the range's MD5.
    let range_md5 = req
        .header("x-ms-range-get-content-md5")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    serve_body(stream, shared, &file, req, buf, range_md5).await
}

/// The ETag the storage host states for a file's backing object.
fn object_etag(file: &BuiltFile) -> String {
    file.object_etag
        .clone()
        .unwrap_or_else(|| format!("\"{}\"", file.id))
}

/// Parsed `Range` header against a size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RangeReq {
    /// No (usable) range: the whole object.
    Whole,
    /// `[start, end)`.
    Part(u64, u64),
    /// Not satisfiable.
    Unsatisfiable,
}

pub(crate) fn parse_range(value: Option<&str>, size: u64) -> RangeReq {
    let Some(v) = value else {
        return RangeReq::Whole;
    };
    let Some(spec) = v.trim().strip_prefix("bytes=") else {
        return RangeReq::Whole;
    };
    if spec.contains(',') {
        return RangeReq::Whole;
    }
    let Some((a, b)) = spec.split_once('-') else {
        return RangeReq::Whole;
    };
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        // Suffix range: the last b bytes.
        let Ok(n) = b.parse::<u64>() else {
            return RangeReq::Whole;
        };
        if n == 0 || size == 0 {
            return RangeReq::Unsatisfiable;
        }
        return RangeReq::Part(size - n.min(size), size);
    }
    let Ok(start) = a.parse::<u64>() else {
        return RangeReq::Whole;
    };
    let end_incl = if b.is_empty() {
        u64::MAX
    } else {
        match b.parse::<u64>() {
            Ok(e) if e >= start => e,
            _ => return RangeReq::Whole,
        }
    };
    if start >= size {
        return RangeReq::Unsatisfiable;
    }
    RangeReq::Part(start, end_incl.saturating_add(1).min(size))
}

/// How a body is to be sent.
struct BodyPlan {
    /// Body bytes to write (a `LongLength` head announces more).
    len: u64,
    /// Stop after this many body bytes (cut faults).
    cut_at: Option<u64>,
    /// Flip the byte at this body offset.
    flip_at: Option<u64>,
    spoiled: bool,
}

/// Writes `plan.len` bytes of `file` from `offset` and counts what reached the socket, however
/// the response ended, as `response`'s one interval.
async fn write_body(
    stream: &mut TcpStream,
    shared: &Shared,
    response: InFlight<'_>,
    file: &BuiltFile,
    offset: u64,
    plan: &BodyPlan,
    buf: &mut Vec<u8>,
) -> io::Result<()> {
    let piece = if shared.limiter.is_some() {
        64 << 10
    } else {
        512 << 10
    };
    if buf.len() < piece {
        buf.resize(piece, 0);
    }
    let limit = plan.cut_at.unwrap_or(plan.len).min(plan.len);
    let mut sent = 0u64;
    let mut result = Ok(());
    while sent < limit {
        let n = (limit - sent).min(piece as u64) as usize;
        let chunk = &mut buf[..n];
        file.fill(offset + sent, chunk);
        if let Some(at) = plan.flip_at {
            if at >= sent && at < sent + n as u64 {
                chunk[(at - sent) as usize] ^= 0x5a;
            }
        }
        if let Some(l) = &shared.limiter {
            l.take(n as u64).await;
        }
        let mut done = 0usize;
        while done < n {
            match stream.write(&chunk[done..]).await {
                Ok(0) => {
                    result = Err(io::Error::new(io::ErrorKind::WriteZero, "socket closed"));
                    break;
                }
                Ok(k) => done += k,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        sent += done as u64;
        if result.is_err() {
            break;
        }
    }
    response.served(file.id.as_str(), offset, sent, plan.spoiled);
    result
}

/// Base64 of the MD5 of `[start, end)` of `file`: precomputed for 4 MiB-aligned blocks,
/// computed here otherwise (a range resumed mid-block).
fn range_md5_of(file: &BuiltFile, start: u64, end: u64) -> String {
    use base64::Engine as _;
    use md5::Digest as _;
    let block = (start / BLOCK_MD5_SIZE) as usize;
    let aligned = start.is_multiple_of(BLOCK_MD5_SIZE)
        && (end - start == BLOCK_MD5_SIZE || end == file.spec.size);
    let raw: [u8; 16] = match file.block_md5.get(block) {
        Some(md5) if aligned => *md5,
        _ => {
            let mut bytes = vec![0u8; (end - start) as usize];
            file.fill(start, &mut bytes);
            md5::Md5::digest(&bytes).into()
        }
    };
    base64::engine::general_purpose::STANDARD.encode(raw)
}

/// Serves a ranged (or whole) body of `file`, applying the configured faults.
async fn serve_body(
    stream: &mut TcpStream,
    shared: &Arc<Shared>,
    file: &BuiltFile,
    req: &Request,
    buf: &mut Vec<u8>,
    range_md5: bool,
) -> io::Result<bool> {
    // In flight from here until its bytes are counted (or it ends without a body).
    let response = shared.counters.response_started();
    let size = file.spec.size;
    let range = parse_range(req.header("range"), size);
    let (start, end, partial) = match range {
        RangeReq::Whole => (0, size, false),
        RangeReq::Part(s, e) => (s, e, true),
        RangeReq::Unsatisfiable => {
            let headers = [("Content-Range", format!("bytes */{size}"))];
            http::write_simple(stream, 416, &headers, b"", true).await?;
            return Ok(true);
        }
    };
    if range_md5 && (!partial || end - start > BLOCK_MD5_SIZE) {
        // Azure refuses a range MD5 for more than 4 MiB (or without a range).
        return refuse(
            stream,
            400,
            "InvalidHeaderValue: x-ms-range-get-content-md5 needs a range of at most 4 MiB",
            true,
        )
        .await;
    }
    let nth = shared.nth_request(file.id.as_str(), start, end);
    let faults = shared.faults();
    let fault = faults.body_fault(file.id.as_str(), start, end, nth);
    if let Some(f) = fault {
        shared.counters.fault(f.name());
        tracing::debug!(file_id = %file.id, offset = start, len = end - start, fault = f.name(), "sandbox fault");
    }
    let retry_after = shared.retry_after_secs.to_string();
    match fault {
        Some(BodyFault::ExpireEarly) => {
            return refuse(stream, 403, "AccessDenied: URL expired", true).await;
        }
        Some(BodyFault::Status500) => {
            return refuse(stream, 500, "InternalError", true).await;
        }
        Some(BodyFault::Status503) => {
            let headers = [("Retry-After", retry_after)];
            http::write_simple(stream, 503, &headers, b"ServerBusy", true).await?;
            return Ok(true);
        }
        _ => {}
    }
    let len = end - start;
    // What the head claims.
    let (status, mut claim_start, mut claim_end, mut body_start) = if partial {
        (206u16, start, end, start)
    } else {
        (200u16, 0, size, 0)
    };
    let mut claim_total = size;
    if fault == Some(BodyFault::Full200) {
        (claim_start, claim_end, body_start) = (0, size, 0);
    }
    let full_200 = fault == Some(BodyFault::Full200);
    if fault == Some(BodyFault::BadContentRange) {
        // A consistent-looking answer for a different range than the one asked for.
        if claim_end < size {
            (claim_start, claim_end, body_start) = (claim_start + 1, claim_end + 1, body_start + 1);
        } else if claim_start > 0 {
            (claim_start, claim_end, body_start) = (claim_start - 1, claim_end - 1, body_start - 1);
        } else {
            claim_total = size + 1;
        }
    }
    let body_len = claim_end - claim_start;
    let mut content_len = body_len;
    let mut plan = BodyPlan {
        len: body_len,
        cut_at: None,
        flip_at: None,
        spoiled: fault.is_some(),
    };
    let mut keep = true;
    match fault {
        Some(BodyFault::Reset) | Some(BodyFault::Fin) | Some(BodyFault::Stall) => {
            plan.cut_at = Some(body_len / 2);
            keep = false;
        }
        Some(BodyFault::ShortBody) => {
            plan.cut_at = Some(body_len.saturating_sub(body_len / 8 + 1));
            keep = false;
        }
        Some(BodyFault::LongLength) => {
            content_len = body_len + 1024;
            keep = false;
        }
        Some(BodyFault::Flip) if body_len > 0 => plan.flip_at = Some(body_len / 2),
        _ => {}
    }
    let status = if full_200 { 200 } else { status };
    let mut headers: Vec<(&str, String)> = vec![
        ("Content-Type", "application/octet-stream".to_owned()),
        ("Accept-Ranges", "bytes".to_owned()),
        ("Content-Length", content_len.to_string()),
        ("ETag", object_etag(file)),
    ];
    if range_md5 && status == 206 {
        // The MD5 of the bytes the head claims (a flip in transit then shows).
        headers.push(("Content-MD5", range_md5_of(file, claim_start, claim_end)));
    }
    if status == 206 {
        headers.push((
            "Content-Range",
            format!(
                "bytes {}-{}/{}",
                claim_start,
                claim_end.saturating_sub(1),
                claim_total
            ),
        ));
    }
    stream
        .write_all(&http::head(status, &headers, keep))
        .await?;
    if req.method == "HEAD" {
        return Ok(keep);
    }
    let _ = len;
    let res = write_body(stream, shared, response, file, body_start, &plan, buf).await;
    match fault {
        Some(BodyFault::Reset) => {
            // SO_LINGER 0 makes the close send RST; with a zero timeout it does not block.
            #[allow(deprecated)]
            let _ = stream.set_linger(Some(Duration::ZERO));
            Ok(false)
        }
        Some(BodyFault::Stall) => {
            let _ = stream.flush().await;
            tokio::time::sleep(faults.stall_duration()).await;
            Ok(false)
        }
        Some(BodyFault::Fin) | Some(BodyFault::ShortBody) | Some(BodyFault::LongLength) => {
            let _ = stream.shutdown().await;
            Ok(false)
        }
        _ => {
            res?;
            Ok(keep)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range(None, 10), RangeReq::Whole);
        assert_eq!(parse_range(Some("bytes=0-4"), 10), RangeReq::Part(0, 5));
        assert_eq!(parse_range(Some("bytes=5-"), 10), RangeReq::Part(5, 10));
        assert_eq!(parse_range(Some("bytes=5-100"), 10), RangeReq::Part(5, 10));
        assert_eq!(parse_range(Some("bytes=-3"), 10), RangeReq::Part(7, 10));
        assert_eq!(
            parse_range(Some("bytes=10-12"), 10),
            RangeReq::Unsatisfiable
        );
        assert_eq!(parse_range(Some("bytes=0-1,4-5"), 10), RangeReq::Whole);
        assert_eq!(parse_range(Some("bytes=0-0"), 0), RangeReq::Unsatisfiable);
    }
}
