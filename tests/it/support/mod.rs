//! Shared test support: a temporary mirror set-up pointed at a sandbox, an in-process sync, the
//! real binary, and waiting on conditions with a timeout instead of sleeping.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use dxmirror::config::Config;
use dxmirror::journal::{FileState, JournalReader};
use dxmirror::lock::WriterLock;
use dxmirror::model::{ByteRange, ProjectId};
use dxmirror::sandbox::{Dataset, Sandbox, ServeStats};
use dxmirror::sync::{ProgressMode, SyncOptions, SyncSummary};

/// A temporary directory holding a config, a token file, a state dir and a mirror root.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
}

/// Settings a test may change in the generated config.
pub struct EnvOptions {
    pub api_url: String,
    pub token: String,
    pub projects: Vec<ProjectId>,
    /// Extra TOML lines (e.g. `chunk-size = "64KiB"`).
    pub extra: String,
}

impl Env {
    pub fn new(opts: EnvOptions) -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        // The mirror root is the administrator's: it must exist before any sync.
        std::fs::create_dir(dir.path().join("mirror")).unwrap();
        let token_path = dir.path().join("token");
        std::fs::write(&token_path, &opts.token).unwrap();
        std::fs::set_permissions(&token_path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut text = format!(
            "api-url = {:?}\ntoken-file = {:?}\nmirror-root = {:?}\nstate-dir = {:?}\n{}\n",
            opts.api_url,
            token_path,
            dir.path().join("mirror"),
            dir.path().join("state"),
            opts.extra
        );
        for p in &opts.projects {
            text.push_str(&format!("[[project]]\nid = \"{p}\"\n"));
        }
        let config_path = dir.path().join("config.toml");
        std::fs::write(&config_path, text).unwrap();
        Env { dir, config_path }
    }

    pub fn config(&self) -> Config {
        Config::load(&self.config_path).expect("config")
    }

    pub fn mirror(&self) -> PathBuf {
        self.dir.path().join("mirror")
    }

    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// One sync in this process, holding the writer lock like the binary does.
    pub async fn sync(&self) -> Result<SyncSummary, dxmirror::sync::SyncError> {
        let cfg = self.config();
        let _lock = WriterLock::acquire(&cfg.state_dir, &cfg.mirror_root).expect("lock");
        dxmirror::sync::run(
            &cfg,
            SyncOptions {
                projects: Vec::new(),
                progress: ProgressMode::Quiet,
            },
        )
        .await
    }

    /// Runs the real binary with this env's config appended after `args`.
    pub fn bin(&self, args: &[&str]) -> Output {
        run_bin(&self.config_path, args)
    }

    /// [`Env::bin`] off the async runtime, so that an in-process sandbox keeps serving.
    pub async fn bin_async(&self, args: &[&str]) -> Output {
        let config = self.config_path.clone();
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run_bin(&config, &args)
        })
        .await
        .unwrap()
    }
}

/// Runs `dxmirror ARGS --config CONFIG` without any token from the environment.
fn run_bin(config: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dxmirror"));
    cmd.args(args).arg("--config").arg(config);
    cmd.env_remove("DX_API_TOKEN")
        .env_remove("DX_SECURITY_CONTEXT");
    cmd.output().expect("run dxmirror")
}

/// Every regular file under `root`, relative to it, skipping the hidden `.dxmirror` dirs.
pub fn files_under(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                // The store's hidden working directory (staging, manifest temp files) is not
                // part of the mirror; callers that want it name it as `root`.
                if e.file_name() != ".dxmirror" {
                    stack.push(path);
                }
            } else if ft.is_file() {
                out.push(path.strip_prefix(root).unwrap().to_owned());
            }
        }
    }
    out.sort();
    out
}

/// Polls `check` (every 25 ms) until it returns `Some`, or panics naming `what` after
/// `timeout`. For conditions the test cannot be told about; never a bare sleep.
pub async fn wait_for<T>(
    what: &str,
    timeout: std::time::Duration,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
}

/// Every downloadable file of `project` is at its journaled path with exactly the sandbox's
/// bytes; returns how many there were.
pub fn assert_mirrored(sandbox: &Sandbox, env: &Env, project: &ProjectId) -> usize {
    let reader = JournalReader::open(&env.state()).unwrap();
    let row = reader.project(project).unwrap().unwrap();
    let dir = env.mirror().join(row.dir_name.unwrap());
    let mut n = 0;
    for f in reader.files(project).unwrap() {
        let sf = sandbox.file_in(project, &f.file_id).unwrap();
        if sf.state != "closed" || sf.archival_state != "live" {
            assert_eq!(f.state, FileState::Skipped, "{}", f.rel_path);
            continue;
        }
        assert!(
            matches!(f.state, FileState::Verified | FileState::Unverified),
            "{} is {:?}: {:?}",
            f.rel_path,
            f.state,
            f.reason
        );
        let local = std::fs::read(dir.join(&f.rel_path)).unwrap();
        assert_eq!(local.len() as u64, sf.size, "{}", f.rel_path);
        assert!(
            local == sandbox.content(&f.file_id, ByteRange::new(0, sf.size)),
            "{} differs from the platform's bytes",
            f.rel_path
        );
        n += 1;
    }
    let staging = dir.join(".dxmirror/staging");
    assert_eq!(
        files_under(&staging),
        Vec::<std::path::PathBuf>::new(),
        "staging files left"
    );
    n
}

