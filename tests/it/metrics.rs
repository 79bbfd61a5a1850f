//! The daemon's OpenMetrics endpoint, scraped over HTTP and parsed with `prometheus-parse`:
//! the values match what the test made happen (bytes served, 500s injected, files verified,
//! the configured `access-expires`), and `[metrics] listen` moves on reload.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::time::Duration;

use dxmirror::daemon::Notifier;
use dxmirror::sandbox::{BodyFault, FaultConfig, FileSpec, ProjectSpec};
use prometheus_parse::{Scrape, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{all_verified, empty_sandbox, wait_for, wait_for_async, Env, Running};

const T: Duration = Duration::from_secs(20);

/// A loopback port free a moment ago.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// `GET path` on `127.0.0.1:port`: the status line and the body, or `None` if nothing answers.
pub async fn http_get(port: u16, path: &str) -> Option<(String, String)> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    Some((head.lines().next()?.to_owned(), body.to_owned()))
}

/// One scrape, parsed: each sample's value by its name and sorted labels.
struct Scraped(HashMap<String, f64>, Scrape);

impl Scraped {
    async fn get(port: u16) -> Option<Scraped> {
        let (status, body) = http_get(port, "/metrics").await?;
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert!(body.ends_with("# EOF\n"), "not OpenMetrics text: {body}");
        let scrape = Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).unwrap();
        let mut values = HashMap::new();
        for s in &scrape.samples {
            let mut labels: Vec<String> =
                s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            labels.sort();
            let v = match s.value {
                Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
                _ => panic!("unexpected sample {s:?}"),
            };
            values.insert(format!("{}{{{}}}", s.metric, labels.join(",")), v);
        }
        Some(Scraped(values, scrape))
    }

    fn value(&self, key: &str) -> f64 {
        *self.0.get(key).unwrap_or_else(|| {
            let mut keys: Vec<_> = self.0.keys().collect();
            keys.sort();
            panic!("no sample {key}; have {keys:#?}")
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_counts_what_the_daemon_did() {
    let sandbox = empty_sandbox().await;
    sandbox.set_faults(
        FaultConfig {
            seed: 15,
            ..FaultConfig::default()
        }
        .with(BodyFault::Status500, 0.3),
    );
    let sizes = [300_000u64, 2_000, 1_500_000];
    let spec = ProjectSpec::new("SJC-DT-metrics")
        .file(FileSpec::new("/", "a.bam", sizes[0]))
        .file(FileSpec::new("/", "SAMPLE_INFO.txt", sizes[1]))
        .file(FileSpec::new("/b", "b.bam", sizes[2]));
    let p = sandbox.add_project(spec).unwrap();
    let port = free_port();
    let env = Env::for_sandbox(
        &sandbox,
        Vec::new(),
        format!(
            "chunk-size = \"64KiB\"\nprogress-step = \"64KiB\"\n[metrics]\nlisten = \"{port}\"\n\
             [[project]]\nid = \"{p}\"\naccess-expires = \"2031-06-30\"\n"
        ),
    );
    let running = Running::start(&env, Notifier::disabled());
    wait_for("the project to be mirrored", T, || {
        all_verified(&env, &p, 3)
    })
    .await;
    // The queue empties once the pass has been handled.
    let m = wait_for_async("an idle scrape", T, || async {
        let m = Scraped::get(port).await?;
        (m.value("dxmirror_passes_running{}") == 0.0).then_some(m)
    })
    .await;
    let injected = sandbox
        .stats()
        .faults_injected
        .get("status500")
        .copied()
        .unwrap_or(0);
    assert!(injected > 0, "no 500 was injected: the test proves nothing");

    let total: u64 = sizes.iter().sum();
    assert_eq!(m.value("dxmirror_fetched_bytes_total{}"), total as f64);
    assert_eq!(m.value("dxmirror_refetched_bytes_total{}"), 0.0);
    assert_eq!(
        m.value("dxmirror_chunk_retries_total{reason=transient}"),
        injected as f64
    );
    assert_eq!(
        m.value("dxmirror_chunk_retries_total{reason=checksum}"),
        0.0
    );
    assert_eq!(m.value("dxmirror_checksum_mismatches_total{}"), 0.0);
    assert!(m.value("dxmirror_api_calls_total{}") >= 3.0);
    assert_eq!(m.value("dxmirror_api_errors_total{kind=auth}"), 0.0);
    assert_eq!(
        m.value(&format!("dxmirror_files{{project={p},state=verified}}")),
        3.0
    );
    assert_eq!(
        m.value(&format!("dxmirror_project_size_bytes{{project={p}}}")),
        total as f64
    );
    assert_eq!(
        m.value(&format!("dxmirror_project_done_bytes{{project={p}}}")),
        total as f64
    );
    // 2031-06-30 is day 22_460 of the Unix epoch.
    assert_eq!(
        m.value(&format!(
            "dxmirror_access_expiry_timestamp_seconds{{project={p}}}"
        )),
        (22_460 * 86_400) as f64
    );
    let listed = m.value(&format!(
        "dxmirror_last_listing_timestamp_seconds{{project={p}}}"
    ));
    let now = dxmirror::clock::now_ms() as f64 / 1000.0;
    assert!(listed <= now && listed > now - 60.0, "{listed} vs {now}");
    assert_eq!(m.value("dxmirror_token_ok{}"), 1.0);
    assert_eq!(m.value("dxmirror_queue_depth{}"), 0.0);
    assert!(m.value("dxmirror_free_bytes{filesystem=mirror}") > 0.0);
    assert!(m.value("dxmirror_free_bytes{filesystem=state}") > 0.0);
    assert_eq!(m.value("dxmirror_notifications_dropped_total{}"), 0.0);
    // Every family has its help text, and no label is a file id or a path.
    assert!(
        m.1.docs.contains_key("dxmirror_fetched_bytes"),
        "{:?}",
        m.1.docs
    );
    for s in &m.1.samples {
        for (k, v) in s.labels.iter() {
            assert!(
                !v.starts_with("file-") && !v.contains('/'),
                "{k}={v} in {}",
                s.metric
            );
        }
    }
    // Anything but GET /metrics is refused.
    assert_eq!(
        http_get(port, "/").await.unwrap().0,
        "HTTP/1.1 404 Not Found"
    );
    running.stop().await.unwrap();
    assert!(
        http_get(port, "/metrics").await.is_none(),
        "the endpoint outlived the daemon"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_listen_moves_on_reload_and_goes_away_when_removed() {
    let sandbox = empty_sandbox().await;
    let (a, b) = (free_port(), free_port());
    let env = Env::for_sandbox(
        &sandbox,
        Vec::new(),
        format!("[metrics]\nlisten = \"127.0.0.1:{a}\"\n"),
    );
    let running = Running::start(&env, Notifier::disabled());
    wait_for_async("the endpoint on A", T, || Scraped::get(a)).await;
    let text = std::fs::read_to_string(&env.config_path).unwrap();
    std::fs::write(
        &env.config_path,
        text.replace(&a.to_string(), &b.to_string()),
    )
    .unwrap();
    running.reload.send(()).await.unwrap();
    wait_for_async("the endpoint on B", T, || Scraped::get(b)).await;
    assert!(
        http_get(a, "/metrics").await.is_none(),
        "A still answers after the reload"
    );
    let text = std::fs::read_to_string(&env.config_path).unwrap();
    let without = text.replace(&format!("[metrics]\nlisten = \"127.0.0.1:{b}\"\n"), "");
    assert_ne!(without, text);
    std::fs::write(&env.config_path, without).unwrap();
    running.reload.send(()).await.unwrap();
    wait_for_async("the endpoint to go away", T, || async {
        http_get(b, "/metrics").await.is_none().then_some(())
    })
    .await;
    running.stop().await.unwrap();
}
