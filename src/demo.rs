//! `dxmirror demo`: the whole product on an embedded default, with no DNAnexus account.
//!
//! It starts the sandbox in-process, writes a config for it under the demo directory, runs one
//! sync exactly as `dxmirror sync` would (same lock, journal, engine and store), then checks
//! every line of each project's SHA-256 manifest against the files on disk.

use std::fmt;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::config::Config;
use crate::lock::WriterLock;
use crate::sandbox::{Sandbox, SandboxOptions};
use crate::sync::{ProgressMode, SyncOptions, SyncSummary};

/// The demo could not run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The sandbox did not start.
    #[error("sandbox: {0}")]
    Sandbox(#[from] crate::sandbox::SandboxError),
    /// Writing the demo's files failed.
    #[error("demo directory {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The generated config was rejected (a bug).
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// Another writer holds the demo directory.
    #[error(transparent)]
    Lock(#[from] crate::lock::LockError),
    /// The sync itself failed.
    #[error(transparent)]
    Sync(#[from] crate::sync::SyncError),
}

/// What the demo did.
#[derive(Debug)]
pub struct DemoReport {
    /// The sync's summary.
    pub summary: SyncSummary,
    /// The config written for the sandbox.
    pub config: PathBuf,
    /// The mirror root.
    pub mirror_root: PathBuf,
    /// Manifests checked, with (lines ok, lines bad).
    pub manifests: Vec<(PathBuf, usize, Vec<String>)>,
}

impl DemoReport {
    /// True when the sync was complete and every manifest line matched.
    pub fn ok(&self) -> bool {
        self.summary.is_ok() && self.manifests.iter().all(|(_, _, bad)| bad.is_empty())
    }
}

impl fmt::Display for DemoReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "demo mirror: {}", self.mirror_root.display())?;
        for (manifest, n_ok, bad) in &self.manifests {
            writeln!(
                f,
                "checked {}: {} files match their SHA-256{}",
                manifest.display(),
                n_ok,
                if bad.is_empty() {
                    String::new()
                } else {
                    format!(", MISMATCH: {}", bad.join(", "))
                }
            )?;
            if let Some(dir) = manifest.parent() {
                writeln!(
                    f,
                    "  re-check it yourself: (cd {:?} && sha256sum -c {:?})",
                    dir,
                    manifest.file_name().unwrap_or_default()
                )?;
            }
        }
        write!(
            f,
            "config used: {} (try: dxmirror status --config {})",
            self.config.display(),
            self.config.display()
        )
    }
}

/// Runs the demo in `dir`.
pub async fn run(dir: &Path, progress: ProgressMode) -> Result<DemoReport, DemoError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| DemoError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let dir = dir.canonicalize().map_err(io(dir))?;
    let sandbox = Sandbox::start(SandboxOptions::default()).await?;
    let token_path = dir.join("token");
    std::fs::write(&token_path, sandbox.token()).map_err(io(&token_path))?;
    std::fs::set_permissions(&token_path, std::fs::Permissions::from_mode(0o600))
        .map_err(io(&token_path))?;
    let mirror_root = dir.join("mirror");
    // The mirror root must exist before a sync (it is never created by one).
    std::fs::create_dir_all(&mirror_root).map_err(io(&mirror_root))?;
    let config_path = dir.join("config.toml");
    let mut text = format!(
        "# Written by `dxmirror demo` for its in-process sandbox (which is gone when the demo ends).\n\
         api-url = {:?}\ntoken-file = {:?}\nmirror-root = {:?}\nstate-dir = {:?}\n",
        sandbox.api_url(),
        token_path,
        mirror_root,
        dir.join("state")
    );
    for p in sandbox.projects() {
        text.push_str(&format!("\n[[project]]\nid = \"{p}\"\n"));
    }
    std::fs::write(&config_path, text).map_err(io(&config_path))?;
    let cfg = Config::load(&config_path)?;
    let summary = {
        let _lock = WriterLock::acquire(&cfg.state_dir, &cfg.mirror_root)?;
        crate::sync::run(
            &cfg,
            SyncOptions {
                projects: Vec::new(),
                progress,
            },
        )
        .await?
    };
    let mut manifests = Vec::new();
    for p in &summary.projects {
        if let Some(m) = &p.manifest {
            let (n_ok, bad) = check_manifest(m).map_err(io(m))?;
            manifests.push((m.clone(), n_ok, bad));
        }
    }
    Ok(DemoReport {
        summary,
        config: config_path,
        mirror_root,
        manifests,
    })
}

/// Checks a `SHA256SUMS` file the way `sha256sum -c` does: (lines that match, lines that do not).
pub fn check_manifest(manifest: &Path) -> std::io::Result<(usize, Vec<String>)> {
    let dir = manifest.parent().unwrap_or(Path::new("."));
    let text = std::fs::read_to_string(manifest)?;
    let (mut n_ok, mut bad) = (0, Vec::new());
    for line in text.lines() {
        let (escaped, rest) = match line.strip_prefix('\\') {
            Some(r) => (true, r),
            None => (false, line),
        };
        let Some((hex, name)) = rest.split_once("  ") else {
            bad.push(format!("malformed line {line:?}"));
            continue;
        };
        let name = if escaped {
            unescape(name)
        } else {
            name.to_owned()
        };
        let ok = sha256_file(&dir.join(&name))
            .map(|h| h == hex)
            .unwrap_or(false);
        if ok {
            n_ok += 1;
        } else {
            bad.push(name);
        }
    }
    Ok((n_ok, bad))
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('\\') => out.push('\\'),
                Some(other) => {
                    out.push('\\');
                    out.push(other);
                }
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}
