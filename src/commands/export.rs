//! `dxmirror export PROJECT --format md5sum|sha256sum|dxda|tsv|json`: a manifest of the
//! project's mirrored files on standard output, from the journal (read-only; works while
//! the daemon runs). The rendering is the library's `export`; this reads the journal, the
//! project's `SAMPLE_INFO.txt` and, for `md5sum`, the files whose MD5 the platform did not
//! state.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use dxmirror::config::Config;
use dxmirror::export::{self, Format};
use dxmirror::journal::JournalReader;
use dxmirror::model::ProjectId;
use dxmirror::selection::{SampleInfo, SAMPLE_INFO_NAME};

use super::config_path;

/// Runs `dxmirror export`.
pub(crate) fn run(
    config: Option<PathBuf>,
    project: ProjectId,
    format: Format,
) -> anyhow::Result<ExitCode> {
    let cfg = Config::load(&config_path(config))?;
    let reader = JournalReader::open(&cfg.state_dir)?;
    let row = reader
        .project(&project)?
        .with_context(|| format!("{project} is not in the journal"))?;
    let dir_name = row
        .dir_name
        .with_context(|| format!("{project} has no local directory yet"))?;
    let dir = cfg.mirror_root.join(dir_name);
    let rows = export::mirrored(reader.files(&project)?);
    // The project's SAMPLE_INFO.txt as mirrored (the root's first, as the pass picks it).
    let info = rows
        .iter()
        .filter(|r| r.name == SAMPLE_INFO_NAME)
        .min_by_key(|r| r.rel_path.matches('/').count())
        .and_then(|r| std::fs::read_to_string(dir.join(&r.rel_path)).ok())
        .and_then(|text| match SampleInfo::parse(&text) {
            Ok(i) => Some(i),
            Err(e) => {
                eprintln!("warning: SAMPLE_INFO.txt not joined: {e}");
                None
            }
        });
    let text = export::render(format, project.as_str(), &rows, info.as_ref(), &mut |r| {
        export::md5_of_file(&dir.join(&r.rel_path)).map_err(|e| e.to_string())
    })?;
    std::io::stdout()
        .write_all(text.as_bytes())
        .context("writing the export")?;
    Ok(ExitCode::SUCCESS)
}
