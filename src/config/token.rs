//! Where the API token comes from, in the documented order: the configured `token-file`, a
//! systemd credential (`$CREDENTIALS_DIRECTORY/dx-token`), `DX_API_TOKEN`, `DX_SECURITY_CONTEXT`;
//! and the API server that dx's `DX_APISERVER_*` variables name.
//!
//! A token file that other users can read is refused. This module reads the token file and
//! never writes anything; no message carries the token.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{Config, ConfigError};
use crate::model::ApiToken;

/// Where a token was found, for `check-config` (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenOrigin {
    /// The configured `token-file`.
    File(PathBuf),
    /// `$CREDENTIALS_DIRECTORY/dx-token` (systemd `LoadCredential=`).
    Credential(PathBuf),
    /// `DX_API_TOKEN`.
    EnvToken,
    /// `DX_SECURITY_CONTEXT`.
    EnvSecurityContext,
}

impl fmt::Display for TokenOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenOrigin::File(p) => write!(f, "token file {}", p.display()),
            TokenOrigin::Credential(p) => write!(f, "systemd credential {}", p.display()),
            TokenOrigin::EnvToken => f.write_str("environment variable DX_API_TOKEN"),
            TokenOrigin::EnvSecurityContext => {
                f.write_str("environment variable DX_SECURITY_CONTEXT")
            }
        }
    }
}

impl Config {
    /// Finds the API token: `$CREDENTIALS_DIRECTORY/dx-token` (the systemd credential), else
    /// `token-file`, else `DX_API_TOKEN`, else `DX_SECURITY_CONTEXT`.
    pub fn token(&self) -> Result<(ApiToken, TokenOrigin), ConfigError> {
        resolve_token(self.token_file.as_deref(), &|k| std::env::var(k).ok())
    }
}

/// The API server named by `DX_APISERVER_HOST` (with `DX_APISERVER_PROTOCOL`, default
/// `https`, and `DX_APISERVER_PORT`), when set; `env` reads environment variables.
pub(super) fn api_url_from_env(env: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    let host = env("DX_APISERVER_HOST")?;
    let protocol = env("DX_APISERVER_PROTOCOL").unwrap_or_else(|| "https".into());
    Some(match env("DX_APISERVER_PORT") {
        Some(port) => format!("{protocol}://{host}:{port}"),
        None => format!("{protocol}://{host}"),
    })
}

