//! Sandboxes for tests: in this process (with a mirror set-up for its first project), or
//! `dxmirror sandbox` as a child process, which a SIGKILLed sync cannot take down with it.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use dxmirror::model::ProjectId;
use dxmirror::sandbox::{Dataset, Sandbox, SandboxOptions, ServeStats};

use super::Env;

/// Serves `dataset` in this process, every other option at its default.
pub async fn sandbox_of(dataset: Dataset) -> Sandbox {
    Sandbox::start(SandboxOptions {
        dataset,
        ..SandboxOptions::default()
    })
    .await
    .unwrap()
}

/// A sandbox with no project yet (tests add them while a daemon runs).
pub async fn empty_sandbox() -> Sandbox {
    sandbox_of(Dataset::new(11)).await
}

/// Serves `dataset` in-process and writes a mirror set-up for its first project, with `extra`
/// config lines.
pub async fn served_env(dataset: Dataset, extra: impl Into<String>) -> (Sandbox, ProjectId, Env) {
    served_env_with(
        SandboxOptions {
            dataset,
            ..SandboxOptions::default()
        },
        extra,
    )
    .await
}

/// [`served_env`] with every sandbox option the test's own.
pub async fn served_env_with(
    options: SandboxOptions,
    extra: impl Into<String>,
) -> (Sandbox, ProjectId, Env) {
    let sandbox = Sandbox::start(options).await.unwrap();
    let project = sandbox.projects()[0].clone();
    let env = Env::for_sandbox(&sandbox, vec![project.clone()], extra);
    (sandbox, project, env)
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
        let env = Env::for_process(self, vec![project.clone()], extra);
        (project, env)
    }

    /// The sandbox's counters, over `GET /_sandbox/stats`.
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
