//! The command line (clap derive): [`Cli`] with its global flags, and one [`Command`] per
//! subcommand. Parsing only: the doc comments here are the `--help` text, and what each
//! subcommand does lives in `commands/`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use dxmirror::model::ProjectId;

/// Mirror St. Jude Cloud data vended through DNAnexus: resumable, verified, unattended.
#[derive(Debug, Parser)]
#[command(name = "dxmirror", version, about, after_help = crate::commands::exit::TABLE)]
pub(crate) struct Cli {
    /// More logging (-v debug, -vv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub(crate) verbose: u8,
    /// Only warnings and errors.
    #[arg(short, long, global = true)]
    pub(crate) quiet: bool,
    /// Log lines as `text` (default) or `json` (one object per line with the structured
    /// fields, for log shippers); else $DXMIRROR_LOG_FORMAT.
    #[arg(long, global = true, value_name = "FORMAT", value_parser = dxmirror::telemetry::LogFormat::parse)]
    pub(crate) log_format: Option<dxmirror::telemetry::LogFormat>,
    /// What to do.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The subcommands, each run by its file in `commands/`.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Mirror projects once, verify every file, and exit (0 only if every eligible file is mirrored).
    #[command(after_help = crate::commands::exit::TABLE)]
    Sync {
        /// Config file (else $DXMIRROR_CONFIG, else /etc/dxmirror/config.toml).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Only say, per project, the files and bytes a sync would fetch, against the free
        /// space minus disk-reserve (exit 3 if it does not fit); writes nothing.
        #[arg(long)]
        dry_run: bool,
        /// Projects to mirror (default: the config's [[project]] list).
        projects: Vec<ProjectId>,
    },
    /// Run unattended: discover projects, re-list them, mirror what is new, watch the inbox
    /// (SIGHUP reloads the config; SIGTERM/SIGINT stop cleanly with exit status 0).
    Daemon {
        /// Config file (else $DXMIRROR_CONFIG, else /etc/dxmirror/config.toml).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Show what the journal knows: one row per project (state, files, bytes, rate, ETA,
    /// failures, last pass, access expiry), then the daemon (read-only; exit status 0).
    /// --check prints a one-line verdict and exits 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
    Status {
        /// Config file (else $DXMIRROR_CONFIG, else /etc/dxmirror/config.toml).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Only this project (with --files: its files).
        project: Option<ProjectId>,
        /// Machine-readable output (schema in docs/status-json.md).
        #[arg(long)]
        json: bool,
        /// Monitoring check (Nagios plugin convention): a one-line summary first, then the
        /// exit status says OK (0), WARNING (1), CRITICAL (2) or UNKNOWN (3).
        #[arg(long, conflicts_with = "files")]
        check: bool,
        /// The project's files, with their state, size, progress and last error.
        #[arg(long, requires = "project")]
        files: bool,
        /// With --files: only failed and corrupt files.
        #[arg(long, requires = "files")]
        failed: bool,
        /// With --files: only files in this state (pending, fetching, verified, failed, ...).
        #[arg(long, requires = "files", value_name = "STATE")]
        state: Option<String>,
    },
    /// Re-hash mirrored files against platform checksums, journaled chunk digests and recorded
    /// SHA-256s; exits non-zero on any finding. --repair re-fetches only what is damaged.
    Verify {
        /// Config file (else $DXMIRROR_CONFIG, else /etc/dxmirror/config.toml).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Only this project.
        project: Option<ProjectId>,
        /// Put damaged files back into staging and fetch their damaged chunks again (takes the
        /// writer lock).
        #[arg(long)]
        repair: bool,
        /// Ask the running daemon to verify PROJECT now (repairing what is damaged) and return
        /// at once; an error when no daemon runs.
        #[arg(long, requires = "project", conflicts_with_all = ["repair", "json"])]
        queue: bool,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Pause a project (or --all) in the running daemon: its passes stop now and start no
    /// more until `resume`; the pause outlives a restart.
    Pause {
        /// Config file (else $DXMIRROR_CONFIG, else /etc/dxmirror/config.toml).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Every project.
        #[arg(long, conflicts_with = "project")]
        all: bool,
        /// The project to pause.
        #[arg(required_unless_present = "all")]
        project: Option<ProjectId>,
    },
    /// End a pause (of a project, or --all) in the running daemon; the project is queued.
    Resume {
        /// Config file (else $DXMIRROR_CONFIG, else /etc/dxmirror/config.toml).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Every project.
        #[arg(long, conflicts_with = "project")]
        all: bool,
        /// The project to resume.
        #[arg(required_unless_present = "all")]
        project: Option<ProjectId>,
    },
    /// Set the running daemon's download limit (RATE with a unit per second, e.g. 10MiB, or
    /// off) until the next `bwlimit` timetable entry or reload.
    Bwlimit {
        /// Config file (else $DXMIRROR_CONFIG, else /etc/dxmirror/config.toml).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// The rate (512KiB, 10MiB, ...) or off.
        rate: String,
    },
    /// Ask the running daemon to list a project again and mirror what is new, now.
    Relist {
        /// Config file (else $DXMIRROR_CONFIG, else /etc/dxmirror/config.toml).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// The project.
        project: ProjectId,
    },
    /// Print the audit trail: every file fetched, repaired, quarantined, and every project
    /// purged, with when, which platform identity, size and SHA-256 (read-only).
    Audit {
        /// Config file (else $DXMIRROR_CONFIG, else /etc/dxmirror/config.toml).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Only records at or after this date: YYYY-MM-DD (UTC) or RFC 3339.
        #[arg(long)]
        since: Option<String>,
        /// A JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Validate a config file, show the settings in force and check the directories and the
    /// token (never printed); --online also asks the API (whoami, every project).
    #[command(after_help = crate::commands::exit::TABLE)]
    CheckConfig {
        /// Config file (else $DXMIRROR_CONFIG, else /etc/dxmirror/config.toml).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Also ask the API who the token is and describe every configured project.
        #[arg(long)]
        online: bool,
    },
    /// Delete a project's local copy and its journal rows, and write an audit record
    /// (end of a data-use agreement). Without --yes, only shows what would be deleted.
    Purge {
        /// Config file (else $DXMIRROR_CONFIG, else /etc/dxmirror/config.toml).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Really delete.
        #[arg(long)]
        yes: bool,
        /// The project to purge.
        project: ProjectId,
    },
    /// Serve a DNAnexus-compatible sandbox on loopback (for tests, demos and benchmarks).
    Sandbox(dxmirror::sandbox::SandboxArgs),
    /// Mirror the built-in sandbox project into ./dxmirror-demo/ and verify it (no account needed).
    Demo {
        /// Where to put the demo's config, journal and mirror.
        #[arg(long, default_value = "dxmirror-demo")]
        dir: PathBuf,
    },
    /// Print a manifest of a project's mirrored files: md5sum or sha256sum (`md5sum -c` /
    /// `sha256sum -c` from the project directory), dxda (the download agent's manifest JSON;
    /// bzip2 it), tsv or json (every file with its SAMPLE_INFO.txt row, all columns).
    Export {
        /// Config file (else $DXMIRROR_CONFIG, else /etc/dxmirror/config.toml).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// md5sum, sha256sum, dxda, tsv or json.
        #[arg(long)]
        format: dxmirror::export::Format,
        /// The project.
        project: ProjectId,
    },
    /// Print the shell completions for SHELL (the packages install them; for a source
    /// install, e.g. `dxmirror completions bash > /etc/bash_completion.d/dxmirror`).
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the man page, dxmirror(1), in roff (e.g. `dxmirror man | man -l -`).
    Man,
}
