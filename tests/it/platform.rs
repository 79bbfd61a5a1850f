//! Integration tests: the platform client over real loopback HTTP.
//!
//! A tiny scripted HTTP/1.1 server (one request per connection) plays the API and the download
//! hosts, so each test controls exactly what goes over the wire (paging, error bodies,
//! Retry-After, redirects, lying Content-Range, cut and stalled bodies, a forward proxy) and
//! can assert on what the client sent (headers, bodies, request counts).

#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use dxmirror::model::{ApiToken, ByteRange, FileId, ProjectId};
use dxmirror::platform::{
    catch_up_since, ApiDisposition, Backoff, DownloadDisposition, DownloadUrl, DxClient, IoKind,
    PlatformConfig, PlatformError, ProjectQuery,
};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const TOKEN: &str = "tok-SECRET-0123456789";
const PROJECT: &str = "project-FbZ25gj04J9B8FJ3Gb5fVP41";
const FILE: &str = "file-FK41Q8Q0BbkqJxkX35p736BJ";

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Req {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Req {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// What the server answers.
enum Reply {
    /// A complete answer (Content-Length added unless given).
    Full {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// Declares `declared` bytes, sends `body`, then closes.
    Cut {
        headers: Vec<(String, String)>,
        declared: usize,
        body: Vec<u8>,
    },
    /// Reads the request and never answers.
    Silent,
    /// Sends headers and `body`, then holds the connection open forever.
    Stall {
        headers: Vec<(String, String)>,
        declared: usize,
        body: Vec<u8>,
    },
}

fn json_reply(status: u16, v: Value) -> Reply {
    Reply::Full {
        status,
        headers: vec![("Content-Type".into(), "application/json".into())],
        body: v.to_string().into_bytes(),
    }
}

fn dx_error(status: u16, ty: &str, msg: &str) -> Reply {
    json_reply(status, json!({"error": {"type": ty, "message": msg}}))
}

type Handler = dyn Fn(&Req, usize) -> Reply + Send + Sync;

struct Server {
    addr: std::net::SocketAddr,
    log: Arc<Mutex<Vec<Req>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn requests(&self) -> Vec<Req> {
        self.log.lock().unwrap().clone()
    }

    fn count(&self, path_prefix: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.path.starts_with(path_prefix))
            .count()
    }
}

async fn serve(handler: impl Fn(&Req, usize) -> Reply + Send + Sync + 'static) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let log: Arc<Mutex<Vec<Req>>> = Arc::default();
    let handler: Arc<Handler> = Arc::new(handler);
    let task_log = log.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                return;
            };
            let log = task_log.clone();
            let handler = handler.clone();
            tokio::spawn(async move {
                let _ = handle(sock, log, handler).await;
            });
        }
    });
    Server { addr, log, task }
}

async fn handle(
    mut sock: TcpStream,
    log: Arc<Mutex<Vec<Req>>>,
    handler: Arc<Handler>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 8192];
    let (req, head_len, content_len) = loop {
        let n = sock.read(&mut tmp).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&tmp[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut parsed = httparse::Request::new(&mut headers);
        if let httparse::Status::Complete(len) = parsed.parse(&buf).unwrap() {
            let headers: Vec<(String, String)> = parsed
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_ascii_lowercase(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect();
            let cl = headers
                .iter()
                .find(|(n, _)| n == "content-length")
                .map(|(_, v)| v.parse::<usize>().unwrap())
                .unwrap_or(0);
            let req = Req {
                method: parsed.method.unwrap().to_owned(),
                path: parsed.path.unwrap().to_owned(),
                headers,
                body: Vec::new(),
            };
            break (req, len, cl);
        }
    };
    let mut req = req;
    while buf.len() < head_len + content_len {
        let n = sock.read(&mut tmp).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&tmp[..n]);
    }
    req.body = buf[head_len..head_len + content_len].to_vec();
    let nth = {
        let mut log = log.lock().unwrap();
        log.push(req.clone());
        log.len()
    };
    let head = |status: u16, headers: &[(String, String)], declared: usize| {
        let mut s = format!("HTTP/1.1 {status} X\r\nConnection: close\r\n");
        if !headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        {
            s.push_str(&format!("Content-Length: {declared}\r\n"));
        }
        for (n, v) in headers {
            s.push_str(&format!("{n}: {v}\r\n"));
        }
        s.push_str("\r\n");
        s.into_bytes()
    };
    match handler(&req, nth) {
        Reply::Full {
            status,
            headers,
            body,
        } => {
            sock.write_all(&head(status, &headers, body.len())).await?;
            sock.write_all(&body).await?;
            sock.shutdown().await?;
        }
        Reply::Cut {
            headers,
            declared,
            body,
        } => {
            sock.write_all(&head(206, &headers, declared)).await?;
            sock.write_all(&body).await?;
            sock.flush().await?;
            sock.shutdown().await?;
        }
        Reply::Silent => std::future::pending::<()>().await,
        Reply::Stall {
            headers,
            declared,
            body,
        } => {
            sock.write_all(&head(206, &headers, declared)).await?;
            sock.write_all(&body).await?;
            sock.flush().await?;
            std::future::pending::<()>().await;
        }
    }
    Ok(())
}

