//! Integration tests: the sandbox over real loopback HTTP with reqwest (auth and error bodies,
//! paging, describe fields, download URLs and their headers, expiry, the symlink 302 and the
//! storage host, Range semantics, every fault at rate 1 and 0, serve counting).
#![allow(clippy::unwrap_used)] // Test helpers: a failed unwrap is a failed test.

use std::time::Duration;

use dxmirror::model::{ByteRange, FileId};
use dxmirror::sandbox::{
    BodyFault, Dataset, FaultConfig, FileSpec, FileSpecKind, ListingOrder, PartSizes, ProjectSpec,
    Sandbox, SandboxOptions,
};
use serde_json::{json, Value};

use crate::support::wait_for_async;

fn client() -> reqwest::Client {
    // reqwest is built without a default TLS provider; plain-HTTP clients still need one set.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

async fn demo() -> Sandbox {
    Sandbox::start(SandboxOptions::default()).await.unwrap()
}

async fn api(sb: &Sandbox, route: &str, body: Value) -> (u16, Value) {
    let res = client()
        .post(format!("{}{}", sb.api_url(), route))
        .bearer_auth(sb.token())
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap())
}

fn file_named(sb: &Sandbox, name: &str) -> dxmirror::sandbox::SandboxFile {
    let p = &sb.projects()[0];
    sb.files(p).into_iter().find(|f| f.name == name).unwrap()
}

async fn url_for(sb: &Sandbox, file: &FileId, preauth: bool) -> (String, Vec<(String, String)>) {
    let (status, v) = api(
        sb,
        &format!("/{file}/download"),
        json!({"preauthenticated": preauth}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let headers = v["headers"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect();
    (v["url"].as_str().unwrap().to_owned(), headers)
}

async fn get(url: &str, headers: &[(String, String)], range: Option<&str>) -> reqwest::Response {
    let mut req = client().get(url);
    for (k, v) in headers {
        req = req.header(k, v);
    }
    if let Some(r) = range {
        req = req.header("Range", r);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn auth_errors_have_platform_bodies() {
    let sb = demo().await;
    let c = client();
    let url = format!("{}/system/whoami", sb.api_url());
    let res = c.post(&url).json(&json!({})).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 401);
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["error"]["type"], "InvalidAuthentication");
    let res = c
        .post(&url)
        .bearer_auth("wrong")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 401);
    let res = c
        .post(&url)
        .bearer_auth(sb.token())
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 400);
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["error"]["type"], "MalformedJSON");
    let (status, v) = api(&sb, "/file-B0vY9x9Q0b1QKq2F3Y4Z5a6b/describe", json!({})).await;
    assert_eq!(
        (status, v["error"]["type"].as_str()),
        (404, Some("ResourceNotFound"))
    );
    let p = sb.projects()[0].clone();
    sb.set_revoked(&p, true);
    let (status, v) = api(&sb, &format!("/{p}/describe"), json!({})).await;
    assert_eq!(
        (status, v["error"]["type"].as_str()),
        (401, Some("PermissionDenied"))
    );
    sb.set_revoked(&p, false);
    sb.set_token("new-token");
    let res = c
        .post(&url)
        .bearer_auth("sandbox-token-0123456789abcdef")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 401);
    let (status, v) = api(&sb, "/system/whoami", json!({})).await;
    assert_eq!((status, v["id"].as_str()), (200, Some("user-sandbox")));
}

/// Pages through every file of the sandbox's first project, 10 at a time: (modified, name) in
/// the order served, and the number of pages.
async fn paged_listing(sb: &Sandbox) -> (Vec<(i64, String)>, usize) {
    let pid = sb.projects()[0].clone();
    let mut starting = Value::Null;
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let mut body = json!({"scope": {"project": pid, "folder": "/", "recurse": true},
            "describe": {"fields": {"modified": true, "name": true}}, "limit": 10});
        if !starting.is_null() {
            body["starting"] = starting.clone();
        }
        let (status, v) = api(sb, "/system/findDataObjects", body).await;
        assert_eq!(status, 200, "{v}");
        pages += 1;
        for r in v["results"].as_array().unwrap() {
            assert!(r["describe"].get("parts").is_none());
            seen.push((
                r["describe"]["modified"].as_i64().unwrap(),
                r["describe"]["name"].as_str().unwrap().to_owned(),
            ));
        }
        starting = v["next"].clone();
        if starting.is_null() {
            break;
        }
    }
    (seen, pages)
}

