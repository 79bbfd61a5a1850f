//! The TOML configuration: schema, loading, validation, and where the API token comes from.
//!
//! Loading has two steps: `RawConfig` is what serde reads (unknown keys are an error naming the
//! key and line), `Config` is the validated, resolved form every other module receives. This
//! module reads the config file and the token file; it never writes anything.
//! `token.rs` finds the token (`Config::token`, `resolve_token`) and the API server named by
//! dx's environment.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::access::OnAccessExpired;
pub use crate::bandwidth::Timetable;
pub use crate::clock::Date;
use crate::model::ProjectId;
use crate::selection::{Filter, SelectionRules};
pub use crate::units::{human_bytes, ByteSize, HumanDuration};

mod token;

use token::api_url_from_env;
pub use token::{resolve_token, TokenOrigin};

/// The default DNAnexus API server.
pub const DEFAULT_API_URL: &str = "https://api.dnanexus.com";

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML is malformed or has unknown or mistyped keys (the message names key and line).
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("invalid config file {path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// No token could be found anywhere.
    #[error("no DNAnexus API token: set token-file in the config, or give a systemd credential named dx-token, or set DX_API_TOKEN or DX_SECURITY_CONTEXT")]
    NoToken,
    /// The token file could not be used.
    #[error("token file {path}: {message}")]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// What is wrong (never the token itself).
        message: String,
    },
}

/// Default `access-purge-grace`, whole days.
pub const DEFAULT_PURGE_GRACE_DAYS: i64 = 7;

/// Default `disk-reserve`: free space always left on the mirror's filesystem.
pub const DEFAULT_DISK_RESERVE: u64 = 1 << 30;

/// Largest accepted `disk-reserve` (a typo guard: 1 PiB).
const MAX_DISK_RESERVE: u64 = 1 << 50;

/// One `[[project]]` entry as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RawProject {
    /// The project id.
    pub id: String,
    /// Path globs (relative to the project root): only matching files are mirrored.
    #[serde(default)]
    pub include: Vec<String>,
    /// Path globs of files never mirrored.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// File types to mirror (`bam`, `gVCF`, `Somatic_VCF`, `CNV`, `index`, ...).
    #[serde(default)]
    pub file_types: Vec<String>,
    /// `SAMPLE_INFO.txt` column to accepted values.
    #[serde(default)]
    pub sample_info: BTreeMap<String, OneOrMany>,
    /// Queue priority: higher first (default 0).
    pub priority: Option<i64>,
    /// End of the data access agreement, `YYYY-MM-DD` (a TOML date or a string).
    pub access_expires: Option<toml::Value>,
    /// This project's own download rate limit or timetable (rclone's `--bwlimit` syntax), on
    /// top of the global one.
    pub bwlimit: Option<String>,
    /// What to do once `access-expires` has passed: `warn`, `hold`, `purge` (default: the
    /// global `on-access-expired`).
    pub on_access_expired: Option<String>,
}

/// The global `[filter]` table: the selection keys of `[[project]]`, applied to every project.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RawFilter {
    /// Path globs: only matching files are mirrored.
    #[serde(default)]
    pub include: Vec<String>,
    /// Path globs of files never mirrored.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// File types to mirror.
    #[serde(default)]
    pub file_types: Vec<String>,
    /// `SAMPLE_INFO.txt` column to accepted values.
    #[serde(default)]
    pub sample_info: BTreeMap<String, OneOrMany>,
}

/// A `sample-info` value: one string or a list of strings.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// `column = "value"`.
    One(String),
    /// `column = ["a", "b"]`.
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

fn build_filter(
    include: &[String],
    exclude: &[String],
    file_types: &[String],
    sample_info: BTreeMap<String, OneOrMany>,
) -> Result<Filter, String> {
    let sample_info = sample_info
        .into_iter()
        .map(|(k, v)| (k, v.into_vec()))
        .collect();
    Filter::new(include, exclude, file_types, sample_info)
}

/// `[discovery]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RawDiscovery {
    /// Discover projects through `/system/findProjects` (default false).
    pub enabled: Option<bool>,
    /// How often.
    pub interval: Option<HumanDuration>,
    /// Minimum permission level (default `VIEW`).
    pub level: Option<String>,
    /// Tags a project must all carry.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Glob on the project name.
    pub name: Option<String>,
    /// Properties a project must carry with these values.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

/// `[relist]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RawRelist {
    /// How often every known project is listed again.
    pub interval: Option<HumanDuration>,
}

/// `[watch]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RawWatch {
    /// The drop-in directory.
    pub dir: Option<PathBuf>,
    /// Full rescan interval (the source of truth; file events only make it sooner).
    pub rescan: Option<HumanDuration>,
}

/// `[verify]` as written: scheduled re-verification by the daemon.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RawVerify {
    /// How often the daemon re-hashes the whole mirror; absent: never.
    pub interval: Option<HumanDuration>,
    /// Put damaged files back into staging so that only their damaged chunks are fetched
    /// again (default true); false only reports.
    pub repair: Option<bool>,
}

/// Validated `[verify]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScheduledVerify {
    /// How often.
    pub interval: Duration,
    /// Whether findings are repaired.
    pub repair: bool,
}

/// `[metrics]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RawMetrics {
    /// Where the OpenMetrics endpoint listens: `PORT` (on 127.0.0.1), `IP:PORT` or
    /// `localhost:PORT`; absent: no endpoint.
    pub listen: Option<String>,
}