fn config(api_url: &str) -> PlatformConfig {
    PlatformConfig {
        api_url: api_url.to_owned(),
        token: ApiToken::new(TOKEN),
        backoff: Backoff::tiny(),
        max_api_retries: 3,
        stall_timeout: Duration::from_secs(5),
        ..PlatformConfig::default()
    }
}

fn client(server: &Server) -> DxClient {
    DxClient::new(config(&server.url())).unwrap()
}

fn project() -> ProjectId {
    PROJECT.parse().unwrap()
}

fn file_id(n: usize) -> FileId {
    format!("file-{n:024}").parse().unwrap()
}

fn content(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

/// Serves `Range: bytes=a-b` of `data` like S3 would.
fn range_reply(req: &Req, data: &[u8]) -> Reply {
    let Some(range) = req.header("range") else {
        return Reply::Full {
            status: 200,
            headers: vec![],
            body: data.to_vec(),
        };
    };
    let (a, b) = range
        .strip_prefix("bytes=")
        .and_then(|r| r.split_once('-'))
        .unwrap();
    let (a, b): (usize, usize) = (a.parse().unwrap(), b.parse().unwrap());
    Reply::Full {
        status: 206,
        headers: vec![(
            "Content-Range".into(),
            format!("bytes {a}-{b}/{}", data.len()),
        )],
        body: data[a..=b].to_vec(),
    }
}

async fn read_all(
    c: &DxClient,
    url: &DownloadUrl,
    range: ByteRange,
    size: u64,
) -> Result<Vec<u8>, PlatformError> {
    let mut body = c.get_range(url, range, size).await?;
    assert_eq!(body.expected_len(), range.len);
    let shown = format!("{body:?}");
    assert!(
        !shown.contains("SECRET") && !shown.contains("sig="),
        "{shown}"
    );
    let mut out = Vec::new();
    while let Some(chunk) = body.next_chunk().await? {
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

fn file_json(n: usize, modified: i64) -> Value {
    let id = file_id(n).to_string();
    json!({"project": PROJECT, "id": id, "describe": {
        "id": id, "name": format!("f {n}.bam"), "folder": "/immediate/bam", "size": 30,
        "state": "closed", "archivalState": "live", "created": 1, "modified": modified,
        "parts": {"1": {"state": "complete", "size": 20, "md5": "9e107d9d372bb6826bd81d3542a419d6"},
                  "2": {"state": "complete", "size": 10, "md5": "e4d909c290d0fb1ca068ffaddf22cbd0"}}}})
}

#[tokio::test]
async fn whoami_sends_the_token_and_bad_tokens_stop() {
    let server = serve(|req, _| {
        if req.header("authorization") == Some(&format!("Bearer {TOKEN}")) {
            json_reply(200, json!({"id": "user-alice"}))
        } else {
            dx_error(401, "InvalidAuthentication", "the token could not be found")
        }
    })
    .await;
    let c = client(&server);
    assert_eq!(c.whoami().await.unwrap(), "user-alice");
    let req = &server.requests()[0];
    assert_eq!(req.method, "POST");
    assert_eq!(req.path, "/system/whoami");
    assert!(req
        .header("content-type")
        .unwrap()
        .starts_with("application/json"));
    assert!(req.header("user-agent").unwrap().starts_with("dxmirror/"));

    let bad = DxClient::new(PlatformConfig {
        token: ApiToken::new("wrong-SECRET"),
        ..config(&server.url())
    })
    .unwrap();
    let err = bad.whoami().await.unwrap_err();
    assert_eq!(err.api_disposition(), ApiDisposition::BadToken);
    assert_eq!(err.status(), Some(401));
    assert_eq!(err.error_type(), Some("InvalidAuthentication"));
    let text = format!("{err} {err:?}");
    assert!(!text.contains("SECRET"), "{text}");
    // Not retried: a bad token is final.
    assert_eq!(server.count("/system/whoami"), 2);
}

#[tokio::test]
async fn list_files_pages_dedupes_and_catches_up() {
    let server = serve(|req, _| {
        let body = req.json();
        if body.get("modified").is_some() {
            // Catch-up query: file 3 was modified during the crawl and moved to the front.
            return json_reply(200, json!({"results": [file_json(3, 500)], "next": null}));
        }
        match body.get("starting") {
            None => json_reply(
                200,
                json!({"results": [file_json(1, 100), file_json(2, 90)],
                       "next": {"project": PROJECT, "id": "c1"}}),
            ),
            Some(s) if s["id"] == "c1" => json_reply(
                200,
                // File 1 appears again (modified meanwhile): the newer description wins.
                json!({"results": [file_json(1, 120), file_json(4, 80)],
                       "next": {"project": PROJECT, "id": "c2"}}),
            ),
            Some(_) => json_reply(200, json!({"results": [file_json(5, 10)], "next": null})),
        }
    })
    .await;
    let c = client(&server);
    let before = dxmirror::clock::now_ms();
    let files = c.list_files(&project()).await.unwrap().files;
    let after = dxmirror::clock::now_ms();
    let ids: Vec<String> = files.iter().map(|f| f.id.to_string()).collect();
    assert_eq!(
        ids,
        [1, 2, 4, 5, 3]
            .iter()
            .map(|n| file_id(*n).to_string())
            .collect::<Vec<_>>()
    );
    assert_eq!(files[0].modified_ms, 120);
    assert!(files.iter().all(|f| f.project == project()));
    let parts = files[0].parts.as_ref().unwrap();
    assert_eq!(parts.len(), 2);
    assert_eq!(parts[1].index, 2);
    assert_eq!(parts[1].size, 10);

    let reqs = server.requests();
    assert_eq!(reqs.len(), 4);
    let first = reqs[0].json();
    assert_eq!(first["class"], "file");
    assert_eq!(first["state"], "any");
    assert_eq!(first["limit"], 1000);
    assert_eq!(first["scope"]["project"], PROJECT);
    assert_eq!(first["describe"]["fields"]["parts"], true);
    assert_eq!(reqs[1].json()["starting"]["id"], "c1");
    assert_eq!(reqs[2].json()["starting"]["id"], "c2");
    // The catch-up is keyed on the crawl's own start, not on the first result's time.
    let since = reqs[3].json()["modified"]["after"].as_i64().unwrap();
    assert!(
        (catch_up_since(before)..=catch_up_since(after)).contains(&since),
        "{since} not within {before}..{after} less the margin"
    );
}

/// Pages served oldest-modified first (not the documented order): file 3 is modified while the
/// crawl runs and only a catch-up from the crawl's start (not from the first result, which is
/// the oldest) finds it cheaply; a catch-up that pages is caught up in turn.
#[tokio::test]
async fn list_files_catches_up_from_the_crawl_start_in_any_order() {
    let t0 = dxmirror::clock::now_ms();
    let catch_ups_served = std::sync::atomic::AtomicUsize::new(0);
    let server = serve(move |req, _| {
        let body = req.json();
        let since = body["modified"]["after"].as_i64();
        match (since, body.get("starting")) {
            (None, None) => json_reply(
                200,
                json!({"results": [file_json(1, 10), file_json(2, 20)],
                       "next": {"project": PROJECT, "id": "c1"}}),
            ),
            (None, Some(_)) => {
                json_reply(200, json!({"results": [file_json(4, 30)], "next": null}))
            }
            // Re-listing the whole project is what the first result's time would have asked.
            (Some(since), _) if since <= 30 => {
                dx_error(400, "InvalidInput", &format!("re-listed from {since}"))
            }
            // The first catch-up pages: file 3 (modified during the crawl), then file 6 (created
            // during the catch-up); the second one is a single page.
            (Some(_), None) => {
                if catch_ups_served.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                    json_reply(
                        200,
                        json!({"results": [file_json(3, t0 + 5)],
                               "next": {"project": PROJECT, "id": "c2"}}),
                    )
                } else {
                    json_reply(
                        200,
                        json!({"results": [file_json(6, t0 + 6)], "next": null}),
                    )
                }
            }
            (Some(_), Some(_)) => json_reply(
                200,
                json!({"results": [file_json(6, t0 + 6)], "next": null}),
            ),
        }
    })
    .await;
    let files = client(&server).list_files(&project()).await.unwrap().files;
    let mut ids: Vec<String> = files.iter().map(|f| f.id.to_string()).collect();
    ids.sort();
    let mut want: Vec<String> = [1, 2, 3, 4, 6]
        .iter()
        .map(|n| file_id(*n).to_string())
        .collect();
    want.sort();
    assert_eq!(ids, want);
    let reqs = server.requests();
    let catch_ups: Vec<i64> = reqs
        .iter()
        .filter(|r| r.json().get("starting").is_none())
        .filter_map(|r| r.json()["modified"]["after"].as_i64())
        .collect();
    assert_eq!(
        catch_ups.len(),
        2,
        "a catch-up that paged is caught up once more"
    );
    assert!(
        catch_ups.iter().all(|s| *s > 30),
        "never re-listed from the first result: {catch_ups:?}"
    );
    assert_eq!(reqs.len(), 5);
}

#[tokio::test]
async fn a_malformed_page_is_an_error_not_a_short_listing() {
    let server = serve(|req, _| match req.json().get("starting") {
        None => json_reply(
            200,
            json!({"results": [file_json(1, 100)], "next": {"id": "c1"}}),
        ),
        // Cut in the middle of the JSON.
        Some(_) => Reply::Full {
            status: 200,
            headers: vec![],
            body: br#"{"results": [{"id": "file-0000"#.to_vec(),
        },
    })
    .await;
    let c = client(&server);
    let err = c.list_files(&project()).await.unwrap_err();
    assert!(
        matches!(&err, PlatformError::RetriesExhausted { last, .. } if matches!(**last, PlatformError::Decode { .. })),
        "{err:?}"
    );
    // First page once, the broken page 1 + 3 retries.
    assert_eq!(server.count("/system/findDataObjects"), 5);

    // A page without `next` is a cut page too.
    let server = serve(|_, _| json_reply(200, json!({"results": []}))).await;
    assert!(client(&server).list_files(&project()).await.is_err());
}

#[tokio::test]
async fn api_survives_503_retry_after_and_500() {
    let server = serve(|_, nth| match nth {
        1 | 2 => Reply::Full {
            status: 503,
            headers: vec![("Retry-After".into(), "0".into())],
            body: br#"{"error": {"type": "ServiceUnavailable", "message": "busy"}}"#.to_vec(),
        },
        3 => dx_error(500, "InternalError", "oops"),
        _ => json_reply(200, json!({"id": "user-bob"})),
    })
    .await;
    // One retry allowed: the two 503s with Retry-After must not spend it.
    let c = DxClient::new(PlatformConfig {
        max_api_retries: 1,
        ..config(&server.url())
    })
    .unwrap();
    assert_eq!(c.whoami().await.unwrap(), "user-bob");
    assert_eq!(server.count("/system/whoami"), 4);
}

#[tokio::test]
async fn retry_after_waiting_is_bounded() {
    let server = serve(|_, _| Reply::Full {
        status: 429,
        headers: vec![("Retry-After".into(), "1".into())],
        body: vec![],
    })
    .await;
    let c = DxClient::new(PlatformConfig {
        max_retry_after: Duration::from_millis(10),
        retry_after_budget: Duration::from_millis(25),
        ..config(&server.url())
    })
    .unwrap();
    let err = c.whoami().await.unwrap_err();
    assert!(
        matches!(
            err,
            PlatformError::ThrottleBudgetExhausted { attempts: 3, .. }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("throttle-budget"), "{err}");
    assert_eq!(server.count("/system/whoami"), 3);
}

#[tokio::test]
async fn describe_errors_are_classified() {
    let good: ProjectId = "project-000000000000000000000001".parse().unwrap();
    let gone: ProjectId = "project-000000000000000000000002".parse().unwrap();
    let denied: ProjectId = "project-000000000000000000000003".parse().unwrap();
    let (g, n, d) = (good.to_string(), gone.to_string(), denied.to_string());
    let server = serve(move |req, _| {
        if req.path == format!("/{g}/describe") {
            json_reply(
                200,
                json!({"id": g, "name": "SJ data", "downloadRestricted": false, "level": "VIEW"}),
            )
        } else if req.path == format!("/{n}/describe") {
            dx_error(404, "ResourceNotFound", "no such project")
        } else if req.path == format!("/{d}/describe") {
            dx_error(401, "PermissionDenied", "VIEW required")
        } else {
            dx_error(400, "InvalidInput", "?")
        }
    })
    .await;
    let c = client(&server);
    let info = c.describe_project(&good).await.unwrap();
    assert_eq!(info.name, "SJ data");
    assert_eq!(info.level.as_deref(), Some("VIEW"));
    assert!(!info.download_restricted);
    let e = c.describe_project(&gone).await.unwrap_err();
    assert_eq!(e.api_disposition(), ApiDisposition::NotFound);
    let e = c.describe_project(&denied).await.unwrap_err();
    assert_eq!(e.api_disposition(), ApiDisposition::PermissionDenied);
    assert!(e.to_string().contains("VIEW required"));
    let describe = server.requests()[0].json();
    assert_eq!(describe["fields"]["downloadRestricted"], true);
}

#[tokio::test]
async fn find_projects_pages_and_sends_level() {
    let server = serve(|req, _| {
        let p = |n: u32| json!({"id": format!("project-{n:024}"), "level": "VIEW",
                                "describe": {"name": format!("p{n}"), "downloadRestricted": n == 2}});
        match req.json().get("starting") {
            None => json_reply(200, json!({"results": [p(1), p(2)], "next": "n1"})),
            Some(_) => json_reply(200, json!({"results": [p(3)], "next": null})),
        }
    })
    .await;
    let c = client(&server);
    let q = ProjectQuery {
        tags: vec!["sjcp-project-data".into()],
        name_glob: Some("SJ*".into()),
        ..ProjectQuery::default()
    };
    let projects = c.find_projects(&q).await.unwrap();
    assert_eq!(
        projects.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
        ["p1", "p2", "p3"]
    );
    assert!(projects[1].download_restricted);
    let reqs = server.requests();
    assert_eq!(reqs.len(), 2);
    for r in &reqs {
        assert_eq!(r.path, "/system/findProjects");
        assert_eq!(r.json()["level"], "VIEW");
        assert_eq!(r.json()["tags"]["$and"][0], "sjcp-project-data");
        assert_eq!(r.json()["name"]["glob"], "SJ*");
    }
    assert_eq!(reqs[1].json()["starting"], "n1");
}

/// A platform with one file: `/file-xxxx/download` hands out `<dl>/F/D/<token>/f.bin` plus a
/// secret header; the data host checks the header.
async fn platform_with_file(data: Arc<Vec<u8>>) -> (Server, Server) {
    let dl = serve(move |req, _| {
        if req.header("x-dx-secret") != Some("HEADER-SECRET") {
            return Reply::Full {
                status: 403,
                headers: vec![],
                body: vec![],
            };
        }
        range_reply(req, &data)
    })
    .await;
    let dl_url = dl.url();
    let api = serve(move |req, _| {
        if req.path == format!("/{FILE}/download") {
            json_reply(
                200,
                json!({"url": format!("{dl_url}/F/D/URLTOKEN-SECRET/f.bin"),
                       "headers": {"X-DX-Secret": "HEADER-SECRET"}}),
            )
        } else {
            dx_error(404, "ResourceNotFound", "?")
        }
    })
    .await;
    (api, dl)
}

#[tokio::test]
async fn download_url_and_ranged_gets() {
    let data = Arc::new(content(1000));
    let (api, dl) = platform_with_file(data.clone()).await;
    let c = client(&api);
    let file: FileId = FILE.parse().unwrap();
    let before = SystemTime::now();
    let url = c.download_url(&file, &project()).await.unwrap();
    let asked = api.requests()[0].json();
    assert_eq!(asked["project"], PROJECT);
    assert_eq!(asked["duration"], 86400);
    assert!(asked.get("preauthenticated").is_none());
    // No `expires` in the answer: the asked duration is the expiry.
    assert!(!url.is_expired(before, Duration::from_secs(3600)));
    assert!(url.is_expired(
        before + Duration::from_secs(86_400),
        Duration::from_secs(60)
    ));
    let shown = format!("{url:?}");
    assert!(!shown.contains("SECRET"), "{shown}");

    let got = read_all(&c, &url, ByteRange::new(100, 250), 1000)
        .await
        .unwrap();
    assert_eq!(got, data[100..350]);
    let got = read_all(&c, &url, ByteRange::new(999, 1), 1000)
        .await
        .unwrap();
    assert_eq!(got, data[999..]);
    let reqs = dl.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0].path, "/F/D/URLTOKEN-SECRET/f.bin");
    assert_eq!(reqs[0].header("range"), Some("bytes=100-349"));
    for r in &reqs {
        assert_eq!(
            r.header("authorization"),
            None,
            "token leaked to {}",
            r.path
        );
    }

    // Invalid ranges never go on the wire.
    let e = c
        .get_range(&url, ByteRange::new(990, 20), 1000)
        .await
        .unwrap_err();
    assert_eq!(e.download_disposition(), DownloadDisposition::Fail);
    assert!(!format!("{e} {e:?}").contains("SECRET"));
    assert!(c.get_range(&url, ByteRange::new(0, 0), 1000).await.is_err());
    assert_eq!(dl.requests().len(), 2);
}

#[tokio::test]
async fn symlink_redirects_are_followed_every_time_without_credentials() {
    let data = Arc::new(content(4096));
    let storage_data = data.clone();
    let storage = serve(move |req, _| {
        // Signed storage URLs refuse any Authorization header (as S3/Azure do).
        if req.header("authorization").is_some() || req.header("x-dx-secret").is_some() {
            return Reply::Full {
                status: 400,
                headers: vec![],
                body: vec![],
            };
        }
        if !req.path.starts_with("/blob/obj?sig=") {
            return Reply::Full {
                status: 404,
                headers: vec![],
                body: vec![],
            };
        }
        range_reply(req, &storage_data)
    })
    .await;
    let storage_url = storage.url();
    let platform = serve(move |req, nth| {
        if req.header("x-dx-secret") != Some("HEADER-SECRET") {
            return Reply::Full {
                status: 403,
                headers: vec![],
                body: vec![],
            };
        }
        // First hop: relative redirect on the platform host; second hop: to storage.
        if req.path.starts_with("/F/D/") {
            return Reply::Full {
                status: 302,
                headers: vec![("Location".into(), format!("/resolve/{nth}"))],
                body: vec![],
            };
        }
        Reply::Full {
            status: 302,
            headers: vec![(
                "Location".into(),
                format!("{storage_url}/blob/obj?sig=SIG{nth}"),
            )],
            body: vec![],
        }
    })
    .await;
    // The secret header is sent to the platform's first URL only; the platform's own redirect
    // hop therefore gets nothing, which this platform refuses — so use a URL whose first hop
    // goes straight to storage for the relative-redirect case below.
    let c = DxClient::new(config("http://127.0.0.1:9")).unwrap();
    let direct = DownloadUrl::from_parts(
        &format!("{}/resolve/x", platform.url()),
        [("X-DX-Secret", "HEADER-SECRET")],
        None,
    )
    .unwrap();
    for (offset, len) in [(0u64, 100u64), (4000, 96)] {
        let got = read_all(&c, &direct, ByteRange::new(offset, len), 4096)
            .await
            .unwrap();
        assert_eq!(got, data[offset as usize..(offset + len) as usize]);
    }
    // Every GET started again at the platform URL: the redirect target is never cached.
    assert_eq!(platform.count("/resolve/"), 2);
    assert_eq!(storage.count("/blob/"), 2);
    for r in storage.requests() {
        assert!(r.header("range").is_some());
        assert!(r.header("authorization").is_none());
    }

    // A redirect to a relative Location on the platform host: the second hop carries no
    // platform header, so this platform answers 403, which the engine treats as RefreshUrl.
    let via_relative = DownloadUrl::from_parts(
        &format!("{}/F/D/T/x", platform.url()),
        [("X-DX-Secret", "HEADER-SECRET")],
        None,
    )
    .unwrap();
    let e = c
        .get_range(&via_relative, ByteRange::new(0, 10), 4096)
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(403));
    assert_eq!(e.download_disposition(), DownloadDisposition::RefreshUrl);
    let hops: Vec<Req> = platform.requests();
    let last = hops.last().unwrap();
    assert!(
        last.path.starts_with("/resolve/"),
        "relative Location resolved"
    );
    assert!(last.header("x-dx-secret").is_none());
}

