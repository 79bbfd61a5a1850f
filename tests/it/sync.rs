//! End-to-end `sync` against the sandbox: a complete verified mirror, skipped and duplicate
//! files, one file id vended into two projects, hostile names, a bad token, API faults, expiring URLs and the single-writer rule.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use dxmirror::journal::{FileKey, FileState, JournalReader};
use dxmirror::lock::WriterLock;
use dxmirror::model::{ByteRange, FileId};
use dxmirror::sandbox::{
    Dataset, FaultConfig, FileSpec, FileSpecKind, PartSizes, ProjectSpec, Sandbox, SandboxOptions,
};

use crate::support::{assert_mirrored, files_under, sandbox_of, Env, EnvOptions};

#[tokio::test]
async fn demo_project_is_mirrored_verified_and_manifested() {
    let sandbox = Sandbox::start(SandboxOptions::default()).await.unwrap();
    let project = sandbox.projects()[0].clone();
    let env = Env::for_sandbox(&sandbox, vec![project.clone()], "chunk-size = \"64KiB\"");
    let summary = env.sync().await.unwrap();
    assert!(summary.is_ok(), "{summary:#?}");
    let n = assert_mirrored(&sandbox, &env, &project);
    assert!(n >= 10, "only {n} files");

    let p = &summary.projects[0];
    // Archived and open files are skipped with their reasons.
    let skipped: Vec<_> = p.problems.iter().filter(|x| x.state == "skipped").collect();
    assert!(
        skipped.iter().any(|x| x.reason.contains("archived")),
        "{skipped:?}"
    );
    assert!(
        skipped.iter().any(|x| x.reason.contains("open")),
        "{skipped:?}"
    );
    // The file without any platform checksum is mirrored but reported unverified.
    assert!(p.unverified >= 1);

    // Every manifest line matches the file on disk (what `sha256sum -c` checks).
    let manifest = p.manifest.clone().unwrap();
    let (n_ok, bad) = dxmirror::demo::check_manifest(&manifest).unwrap();
    assert!(bad.is_empty(), "{bad:?}");
    assert_eq!(n_ok, p.verified + p.unverified);

    // Controlled-access data is not readable by others.
    let dir = manifest.parent().unwrap();
    for rel in files_under(dir) {
        let mode = std::fs::metadata(dir.join(&rel))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o640, "{}", rel.display());
    }
    let mode = std::fs::metadata(dir.join("restricted"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o750);

    // A second sync fetches nothing again.
    let served = sandbox.stats().bytes_served;
    let again = env.sync().await.unwrap();
    assert!(again.is_ok());
    assert_eq!(again.projects[0].fetched_now, 0);
    assert_eq!(
        sandbox.stats().bytes_served,
        served,
        "a complete mirror was fetched again"
    );
}

#[tokio::test]
async fn duplicate_names_follow_the_documented_rule() {
    let spec = ProjectSpec::new("dups")
        .file(FileSpec::new("/restricted/CNV", "same.txt", 1000).times(2_000, 2_000))
        .file(FileSpec::new("/restricted/CNV", "same.txt", 2000).times(1_000, 1_000))
        .file(FileSpec::new("/restricted/CNV", "same.txt", 3000).times(3_000, 3_000));
    let sandbox = sandbox_of(Dataset::build(5, vec![spec]).unwrap()).await;
    let project = sandbox.projects()[0].clone();
    let env = Env::for_sandbox(&sandbox, vec![project.clone()], "");
    assert!(env.sync().await.unwrap().is_ok());
    assert_mirrored(&sandbox, &env, &project);
    let files = sandbox.files(&project);
    let first = files.iter().find(|f| f.size == 2000).unwrap();
    let dir = env.mirror().join("dups/restricted/CNV");
    assert_eq!(
        std::fs::metadata(dir.join("same.txt")).unwrap().len(),
        2000,
        "the first created keeps the name"
    );
    for f in files.iter().filter(|f| f.id != first.id) {
        let renamed = dir.join(format!("{}__same.txt", f.id));
        assert_eq!(std::fs::metadata(&renamed).unwrap().len(), f.size);
    }
}