/// Parses `[metrics] listen`: a bare port binds loopback only; any other address is used
/// only because it was written out.
fn parse_listen(text: &str) -> Result<std::net::SocketAddr, String> {
    use std::net::{Ipv4Addr, SocketAddr};
    let text = text.trim();
    if let Ok(port) = text.parse::<u16>() {
        return Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
    }
    if let Some(port) = text.strip_prefix("localhost:") {
        let port = port
            .parse::<u16>()
            .map_err(|e| format!("[metrics] listen = {text:?}: bad port: {e}"))?;
        return Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
    }
    text.parse::<SocketAddr>().map_err(|_| {
        format!("[metrics] listen = {text:?} must be PORT, IP:PORT ([IPv6]:PORT) or localhost:PORT")
    })
}

/// The words of `[notify] disabled`: every notification kind (`notifications::Kind`).
pub const NOTIFY_KINDS: &[&str] = &[
    "project-complete",
    "file-failed",
    "file-corrupt",
    "file-flagged",
    "verify-findings",
    "token-refused",
    "token-accepted",
    "project-inaccessible",
    "project-gone",
    "access-expiring",
    "access-expired",
    "access-held",
    "access-purged",
    "access-purge-failed",
    "stalled",
    "disk-wait",
    "throttled",
    "pass-start",
    "pass-end",
];

/// `[notify]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RawNotify {
    /// No byte for this long while work is pending sends `stalled` (default 1h).
    pub stalled_after: Option<HumanDuration>,
    /// Throttled without a break for this long sends `throttled` (default 15m).
    pub throttled_after: Option<HumanDuration>,
    /// Most undelivered events kept per sink (default 1000); older ones are dropped.
    pub queue_limit: Option<u64>,
    /// Kinds never sent.
    #[serde(default)]
    pub disabled: Vec<String>,
    /// Webhooks and pings.
    #[serde(default)]
    pub webhook: Vec<RawWebhook>,
    /// Commands.
    #[serde(default)]
    pub command: Vec<RawCommand>,
}

/// One `[[notify.webhook]]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RawWebhook {
    /// Where the JSON body is POSTed.
    pub url: Option<String>,
    /// A healthchecks-style check URL (instead of `url`).
    pub ping_url: Option<String>,
    /// The file holding the HMAC-SHA256 secret.
    pub secret_file: Option<PathBuf>,
    /// The systemd credential holding it (`$CREDENTIALS_DIRECTORY/NAME`).
    pub secret_credential: Option<String>,
    /// Deadline of one delivery (default 10s).
    pub timeout: Option<HumanDuration>,
}

/// One `[[notify.command]]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RawCommand {
    /// The program (absolute path) and its arguments; no shell.
    #[serde(default)]
    pub argv: Vec<String>,
    /// It is killed after this long (default 30s).
    pub timeout: Option<HumanDuration>,
}

/// Where a webhook goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookTarget {
    /// `url`: the JSON body of every event.
    Url(String),
    /// `ping-url`: the pass events as healthchecks pings.
    Ping(String),
}

/// A validated `[[notify.webhook]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    /// Where.
    pub target: WebhookTarget,
    /// The secret's file (a `secret-credential` resolved), if any.
    pub secret_file: Option<PathBuf>,
    /// Deadline of one delivery.
    pub timeout: Duration,
}

/// A validated `[[notify.command]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyCommand {
    /// Program and arguments.
    pub argv: Vec<String>,
    /// Killed after this long.
    pub timeout: Duration,
}

/// Validated `[notify]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyConfig {
    /// See [`RawNotify::stalled_after`].
    pub stalled_after: Duration,
    /// See [`RawNotify::throttled_after`].
    pub throttled_after: Duration,
    /// See [`RawNotify::queue_limit`].
    pub queue_limit: u64,
    /// Kinds never sent.
    pub disabled: Vec<String>,
    /// Webhooks and pings.
    pub webhooks: Vec<Webhook>,
    /// Commands.
    pub commands: Vec<NotifyCommand>,
}

impl Default for NotifyConfig {
    fn default() -> NotifyConfig {
        NotifyConfig {
            stalled_after: Duration::from_secs(3600),
            throttled_after: Duration::from_secs(15 * 60),
            queue_limit: 1000,
            disabled: Vec::new(),
            webhooks: Vec::new(),
            commands: Vec::new(),
        }
    }
}