#[tokio::test]
async fn find_data_objects_pages_in_each_listing_order() {
    let mut p = ProjectSpec::new("paging");
    for i in 0..25i64 {
        p = p.file(FileSpec::new("/d", &format!("f{i}"), 10).times(1000 + i, 1000 + (i * 7) % 25));
    }
    let ds = Dataset::build(3, vec![p]).unwrap();
    let start = |order: ListingOrder| {
        let ds = ds.clone();
        async move {
            Sandbox::start(SandboxOptions {
                dataset: ds,
                listing_order: Some(order),
                ..Default::default()
            })
            .await
            .unwrap()
        }
    };
    let mut scrambled = Vec::new();
    for order in [
        ListingOrder::NewestFirst,
        ListingOrder::OldestFirst,
        ListingOrder::Scrambled,
        ListingOrder::Scrambled,
    ] {
        let (seen, pages) = paged_listing(&start(order).await).await;
        assert_eq!(pages, 3, "{order:?}");
        let names: std::collections::BTreeSet<&String> = seen.iter().map(|(_, n)| n).collect();
        assert_eq!(
            names.len(),
            25,
            "{order:?}: every file exactly once: {seen:?}"
        );
        let newest_first = seen.windows(2).all(|w| w[0].0 >= w[1].0);
        let oldest_first = seen.windows(2).all(|w| w[0].0 <= w[1].0);
        match order {
            ListingOrder::NewestFirst => assert!(newest_first, "{seen:?}"),
            ListingOrder::OldestFirst => assert!(oldest_first, "{seen:?}"),
            ListingOrder::Scrambled => {
                assert!(!newest_first && !oldest_first, "{seen:?}");
                scrambled.push(seen);
            }
        }
    }
    assert_eq!(
        scrambled[0], scrambled[1],
        "the scrambled order is deterministic"
    );
    let bad = ListingOrder::parse("random").unwrap_err().to_string();
    assert!(bad.contains("DXMIRROR_SANDBOX_LISTING_ORDER"), "{bad}");
    let sb = start(ListingOrder::NewestFirst).await;
    let (status, v) = api(&sb, "/system/findDataObjects", json!({"limit": 1001})).await;
    assert_eq!(
        (status, v["error"]["type"].as_str()),
        (400, Some("InvalidInput"))
    );
}

#[tokio::test]
async fn describe_fields_parts_only_when_asked() {
    let sb = demo().await;
    let bam = file_named(&sb, "SJBALL020073_D1.WGS.bam");
    let (_, v) = api(&sb, &format!("/{}/describe", bam.id), json!({})).await;
    assert!(v.get("parts").is_none() && v.get("checksumType").is_none());
    assert_eq!(v["size"], bam.size);
    let (_, v) = api(
        &sb,
        &format!("/{}/describe", bam.id),
        json!({"fields": {"parts": true}}),
    )
    .await;
    assert_eq!(v["parts"].as_object().unwrap().len(), 4);
    assert!(v.get("name").is_none());
    assert_eq!(
        v["parts"]["2"]["md5"].as_str().unwrap(),
        bam.parts[1].md5.as_deref().unwrap()
    );
    let crc = file_named(&sb, "SJBALL020073_G1.gvcf.gz");
    let (_, v) = api(
        &sb,
        &format!("/{}/describe", crc.id),
        json!({"defaultFields": true, "fields": {"parts": true, "checksumType": true}}),
    )
    .await;
    assert_eq!(v["checksumType"], "CRC32");
    assert!(v["parts"]["1"].get("md5").is_none() && v["parts"]["1"]["checksum"].is_string());
    assert_eq!(v["name"], "SJBALL020073_G1.gvcf.gz");
    let link = file_named(&sb, "SJBALL020073_G1.WGS.bam");
    let (_, v) = api(&sb, &format!("/{}/describe", link.id), json!({})).await;
    assert!(v["drive"].is_string());
    assert!(v.get("parts").is_none());
    // findProjects honours level and tags.
    let (_, v) = api(&sb, "/system/findProjects", json!({})).await;
    assert_eq!(v["results"].as_array().unwrap().len(), 0);
    let (_, v) = api(
        &sb,
        "/system/findProjects",
        json!({"level": "VIEW", "tags": {"$or": ["sjcp-project-data", "x"]},
               "name": {"glob": "SJ Data Request*"}, "describe": {"fields": {"name": true}}}),
    )
    .await;
    assert_eq!(
        v["results"][0]["describe"]["name"],
        "SJ Data Request 2026-001"
    );
    assert!(v["next"].is_null());
}