#[tokio::test]
async fn redirect_loops_are_bounded() {
    let server = serve(|_, nth| Reply::Full {
        status: 307,
        headers: vec![("Location".into(), format!("/loop/{nth}"))],
        body: vec![],
    })
    .await;
    let c = DxClient::new(config("http://127.0.0.1:9")).unwrap();
    let url = DownloadUrl::from_parts(&format!("{}/start", server.url()), [], None).unwrap();
    let e = c
        .get_range(&url, ByteRange::new(0, 1), 10)
        .await
        .unwrap_err();
    assert!(matches!(e, PlatformError::Redirect { .. }), "{e:?}");
    assert_eq!(e.download_disposition(), DownloadDisposition::Fail);
    assert_eq!(server.requests().len(), 6);
}

#[tokio::test]
async fn answers_that_do_not_match_the_range_are_refused() {
    let data = Arc::new(content(100));
    let d = data.clone();
    let server = serve(move |req, _| match req.path.as_str() {
        // Ignores Range: the whole object with 200.
        "/whole" => Reply::Full {
            status: 200,
            headers: vec![],
            body: d.to_vec(),
        },
        "/wrong-start" => Reply::Full {
            status: 206,
            headers: vec![("Content-Range".into(), "bytes 1-10/100".into())],
            body: d[1..11].to_vec(),
        },
        "/wrong-total" => Reply::Full {
            status: 206,
            headers: vec![("Content-Range".into(), "bytes 0-9/99".into())],
            body: d[0..10].to_vec(),
        },
        "/no-range" => Reply::Full {
            status: 206,
            headers: vec![],
            body: d[0..10].to_vec(),
        },
        "/expired" => Reply::Full {
            status: 403,
            headers: vec![],
            body: b"<Error>AuthenticationFailed</Error>".to_vec(),
        },
        "/gone" => Reply::Full {
            status: 404,
            headers: vec![],
            body: vec![],
        },
        "/busy" => Reply::Full {
            status: 503,
            headers: vec![("Retry-After".into(), "7".into())],
            body: vec![],
        },
        _ => Reply::Full {
            status: 500,
            headers: vec![],
            body: vec![],
        },
    })
    .await;
    let c = DxClient::new(config("http://127.0.0.1:9")).unwrap();
    let at = |p: &str| DownloadUrl::from_parts(&format!("{}{p}", server.url()), [], None).unwrap();
    let r = ByteRange::new(0, 10);

    for path in ["/whole", "/wrong-start", "/wrong-total", "/no-range"] {
        let e = c.get_range(&at(path), r, 100).await.unwrap_err();
        assert!(
            matches!(e, PlatformError::BadResponse { .. }),
            "{path}: {e:?}"
        );
        assert_eq!(e.download_disposition(), DownloadDisposition::RetryRange);
    }
    // A 200 is fine when the whole file was asked for.
    let whole = read_all(&c, &at("/whole"), ByteRange::new(0, 100), 100)
        .await
        .unwrap();
    assert_eq!(whole, *data);

    let e = c.get_range(&at("/expired"), r, 100).await.unwrap_err();
    assert_eq!(e.download_disposition(), DownloadDisposition::RefreshUrl);
    let e = c.get_range(&at("/gone"), r, 100).await.unwrap_err();
    assert_eq!(
        e.download_disposition(),
        DownloadDisposition::RefreshUrlOnce
    );
    let e = c.get_range(&at("/busy"), r, 100).await.unwrap_err();
    assert_eq!(
        e.download_disposition(),
        DownloadDisposition::RetryAfter(Duration::from_secs(7))
    );
    let e = c.get_range(&at("/other"), r, 100).await.unwrap_err();
    assert_eq!(e.download_disposition(), DownloadDisposition::RetryRange);
}

