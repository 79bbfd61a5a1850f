//! `dxmirror completions SHELL` and `dxmirror man`: the shell completions (clap_complete) and
//! the man page (clap_mangen), generated from the clap definitions in `cli.rs`, on standard
//! output. The packages ship the same text (`.ci/package` generates it with these commands).

use std::io::Write as _;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::CommandFactory as _;

use crate::cli::Cli;

/// Prints the completions for `shell`.
pub(crate) fn completions(shell: clap_complete::Shell) -> anyhow::Result<ExitCode> {
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "dxmirror", &mut out);
    std::io::stdout()
        .write_all(&out)
        .context("writing the completions")?;
    Ok(ExitCode::SUCCESS)
}

/// The man page dxmirror(1): the top-level help with every subcommand listed.
pub(crate) fn man_page() -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    clap_mangen::Man::new(Cli::command())
        .render(&mut out)
        .context("rendering the man page")?;
    Ok(out)
}

/// Prints the man page.
pub(crate) fn man() -> anyhow::Result<ExitCode> {
    std::io::stdout()
        .write_all(&man_page()?)
        .context("writing the man page")?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_man_page_names_every_subcommand() {
        let page = String::from_utf8(man_page().unwrap()).unwrap();
        assert!(page.contains(".TH dxmirror 1"), "{page}");
        for sub in Cli::command().get_subcommands() {
            // roff writes a hyphen as `\-`.
            let name = sub.get_name().replace('-', "\\-");
            assert!(page.contains(&name), "{name} missing from the man page");
        }
    }
}
