//! Integration tests: the real `dx` client (dxpy, plus `aria2c` for parts-less symlinks) run
//! against the in-process sandbox. Gated by `DXMIRROR_TEST_DXPY=1`; when set, a missing `dx`
//! or `aria2c` is a failure, not a skip. CI installs them with
//! `pip install dxpy==0.417.1` (pinned: the If-Match test needs a dxpy that pins drive-backed
//! files to their ETag, and 0.417.1 does) and `apt-get install -y aria2`.

#![allow(clippy::unwrap_used)] // Test helpers: a failed unwrap is a failed test.

use std::path::Path;
use std::process::Output;

use dxmirror::model::ByteRange;
use dxmirror::sandbox::{FileSpec, FileSpecKind, PartSizes, ProjectSpec, Sandbox, SandboxOptions};
use serde_json::Value;

use crate::support::Gate;

async fn dx(sb: &Sandbox, home: &Path, cwd: &Path, args: &[&str]) -> Output {
    let port = sb.api_addr().port().to_string();
    let ctx =
        serde_json::json!({"auth_token_type": "Bearer", "auth_token": sb.token()}).to_string();
    let project = sb.projects()[0].to_string();
    let out = tokio::process::Command::new("dx")
        .args(args)
        .current_dir(cwd)
        .env("HOME", home)
        .env("DX_USER_CONF_DIR", home.join(".dnanexus_config"))
        .env("DX_APISERVER_PROTOCOL", "http")
        .env("DX_APISERVER_HOST", "127.0.0.1")
        .env("DX_APISERVER_PORT", &port)
        .env("DX_SECURITY_CONTEXT", ctx)
        .env("DX_PROJECT_CONTEXT_ID", &project)
        .env("DX_CLI_WD", "/")
        .env_remove("DX_JOB_ID")
        .env_remove("DX_WORKSPACE_ID")
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .env_remove("http_proxy")
        .env_remove("https_proxy")
        .output()
        .await
        .expect("the dx command must be installed (pip install dxpy) when DXMIRROR_TEST_DXPY=1");
    out
}