#[tokio::test]
async fn a_file_id_in_two_projects_is_mirrored_into_both() {
    // St. Jude vends the same file (same id, a DNAnexus clone) into several data-request
    // projects; each project's copy must be mirrored into its own directory.
    let shared: FileId = format!("file-{}", "S".repeat(24)).parse().unwrap();
    let shared_link: FileId = format!("file-{}", "L".repeat(24)).parse().unwrap();
    let bam = |folder: &str| {
        FileSpec::new(folder, "shared.bam", 300 << 10)
            .kind(FileSpecKind::PartsMd5(PartSizes::Uniform(100 << 10)))
            .id(shared.clone())
    };
    let link = |folder: &str| {
        FileSpec::new(folder, "shared.vcf.gz", 70_000)
            .kind(FileSpecKind::SymlinkWholeMd5)
            .id(shared_link.clone())
    };
    let a = ProjectSpec::new("request A")
        .file(bam("/restricted/bam"))
        .file(link("/restricted/vcf"))
        .file(FileSpec::new("/", "only-a.txt", 1000));
    let b = ProjectSpec::new("request B")
        .file(bam("/clone"))
        .file(link("/restricted/vcf"))
        .file(FileSpec::new("/", "only-b.txt", 2000));
    let sandbox = sandbox_of(Dataset::build(12, vec![a, b]).unwrap()).await;
    let projects = sandbox.projects();
    assert_eq!(projects.len(), 2);
    let (pa, pb) = (projects[0].clone(), projects[1].clone());
    for p in [&pa, &pb] {
        assert_eq!(sandbox.file_in(p, &shared).unwrap().project, *p);
    }

    let env = Env::for_sandbox(&sandbox, projects.clone(), "chunk-size = \"64KiB\"");
    let summary = env.sync().await.unwrap();
    assert!(summary.is_ok(), "{summary:#?}");
    assert_eq!(assert_mirrored(&sandbox, &env, &pa), 3);
    assert_eq!(assert_mirrored(&sandbox, &env, &pb), 3);
    for p in &summary.projects {
        assert_eq!((p.verified, p.fetched_now), (3, 3), "{p:#?}");
        let (n_ok, bad) = dxmirror::demo::check_manifest(p.manifest.as_ref().unwrap()).unwrap();
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!(n_ok, 3);
    }

    // Two journal rows, one per project, both verified with the same digest, each at its
    // project's own path.
    let reader = JournalReader::open(&env.state()).unwrap();
    let row_a = reader.file(&FileKey::new(&pa, &shared)).unwrap().unwrap();
    let row_b = reader.file(&FileKey::new(&pb, &shared)).unwrap().unwrap();
    assert_eq!(
        (row_a.state, row_b.state),
        (FileState::Verified, FileState::Verified)
    );
    assert_eq!(row_a.sha256, row_b.sha256);
    assert_eq!(row_a.rel_path, "restricted/bam/shared.bam");
    assert_eq!(row_b.rel_path, "clone/shared.bam");
    let want = sandbox.content(&shared, ByteRange::new(0, 300 << 10));
    for (p, rel) in [(&pa, &row_a.rel_path), (&pb, &row_b.rel_path)] {
        let dir = reader.project(p).unwrap().unwrap().dir_name.unwrap();
        let got = std::fs::read(env.mirror().join(dir).join(rel)).unwrap();
        assert!(
            got == want,
            "{p}: the shared file differs from the platform's bytes"
        );
    }
    for p in [&pa, &pb] {
        let row = reader
            .file(&FileKey::new(p, &shared_link))
            .unwrap()
            .unwrap();
        assert_eq!(row.state, FileState::Verified);
    }

    // A second sync fetches nothing again in either project.
    let served = sandbox.stats().bytes_served;
    let again = env.sync().await.unwrap();
    assert!(again.is_ok(), "{again:#?}");
    assert!(again.projects.iter().all(|p| p.fetched_now == 0));
    assert_eq!(sandbox.stats().bytes_served, served);
}

