//! `dxmirror sandbox`: serves the DNAnexus-compatible sandbox on loopback until stopped.

use std::process::ExitCode;

use anyhow::Context;

use dxmirror::sandbox::SandboxArgs;

/// Runs `dxmirror sandbox [OPTIONS]`.
pub(crate) async fn run(args: SandboxArgs) -> anyhow::Result<ExitCode> {
    dxmirror::sandbox::serve(args)
        .await
        .context("sandbox failed")?;
    Ok(ExitCode::SUCCESS)
}