fn ok(out: &Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// `dx download` of `src` under a fresh name (with the old copy in place dx would find its
/// parts' MD5s matching locally and fetch nothing) must fail: returns what dx said.
async fn download_again_fails(sb: &Sandbox, home: &Path, cwd: &Path, src: &str) -> String {
    let out = dx(sb, home, cwd, &["download", "-o", "again.bam", src]).await;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{said}");
    said
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dx_client_works_against_the_sandbox() {
    if !Gate::Dxpy.enabled("dxpy::dx_client_works_against_the_sandbox") {
        return;
    }
    let aria = std::process::Command::new("aria2c")
        .arg("--version")
        .output();
    assert!(
        aria.is_ok_and(|o| o.status.success()),
        "aria2c must be installed (apt-get install -y aria2) when DXMIRROR_TEST_DXPY=1"
    );
    let sb = Sandbox::start(SandboxOptions::default()).await.unwrap();
    let pid = sb.projects()[0].clone();
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();

    let ls = ok(&dx(&sb, home.path(), work.path(), &["ls"]).await, "dx ls");
    assert!(
        ls.contains("SAMPLE_INFO.txt") && ls.contains("restricted/"),
        "{ls}"
    );
    let target = format!("{pid}:/restricted/bam");
    let ls = ok(
        &dx(&sb, home.path(), work.path(), &["ls", "-l", &target]).await,
        "dx ls -l",
    );
    assert!(ls.contains("SJBALL020073_D1.WGS.bam"), "{ls}");

    let files = sb.files(&pid);
    let bam = files
        .iter()
        .find(|f| f.name == "SJBALL020073_D1.WGS.bam")
        .unwrap();
    let desc = ok(
        &dx(
            &sb,
            home.path(),
            work.path(),
            &["describe", "--json", bam.id.as_str()],
        )
        .await,
        "dx describe",
    );
    let v: Value = serde_json::from_str(&desc).unwrap();
    assert_eq!(v["size"], bam.size);
    ok(
        &dx(
            &sb,
            home.path(),
            work.path(),
            &["describe", bam.id.as_str()],
        )
        .await,
        "dx describe",
    );

    let found = ok(
        &dx(
            &sb,
            home.path(),
            work.path(),
            &["find", "data", "--json", "--project", pid.as_str()],
        )
        .await,
        "dx find data",
    );
    let v: Value = serde_json::from_str(&found).unwrap();
    assert_eq!(v.as_array().unwrap().len(), files.len());

    // Folders holding only downloadable files, then the whole project (whose archived and open
    // files dx refuses, as the platform does).
    for folder in [
        "/restricted/gVCF",
        "/restricted/Somatic_VCF",
        "/restricted/CNV",
    ] {
        let src = format!("{pid}:{folder}");
        ok(
            &dx(
                &sb,
                home.path(),
                work.path(),
                &["download", "-r", "-f", &src],
            )
            .await,
            "dx download -r",
        );
    }
    let link = files
        .iter()
        .find(|f| f.name == "SJBALL020073_G1.WGS.bam")
        .unwrap();
    let single = files
        .iter()
        .find(|f| f.name == "SJOS001101_D1.RNA-Seq.bam")
        .unwrap();
    for f in [bam, link, single] {
        let src = f.id.to_string();
        ok(
            &dx(&sb, home.path(), work.path(), &["download", "-f", &src]).await,
            "dx download",
        );
    }
    ok(
        &dx(
            &sb,
            home.path(),
            work.path(),
            &["download", "-f", &format!("{pid}:/SAMPLE_INFO.txt")],
        )
        .await,
        "dx download SAMPLE_INFO.txt",
    );
    let mut checked = 0;
    for f in &files {
        if f.state != "closed" || f.archival_state != "live" {
            continue;
        }
        let folder = f.folder.rsplit('/').next().unwrap_or("");
        let candidates = [
            work.path().join(folder).join(&f.name),
            work.path().join(&f.name),
        ];
        let Some(path) = candidates.iter().find(|p| p.exists()) else {
            continue;
        };
        let got = std::fs::read(path).unwrap();
        if f.name == "SJBALL020073_D1.segments.txt" {
            // Two files share this path; dx keeps one of them.
            continue;
        }
        assert_eq!(
            got,
            sb.content(&f.id, ByteRange::new(0, f.size)),
            "{}",
            f.name
        );
        checked += 1;
    }
    assert!(checked >= 12, "only {checked} files compared");
    let stats = sb.stats();
    assert!(
        stats.requests("GET storage") >= 1,
        "the symlink went through the storage host"
    );
    assert_eq!(
        stats.storage_auth_refused, 0,
        "dx never sends the token to storage"
    );
    // The whole project holds an archived file: dx fails on it exactly as on the platform.
    let all = dx(
        &sb,
        home.path(),
        work.path(),
        &["download", "-r", "-f", &format!("{pid}:/")],
    )
    .await;
    assert!(!all.status.success());
    assert!(
        String::from_utf8_lossy(&all.stderr).contains("because it is in the archived state"),
        "{}",
        String::from_utf8_lossy(&all.stderr)
    );
}

/// A sandbox with one project holding one file, and a `dx` home and working directory.
struct OneFile {
    sb: Sandbox,
    id: dxmirror::model::FileId,
    home: tempfile::TempDir,
    work: tempfile::TempDir,
    /// `project:file-id`, as `dx download` takes it.
    src: String,
}

impl OneFile {
    async fn new(file: FileSpec) -> OneFile {
        let sb = Sandbox::start(SandboxOptions::default()).await.unwrap();
        let pid = sb.add_project(ProjectSpec::new("one").file(file)).unwrap();
        let id = sb.files(&pid)[0].id.clone();
        let src = format!("{pid}:{id}");
        OneFile {
            sb,
            id,
            home: tempfile::tempdir().unwrap(),
            work: tempfile::tempdir().unwrap(),
            src,
        }
    }

    /// `dx download` of the file succeeds with the platform's bytes, as `name`.
    async fn download_intact(&self, name: &str, size: u64) {
        let out = dx(
            &self.sb,
            self.home.path(),
            self.work.path(),
            &["download", "-f", &self.src],
        )
        .await;
        ok(&out, "dx download");
        let got = std::fs::read(self.work.path().join(name)).unwrap();
        assert!(got == self.sb.content(&self.id, ByteRange::new(0, size)));
    }

    /// After the object behind the file was overwritten, `dx download` fails: what dx said.
    async fn overwritten_download_fails(&self) -> String {
        assert!(self.sb.overwrite_object(&self.id).is_some());
        download_again_fails(&self.sb, self.home.path(), self.work.path(), &self.src).await
    }
}

/// A drive-backed file with parts whose describe carries `symlinkTargetIdentifier`: `dx
/// download` (dxpy 0.417.1, the release `.ci/run` pins) sends `If-Match` on both hops of its
/// GETs, and fails with `412` once the backing object was overwritten behind the describe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dx_download_pins_drive_backed_files_with_if_match() {
    if !Gate::Dxpy.enabled("dxpy::dx_download_pins_drive_backed_files_with_if_match") {
        return;
    }
    let size = 3 << 20;
    let one = OneFile::new(
        FileSpec::new("/", "pinned.bam", size)
            .kind(FileSpecKind::DriveSinglePart)
            .pinned(),
    )
    .await;
    one.download_intact("pinned.bam", size).await;
    let stats = one.sb.stats();
    assert!(stats.if_match("GET download") >= 1, "{stats:#?}");
    assert_eq!(
        stats.if_match("GET storage"),
        stats.if_match("GET download"),
        "If-Match must reach the storage host on every redirect: {stats:#?}"
    );
    assert_eq!(stats.precondition_failed, 0);

    let said = one.overwritten_download_fails().await;
    assert!(said.contains("412"), "{said}");
    assert!(one.sb.stats().precondition_failed >= 1);
    let again = one.work.path().join("again.bam");
    let now = one.sb.content(&one.id, ByteRange::new(0, size));
    assert!(
        std::fs::read(&again).map_or(true, |b| b != now),
        "dx must not leave the new object's bytes as a finished file"
    );
}

/// A file on the published drive (`drive-PUBLISHED`) with parts that carry no md5: `dx
/// download` fetches it like a parts-less symlink (through aria2c) and checks its whole-file
/// `md5`, as dxpy's `_download_dxfile` reads; once the object behind it was overwritten, that
/// check fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dx_download_checks_a_published_file_by_its_whole_md5() {
    if !Gate::Dxpy.enabled("dxpy::dx_download_checks_a_published_file_by_its_whole_md5") {
        return;
    }
    let size = 5 << 20;
    let one = OneFile::new(
        FileSpec::new("/", "published.bam", size)
            .kind(FileSpecKind::PublishedDrive(PartSizes::Uniform(2 << 20))),
    )
    .await;
    one.download_intact("published.bam", size).await;
    // Through the 302 to the storage host, as a symlink.
    assert!(one.sb.stats().requests("GET storage") >= 1);
    let said = one.overwritten_download_fails().await;
    assert!(said.contains("Checksum doesn't match"), "{said}");
}
