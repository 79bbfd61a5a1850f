//! The daemon run in this process (`daemon::run_with`), with an injected shutdown and reload
//! channel instead of signals. Dropping it aborts the daemon, so a failed test leaves none
//! running. [`Mirrored`] is the state several daemon scenarios start from: one project of an
//! in-process sandbox, mirrored by a running daemon.

use std::path::PathBuf;
use std::time::Duration;

use dxmirror::daemon::{self, DaemonError, Notifier};
use dxmirror::journal::FileState;
use dxmirror::model::ProjectId;
use dxmirror::sandbox::{ProjectSpec, Sandbox};
use tokio::sync::{mpsc, oneshot};

use super::{empty_sandbox, files_under, wait_for, Env};

/// How long a daemon scenario waits for what it expects.
const T: Duration = Duration::from_secs(20);

/// A daemon running in this process.
pub struct Running {
    stop: Option<oneshot::Sender<()>>,
    pub reload: mpsc::Sender<()>,
    pub handle: tokio::task::JoinHandle<Result<(), DaemonError>>,
}

impl Running {
    /// Starts the daemon on `env`'s config.
    pub fn start(env: &Env, notify: Notifier) -> Running {
        let (stop, stopped) = oneshot::channel::<()>();
        let (reload, reloads) = mpsc::channel(4);
        let path = env.config_path.clone();
        let handle = tokio::spawn(daemon::run_with(
            path,
            async move {
                let _ = stopped.await;
            },
            reloads,
            notify,
        ));
        Running {
            stop: Some(stop),
            reload,
            handle,
        }
    }

    /// Shuts the daemon down and returns how it ended; it must stop within 10 s.
    pub async fn stop(mut self) -> Result<(), DaemonError> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), &mut self.handle)
            .await
            .expect("the daemon stops within 10 s")
            .unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

/// True when every file of `project` in the journal is verified (and there are `n`).
pub fn all_verified(env: &Env, project: &ProjectId, n: usize) -> Option<()> {
    let files = env.reader()?.files(project).ok()?;
    (files.len() == n && files.iter().all(|f| f.state == FileState::Verified)).then_some(())
}

/// One project of its own sandbox, mirrored by a daemon that still runs.
pub struct Mirrored {
    pub sandbox: Sandbox,
    pub project: ProjectId,
    pub env: Env,
    pub running: Running,
    /// The project's directory.
    pub dir: PathBuf,
    /// Its files once mirrored: every file of the spec and `SHA256SUMS`.
    pub files: Vec<PathBuf>,
}

impl Mirrored {
    /// Adds `spec` to an empty sandbox, starts a daemon configured with `extra` top-level lines
    /// and the project in a `[[project]]` table with `project_keys`, and waits until every
    /// file is verified and the manifest written.
    pub async fn start(spec: ProjectSpec, extra: &str, project_keys: &str) -> Mirrored {
        let sandbox = empty_sandbox().await;
        let n = spec.files.len();
        let project = sandbox.add_project(spec).unwrap();
        let env = Env::for_sandbox(
            &sandbox,
            Vec::new(),
            format!("{extra}[[project]]\nid = \"{project}\"\n{project_keys}"),
        );
        let running = Running::start(&env, Notifier::disabled());
        wait_for("the project to be mirrored", T, || {
            all_verified(&env, &project, n)
        })
        .await;
        let dir = env.project_dir(&project);
        let files = wait_for("the manifest", T, || {
            let files = files_under(&dir);
            (files.len() == n + 1 && dir.join("SHA256SUMS").is_file()).then_some(files)
        })
        .await;
        Mirrored {
            sandbox,
            project,
            env,
            running,
            dir,
            files,
        }
    }
}
