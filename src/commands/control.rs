//! `dxmirror pause|resume|bwlimit|relist` and `verify --queue`: one request to the running
//! daemon over its control socket (`ipc::ask`), its answer printed; exit status 0 when the
//! daemon did it, 1 when it refused or no daemon runs.

use std::path::PathBuf;
use std::process::ExitCode;

use dxmirror::config::Config;
use dxmirror::ipc::{self, Request, Response};

use super::config_path;

/// Sends `request` to the daemon of the config's state directory and prints its answer.
pub(crate) async fn run(config: Option<PathBuf>, request: Request) -> anyhow::Result<ExitCode> {
    let cfg = Config::load(&config_path(config))?;
    let socket = ipc::socket_path(&cfg.state_dir);
    match ipc::ask(&socket, &request).await? {
        Response::Done { message } => {
            println!("{message}");
            Ok(ExitCode::SUCCESS)
        }
        Response::Error { message } => {
            eprintln!("error: the daemon refused: {message}");
            Ok(ExitCode::FAILURE)
        }
        Response::Status(s) => {
            println!("{}", serde_json::to_string_pretty(&s)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}
