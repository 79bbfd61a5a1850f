//! Disk space: a file waits (and is reported) while its remaining bytes do not fit in the free
//! space minus `disk-reserve`; a write failing with ENOSPC pauses the transfer, which resumes
//! by itself when space returns. The tmpfs test needs root and `DXMIRROR_TEST_TMPFS=1`.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use dxmirror::journal::JournalReader;
use dxmirror::sandbox::{Dataset, FileSpec, ProjectSpec, Sandbox, SandboxOptions};

use crate::support::{assert_mirrored, sandbox_of, wait_for, Env, Gate};

fn dataset(n: usize, size: u64) -> Dataset {
    let mut spec = ProjectSpec::new("SJC-DISK");
    for i in 0..n {
        spec = spec.file(FileSpec::new("/restricted/bam", &format!("s{i}.bam"), size));
    }
    Dataset::build(5, vec![spec]).unwrap()
}

/// Journal events whose message contains `needle`.
fn events_with(env: &Env, needle: &str) -> Vec<String> {
    let Some(reader) = env.reader() else {
        return Vec::new();
    };
    reader
        .recent_events(1000)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e.message.contains(needle))
        .map(|e| e.message)
        .collect()
}

#[tokio::test]
async fn a_file_that_does_not_fit_waits_and_is_reported_without_fetching() {
    let sandbox = sandbox_of(dataset(1, 1 << 20)).await;
    let project = sandbox.projects()[0].clone();
    // No disk has a PiB free: the file can never start.
    let env = Env::for_sandbox(
        &sandbox,
        vec![project.clone()],
        "disk-reserve = \"1024TiB\"\ndisk-poll = \"20ms\"\n",
    );
    let env = std::sync::Arc::new(env);
    let run = {
        let env = env.clone();
        tokio::spawn(async move { env.sync().await })
    };
    let reason = wait_for("the file's waiting reason", Duration::from_secs(30), || {
        let reader = JournalReader::open(&env.state()).ok()?;
        let files = reader.files(&project).ok()?;
        files
            .into_iter()
            .find_map(|f| f.reason.filter(|r| r.contains("waiting for disk space")))
    })
    .await;
    assert!(reason.contains("need 1.0 MiB"), "{reason}");
    assert!(reason.contains("reserve 1024.0 TiB"), "{reason}");
    assert_eq!(events_with(&env, "waiting for disk space").len(), 1);
    assert!(!run.is_finished(), "the sync must wait, not fail");
    let stats = sandbox.stats();
    assert_eq!(
        stats.bytes_served, 0,
        "nothing may be fetched while waiting"
    );
    run.abort();
    let _ = run.await;
}

/// Unmounts the tmpfs however the test ends.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn mount(args: &[&str], dir: &Path) -> Result<(), String> {
    let out = Command::new("mount")
        .args(args)
        .arg(dir)
        .output()
        .map_err(|e| format!("cannot run mount: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "mount {args:?} {} refused: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

#[tokio::test]
async fn a_full_tmpfs_pauses_the_sync_until_it_is_remounted_larger() {
    if !Gate::Tmpfs.enabled("diskspace::a_full_tmpfs_pauses_the_sync_until_it_is_remounted_larger")
    {
        return;
    }
    // Three 4 MiB files at 4 MiB/s into an 8 MiB filesystem.
    let sandbox = Sandbox::start(SandboxOptions {
        dataset: dataset(3, 4 << 20),
        bandwidth: Some(4 << 20),
        ..SandboxOptions::default()
    })
    .await
    .unwrap();
    let project = sandbox.projects()[0].clone();
    let env = Env::for_sandbox(
        &sandbox,
        vec![project.clone()],
        "disk-reserve = \"512KiB\"\ndisk-poll = \"20ms\"\nchunk-size = \"1MiB\"\nprogress-step = \"256KiB\"\n",
    );
    let mirror = env.mirror();
    std::fs::create_dir_all(&mirror).unwrap();
    if let Err(e) = mount(
        &["-t", "tmpfs", "-o", "size=8m,mode=0750", "tmpfs"],
        &mirror,
    ) {
        panic!("{e}");
    }
    let _unmount = Unmount(mirror.clone());
    let total = dxmirror::store::free_space(&mirror).unwrap();
    assert!(total <= 8 << 20, "tmpfs reports {total} bytes free");

    let env = std::sync::Arc::new(env);
    let run = {
        let env = env.clone();
        tokio::spawn(async move { env.sync().await })
    };
    // Once the first file has bytes on disk, something else fills the filesystem.
    wait_for("the first bytes on disk", Duration::from_secs(60), || {
        (dxmirror::store::free_space(&mirror).ok()? + (512 << 10) <= total).then_some(())
    })
    .await;
    let mut filler = std::fs::File::create(mirror.join("filler")).unwrap();
    let block = vec![0u8; 64 << 10];
    loop {
        match filler.write_all(&block) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(28) => break,
            Err(e) => panic!("filling the tmpfs: {e}"),
        }
    }
    drop(filler);

    // The sync neither fails nor finishes: the running file is paused, the others wait.
    wait_for("a disk-full report", Duration::from_secs(60), || {
        (!events_with(&env, "disk full").is_empty()).then_some(())
    })
    .await;
    wait_for(
        "a waiting-for-space report",
        Duration::from_secs(60),
        || (!events_with(&env, "waiting for disk space").is_empty()).then_some(()),
    )
    .await;
    assert!(!run.is_finished(), "the sync must pause, not end");
    {
        let reader = JournalReader::open(&env.state()).unwrap();
        let done = reader
            .files(&project)
            .unwrap()
            .into_iter()
            .filter(|f| f.state.is_finished())
            .count();
        assert!(done < 3, "{done} files done on a full disk");
    }

    // Space returns: everything finishes by itself, verified and byte-identical.
    if let Err(e) = mount(&["-o", "remount,size=64m"], &mirror) {
        panic!("{e}");
    }
    let summary = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the sync resumes and finishes once space returns")
        .unwrap()
        .unwrap();
    assert!(summary.is_ok(), "{summary:#?}");
    assert_eq!(assert_mirrored(&sandbox, &env, &project), 3);
}