/// `dxmirror sandbox` running as a child process.
pub struct SandboxProcess {
    child: Child,
    pub api_url: String,
    pub token: String,
    pub projects: Vec<ProjectId>,
    http: reqwest::Client,
}

impl SandboxProcess {
    pub fn start(args: &[&str]) -> SandboxProcess {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut child = Command::new(env!("CARGO_BIN_EXE_dxmirror"))
            .arg("sandbox")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        SandboxProcess {
            child,
            api_url: v["api_url"].as_str().unwrap().to_owned(),
            token: v["token"].as_str().unwrap().to_owned(),
            projects: serde_json::from_value(v["projects"].clone()).unwrap(),
            http: reqwest::Client::new(),
        }
    }

    /// A mirror set-up for this sandbox's first project, with `extra` config lines.
    pub fn env(&self, extra: impl Into<String>) -> (ProjectId, Env) {
        let project = self.projects[0].clone();
        let env = Env::new(EnvOptions {
            api_url: self.api_url.clone(),
            token: self.token.clone(),
            projects: vec![project.clone()],
            extra: extra.into(),
        });
        (project, env)
    }

    pub async fn stats(&self) -> ServeStats {
        self.http
            .get(format!("{}/_sandbox/stats", self.api_url))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

impl Drop for SandboxProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `dxmirror sync` on `env`'s config, quietly.
pub fn spawn_sync(env: &Env) -> Child {
    Command::new(env!("CARGO_BIN_EXE_dxmirror"))
        .args(["-q", "sync", "--config"])
        .arg(&env.config_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Runs `dxmirror sync` to the end and requires success.
pub fn sync_to_the_end(env: &Env) {
    let out = Command::new(env!("CARGO_BIN_EXE_dxmirror"))
        .args(["-q", "sync", "--config"])
        .arg(&env.config_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "final run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits until the sandbox has served `target` bytes, then SIGKILLs `child`, and returns the
/// sandbox's counters once it has counted what it wrote.
pub async fn kill_when_served(
    sandbox: &SandboxProcess,
    mut child: Child,
    target: u64,
) -> ServeStats {
    let start = Instant::now();
    while sandbox.stats().await.bytes_served < target {
        assert!(
            child.try_wait().unwrap().is_none(),
            "sync ended before the kill point"
        );
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no progress towards {target}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // Let the sandbox notice the closed connections and count what it wrote.
    tokio::time::sleep(Duration::from_millis(300)).await;
    sandbox.stats().await
}

/// Every file of `project` is verified, byte-identical to the dataset `dataset` (rebuilt from
/// its seed), with every chunk complete in the journal and no staging file left.
pub fn assert_matches_dataset(env: &Env, project: &ProjectId, dataset: &Dataset) {
    let reader = JournalReader::open(&env.state()).unwrap();
    let dir_name = reader.project(project).unwrap().unwrap().dir_name.unwrap();
    let dir = env.mirror().join(&dir_name);
    let rows = reader.files(project).unwrap();
    assert_eq!(rows.len(), dataset.files.len());
    for row in &rows {
        assert_eq!(
            row.state,
            FileState::Verified,
            "{}: {:?}",
            row.rel_path,
            row.reason
        );
        let built = dataset.files.iter().find(|f| f.id == row.file_id).unwrap();
        let local = std::fs::read(dir.join(&row.rel_path)).unwrap();
        let mut expected = vec![0u8; local.len()];
        built.fill(0, &mut expected);
        assert_eq!(local.len() as u64, built.spec.size);
        assert!(local == expected, "{} differs", row.rel_path);
        let plan = reader.load_plan(&row.key()).unwrap().unwrap();
        for (chunk, (done, _)) in plan.plan.chunks.iter().zip(&plan.chunk_done) {
            assert_eq!(
                *done, chunk.range.len,
                "{} chunk {}",
                row.rel_path, chunk.idx
            );
        }
    }
    assert!(
        files_under(&dir.join(".dxmirror/staging")).is_empty(),
        "staging files left"
    );
}

/// Serves `dataset` in-process and writes a mirror set-up for its first project, with `extra`
/// config lines.
pub async fn served_env(dataset: Dataset, extra: impl Into<String>) -> (Sandbox, ProjectId, Env) {
    served_env_with(
        dxmirror::sandbox::SandboxOptions {
            dataset,
            ..dxmirror::sandbox::SandboxOptions::default()
        },
        extra,
    )
    .await
}

/// [`served_env`] with every sandbox option the test's own.
pub async fn served_env_with(
    options: dxmirror::sandbox::SandboxOptions,
    extra: impl Into<String>,
) -> (Sandbox, ProjectId, Env) {
    let sandbox = Sandbox::start(options).await.unwrap();
    let project = sandbox.projects()[0].clone();
    let env = Env::new(EnvOptions {
        api_url: sandbox.api_url(),
        token: sandbox.token(),
        projects: vec![project.clone()],
        extra: extra.into(),
    });
    (sandbox, project, env)
}