#[tokio::test]
async fn a_download_url_needs_its_headers_and_serves_ranges() {
    let sb = demo().await;
    let bam = file_named(&sb, "SJBALL020073_D1.WGS.bam");
    let (url, headers) = url_for(&sb, &bam.id, false).await;
    assert_eq!(headers.len(), 1);
    assert_eq!(get(&url, &[], None).await.status().as_u16(), 403);
    let res = get(&url, &headers, Some("bytes=100-199")).await;
    assert_eq!(res.status().as_u16(), 206);
    assert_eq!(
        res.headers()["content-range"].to_str().unwrap(),
        format!("bytes 100-199/{}", bam.size)
    );
    let body = res.bytes().await.unwrap();
    assert_eq!(
        &body[..],
        &sb.content(&bam.id, ByteRange::new(100, 100))[..]
    );
    let res = get(&url, &headers, Some(&format!("bytes={}-", bam.size))).await;
    assert_eq!(res.status().as_u16(), 416);
    let res = get(&url, &headers, None).await;
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(res.bytes().await.unwrap().len() as u64, bam.size);
}

#[tokio::test]
async fn a_tampered_download_url_is_refused() {
    let sb = demo().await;
    let bam = file_named(&sb, "SJBALL020073_D1.WGS.bam");
    let (url, headers) = url_for(&sb, &bam.id, false).await;
    // Flip the last character of the token (its signature).
    let token_end = url.rfind('/').unwrap();
    let mut tampered = url.clone();
    let last = if &url[token_end - 1..token_end] == "0" {
        "1"
    } else {
        "0"
    };
    tampered.replace_range(token_end - 1..token_end, last);
    assert_eq!(get(&tampered, &headers, None).await.status().as_u16(), 403);
}

#[tokio::test]
async fn a_preauthenticated_url_needs_no_headers_and_expires() {
    let sb = Sandbox::start(SandboxOptions {
        url_ttl: Duration::from_secs(2),
        ..Default::default()
    })
    .await
    .unwrap();
    let bam = file_named(&sb, "SJBALL020073_D1.WGS.bam");
    let (pre, pre_headers) = url_for(&sb, &bam.id, true).await;
    assert!(pre_headers.is_empty());
    assert_eq!(
        get(&pre, &[], Some("bytes=0-0")).await.status().as_u16(),
        206
    );
    // Expiry: poll until the URL is refused (ttl is 2 s).
    wait_for_async("the URL to expire", Duration::from_secs(10), async || {
        let status = get(&pre, &[], Some("bytes=0-0")).await.status().as_u16();
        if status == 403 {
            return Some(());
        }
        assert_eq!(status, 206);
        None
    })
    .await;
}

#[tokio::test]
async fn archived_and_open_files_cannot_be_downloaded() {
    let sb = demo().await;
    let archived = file_named(&sb, "SJBALL020074_D1.WGS.bam");
    let (status, v) = api(&sb, &format!("/{}/download", archived.id), json!({})).await;
    assert_eq!(status, 422);
    assert_eq!(
        v["error"]["message"],
        "The file cannot be downloaded because it is in the archived state."
    );
    let open = file_named(&sb, "SJBALL020075_D1.WGS.bam");
    let (status, v) = api(&sb, &format!("/{}/download", open.id), json!({})).await;
    assert_eq!(
        (status, v["error"]["type"].as_str()),
        (422, Some("InvalidState"))
    );
}