#[tokio::test]
async fn hostile_names_stay_inside_the_mirror_root() {
    let names = [
        ("/", ".."),
        ("/../../outside", "escape.txt"),
        ("/restricted/..", "up.txt"),
        ("/a", "bad\u{0}nul"),
        ("/a", "line\nbreak"),
        ("/a", "ctl\u{7}bell"),
        ("/a", &"L".repeat(300)),
        ("/", ".dxmirror"),
        ("/a/./b", "dot.txt"),
    ];
    let mut spec = ProjectSpec::new("../../hostile");
    for (folder, name) in names {
        spec = spec.file(FileSpec::new(folder, name, 100));
    }
    let sandbox = sandbox_of(Dataset::build(9, vec![spec]).unwrap()).await;
    let project = sandbox.projects()[0].clone();
    let env = Env::for_sandbox(&sandbox, vec![project.clone()], "");
    let summary = env.sync().await.unwrap();
    assert!(summary.is_ok(), "{summary:#?}");
    assert_eq!(assert_mirrored(&sandbox, &env, &project), names.len());
    // Nothing was written beside the mirror root; the unsafe project name became its id.
    let top: HashSet<String> = std::fs::read_dir(env.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let expected: HashSet<String> = ["config.toml", "token", "mirror", "state"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(top, expected);
    assert!(env.mirror().join(project.as_str()).is_dir());
    let root = env.mirror().canonicalize().unwrap();
    for rel in files_under(&env.mirror()) {
        let abs = env.mirror().join(&rel).canonicalize().unwrap();
        assert!(abs.starts_with(&root), "{}", abs.display());
    }
}

#[tokio::test]
async fn a_bad_token_exits_non_zero_with_a_clear_message() {
    let sandbox = Sandbox::start(SandboxOptions::default()).await.unwrap();
    let project = sandbox.projects()[0].clone();
    let env = Env::new(EnvOptions {
        api_url: sandbox.api_url(),
        token: "not-the-token-Zq7".into(),
        projects: vec![project],
        extra: String::new(),
    });
    let out = env.bin_async(&["sync"]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("rejected the token"), "{stderr}");
    assert!(
        !stderr.contains("not-the-token-Zq7"),
        "the token leaked: {stderr}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("not-the-token-Zq7"));
}

#[tokio::test]
async fn a_download_restricted_project_is_refused() {
    let mut spec = ProjectSpec::new("no downloads").file(FileSpec::new("/", "x.txt", 10));
    spec.download_restricted = true;
    let sandbox = sandbox_of(Dataset::build(3, vec![spec]).unwrap()).await;
    let project = sandbox.projects()[0].clone();
    let env = Env::for_sandbox(&sandbox, vec![project], "");
    let summary = env.sync().await.unwrap();
    assert!(!summary.is_ok());
    let err = summary.projects[0].error.clone().unwrap();
    assert!(err.contains("download-restricted"), "{err}");
    assert_eq!(sandbox.stats().bytes_served, 0);
    assert!(files_under(&env.mirror())
        .iter()
        .all(|p| p.starts_with(".dxmirror.lock")));
}

#[tokio::test]
async fn api_503_with_retry_after_and_500s_are_survived() {
    let faults = FaultConfig::parse("api503=0.3,api500=0.2,api429=0.1,seed=11").unwrap();
    let sandbox = Sandbox::start(SandboxOptions {
        faults,
        retry_after_secs: 1,
        ..SandboxOptions::default()
    })
    .await
    .unwrap();
    let project = sandbox.projects()[0].clone();
    let env = Env::for_sandbox(&sandbox, vec![project.clone()], "");
    let summary = env.sync().await.unwrap();
    assert!(summary.is_ok(), "{summary:#?}");
    assert_mirrored(&sandbox, &env, &project);
    assert!(
        sandbox.stats().faults_injected.values().sum::<u64>() > 0,
        "no fault fired"
    );
}

#[tokio::test]
async fn expired_download_urls_are_refreshed_without_losing_bytes() {
    let spec = ProjectSpec::new("slow")
        .file(
            FileSpec::new("/restricted/bam", "a.bam", 3 << 20)
                .kind(FileSpecKind::PartsMd5(PartSizes::Uniform(1 << 20))),
        )
        .file(
            FileSpec::new("/restricted/bam", "s.bam", 2 << 20).kind(FileSpecKind::SymlinkWholeMd5),
        );
    // URLs live one second and the bandwidth cap makes the transfer last several: every
    // file's URL expires while it is being fetched. Some URLs are also refused early.
    let sandbox = Sandbox::start(SandboxOptions {
        dataset: Dataset::build(4, vec![spec]).unwrap(),
        url_ttl: Duration::from_secs(1),
        storage_url_ttl: Duration::from_secs(1),
        bandwidth: Some(1_500_000),
        faults: FaultConfig::parse("expire_early=0.2,seed=5").unwrap(),
        ..SandboxOptions::default()
    })
    .await
    .unwrap();
    let project = sandbox.projects()[0].clone();
    let env = Env::for_sandbox(
        &sandbox,
        vec![project.clone()],
        "chunk-size = \"256KiB\"\nprogress-step = \"64KiB\"\nmax-connections = 4\nmax-connections-per-file = 2",
    );
    let summary = env.sync().await.unwrap();
    assert!(summary.is_ok(), "{summary:#?}");
    assert_mirrored(&sandbox, &env, &project);
    let stats = sandbox.stats();
    let downloads = stats.requests("/file-xxxx/download");
    assert!(
        downloads > 2,
        "URLs were never refreshed ({downloads} requests)"
    );
    for f in sandbox.files(&project) {
        let again = stats.served_intact_more_than_once(f.id.as_str());
        assert!(
            again.is_empty(),
            "{} bytes fetched twice: {again:?}",
            f.name
        );
    }
}

#[tokio::test]
async fn a_second_writer_is_refused() {
    let sandbox = Sandbox::start(SandboxOptions::default()).await.unwrap();
    let env = Env::for_sandbox(&sandbox, sandbox.projects(), "");
    let cfg = env.config();
    let _held = WriterLock::acquire(&cfg.state_dir, &cfg.mirror_root).unwrap();
    let out = env.bin_async(&["sync"]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("already holds"), "{stderr}");
    assert_eq!(sandbox.stats().bytes_served, 0);
}

#[tokio::test]
async fn mirrored_files_keep_the_platforms_modification_time() {
    // 2024-03-05T06:07:08.250Z, a small file (the short road) and a chunked one.
    let modified = 1_709_618_828_250;
    let spec = ProjectSpec::new("times")
        .file(FileSpec::new("/", "small.txt", 900).times(1_600_000_000_000, modified))
        .file(
            FileSpec::new("/restricted/bam", "big.bam", 300_000)
                .times(1_600_000_000_000, modified + 1),
        );
    let sandbox = sandbox_of(Dataset::build(6, vec![spec]).unwrap()).await;
    let project = sandbox.projects()[0].clone();
    let env = Env::for_sandbox(&sandbox, vec![project.clone()], "chunk-size = \"64KiB\"");
    assert!(env.sync().await.unwrap().is_ok());
    let dir = env.mirror().join("times");
    for (rel, ms) in [
        ("small.txt", modified),
        ("restricted/bam/big.bam", modified + 1),
    ] {
        let mtime = std::fs::metadata(dir.join(rel))
            .unwrap()
            .modified()
            .unwrap();
        let got = mtime.duration_since(std::time::UNIX_EPOCH).unwrap();
        assert_eq!(got.as_millis() as i64, ms, "{rel}");
    }
}
