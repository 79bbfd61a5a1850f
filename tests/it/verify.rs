//! `dxmirror verify`: bit rot in finished and in staged files is found (non-zero exit), and
//! `--repair` fetches only the damaged chunks again.
#![allow(clippy::unwrap_used)]

use dxmirror::journal::{FileKey, FileState, JournalReader};
use dxmirror::model::{ByteRange, FileId};
use dxmirror::sandbox::{Dataset, FileSpec, FileSpecKind, PartSizes, ProjectSpec};

use crate::support::{
    assert_matches_dataset, assert_mirrored, kill_when_served, served_env, spawn_sync,
    SandboxProcess,
};

fn flip(path: &std::path::Path, at: u64) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at as usize] ^= 0x01;
    std::fs::write(path, bytes).unwrap();
}

#[tokio::test]
async fn bit_rot_in_finished_files_is_found_and_only_damaged_chunks_refetched() {
    let spec = ProjectSpec::new("rot")
        .file(
            FileSpec::new("/restricted/bam", "parts.bam", 1 << 20)
                .kind(FileSpecKind::PartsMd5(PartSizes::Uniform(256 << 10))),
        )
        .file(
            FileSpec::new("/restricted/bam", "link.bam", 1 << 20)
                .kind(FileSpecKind::SymlinkWholeMd5),
        )
        .file(
            FileSpec::new("/restricted/CNV", "plain.txt", 300 << 10)
                .kind(FileSpecKind::NoChecksum(PartSizes::Uniform(300 << 10))),
        );
    let (sandbox, project, env) = served_env(
        Dataset::build(12, vec![spec]).unwrap(),
        "chunk-size = \"64KiB\"",
    )
    .await;
    assert!(env.sync().await.unwrap().is_ok());
    let out = env.bin_async(&["verify"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let served_before = sandbox.stats();

    // Flip one byte in each file, at a known chunk.
    let dir = env.mirror().join("rot");
    let mut damaged: Vec<(FileId, u64)> = Vec::new();
    for f in sandbox.files(&project) {
        let at = 100_000 + 7;
        flip(
            &dir.join(f.folder.trim_start_matches('/')).join(&f.name),
            at,
        );
        damaged.push((f.id.clone(), at));
    }

    let out = env.bin_async(&["verify", "--json"]).await;
    assert!(!out.status.success(), "damage went unnoticed");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let findings = report["findings"].as_array().unwrap();
    for (id, at) in &damaged {
        let chunk_idx = at / (64 << 10);
        assert!(
            findings.iter().any(|f| f["file_id"] == id.as_str()
                && f["finding"]["kind"] == "chunk"
                && f["finding"]["chunk_idx"] == chunk_idx),
            "no chunk finding for {id}: {findings:#?}"
        );
        assert!(findings
            .iter()
            .any(|f| f["file_id"] == id.as_str() && f["finding"]["kind"] == "sha256"));
    }
    // The multi-part file's damaged part is named by its platform checksum.
    assert!(findings
        .iter()
        .any(|f| f["finding"]["kind"] == "segment" && f["finding"]["part"] == 1));

    let out = env.bin_async(&["verify", "--repair"]).await;
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_mirrored(&sandbox, &env, &project);
    assert!(env.bin_async(&["verify"]).await.status.success());

    // Only the damaged 64 KiB chunks were fetched again.
    let after = sandbox.stats();
    for (id, at) in &damaged {
        let chunk = ByteRange::new(at / (64 << 10) * (64 << 10), 64 << 10);
        let before: u64 = served_before.bytes_served(id.as_str());
        let again = after.bytes_served(id.as_str()) - before;
        assert_eq!(again, chunk.len, "{id}: {again} bytes fetched again");
        let twice = after.served_more_than_once(id.as_str());
        assert_eq!(twice, vec![chunk], "{id}");
    }
    let reader = JournalReader::open(&env.state()).unwrap();
    for (id, _) in &damaged {
        let row = reader.file(&FileKey::new(&project, id)).unwrap().unwrap();
        assert!(matches!(
            row.state,
            FileState::Verified | FileState::Unverified
        ));
    }
}

#[tokio::test]
async fn damage_to_a_staged_file_is_found_by_verify_and_repaired() {
    const SIZE: u64 = 48 << 20;
    let sandbox = SandboxProcess::start(&["--dataset", "large:48MiB", "--bandwidth", "16MiB"]);
    let (project, env) = sandbox.env("chunk-size = \"2MiB\"\nprogress-step = \"1MiB\"\nmax-connections = 4\nmax-connections-per-file = 2\n");
    kill_when_served(&sandbox, spawn_sync(&env), SIZE / 2).await;

    let reader = JournalReader::open(&env.state()).unwrap();
    let dir_name = reader.project(&project).unwrap().unwrap().dir_name.unwrap();
    let staging = env.mirror().join(&dir_name).join(".dxmirror/staging");
    let mut target = None;
    for row in reader.files(&project).unwrap() {
        let plan = reader.load_plan(&row.key()).unwrap().unwrap();
        let path = staging.join(format!("{}.part", row.file_id));
        if let Some((c, _)) = plan
            .plan
            .chunks
            .iter()
            .zip(&plan.chunk_done)
            .find(|(c, (d, _))| *d == c.range.len)
        {
            if path.exists() {
                target = Some((row.file_id.clone(), path, c.idx, c.range.offset + 5));
                break;
            }
        }
    }
    drop(reader);
    let (file_id, path, chunk_idx, at) = target.expect("a staged file with a complete chunk");
    flip(&path, at);

    let out = env.bin_async(&["verify", "--json"]).await;
    assert!(
        !out.status.success(),
        "damage in a staged file went unnoticed"
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["file_id"] == file_id.as_str()
                && f["place"] == "staged"
                && f["finding"]["chunk_idx"] == chunk_idx),
        "{report:#}"
    );
    let out = env.bin_async(&["verify", "--repair"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_matches_dataset(&env, &project, &Dataset::large(SIZE));
}

/// Large files are verified in independent pieces (a sequential SHA-256 pass, part MD5s in
/// SIMD lanes or one stream each): every kind of damage is still found, named by its part
/// and chunk, and a clean mirror verifies clean.
#[tokio::test]
async fn large_files_verified_in_pieces_find_damage_in_every_part_kind() {
    const MIB: u64 = 1 << 20;
    let spec = ProjectSpec::new("big")
        .file(
            // 20 parts: hashed together in SIMD lanes.
            FileSpec::new("/restricted/bam", "parts.bam", 20 * MIB + 12_345)
                .kind(FileSpecKind::PartsMd5(PartSizes::Uniform(MIB))),
        )
        .file(
            // Two parts: one MD5 stream each.
            FileSpec::new("/restricted/bam", "two.bam", 17 * MIB).kind(FileSpecKind::PartsMd5(
                PartSizes::Explicit(vec![9 * MIB, 8 * MIB]),
            )),
        )
        .file(
            FileSpec::new("/restricted/bam", "link.bam", 17 * MIB + 1)
                .kind(FileSpecKind::SymlinkWholeMd5),
        )
        .file(
            FileSpec::new("/restricted/bam", "single.bam", 18 * MIB).kind(FileSpecKind::SinglePart),
        );
    let (sandbox, project, env) = served_env(
        Dataset::build(13, vec![spec]).unwrap(),
        "chunk-size = \"4MiB\"",
    )
    .await;
    assert!(env.sync().await.unwrap().is_ok());
    let out = env.bin_async(&["verify", "--json"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let total: u64 = sandbox.files(&project).iter().map(|f| f.size).sum();
    assert_eq!(report["bytes_checked"], total);
    assert_eq!(report["files_checked"], 4);

    // One flipped byte per file, late in it (part 15 of the 20, the second of two parts).
    let dir = env.mirror().join("big");
    let at = 14 * MIB + 777;
    let mut damaged = Vec::new();
    for f in sandbox.files(&project) {
        flip(
            &dir.join(f.folder.trim_start_matches('/')).join(&f.name),
            at,
        );
        damaged.push(f);
    }
    let out = env.bin_async(&["verify", "--json"]).await;
    assert!(!out.status.success(), "damage went unnoticed");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let findings = report["findings"].as_array().unwrap();
    let of = |name: &str, kind: &str| -> Vec<serde_json::Value> {
        let id = damaged.iter().find(|f| f.name == name).unwrap().id.as_str();
        findings
            .iter()
            .filter(|f| f["file_id"] == id && f["finding"]["kind"] == kind)
            .map(|f| f["finding"].clone())
            .collect()
    };
    for (name, part) in [
        ("parts.bam", Some(15)),
        ("two.bam", Some(2)),
        ("link.bam", None),
        ("single.bam", Some(1)),
    ] {
        let segments = of(name, "segment");
        assert_eq!(segments.len(), 1, "{name}: {findings:#?}");
        assert_eq!(segments[0]["part"], serde_json::json!(part), "{name}");
        let chunks = of(name, "chunk");
        assert_eq!(chunks.len(), 1, "{name}: {findings:#?}");
        let (off, len) = (
            chunks[0]["offset"].as_u64().unwrap(),
            chunks[0]["len"].as_u64().unwrap(),
        );
        assert!(off <= at && at < off + len, "{name}: {chunks:?}");
        assert_eq!(of(name, "sha256").len(), 1, "{name}");
        assert!(of(name, "size").is_empty(), "{name}");
    }
    assert_eq!(findings.len(), 12, "{findings:#?}");
}
