//! A temporary mirror set-up (config, token file, state directory, mirror root) pointed at a
//! sandbox, with an in-process sync and the real binary run on its config.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use dxmirror::config::Config;
use dxmirror::journal::JournalReader;
use dxmirror::lock::WriterLock;
use dxmirror::model::ProjectId;
use dxmirror::sandbox::Sandbox;
use dxmirror::sync::{ProgressMode, SyncOptions, SyncSummary};

use super::SandboxProcess;

/// A temporary directory holding a config, a token file, a state dir and a mirror root.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    mirror: PathBuf,
    state: PathBuf,
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
        let mirror = dir.path().join("mirror");
        let state = dir.path().join("state");
        // The mirror root is the administrator's: it must exist before any sync.
        std::fs::create_dir(&mirror).unwrap();
        let token_path = dir.path().join("token");
        std::fs::write(&token_path, &opts.token).unwrap();
        std::fs::set_permissions(&token_path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut text = format!(
            "api-url = {:?}\ntoken-file = {:?}\nmirror-root = {:?}\nstate-dir = {:?}\n{}\n",
            opts.api_url, token_path, mirror, state, opts.extra
        );
        for p in &opts.projects {
            text.push_str(&format!("[[project]]\nid = \"{p}\"\n"));
        }
        let config_path = dir.path().join("config.toml");
        std::fs::write(&config_path, text).unwrap();
        Env {
            dir,
            config_path,
            mirror,
            state,
        }
    }

    /// A set-up for `projects` of the in-process `sandbox`, with `extra` config lines.
    pub fn for_sandbox(
        sandbox: &Sandbox,
        projects: Vec<ProjectId>,
        extra: impl Into<String>,
    ) -> Env {
        Env::new(EnvOptions {
            api_url: sandbox.api_url(),
            token: sandbox.token(),
            projects,
            extra: extra.into(),
        })
    }

    /// A set-up for `projects` of the out-of-process `sandbox`, with `extra` config lines.
    pub fn for_process(
        sandbox: &SandboxProcess,
        projects: Vec<ProjectId>,
        extra: impl Into<String>,
    ) -> Env {
        Env::new(EnvOptions {
            api_url: sandbox.api_url.clone(),
            token: sandbox.token.clone(),
            projects,
            extra: extra.into(),
        })
    }

    /// This set-up with its config naming `mirror_root` and `state_dir` (relative to the env's
    /// directory, neither created) instead of the usual ones.
    pub fn with_dirs(mut self, mirror_root: &str, state_dir: &str) -> Env {
        let (mirror, state) = (
            self.dir.path().join(mirror_root),
            self.dir.path().join(state_dir),
        );
        let text = std::fs::read_to_string(&self.config_path)
            .unwrap()
            .replace(
                &format!("mirror-root = {:?}", self.mirror),
                &format!("mirror-root = {mirror:?}"),
            )
            .replace(
                &format!("state-dir = {:?}", self.state),
                &format!("state-dir = {state:?}"),
            );
        std::fs::write(&self.config_path, text).unwrap();
        (self.mirror, self.state) = (mirror, state);
        self
    }

    pub fn config(&self) -> Config {
        Config::load(&self.config_path).expect("config")
    }

    /// The mirror root the config names.
    pub fn mirror(&self) -> PathBuf {
        self.mirror.clone()
    }

    /// The state directory the config names.
    pub fn state(&self) -> PathBuf {
        self.state.clone()
    }

    /// The journal, read-only; `None` while it cannot be opened (not created yet).
    pub fn reader(&self) -> Option<JournalReader> {
        JournalReader::open(&self.state).ok()
    }

    /// The mirror directory of `project`, as the journal records it.
    pub fn project_dir(&self, project: &ProjectId) -> PathBuf {
        let reader = JournalReader::open(&self.state).unwrap();
        let row = reader.project(project).unwrap().unwrap();
        self.mirror.join(row.dir_name.unwrap())
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
        .env_remove("DX_SECURITY_CONTEXT")
        .env_remove("CREDENTIALS_DIRECTORY");
    cmd.output().expect("run dxmirror")
}
