//! A minimal HTTP/1.1 server layer for the sandbox: request parsing (httparse, keep-alive,
//! `Content-Length` bodies) and raw response writing.
//!
//! It exists so the sandbox keeps full control of the bytes on the wire (RST, FIN mid-body,
//! lying lengths, stalls). It knows nothing about routes, datasets or faults.

use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest request head accepted.
const MAX_HEAD: usize = 64 << 10;
/// Largest request body accepted (API JSON).
const MAX_BODY: usize = 64 << 20;

/// A parsed request.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub method: String,
    /// The request target as sent (path and query).
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// False when the client asked to close (or spoke HTTP/1.0).
    pub keep_alive: bool,
}

impl Request {
    /// First header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The path without the query string.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    /// The query string, if any.
    pub fn query(&self) -> Option<&str> {
        self.target.split_once('?').map(|(_, q)| q)
    }
}

/// Reads one request from `stream`; `Ok(None)` on a clean close between requests.
/// `buf` carries bytes already read past the previous request.
pub(crate) async fn read_request(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> io::Result<Option<Request>> {
    loop {
        if !buf.is_empty() {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(buf) {
                Ok(httparse::Status::Complete(head_len)) => {
                    let method = req.method.unwrap_or("GET").to_owned();
                    let target = req.path.unwrap_or("/").to_owned();
                    let version = req.version.unwrap_or(1);
                    let headers: Vec<(String, String)> = req
                        .headers
                        .iter()
                        .map(|h| {
                            (
                                h.name.to_owned(),
                                String::from_utf8_lossy(h.value).into_owned(),
                            )
                        })
                        .collect();
                    let find = |n: &str| {
                        headers
                            .iter()
                            .find(|(k, _)| k.eq_ignore_ascii_case(n))
                            .map(|(_, v)| v)
                    };
                    let content_len: usize = match find("content-length") {
                        Some(v) => v.trim().parse().map_err(|_| bad("bad content-length"))?,
                        None => 0,
                    };
                    if content_len > MAX_BODY {
                        return Err(bad("request body too large"));
                    }
                    let conn = find("connection").map(|v| v.to_ascii_lowercase());
                    let keep_alive = match conn.as_deref() {
                        Some(v) if v.contains("close") => false,
                        Some(v) if v.contains("keep-alive") => true,
                        _ => version == 1,
                    };
                    while buf.len() < head_len + content_len {
                        if read_more(stream, buf).await? == 0 {
                            return Err(bad("eof in request body"));
                        }
                    }
                    let body = buf[head_len..head_len + content_len].to_vec();
                    buf.drain(..head_len + content_len);
                    return Ok(Some(Request {
                        method,
                        target,
                        headers,
                        body,
                        keep_alive,
                    }));
                }
                Ok(httparse::Status::Partial) => {
                    if buf.len() > MAX_HEAD {
                        return Err(bad("request head too large"));
                    }
                }
                Err(_) => return Err(bad("malformed request")),
            }
        }
        if read_more(stream, buf).await? == 0 {
            if buf.is_empty() {
                return Ok(None);
            }
            return Err(bad("eof in request head"));
        }
    }
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<usize> {
    let mut tmp = [0u8; 16 << 10];
    let n = stream.read(&mut tmp).await?;
    buf.extend_from_slice(&tmp[..n]);
    Ok(n)
}

fn bad(msg: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// The reason phrase of the statuses the sandbox uses.
pub(crate) fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        302 => "Found",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        416 => "Range Not Satisfiable",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// Serialises a response head.
pub(crate) fn head(status: u16, headers: &[(&str, String)], keep_alive: bool) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    for (k, v) in headers {
        out.push_str(k);
        out.push_str(": ");
        out.push_str(v);
        out.push_str("\r\n");
    }
    out.push_str(if keep_alive {
        "Connection: keep-alive\r\n"
    } else {
        "Connection: close\r\n"
    });
    out.push_str("\r\n");
    out.into_bytes()
}

/// Writes a complete small response (head + body with its `Content-Length`).
pub(crate) async fn write_simple(
    stream: &mut TcpStream,
    status: u16,
    headers: &[(&str, String)],
    body: &[u8],
    keep_alive: bool,
) -> io::Result<()> {
    let mut all: Vec<(&str, String)> = headers.to_vec();
    all.push(("Content-Length", body.len().to_string()));
    let mut bytes = head(status, &all, keep_alive);
    bytes.extend_from_slice(body);
    stream.write_all(&bytes).await?;
    stream.flush().await
}

/// Percent-encodes a URL path segment (RFC 3986 unreserved characters kept).
pub(crate) fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_encoding() {
        assert_eq!(encode_segment("a b/ü.bam"), "a%20b%2F%C3%BC.bam");
        assert_eq!(encode_segment(".."), "..");
    }

    #[test]
    fn head_shape() {
        let h = String::from_utf8(head(206, &[("Content-Length", "3".into())], true)).unwrap();
        assert!(h.starts_with("HTTP/1.1 206 Partial Content\r\nContent-Length: 3\r\n"));
        assert!(h.ends_with("\r\n\r\n"));
    }
}
