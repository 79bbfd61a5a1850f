//! Shared test support: a temporary mirror set-up pointed at a sandbox, an in-process sync, the
#![allow(clippy::unwrap_used)]
//! real binary, and waiting on conditions with a timeout instead of sleeping.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use dxmirror::config::Config;
use dxmirror::lock::WriterLock;
use dxmirror::model::ProjectId;
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
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dxmirror"));
        cmd.args(args).arg("--config").arg(&self.config_path);
        cmd.env_remove("DX_API_TOKEN")
            .env_remove("DX_SECURITY_CONTEXT");
        cmd.output().expect("run dxmirror")
    }
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
                stack.push(path);
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