#[tokio::test]
async fn a_content_url_takes_the_bytes_elsewhere_and_keeps_the_api() {
    // The benchmark's nginx backend: the sandbox keeps the API and the 302, an outside server
    // (here nothing listens: only the URLs are checked) serves `<content-url>/<file-id>`.
    let sb = Sandbox::start(SandboxOptions {
        content_url: Some("http://127.0.0.3:9/".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    let plain = file_named(&sb, "SJBALL020073_D1.WGS.bam.bai");
    let (url, _) = url_for(&sb, &plain.id, false).await;
    assert_eq!(url, format!("http://127.0.0.3:9/{}", plain.id));
    let link = file_named(&sb, "SJBALL020073_G1.WGS.bam");
    let (url, headers) = url_for(&sb, &link.id, false).await;
    assert!(
        url.starts_with(&sb.api_url()),
        "drive-backed: the platform's URL"
    );
    let res = get(&url, &headers, Some("bytes=10-20")).await;
    assert_eq!(res.status().as_u16(), 302);
    assert_eq!(
        res.headers()["location"].to_str().unwrap(),
        format!("http://127.0.0.3:9/{}", link.id)
    );
}

#[tokio::test]
async fn symlinks_redirect_to_storage_which_refuses_authorization() {
    let sb = Sandbox::start(SandboxOptions {
        storage_url_ttl: Duration::from_secs(1),
        ..Default::default()
    })
    .await
    .unwrap();
    let link = file_named(&sb, "SJBALL020073_G1.WGS.bam");
    let (url, headers) = url_for(&sb, &link.id, false).await;
    let res = get(&url, &headers, Some("bytes=10-20")).await;
    assert_eq!(res.status().as_u16(), 302);
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with(&sb.storage_url()));
    let res = get(&location, &[], Some("bytes=10-20")).await;
    assert_eq!(res.status().as_u16(), 206);
    assert_eq!(
        &res.bytes().await.unwrap()[..],
        &sb.content(&link.id, ByteRange::new(10, 11))[..]
    );
    let auth = [("Authorization".to_owned(), format!("Bearer {}", sb.token()))];
    assert_eq!(get(&location, &auth, None).await.status().as_u16(), 400);
    assert_eq!(sb.stats().storage_auth_refused, 1);
    let bad = location.replace("sig=", "sig=0");
    assert_eq!(get(&bad, &[], None).await.status().as_u16(), 403);
    wait_for_async(
        "the storage URL to expire",
        Duration::from_secs(10),
        async || {
            let status = get(&location, &[], Some("bytes=0-0"))
                .await
                .status()
                .as_u16();
            (status == 403).then_some(())
        },
    )
    .await;
}

/// What a client sees from one ranged GET.
#[derive(Debug)]
enum Outcome {
    Status(u16),
    Body {
        status: u16,
        content_range: Option<String>,
        content_length: u64,
        body: Vec<u8>,
    },
    Broken,
}

async fn fetch(url: &str, headers: &[(String, String)], range: ByteRange) -> Outcome {
    let mut req = client().get(url).timeout(Duration::from_secs(3));
    for (k, v) in headers {
        req = req.header(k, v);
    }
    let res = match req
        .header("Range", range.http_header().unwrap())
        .send()
        .await
    {
        Ok(r) => r,
        Err(_) => return Outcome::Broken,
    };
    let status = res.status().as_u16();
    if status != 200 && status != 206 {
        return Outcome::Status(status);
    }
    let content_range = res
        .headers()
        .get("content-range")
        .map(|v| v.to_str().unwrap().to_owned());
    let content_length = res.content_length().unwrap_or(0);
    match res.bytes().await {
        Ok(b) => Outcome::Body {
            status,
            content_range,
            content_length,
            body: b.to_vec(),
        },
        Err(_) => Outcome::Broken,
    }
}

#[tokio::test]
async fn every_fault_happens_at_rate_one_and_never_at_zero() {
    let sb = demo().await;
    let bam = file_named(&sb, "SJBALL020073_D1.WGS.bam");
    let (url, headers) = url_for(&sb, &bam.id, false).await;
    let range = ByteRange::new(1000, 200_000);
    let truth = sb.content(&bam.id, range);
    let good = |o: &Outcome| matches!(o, Outcome::Body { status: 206, body, .. } if body == &truth);
    for fault in BodyFault::ALL {
        let mut cfg = FaultConfig::default().with(fault, 1.0);
        cfg.stall_secs = 30;
        sb.set_faults(cfg);
        let o = fetch(&url, &headers, range).await;
        let ok = match fault {
            BodyFault::ExpireEarly => matches!(o, Outcome::Status(403)),
            BodyFault::Status500 => matches!(o, Outcome::Status(500)),
            BodyFault::Status503 => matches!(o, Outcome::Status(503)),
            BodyFault::Reset | BodyFault::Fin | BodyFault::ShortBody | BodyFault::LongLength => {
                matches!(o, Outcome::Broken)
            }
            // The client's 3 s timeout fires long before the 30 s stall ends.
            BodyFault::Stall => matches!(o, Outcome::Broken),
            BodyFault::Full200 => {
                matches!(&o, Outcome::Body { status: 200, body, .. } if body.len() as u64 == bam.size)
            }
            BodyFault::BadContentRange => matches!(&o, Outcome::Body { status: 206,
                content_range: Some(cr), .. } if cr != &format!("bytes 1000-200999/{}", bam.size)),
            BodyFault::Flip => matches!(&o, Outcome::Body { status: 206, body, content_length, .. }
                if body.len() == truth.len() && *content_length == truth.len() as u64 && body != &truth),
        };
        assert!(ok, "fault {} gave {o:?}", fault.name());
        sb.set_faults(FaultConfig::default().with(fault, 0.0));
        let o = fetch(&url, &headers, range).await;
        assert!(good(&o), "fault {} at rate 0 gave {o:?}", fault.name());
    }
    let stats = sb.stats();
    for fault in BodyFault::ALL {
        assert_eq!(
            stats.faults_injected.get(fault.name()),
            Some(&1),
            "{}",
            fault.name()
        );
    }
    assert!(stats.spoiled_bytes() > 0);
    // API faults.
    sb.set_faults(FaultConfig {
        api503: 1.0,
        ..Default::default()
    });
    let res = client()
        .post(format!("{}/system/whoami", sb.api_url()))
        .bearer_auth(sb.token())
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 503);
    assert_eq!(res.headers()["retry-after"], "1");
    sb.set_faults(FaultConfig {
        api429: 1.0,
        ..Default::default()
    });
    assert_eq!(api(&sb, "/system/whoami", json!({})).await.0, 429);
    sb.set_faults(FaultConfig {
        api500: 1.0,
        ..Default::default()
    });
    assert_eq!(api(&sb, "/system/whoami", json!({})).await.0, 500);
    sb.set_faults(FaultConfig::default());
    assert_eq!(api(&sb, "/system/whoami", json!({})).await.0, 200);
}

/// A sandbox serving one 1 MiB file that has already served it three ranges (two of them
/// overlapping on 500 bytes) and one range cut by a connection reset; returns the file's id.
async fn served_four_ranges() -> (Sandbox, FileId) {
    let p = ProjectSpec::new("count").file(
        FileSpec::new("/", "a.bin", 1 << 20)
            .kind(FileSpecKind::PartsMd5(PartSizes::Uniform(1 << 19))),
    );
    let ds = Dataset::build(5, vec![p]).unwrap();
    let sb = Sandbox::start(SandboxOptions {
        dataset: ds,
        ..Default::default()
    })
    .await
    .unwrap();
    let f = sb.files(&sb.projects()[0])[0].clone();
    let (url, headers) = url_for(&sb, &f.id, false).await;
    for r in [
        ByteRange::new(0, 1000),
        ByteRange::new(500, 1000),
        ByteRange::new(4000, 10),
    ] {
        assert!(matches!(
            fetch(&url, &headers, r).await,
            Outcome::Body { status: 206, .. }
        ));
    }
    sb.set_faults(FaultConfig::default().with(BodyFault::Reset, 1.0));
    assert!(matches!(
        fetch(&url, &headers, ByteRange::new(100_000, 400_000)).await,
        Outcome::Broken
    ));
    (sb, f.id)
}

#[tokio::test]
async fn every_byte_served_is_counted_and_spoiled_bytes_apart() {
    let (sb, id) = served_four_ranges().await;
    let s = sb.stats();
    let id = id.as_str();
    assert_eq!(
        s.served_intact_more_than_once(id),
        vec![ByteRange::new(500, 500)]
    );
    assert_eq!(s.max_serve_count(id), 2);
    assert!(s.spoiled_bytes() > 0 && s.spoiled_bytes() <= 200_000);
    assert_eq!(s.bytes_served(id), 2010 + s.spoiled_bytes());
}

#[tokio::test]
async fn faults_and_stats_are_controlled_over_http_with_the_token() {
    let (sb, id) = served_four_ranges().await;
    let id = id.as_str();
    // Out-of-process control: faults and stats over HTTP.
    let c = client();
    let res = c
        .post(format!("{}/_sandbox/faults", sb.api_url()))
        .bearer_auth(sb.token())
        .json(&json!({"spec": "flip=1,seed=9"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(sb.faults().flip, 1.0);
    let v: Value = c
        .get(format!("{}/_sandbox/stats", sb.api_url()))
        .bearer_auth(sb.token())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["files"][id].as_array().unwrap().len(), 4);
    let res = c
        .get(format!("{}/_sandbox/stats", sb.api_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 401);
}

#[tokio::test]
async fn hostile_names_are_listed_and_served_verbatim() {
    let sb = demo().await;
    let pid = sb.projects()[0].clone();
    let hostile = ["..", "a/b", "nul\0byte", "ctl\x07\x1b", &"x".repeat(300)];
    let ids = sb
        .add_files(
            &pid,
            hostile
                .iter()
                .map(|n| FileSpec::new("/weird", n, 33))
                .collect(),
        )
        .unwrap();
    let (_, v) = api(
        &sb,
        "/system/findDataObjects",
        json!({"scope": {"project": pid, "folder": "/weird"}, "describe": true}),
    )
    .await;
    let names: Vec<&str> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["describe"]["name"].as_str().unwrap())
        .collect();
    for n in hostile {
        assert!(names.contains(&n), "{n:?}");
    }
    let (url, headers) = url_for(&sb, &ids[2], false).await;
    assert!(matches!(
        fetch(&url, &headers, ByteRange::new(0, 33)).await,
        Outcome::Body { status: 206, .. }
    ));
}

#[tokio::test]
async fn a_replaced_file_gets_a_new_id_and_is_listed_newest() {
    let sb = demo().await;
    let pid = sb.projects()[0].clone();
    let old = sb
        .add_files(&pid, vec![FileSpec::new("/weird", "..", 33)])
        .unwrap()
        .remove(0);
    let new_id = sb
        .replace_file(&pid, FileSpec::new("/weird", "..", 44))
        .unwrap();
    assert_ne!(new_id, old);
    let (status, _) = api(&sb, &format!("/{old}/describe"), json!({})).await;
    assert_eq!(status, 404);
    let (_, v) = api(
        &sb,
        "/system/findDataObjects",
        json!({"scope": {"project": pid}, "limit": 1}),
    )
    .await;
    assert_eq!(
        v["results"][0]["id"],
        json!(new_id),
        "replaced file is newest"
    );
}

#[tokio::test]
async fn an_added_project_is_found_until_it_is_revoked() {
    let sb = demo().await;
    let other = sb
        .add_project(ProjectSpec::new("second").tag("sjcp-project-data"))
        .unwrap();
    assert_eq!(sb.projects().len(), 2);
    let (_, v) = api(&sb, "/system/findProjects", json!({"level": "VIEW"})).await;
    assert_eq!(v["results"].as_array().unwrap().len(), 2);
    sb.set_revoked(&other, true);
    let (_, v) = api(&sb, "/system/findProjects", json!({"level": "VIEW"})).await;
    assert_eq!(v["results"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn many_files_project_lists() {
    let ds = Dataset::many_files("many", 100_000, 1);
    let sb = Sandbox::start(SandboxOptions {
        dataset: ds,
        ..Default::default()
    })
    .await
    .unwrap();
    let pid = sb.projects()[0].clone();
    let mut starting = Value::Null;
    let mut n = 0;
    loop {
        let mut body = json!({"scope": {"project": pid}, "describe": {"fields": {"size": true}}});
        if !starting.is_null() {
            body["starting"] = starting;
        }
        let (_, v) = api(&sb, "/system/findDataObjects", body).await;
        n += v["results"].as_array().unwrap().len();
        starting = v["next"].clone();
        if starting.is_null() {
            break;
        }
    }
    assert_eq!(n, 100_000);
}

async fn listed_names(sb: &Sandbox, filter: Value) -> Vec<String> {
    let pid = sb.projects()[0].clone();
    let mut body = json!({"scope": {"project": pid}, "describe": {"fields": {"name": true}}});
    for (k, v) in filter.as_object().unwrap() {
        body[k] = v.clone();
    }
    let (status, v) = api(sb, "/system/findDataObjects", body).await;
    assert_eq!(status, 200, "{v}");
    let mut names: Vec<String> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["describe"]["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn find_data_objects_filters_on_modified_and_created() {
    // f0..f9: created 100+i, modified 200+i.
    let mut p = ProjectSpec::new("times");
    for i in 0..10i64 {
        p = p.file(FileSpec::new("/", &format!("f{i}"), 10).times(100 + i, 200 + i));
    }
    let sb = Sandbox::start(SandboxOptions {
        dataset: Dataset::build(4, vec![p]).unwrap(),
        ..Default::default()
    })
    .await
    .unwrap();
    let names = |r: std::ops::RangeInclusive<i64>| -> Vec<String> {
        let mut v: Vec<String> = r.map(|i| format!("f{i}")).collect();
        v.sort();
        v
    };
    // Bounds are inclusive on both sides.
    assert_eq!(
        listed_names(&sb, json!({"modified": {"after": 207}})).await,
        names(7..=9)
    );
    assert_eq!(
        listed_names(&sb, json!({"modified": {"before": 201}})).await,
        names(0..=1)
    );
    assert_eq!(
        listed_names(&sb, json!({"modified": {"after": 203, "before": 205}})).await,
        names(3..=5)
    );
    assert_eq!(
        listed_names(&sb, json!({"created": {"after": 108}})).await,
        names(8..=9)
    );
    // Both conditions must hold.
    assert_eq!(
        listed_names(
            &sb,
            json!({"created": {"before": 104}, "modified": {"after": 202}})
        )
        .await,
        names(2..=4)
    );
    assert!(listed_names(&sb, json!({"modified": {"after": 210}}))
        .await
        .is_empty());
    assert_eq!(
        listed_names(&sb, json!({"modified": {}})).await,
        names(0..=9)
    );
    // A negative bound counts back from now: every file here is far older than a minute.
    assert!(listed_names(&sb, json!({"modified": {"after": -60_000}}))
        .await
        .is_empty());
    for bad in [
        json!({"modified": 5}),
        json!({"modified": {"after": "yesterday"}}),
        json!({"created": {"since": 1}}),
    ] {
        let mut body = json!({"scope": {"project": sb.projects()[0]}});
        for (k, v) in bad.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (status, v) = api(&sb, "/system/findDataObjects", body).await;
        assert_eq!(
            (status, v["error"]["type"].as_str()),
            (400, Some("InvalidInput")),
            "{bad}"
        );
    }
}

#[tokio::test]
async fn list_files_catch_up_costs_one_request_in_every_order() {
    use dxmirror::platform::{DxClient, PlatformConfig};
    for order in [
        ListingOrder::NewestFirst,
        ListingOrder::OldestFirst,
        ListingOrder::Scrambled,
    ] {
        let sb = Sandbox::start(SandboxOptions {
            dataset: Dataset::many_files("catch-up", 3_000, 1),
            listing_order: Some(order),
            ..Default::default()
        })
        .await
        .unwrap();
        let pid = sb.projects()[0].clone();
        let client = DxClient::new(PlatformConfig {
            api_url: sb.api_url(),
            token: dxmirror::model::ApiToken::new(&sb.token()),
            ..PlatformConfig::default()
        })
        .unwrap();
        let files = client.list_files(&pid).await.unwrap().files;
        assert_eq!(files.len(), 3_000, "{order:?}");
        let ids: std::collections::HashSet<_> = files.iter().map(|f| &f.id).collect();
        assert_eq!(ids.len(), 3_000, "{order:?}");
        let pages = 3; // 1000 per page.
        let requests = sb.stats().requests("/system/findDataObjects");
        assert!(
            requests <= pages + 1,
            "{order:?}: {requests} findDataObjects requests for {pages} pages: the catch-up re-listed"
        );
    }
}