fn validate_notify(
    raw: RawNotify,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<NotifyConfig, String> {
    let d = NotifyConfig::default();
    for k in &raw.disabled {
        if !NOTIFY_KINDS.contains(&k.as_str()) {
            return Err(format!(
                "[notify] disabled: unknown kind {k:?} (kinds: {})",
                NOTIFY_KINDS.join(", ")
            ));
        }
    }
    let queue_limit = raw.queue_limit.unwrap_or(d.queue_limit);
    if queue_limit == 0 {
        return Err("[notify] queue-limit must be at least 1".into());
    }
    let http = |what: &str, u: &str| {
        if u.starts_with("https://") || u.starts_with("http://") {
            Ok(())
        } else {
            Err(format!("[[notify.webhook]] {what} must be an http(s) URL"))
        }
    };
    let mut webhooks = Vec::new();
    for w in raw.webhook {
        let target = match (w.url, w.ping_url) {
            (Some(u), None) => {
                http("url", &u)?;
                WebhookTarget::Url(u)
            }
            (None, Some(u)) => {
                http("ping-url", &u)?;
                WebhookTarget::Ping(u)
            }
            _ => return Err("[[notify.webhook]] needs exactly one of url and ping-url".into()),
        };
        let secret_file = match (w.secret_file, w.secret_credential) {
            (Some(_), Some(_)) => {
                return Err(
                    "[[notify.webhook]] takes secret-file or secret-credential, not both".into(),
                )
            }
            (Some(p), None) => Some(p),
            (None, Some(name)) => {
                let dir = env("CREDENTIALS_DIRECTORY").ok_or_else(|| {
                    format!("[[notify.webhook]] secret-credential = {name:?}: CREDENTIALS_DIRECTORY is not set (add LoadCredential= to the unit)")
                })?;
                Some(PathBuf::from(dir).join(name))
            }
            (None, None) => None,
        };
        if secret_file.is_some() && matches!(target, WebhookTarget::Ping(_)) {
            return Err("[[notify.webhook]] a ping-url is not signed; drop its secret".into());
        }
        webhooks.push(Webhook {
            target,
            secret_file,
            timeout: w.timeout.map_or(Duration::from_secs(10), |t| t.0),
        });
    }
    let mut commands = Vec::new();
    for c in raw.command {
        match c.argv.first() {
            Some(p) if Path::new(p).is_absolute() => {}
            _ => {
                return Err(
                    "[[notify.command]] argv must start with the program's absolute path".into(),
                )
            }
        }
        commands.push(NotifyCommand {
            argv: c.argv,
            timeout: c.timeout.map_or(Duration::from_secs(30), |t| t.0),
        });
    }
    Ok(NotifyConfig {
        stalled_after: raw.stalled_after.map_or(d.stalled_after, |t| t.0),
        throttled_after: raw.throttled_after.map_or(d.throttled_after, |t| t.0),
        queue_limit,
        disabled: raw.disabled,
        webhooks,
        commands,
    })
}

/// The config file exactly as serde reads it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RawConfig {
    /// API server URL.
    pub api_url: Option<String>,
    /// File holding the API token.
    pub token_file: Option<PathBuf>,
    /// Where mirrored projects go.
    pub mirror_root: Option<PathBuf>,
    /// Where the journal and lock live (local filesystem).
    pub state_dir: Option<PathBuf>,
    /// Extra CA certificates (PEM) to trust.
    pub ca_file: Option<PathBuf>,
    /// Connections open at once, across all files.
    pub max_connections: Option<usize>,
    /// Connections open at once for one file.
    pub max_connections_per_file: Option<usize>,
    /// Largest fetch unit.
    pub chunk_size: Option<ByteSize>,
    /// Progress inside a chunk is made durable and journaled at this step.
    pub progress_step: Option<ByteSize>,
    /// A download body that sends nothing for this long is abandoned and retried.
    pub stall_timeout: Option<HumanDuration>,
    /// A file that makes no progress for this long is recorded as failed.
    pub file_patience: Option<HumanDuration>,
    /// How long `sync` waits out a throttled API call (`Retry-After`, `423 Locked`) before it
    /// gives up on it; the daemon never gives up.
    pub throttle_budget: Option<HumanDuration>,
    /// How many times a segment failing its checksum is fetched again before the file is corrupt.
    pub max_verify_retries: Option<u32>,
    /// Free space kept on the mirror's filesystem: a file starts only if its remaining bytes
    /// fit in the free space minus this reserve.
    pub disk_reserve: Option<ByteSize>,
    /// How often work waiting for disk space checks again.
    pub disk_poll: Option<HumanDuration>,
    /// A JSON-lines copy of the audit trail (one record per line, appended).
    pub audit_log: Option<PathBuf>,
    /// Download rate limit or weekly timetable, in rclone's `--bwlimit` syntax.
    pub bwlimit: Option<String>,
    /// What to do with a project whose `access-expires` has passed: `warn`, `hold` (default),
    /// `purge`; a `[[project]]` may set its own.
    pub on_access_expired: Option<String>,
    /// How long after access expired `purge` waits before deleting (whole days; default 7d).
    pub access_purge_grace: Option<HumanDuration>,
    /// Projects to mirror.
    #[serde(default)]
    pub project: Vec<RawProject>,
    /// Selection rules applied to every project.
    pub filter: Option<RawFilter>,
    /// Project discovery (daemon).
    #[serde(default)]
    pub discovery: RawDiscovery,
    /// Re-listing (daemon).
    #[serde(default)]
    pub relist: RawRelist,
    /// Drop-in directory (daemon).
    #[serde(default)]
    pub watch: RawWatch,
    /// Scheduled verification (daemon).
    #[serde(default)]
    pub verify: RawVerify,
    /// The metrics endpoint (daemon).
    #[serde(default)]
    pub metrics: RawMetrics,
    /// Notifications (daemon).
    #[serde(default)]
    pub notify: RawNotify,
}

/// Validated `[discovery]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovery {
    /// Whether the daemon discovers projects.
    pub enabled: bool,
    /// How often.
    pub interval: Duration,
    /// Minimum permission level, always sent.
    pub level: String,
    /// Tags a project must all carry.
    pub tags: Vec<String>,
    /// Glob on the project name.
    pub name: Option<String>,
    /// Properties a project must carry with these values.
    pub properties: BTreeMap<String, String>,
}

/// Validated `[watch]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watch {
    /// The drop-in directory.
    pub dir: PathBuf,
    /// Full rescan interval.
    pub rescan: Duration,
}

