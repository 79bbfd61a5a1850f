//! The daemon run in this process (`daemon::run_with`), with an injected shutdown and reload
//! channel instead of signals. Dropping it aborts the daemon, so a failed test leaves none
//! running.

use std::time::Duration;

use dxmirror::daemon::{self, DaemonError, Notifier};
use tokio::sync::{mpsc, oneshot};

use super::Env;

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
