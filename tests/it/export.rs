//! `dxmirror export` from the real binary on a mirrored demo project: `md5sum -c` and
//! `sha256sum -c` accept the md5sum and sha256sum manifests from the project directory, the
//! dxda manifest parses as one (and names every mirrored file), and tsv and json join each
//! file with its SAMPLE_INFO.txt row, every column.
#![allow(clippy::unwrap_used)]

use std::process::Command;

use dxmirror::journal::JournalReader;
use dxmirror::sandbox::{Sandbox, SandboxOptions};
use dxmirror::selection::SampleInfo;

use crate::support::Env;

#[tokio::test]
async fn exports_check_with_coreutils_parse_as_dxda_and_join_sample_info() {
    let sandbox = Sandbox::start(SandboxOptions::default()).await.unwrap();
    let project = sandbox.projects()[0].clone();
    let env = Env::for_sandbox(&sandbox, vec![project.clone()], "chunk-size = \"64KiB\"");
    assert!(env.sync().await.unwrap().is_ok());
    let reader = JournalReader::open(&env.state()).unwrap();
    let dir = env
        .mirror()
        .join(reader.project(&project).unwrap().unwrap().dir_name.unwrap());
    let mirrored = dxmirror::export::mirrored(reader.files(&project).unwrap());
    assert!(mirrored.len() >= 10);
    let export = |format: &str| {
        let out = env.bin(&["export", project.as_str(), "--format", format]);
        assert!(out.status.success(), "{format}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };

    for (format, tool) in [("md5sum", "md5sum"), ("sha256sum", "sha256sum")] {
        let text = export(format);
        assert_eq!(text.lines().count(), mirrored.len(), "{text}");
        let list = env.dir.path().join(format!("{format}.txt"));
        std::fs::write(&list, &text).unwrap();
        let check = Command::new(tool)
            .arg("-c")
            .arg(&list)
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(check.status.success(), "{tool} -c: {check:?}\n{text}");
        // And it catches a damaged file.
        let victim = dir.join(&mirrored[0].rel_path);
        let good = std::fs::read(&victim).unwrap();
        let mut bad = good.clone();
        bad[0] ^= 1;
        std::fs::write(&victim, &bad).unwrap();
        let check = Command::new(tool)
            .arg("-c")
            .arg(&list)
            .current_dir(&dir)
            .output()
            .unwrap();
        std::fs::write(&victim, &good).unwrap();
        assert!(!check.status.success(), "{tool} -c missed a flipped byte");
    }

    let dxda = export("dxda");
    let named = dxmirror::inbox::parse_manifest_json(dxda.as_bytes()).unwrap();
    assert_eq!(named.len(), mirrored.len());
    assert!(named.iter().all(|(p, _)| p == &project));

    let info =
        SampleInfo::parse(&std::fs::read_to_string(dir.join("SAMPLE_INFO.txt")).unwrap()).unwrap();
    let tsv = export("tsv");
    let mut lines = tsv.lines();
    let header: Vec<&str> = lines.next().unwrap().split('\t').collect();
    assert_eq!(&header[..3], ["path", "file_id", "size"]);
    for c in info.columns() {
        assert!(
            header.iter().any(|h| h == c || *h == format!("sample_{c}")),
            "{c} missing from {header:?}"
        );
    }
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split('\t').collect()).collect();
    assert_eq!(rows.len(), mirrored.len());
    assert!(rows.iter().all(|r| r.len() == header.len()));
    // Every file with a SAMPLE_INFO row by file_id carries that row's cells.
    let mut joined = 0;
    for r in &rows {
        let id: dxmirror::model::FileId = r[1].parse().unwrap();
        if let Some(sample) = info.row_by_id(&id) {
            assert_eq!(&r[7..], sample.cells.as_slice(), "{r:?}");
            joined += 1;
        }
    }
    assert!(joined >= 5, "only {joined} rows joined:\n{tsv}");
    println!(
        "export --format tsv (first lines):\n{}",
        tsv.lines().take(4).collect::<Vec<_>>().join("\n")
    );

    let json: Vec<serde_json::Map<String, serde_json::Value>> =
        serde_json::from_str(&export("json")).unwrap();
    assert_eq!(json.len(), mirrored.len());
    assert!(json
        .iter()
        .all(|o| o.contains_key("sha256") && o.len() == header.len()));

    let out = env.bin(&["export", project.as_str(), "--format", "csv"]);
    assert!(!out.status.success());
}