/// Resolves the token in the documented order; `env` reads environment variables.
pub fn resolve_token(
    token_file: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(ApiToken, TokenOrigin), ConfigError> {
    // The service's credential comes first: under systemd the same config (with a root-only
    // `token-file` for runs by hand) then works for the service user too.
    if let Some(dir) = env("CREDENTIALS_DIRECTORY") {
        let path = Path::new(&dir).join("dx-token");
        if path.exists() {
            // systemd owns the permissions of credentials; still refuse an empty one.
            let token = read_token_file(&path)?;
            return Ok((token, TokenOrigin::Credential(path)));
        }
    }
    if let Some(path) = token_file {
        return Ok((read_token_file(path)?, TokenOrigin::File(path.to_owned())));
    }
    if let Some(t) = env("DX_API_TOKEN").filter(|t| !t.trim().is_empty()) {
        return Ok((ApiToken::new(&t), TokenOrigin::EnvToken));
    }
    if let Some(ctx) = env("DX_SECURITY_CONTEXT") {
        #[derive(Deserialize)]
        struct SecurityContext {
            auth_token: String,
        }
        let parsed: SecurityContext =
            serde_json::from_str(&ctx).map_err(|_| ConfigError::NoToken)?;
        if !parsed.auth_token.trim().is_empty() {
            return Ok((
                ApiToken::new(&parsed.auth_token),
                TokenOrigin::EnvSecurityContext,
            ));
        }
    }
    Err(ConfigError::NoToken)
}

fn read_token_file(path: &Path) -> Result<ApiToken, ConfigError> {
    use std::os::unix::fs::PermissionsExt;
    let err = |message: String| ConfigError::TokenFile {
        path: path.to_owned(),
        message,
    };
    let meta = std::fs::metadata(path).map_err(|e| err(format!("cannot read it: {e}")))?;
    let mode = meta.permissions().mode();
    if mode & 0o007 != 0 {
        return Err(err(format!(
            "is readable by other users (mode {:o}); the token gives access to controlled data: run chmod 600 (or 640 with the service's group) on it",
            mode & 0o777
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read it: {e}")))?;
    let token = ApiToken::new(&text);
    if token.is_empty() {
        return Err(err("is empty".into()));
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    const MINIMAL: &str = "mirror-root = \"/srv/m\"\nstate-dir = \"/var/lib/d\"\n";

    #[test]
    fn api_url_from_dx_environment() {
        let env = |k: &str| match k {
            "DX_APISERVER_PROTOCOL" => Some("http".to_owned()),
            "DX_APISERVER_HOST" => Some("127.0.0.1".to_owned()),
            "DX_APISERVER_PORT" => Some("8124".to_owned()),
            _ => None,
        };
        let c = Config::from_toml(MINIMAL, Path::new("t"), &env).unwrap();
        assert_eq!(c.api_url, "http://127.0.0.1:8124");
    }

    #[test]
    fn token_order_and_security_context() {
        let env = |k: &str| match k {
            "DX_SECURITY_CONTEXT" => {
                Some(r#"{"auth_token_type":"Bearer","auth_token":"abc"}"#.to_owned())
            }
            _ => None,
        };
        let (t, origin) = resolve_token(None, &env).unwrap();
        assert_eq!(t.expose(), "abc");
        assert_eq!(origin, TokenOrigin::EnvSecurityContext);
        let env2 = |k: &str| match k {
            "DX_API_TOKEN" => Some("def".to_owned()),
            "DX_SECURITY_CONTEXT" => Some(r#"{"auth_token":"abc"}"#.to_owned()),
            _ => None,
        };
        assert_eq!(resolve_token(None, &env2).unwrap().0.expose(), "def");
        assert!(matches!(
            resolve_token(None, &no_env),
            Err(ConfigError::NoToken)
        ));
    }

    #[test]
    fn the_systemd_credential_wins_over_an_unreadable_token_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        // The root-only token file the same config names for runs by hand: unreadable here.
        let root_only = dir.path().join("missing-root-only-token");
        let creds = dir.path().join("credentials");
        std::fs::create_dir(&creds).unwrap();
        let cred = creds.join("dx-token");
        std::fs::write(&cred, "from-systemd\n").unwrap();
        std::fs::set_permissions(&cred, std::fs::Permissions::from_mode(0o400)).unwrap();
        let creds_text = creds.to_string_lossy().into_owned();
        let env = |k: &str| (k == "CREDENTIALS_DIRECTORY").then(|| creds_text.clone());
        let (t, origin) = resolve_token(Some(&root_only), &env).unwrap();
        assert_eq!(t.expose(), "from-systemd");
        assert_eq!(origin, TokenOrigin::Credential(cred.clone()));
        // Without the credential (a run by hand), the token file is used, and its failure said.
        let err = resolve_token(Some(&root_only), &no_env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot read it"), "{err}");
        // A credential directory without dx-token falls through to the token file.
        std::fs::remove_file(&cred).unwrap();
        assert!(resolve_token(Some(&root_only), &env).is_err());
    }

    #[test]
    fn world_readable_token_file_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "secret-token\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = resolve_token(Some(&path), &no_env).unwrap_err().to_string();
        assert!(err.contains("readable by other users"), "{err}");
        assert!(!err.contains("secret-token"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            resolve_token(Some(&path), &no_env).unwrap().0.expose(),
            "secret-token"
        );
    }
}
