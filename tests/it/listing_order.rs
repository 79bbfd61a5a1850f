//! The listing crawl under every order the sandbox can serve (`ListingOrder`): the platform
//! documents newest-modified first, but the crawl must not depend on it. Each scenario runs
//! once per order; `DXMIRROR_SANDBOX_LISTING_ORDER=oldest-first` (or `scrambled`) runs every
//! other test of this binary under another order too (`cargo test --test it`).

#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, HashSet};

use dxmirror::model::{ApiToken, FileId};
use dxmirror::platform::{DxClient, PlatformConfig};
use dxmirror::sandbox::{Dataset, ListingOrder, Sandbox, SandboxOptions};

use crate::support::{assert_mirrored, served_env_with};

/// Every order the sandbox serves.
const ORDERS: [ListingOrder; 3] = [
    ListingOrder::NewestFirst,
    ListingOrder::OldestFirst,
    ListingOrder::Scrambled,
];

/// Files per page of the client's crawl.
const PAGE: usize = 1_000;

fn client(sb: &Sandbox) -> DxClient {
    DxClient::new(PlatformConfig {
        api_url: sb.api_url(),
        token: ApiToken::new(&sb.token()),
        ..PlatformConfig::default()
    })
    .unwrap()
}

/// The files at the start, in the middle and at the end of the listing as the sandbox serves
/// it now: one on the first page, the others on pages the crawl has not read yet.
fn picks(sb: &Sandbox) -> Vec<FileId> {
    let files = sb.files(&sb.projects()[0]);
    let n = files.len();
    [0, n / 2, n - 1]
        .iter()
        .map(|i| files[*i].id.clone())
        .collect()
}

/// Three files modified right after the first page was served (so each moves within the
/// order, maybe to a page already read): every file is listed exactly once, the modified ones
/// with their new description, and the catch-up costs one request (it never re-lists the
/// project), whatever the order.
#[tokio::test]
async fn files_modified_mid_crawl_are_listed_once_in_every_order() {
    for order in ORDERS {
        let sb = Sandbox::start(SandboxOptions {
            dataset: Dataset::many_files("crawl", 2_500, 1),
            listing_order: Some(order),
            ..Default::default()
        })
        .await
        .unwrap();
        let pid = sb.projects()[0].clone();
        let before: HashSet<FileId> = sb.files(&pid).into_iter().map(|f| f.id).collect();
        let modified = picks(&sb);
        for id in &modified {
            sb.modify_after_pages(id, 1);
        }
        let files = client(&sb).list_files(&pid).await.unwrap().files;
        let by_id: HashMap<&FileId, i64> = files.iter().map(|f| (&f.id, f.modified_ms)).collect();
        assert_eq!(files.len(), 2_500, "{order:?}: no file twice");
        assert_eq!(
            by_id.keys().copied().cloned().collect::<HashSet<_>>(),
            before,
            "{order:?}: every file once"
        );
        let t0 = dxmirror::clock::now_ms() - 60_000;
        for id in &modified {
            assert!(
                by_id[id] >= t0,
                "{order:?}: {id} listed with its old description ({})",
                by_id[id]
            );
        }
        let pages = 2_500_usize.div_ceil(PAGE) as u64;
        assert_eq!(
            sb.stats().requests("/system/findDataObjects"),
            pages + 1,
            "{order:?}: the pages and one catch-up"
        );
    }
}

/// A whole `sync` of a project of two pages, with a file modified between them, mirrors every
/// file once in every order.
#[tokio::test]
async fn a_two_page_project_mirrors_in_every_order() {
    for order in ORDERS {
        let (sb, pid, env) = served_env_with(
            SandboxOptions {
                dataset: Dataset::many_files("two-pages", PAGE + 150, 1),
                listing_order: Some(order),
                ..Default::default()
            },
            "",
        )
        .await;
        for id in picks(&sb) {
            sb.modify_after_pages(&id, 1);
        }
        env.sync().await.unwrap();
        assert_eq!(
            assert_mirrored(&sb, &env, &pid),
            PAGE + 150,
            "{order:?}: every file mirrored"
        );
    }
}