/// Per-project settings of the daemon.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProjectSettings {
    /// Queue priority, higher first.
    pub priority: i64,
    /// End of the access agreement.
    pub access_expires: Option<Date>,
    /// The project's own `bwlimit`, if any.
    pub bwlimit: Option<Timetable>,
    /// What to do once `access_expires` has passed.
    pub on_access_expired: OnAccessExpired,
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the config came from (for messages).
    pub source: PathBuf,
    /// API server base URL, without a trailing slash.
    pub api_url: String,
    /// Explicit token file, if configured.
    pub token_file: Option<PathBuf>,
    /// Mirror root.
    pub mirror_root: PathBuf,
    /// State directory (journal, lock).
    pub state_dir: PathBuf,
    /// Extra CA file.
    pub ca_file: Option<PathBuf>,
    /// Global connection cap.
    pub max_connections: usize,
    /// Per-file connection cap.
    pub max_connections_per_file: usize,
    /// Chunk size in bytes.
    pub chunk_size: u64,
    /// Sub-chunk durability step in bytes.
    pub progress_step: u64,
    /// Body inactivity timeout.
    pub stall_timeout: Duration,
    /// No-progress patience per file.
    pub file_patience: Duration,
    /// Waiting allowed per throttled API call in `sync` (the daemon's client has none).
    pub throttle_budget: Duration,
    /// Bound on re-fetching a segment that fails its checksum.
    pub max_verify_retries: u32,
    /// Free space (bytes) kept on the mirror's filesystem; work that does not fit waits.
    pub disk_reserve: u64,
    /// How often work waiting for disk space checks again.
    pub disk_poll: Duration,
    /// The JSON-lines copy of the audit trail, if configured (absolute).
    pub audit_log: Option<PathBuf>,
    /// The global `bwlimit` (no limit by default).
    pub bwlimit: Timetable,
    /// How many whole days after access expired `on-access-expired = "purge"` deletes.
    pub access_purge_grace_days: i64,
    /// Configured projects.
    pub projects: Vec<ProjectId>,
    /// The global `[filter]` selection rules (empty: everything).
    pub filter: Filter,
    /// Each configured project's own selection rules (absent or empty: everything).
    pub project_filters: HashMap<ProjectId, Filter>,
    /// Per-project daemon settings of configured projects (absent: defaults).
    pub project_settings: BTreeMap<ProjectId, ProjectSettings>,
    /// Project discovery.
    pub discovery: Discovery,
    /// Re-listing interval of every known project.
    pub relist_interval: Duration,
    /// The drop-in directory, if any.
    pub watch: Option<Watch>,
    /// Scheduled re-verification of the mirror by the daemon, if configured.
    pub verify: Option<ScheduledVerify>,
    /// Where the daemon's OpenMetrics endpoint listens, if anywhere.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Notifications.
    pub notify: NotifyConfig,
}

impl Config {
    /// The settings of a project (defaults for a discovered one).
    pub fn settings(&self, project: &ProjectId) -> ProjectSettings {
        self.project_settings
            .get(project)
            .cloned()
            .unwrap_or_default()
    }

    /// The projects with a `bwlimit` of their own, and their timetables.
    pub fn project_bwlimits(&self) -> BTreeMap<ProjectId, Timetable> {
        self.project_settings
            .iter()
            .filter_map(|(id, s)| s.bwlimit.clone().map(|t| (id.clone(), t)))
            .collect()
    }