#[tokio::test]
async fn cut_bodies_are_truncated_errors() {
    let data = Arc::new(content(100));
    let d = data.clone();
    let server = serve(move |_, _| Reply::Cut {
        headers: vec![("Content-Range".into(), "bytes 0-99/100".into())],
        declared: 100,
        body: d[..40].to_vec(),
    })
    .await;
    let c = DxClient::new(config("http://127.0.0.1:9")).unwrap();
    let url = DownloadUrl::from_parts(&format!("{}/x", server.url()), [], None).unwrap();
    let mut body = c
        .get_range(&url, ByteRange::new(0, 100), 100)
        .await
        .unwrap();
    let mut got = Vec::new();
    let err = loop {
        match body.next_chunk().await {
            Ok(Some(chunk)) => got.extend_from_slice(&chunk),
            Ok(None) => panic!("a cut body must not end cleanly"),
            Err(e) => break e,
        }
    };
    assert_eq!(got, data[..40]);
    assert!(
        matches!(
            err,
            PlatformError::TruncatedBody {
                expected: 100,
                received: 40,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.download_disposition(), DownloadDisposition::RetryRange);
}

#[tokio::test]
async fn stalled_bodies_time_out() {
    let server = serve(|_, _| Reply::Stall {
        headers: vec![("Content-Range".into(), "bytes 0-99/100".into())],
        declared: 100,
        body: vec![7; 10],
    })
    .await;
    let c = DxClient::new(PlatformConfig {
        stall_timeout: Duration::from_millis(300),
        ..config("http://127.0.0.1:9")
    })
    .unwrap();
    let url = DownloadUrl::from_parts(&format!("{}/x", server.url()), [], None).unwrap();
    let mut body = c
        .get_range(&url, ByteRange::new(0, 100), 100)
        .await
        .unwrap();
    let mut got = 0;
    let err = loop {
        match body.next_chunk().await {
            Ok(Some(chunk)) => got += chunk.len(),
            Ok(None) => panic!("a stalled body must not end cleanly"),
            Err(e) => break e,
        }
    };
    assert_eq!(got, 10);
    assert!(
        matches!(err, PlatformError::Stalled { received: 10, .. }),
        "{err:?}"
    );
    assert_eq!(err.download_disposition(), DownloadDisposition::RetryRange);
}

#[tokio::test]
async fn headers_that_never_come_time_out() {
    let server = serve(|_, _| Reply::Silent).await;
    let c = DxClient::new(PlatformConfig {
        stall_timeout: Duration::from_millis(200),
        ..config("http://127.0.0.1:9")
    })
    .unwrap();
    let url = DownloadUrl::from_parts(&format!("{}/x", server.url()), [], None).unwrap();
    let e = c
        .get_range(&url, ByteRange::new(0, 10), 10)
        .await
        .unwrap_err();
    assert!(
        matches!(e, PlatformError::Stalled { received: 0, .. }),
        "{e:?}"
    );
    assert_eq!(e.download_disposition(), DownloadDisposition::RetryRange);
}

#[tokio::test]
async fn connection_refused_is_retried_then_reported() {
    // Bind then drop, so the port is (almost certainly) closed.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let c = DxClient::new(config(&format!("http://127.0.0.1:{port}"))).unwrap();
    let e = c.whoami().await.unwrap_err();
    assert!(
        matches!(&e, PlatformError::RetriesExhausted { attempts: 4, last, .. }
            if last.is_io(IoKind::Connect)),
        "{e:?}"
    );
    assert!(!e.to_string().contains(TOKEN));
}

const CHILD_ENV: &str = "DXMIRROR_TEST_PROXY_CHILD";

/// Helper run in a child process by `proxy_env_is_honoured` (environment variables are
/// process-wide, so they are set only in a child): ignored, so that only its parent runs it
/// (`--ignored --exact`), and it fails without its variable rather than pass having tested
/// nothing.
#[tokio::test]
#[ignore = "child of proxy_env_is_honoured, which runs it"]
async fn proxy_env_child() {
    let api_url = std::env::var(CHILD_ENV)
        .unwrap_or_else(|_| panic!("run only by proxy_env_is_honoured, which sets {CHILD_ENV}"));
    let c = DxClient::new(config(&api_url)).unwrap();
    assert_eq!(c.whoami().await.unwrap(), "user-proxied");
}

#[tokio::test]
async fn proxy_env_is_honoured() {
    let proxy = serve(|_, _| json_reply(200, json!({"id": "user-proxied"}))).await;
    let direct = serve(|_, _| json_reply(200, json!({"id": "user-proxied"}))).await;
    let run = |api_url: String, no_proxy: Option<&str>| {
        let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
        cmd.args([
            "platform::proxy_env_child",
            "--exact",
            "--ignored",
            "--quiet",
        ])
        .env(CHILD_ENV, api_url)
        .env("HTTP_PROXY", proxy.url())
        .env_remove("http_proxy")
        .env_remove("NO_PROXY")
        .env_remove("no_proxy");
        if let Some(np) = no_proxy {
            cmd.env("NO_PROXY", np);
        }
        cmd
    };
    // An unresolvable host works only through the proxy.
    let mut cmd = run("http://dx-api.invalid".into(), None);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let seen = proxy.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "http://dx-api.invalid/system/whoami");
    assert_eq!(
        seen[0].header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );

    // NO_PROXY bypasses it.
    let mut cmd = run(direct.url(), Some("127.0.0.1"));
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(proxy.requests().len(), 1);
    assert_eq!(direct.requests().len(), 1);
}