    /// The selection rules of `project`: the global `[filter]` and the project's own keys
    /// (empty layers dropped).
    pub fn selection_rules(&self, project: &ProjectId) -> SelectionRules {
        let mut rules = SelectionRules::default();
        rules.push("[filter]", self.filter.clone());
        if let Some(own) = self.project_filters.get(project) {
            rules.push(&format!("[[project]] {project}"), own.clone());
        }
        rules
    }
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::from_toml(&text, path, &|k| std::env::var(k).ok())
    }

    /// Parses and validates config text; `env` reads environment variables (injected for tests).
    pub fn from_toml(
        text: &str,
        path: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        Config::validate(raw, path, env)
    }

    fn validate(
        raw: RawConfig,
        path: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        };
        let api_url = match raw.api_url {
            Some(url) => url,
            None => api_url_from_env(env).unwrap_or_else(|| DEFAULT_API_URL.to_owned()),
        };
        let api_url = api_url.trim_end_matches('/').to_owned();
        if !(api_url.starts_with("https://") || api_url.starts_with("http://")) {
            return Err(invalid(format!(
                "api-url {api_url:?} must start with https:// (or http:// for a local sandbox)"
            )));
        }
        let mirror_root = raw.mirror_root.ok_or_else(|| {
            invalid("mirror-root is required (where mirrored projects go)".into())
        })?;
        let state_dir = raw.state_dir.ok_or_else(|| {
            invalid("state-dir is required (a local directory for the journal)".into())
        })?;
        if let Some(p) = &raw.audit_log {
            if !p.is_absolute() || p.file_name().is_none() {
                return Err(invalid(format!(
                    "audit-log {} must be an absolute path to a file",
                    p.display()
                )));
            }
        }
        let max_connections = raw.max_connections.unwrap_or(16);
        if !(1..=256).contains(&max_connections) {
            return Err(invalid(format!(
                "max-connections = {max_connections} must be between 1 and 256"
            )));
        }
        let max_connections_per_file = raw.max_connections_per_file.unwrap_or(8);
        if !(1..=64).contains(&max_connections_per_file) {
            return Err(invalid(format!(
                "max-connections-per-file = {max_connections_per_file} must be between 1 and 64"
            )));
        }
        let chunk_size = raw.chunk_size.map_or(16 << 20, |s| s.0);
        if !((64 << 10)..=(1 << 30)).contains(&chunk_size) {
            return Err(invalid(format!(
                "chunk-size = {} must be between 64KiB and 1GiB",
                human_bytes(chunk_size)
            )));
        }
        let progress_step = raw.progress_step.map_or(4 << 20, |s| s.0).min(chunk_size);
        if progress_step < (64 << 10) {
            return Err(invalid("progress-step must be at least 64KiB".into()));
        }
        let stall_timeout = raw.stall_timeout.map_or(Duration::from_secs(60), |d| d.0);
        if stall_timeout < Duration::from_millis(100) {
            return Err(invalid("stall-timeout must be at least 100ms".into()));
        }
        let file_patience = raw
            .file_patience
            .map_or(Duration::from_secs(30 * 60), |d| d.0);
        let throttle_budget = raw
            .throttle_budget
            .map_or(Duration::from_secs(30 * 60), |d| d.0);
        if throttle_budget < Duration::from_secs(1) {
            return Err(invalid("throttle-budget must be at least 1s".into()));
        }
        let disk_reserve = raw.disk_reserve.map_or(DEFAULT_DISK_RESERVE, |s| s.0);
        if disk_reserve > MAX_DISK_RESERVE {
            return Err(invalid(format!(
                "disk-reserve = {} must be at most {}",
                human_bytes(disk_reserve),
                human_bytes(MAX_DISK_RESERVE)
            )));
        }
        let disk_poll = raw.disk_poll.map_or(Duration::from_secs(10), |d| d.0);
        if disk_poll < Duration::from_millis(10) {
            return Err(invalid("disk-poll must be at least 10ms".into()));
        }
        let bwlimit = raw
            .bwlimit
            .as_deref()
            .map(Timetable::parse)
            .transpose()
            .map_err(|e| invalid(format!("bwlimit: {e}")))?
            .unwrap_or_default();
        let on_access_expired = raw
            .on_access_expired
            .as_deref()
            .map(OnAccessExpired::parse)
            .transpose()
            .map_err(|e| invalid(format!("on-access-expired: {e}")))?
            .unwrap_or_default();
        let access_purge_grace_days = raw
            .access_purge_grace
            .map_or(DEFAULT_PURGE_GRACE_DAYS, |d| {
                (d.0.as_secs() / 86_400) as i64
            });
        let mut projects = Vec::new();
        let mut project_settings = BTreeMap::new();
        let mut project_filters = HashMap::new();
        for p in raw.project {
            let id: ProjectId =
                p.id.parse()
                    .map_err(|e| invalid(format!("[[project]]: {e}")))?;
            let access_expires = match &p.access_expires {
                None => None,
                Some(toml::Value::String(s)) => Some(s.clone()),
                Some(toml::Value::Datetime(d)) => Some(d.to_string()),
                Some(other) => Some(other.to_string()),
            }
            .map(|s| Date::parse(&s))
            .transpose()
            .map_err(|e| invalid(format!("[[project]] {id}: access-expires: {e}")))?;
            let filter = build_filter(&p.include, &p.exclude, &p.file_types, p.sample_info)
                .map_err(|e| invalid(format!("[[project]] {id}: {e}")))?;
            let bwlimit = p
                .bwlimit
                .as_deref()
                .map(Timetable::parse)
                .transpose()
                .map_err(|e| invalid(format!("[[project]] {id}: bwlimit: {e}")))?;
            let project_on_expired = p
                .on_access_expired
                .as_deref()
                .map(OnAccessExpired::parse)
                .transpose()
                .map_err(|e| invalid(format!("[[project]] {id}: on-access-expired: {e}")))?
                .unwrap_or(on_access_expired);
            if projects.contains(&id) {
                if !filter.is_empty() {
                    return Err(invalid(format!(
                        "[[project]] {id} is listed twice with selection keys; keep one entry"
                    )));
                }
                continue;
            }
            project_settings.insert(
                id.clone(),
                ProjectSettings {
                    priority: p.priority.unwrap_or(0),
                    access_expires,
                    bwlimit,
                    on_access_expired: project_on_expired,
                },
            );
            projects.push(id.clone());
            if !filter.is_empty() {
                project_filters.insert(id, filter);
            }
        }
        let filter = match raw.filter {
            Some(f) => build_filter(&f.include, &f.exclude, &f.file_types, f.sample_info)
                .map_err(|e| invalid(format!("[filter]: {e}")))?,
            None => Filter::default(),
        };
        let level = raw
            .discovery
            .level
            .unwrap_or_else(|| "VIEW".to_owned())
            .to_ascii_uppercase();
        if !["VIEW", "UPLOAD", "CONTRIBUTE", "ADMINISTER"].contains(&level.as_str()) {
            return Err(invalid(format!(
                "[discovery] level = {level:?} must be VIEW, UPLOAD, CONTRIBUTE or ADMINISTER"
            )));
        }
        let min_interval = Duration::from_millis(100);
        let discovery = Discovery {
            enabled: raw.discovery.enabled.unwrap_or(false),
            interval: raw
                .discovery
                .interval
                .map_or(Duration::from_secs(15 * 60), |d| d.0),
            level,
            tags: raw.discovery.tags,
            name: raw.discovery.name,
            properties: raw.discovery.properties,
        };
        let relist_interval = raw
            .relist
            .interval
            .map_or(Duration::from_secs(3600), |d| d.0);
        let watch = raw.watch.dir.map(|dir| Watch {
            dir,
            rescan: raw.watch.rescan.map_or(Duration::from_secs(60), |d| d.0),
        });
        let verify = raw.verify.interval.map(|d| ScheduledVerify {
            interval: d.0,
            repair: raw.verify.repair.unwrap_or(true),
        });
        if verify.is_some_and(|v| v.interval < min_interval) {
            return Err(invalid("[verify] interval must be at least 100ms".into()));
        }
        if discovery.interval < min_interval
            || relist_interval < min_interval
            || watch.as_ref().is_some_and(|w| w.rescan < min_interval)
        {
            return Err(invalid(
                "[discovery] interval, [relist] interval and [watch] rescan must be at least 100ms"
                    .into(),
            ));
        }
        let metrics_listen = raw
            .metrics
            .listen
            .as_deref()
            .map(parse_listen)
            .transpose()
            .map_err(invalid)?;
        let notify = validate_notify(raw.notify, env).map_err(invalid)?;
        Ok(Config {
            notify,
            metrics_listen,
            source: path.to_owned(),
            api_url,
            token_file: raw.token_file,
            mirror_root,
            state_dir,
            ca_file: raw.ca_file,
            max_connections,
            max_connections_per_file,
            chunk_size,
            progress_step,
            stall_timeout,
            file_patience,
            throttle_budget,
            max_verify_retries: raw.max_verify_retries.unwrap_or(3),
            disk_reserve,
            disk_poll,
            audit_log: raw.audit_log,
            bwlimit,
            access_purge_grace_days,
            projects,
            project_settings,
            discovery,
            relist_interval,
            watch,
            verify,
            filter,
            project_filters,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, Path::new("test.toml"), &no_env)
    }

    const MINIMAL: &str = "mirror-root = \"/srv/m\"\nstate-dir = \"/var/lib/d\"\n";

    #[test]
    fn on_access_expired_defaults_to_hold_and_a_project_may_set_its_own() {
        let a = "project-GZ0yq4Q0fXbqfKZ3Bj0xYv7P";
        let b = "project-B0vY9x9Q0b1QKq2F3Y4Z5a6b";
        let two = format!(
            "[[project]]\nid = \"{a}\"\n[[project]]\nid = \"{b}\"\non-access-expired = \"purge\"\n"
        );
        let c = parse(&format!("{MINIMAL}{two}")).unwrap();
        let pa: ProjectId = a.parse().unwrap();
        let pb: ProjectId = b.parse().unwrap();
        assert_eq!(c.settings(&pa).on_access_expired, OnAccessExpired::Hold);
        assert_eq!(c.settings(&pb).on_access_expired, OnAccessExpired::Purge);
        assert_eq!(c.access_purge_grace_days, DEFAULT_PURGE_GRACE_DAYS);
        let c = parse(&format!(
            "{MINIMAL}on-access-expired = \"warn\"\naccess-purge-grace = \"30d\"\n{two}"
        ))
        .unwrap();
        assert_eq!(c.settings(&pa).on_access_expired, OnAccessExpired::Warn);
        assert_eq!(c.settings(&pb).on_access_expired, OnAccessExpired::Purge);
        assert_eq!(c.access_purge_grace_days, 30);
        let err = parse(&format!("{MINIMAL}on-access-expired = \"delete\"\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("on-access-expired") && err.contains("delete"),
            "{err}"
        );
    }

    #[test]
    fn defaults_apply() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.api_url, DEFAULT_API_URL);
        assert_eq!(c.max_connections, 16);
        assert_eq!(c.max_connections_per_file, 8);
        assert_eq!(c.chunk_size, 16 << 20);
        assert_eq!(c.disk_reserve, DEFAULT_DISK_RESERVE);
    }

    #[test]
    fn throttle_budget_parses_and_is_validated() {
        assert_eq!(
            parse(MINIMAL).unwrap().throttle_budget,
            Duration::from_secs(30 * 60)
        );
        let c = parse(&format!("{MINIMAL}throttle-budget = \"2h\"\n")).unwrap();
        assert_eq!(c.throttle_budget, Duration::from_secs(2 * 3600));
        let err = parse(&format!("{MINIMAL}throttle-budget = \"0s\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("throttle-budget"), "{err}");
        // sync's client gets it; the platform's default stays for other clients.
        let pc =
            crate::pass::platform_config(&c, crate::model::ApiToken::new("t"), Default::default());
        assert_eq!(pc.retry_after_budget, Duration::from_secs(2 * 3600));
    }

    #[test]
    fn disk_reserve_parses_and_is_validated() {
        let c = parse(&format!("{MINIMAL}disk-reserve = \"10GiB\"\n")).unwrap();
        assert_eq!(c.disk_reserve, 10 << 30);
        let c = parse(&format!("{MINIMAL}disk-reserve = \"0\"\n")).unwrap();
        assert_eq!(c.disk_reserve, 0);
        let err = parse(&format!("{MINIMAL}disk-reserve = \"2048TiB\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("disk-reserve"), "{err}");
        assert!(parse(&format!("{MINIMAL}disk-reserve = \"plenty\"\n")).is_err());
    }

    #[test]
    fn bwlimit_parses_globally_and_per_project() {
        use crate::bandwidth::Rate;
        let c = parse(MINIMAL).unwrap();
        assert!(c.bwlimit.is_off());
        let p = "project-GZ0yq4Q0fXbqfKZ3Bj0xYv7P";
        let c = parse(&format!(
            "{MINIMAL}bwlimit = \"08:00,512KiB 12:00,10MiB 23:00,off\"\n[[project]]\nid = \"{p}\"\nbwlimit = \"4MiB\"\n"
        ))
        .unwrap();
        assert_eq!(c.bwlimit.rate_at(9 * 60), Rate::PerSec(512 << 10));
        let own = c.project_bwlimits();
        assert_eq!(own.len(), 1);
        assert_eq!(
            own.values().next().unwrap().rate_at(0),
            Rate::PerSec(4 << 20)
        );
        let err = parse(&format!("{MINIMAL}bwlimit = \"512\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("bwlimit") && err.contains("no unit"), "{err}");
        let err = parse(&format!(
            "{MINIMAL}[[project]]\nid = \"{p}\"\nbwlimit = \"25:00,1MiB\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains(p) && err.contains("bwlimit"), "{err}");
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let err = parse(&format!("{MINIMAL}max-conections = 4\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("max-conections"), "{err}");
        assert!(err.contains("line 3"), "{err}");
    }

    #[test]
    fn bad_values_are_explained() {
        let err = parse(&format!("{MINIMAL}chunk-size = \"16 parsecs\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("parsecs"), "{err}");
        let err = parse(&format!("{MINIMAL}max-connections = 0\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("max-connections"), "{err}");
        let err = parse(&format!("{MINIMAL}[[project]]\nid = \"project-x\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("project-x"), "{err}");
        let err = parse("state-dir = \"/x\"\n").unwrap_err().to_string();
        assert!(err.contains("mirror-root"), "{err}");
    }

    #[test]
    fn metrics_listen_is_loopback_unless_written_out() {
        let listen = |v: &str| {
            parse(&format!(
                "mirror-root = \"/m\"\nstate-dir = \"/s\"\n[metrics]\nlisten = \"{v}\"\n"
            ))
            .map(|c| c.metrics_listen.unwrap().to_string())
        };
        assert!(parse("mirror-root = \"/m\"\nstate-dir = \"/s\"\n")
            .unwrap()
            .metrics_listen
            .is_none());
        assert_eq!(listen("9477").unwrap(), "127.0.0.1:9477");
        assert_eq!(listen("localhost:9477").unwrap(), "127.0.0.1:9477");
        assert_eq!(listen("0.0.0.0:9477").unwrap(), "0.0.0.0:9477");
        assert_eq!(listen("[::1]:9477").unwrap(), "[::1]:9477");
        let err = listen("metrics.example:9477").unwrap_err().to_string();
        assert!(err.contains("[metrics] listen"), "{err}");
    }

    #[test]
    fn daemon_sections_parse() {
        let c = parse(&format!(
            "{MINIMAL}[discovery]\nenabled = true\ninterval = \"5m\"\nlevel = \"view\"\ntags = [\"sjcp-project-data\"]\nname = \"SJC-*\"\nproperties = {{ k = \"v\" }}\n[relist]\ninterval = \"2h\"\n[watch]\ndir = \"/in\"\n[[project]]\nid = \"project-GZ0yq4Q0fXbqfKZ3Bj0xYv7P\"\npriority = 10\naccess-expires = 2027-05-01\n"
        ))
        .unwrap();
        assert!(c.discovery.enabled);
        assert_eq!(c.discovery.interval, Duration::from_secs(300));
        assert_eq!(c.discovery.level, "VIEW");
        assert_eq!(
            c.discovery.properties.get("k").map(String::as_str),
            Some("v")
        );
        assert_eq!(c.relist_interval, Duration::from_secs(7200));
        assert_eq!(c.watch.as_ref().unwrap().rescan, Duration::from_secs(60));
        let s = c.settings(&c.projects[0]);
        assert_eq!(s.priority, 10);
        assert_eq!(s.access_expires.unwrap().to_string(), "2027-05-01");
        let err = parse(&format!(
            "{MINIMAL}[[project]]\nid = \"project-GZ0yq4Q0fXbqfKZ3Bj0xYv7P\"\naccess-expires = \"2027-02-30\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("2027-02-30"), "{err}");
    }

    #[test]
    fn the_annotated_example_config_parses() {
        let text = include_str!("../../config/dxmirror.toml");
        let c = parse(text).unwrap();
        assert!(c.discovery.enabled);
        assert_eq!(c.discovery.tags, vec!["sjcp-project-data".to_owned()]);
        assert_eq!(c.relist_interval, Duration::from_secs(3600));
        assert!(c.watch.is_some());
        assert_eq!(c.projects.len(), 1);
        assert_eq!(c.settings(&c.projects[0]).priority, 10);
    }

    #[test]
    fn filters_parse_and_validate() {
        let c = parse(&format!(
            "{MINIMAL}[filter]\nexclude = [\"**/*.tmp\"]\n\n[[project]]\nid = \"project-B0vY9x9Q0b1QKq2F3Y4Z5a6b\"\n\
             include = [\"restricted/gVCF/**\"]\nfile-types = [\"gVCF\", \"index\"]\n\
             sample-info = {{ sequencing_type = \"WGS\", sample_type = [\"Diagnosis\", \"Relapse\"] }}\n"
        ))
        .unwrap();
        assert_eq!(c.filter.exclude().patterns(), ["**/*.tmp"]);
        let p: ProjectId = "project-B0vY9x9Q0b1QKq2F3Y4Z5a6b".parse().unwrap();
        let f = &c.project_filters[&p];
        assert_eq!(f.include().patterns(), ["restricted/gVCF/**"]);
        assert_eq!(f.file_types().len(), 2);
        assert_eq!(f.sample_info()["sequencing_type"], ["WGS"]);
        assert_eq!(f.sample_info()["sample_type"], ["Diagnosis", "Relapse"]);

        let err = parse(&format!(
            "{MINIMAL}[filter]\ninclude = [\"restricted/[gVCF\"]\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("[filter]: include"), "{err}");
        assert!(err.contains("restricted/[gVCF"), "{err}");
        let err = parse(&format!(
            "{MINIMAL}[[project]]\nid = \"project-B0vY9x9Q0b1QKq2F3Y4Z5a6b\"\nfile-types = [\"fastq\"]\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("file-types"), "{err}");
        assert!(err.contains("fastq"), "{err}");
        let err = parse(&format!("{MINIMAL}[filter]\nincludes = []\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("includes"), "{err}");
    }

    #[test]
    fn annotated_example_config_parses_with_its_filters() {
        let c = parse(include_str!("../../config/dxmirror.toml")).unwrap();
        assert_eq!(c.filter.exclude().patterns(), ["**/*.tmp"]);
        assert_eq!(c.project_filters.len(), 1);
        let f = c.project_filters.values().next().unwrap();
        assert_eq!(f.sample_info()["sample_type"], ["Diagnosis", "Relapse"]);
    }

    #[test]
    fn notify_keys_validate() {
        // The example's [notify] is the defaults; no sink.
        let c = parse(include_str!("../../config/dxmirror.toml")).unwrap();
        assert_eq!(c.notify, NotifyConfig::default());
        let d = parse(MINIMAL).unwrap().notify;
        assert_eq!(
            (d.stalled_after, d.throttled_after, d.queue_limit),
            (Duration::from_secs(3600), Duration::from_secs(900), 1000)
        );
        let c = parse(&format!(
            "{MINIMAL}[notify]\nstalled-after = \"10m\"\nthrottled-after = \"2m\"\nqueue-limit = 5\n\
             disabled = [\"stalled\", \"pass-start\"]\n\
             [[notify.webhook]]\nurl = \"https://h.example/x\"\nsecret-file = \"/etc/s\"\ntimeout = \"3s\"\n\
             [[notify.webhook]]\nping-url = \"https://hc.example/u\"\n\
             [[notify.command]]\nargv = [\"/bin/true\", \"a\"]\ntimeout = \"1s\"\n"
        ))
        .unwrap()
        .notify;
        assert_eq!(c.stalled_after, Duration::from_secs(600));
        assert_eq!(c.throttled_after, Duration::from_secs(120));
        assert_eq!(c.queue_limit, 5);
        assert_eq!(c.disabled, ["stalled", "pass-start"]);
        assert_eq!(
            c.webhooks[0],
            Webhook {
                target: WebhookTarget::Url("https://h.example/x".into()),
                secret_file: Some(PathBuf::from("/etc/s")),
                timeout: Duration::from_secs(3),
            }
        );
        assert_eq!(
            c.webhooks[1].target,
            WebhookTarget::Ping("https://hc.example/u".into())
        );
        assert_eq!(c.webhooks[1].timeout, Duration::from_secs(10));
        assert_eq!(c.commands[0].argv, ["/bin/true", "a"]);
        assert_eq!(c.commands[0].timeout, Duration::from_secs(1));

        // A systemd credential resolves under $CREDENTIALS_DIRECTORY.
        let text = format!(
            "{MINIMAL}[notify]\n[[notify.webhook]]\nurl = \"http://127.0.0.1:1/\"\nsecret-credential = \"hook\"\n"
        );
        let env = |k: &str| (k == "CREDENTIALS_DIRECTORY").then(|| "/run/credentials/d".to_owned());
        let c = Config::from_toml(&text, Path::new("t.toml"), &env).unwrap();
        assert_eq!(
            c.notify.webhooks[0].secret_file,
            Some(PathBuf::from("/run/credentials/d/hook"))
        );
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("CREDENTIALS_DIRECTORY is not set"), "{err}");

        for (bad, says) in [
            ("[notify]\ndisabled = [\"everything\"]\n", "unknown kind \"everything\""),
            ("[notify]\nqueue-limit = 0\n", "queue-limit must be at least 1"),
            ("[notify]\nstalled-after = \"soon\"\n", "stalled-after"),
            ("[[notify.webhook]]\n", "exactly one of url and ping-url"),
            (
                "[[notify.webhook]]\nurl = \"http://a/\"\nping-url = \"http://b/\"\n",
                "exactly one of url and ping-url",
            ),
            ("[[notify.webhook]]\nurl = \"ftp://a/\"\n", "url must be an http(s) URL"),
            (
                "[[notify.webhook]]\nurl = \"http://a/\"\nsecret-file = \"/s\"\nsecret-credential = \"c\"\n",
                "not both",
            ),
            (
                "[[notify.webhook]]\nping-url = \"http://a/\"\nsecret-file = \"/s\"\n",
                "a ping-url is not signed",
            ),
            (
                "[[notify.webhook]]\nurl = \"http://a/\"\nsecret = \"inline\"\n",
                "unknown field `secret`",
            ),
            ("[[notify.command]]\nargv = [\"page-oncall\"]\n", "absolute path"),
            ("[[notify.command]]\nargv = []\n", "absolute path"),
        ] {
            let err = parse(&format!("{MINIMAL}{bad}")).unwrap_err().to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }
}
