//! Selection, SAMPLE_INFO.txt and purge end to end against the sandbox: the demo dataset's
//! SAMPLE_INFO.txt parses and cross-checks clean against the real listing and drives the
//! filters; `dxmirror purge` deletes exactly one project's copy and journal rows, leaves an
//! audit record, touches nothing else, and deletes nothing without `--yes`.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use dxmirror::journal::JournalReader;
use dxmirror::lock::WriterLock;
use dxmirror::model::{FileId, ProjectId, RemoteFile};
use dxmirror::sandbox::{
    Dataset, FileSpec, FileSpecKind, PartSizes, ProjectSpec, Sandbox, SandboxOptions,
};
use dxmirror::selection::{self, cross_check, select, Filter, SampleInfo, SelectionRules};
use dxmirror::store::RelPath;

use crate::support::{files_under, sandbox_of, Env};

/// Every file under `root` (hidden ones too, symlinks as links) with its length and SHA-256.
fn snapshot(root: &Path, skip: &[PathBuf]) -> BTreeMap<PathBuf, (usize, String)> {
    use sha2::Digest as _;
    let digest = |b: Vec<u8>| (b.len(), hex::encode(sha2::Sha256::digest(&b)));
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = e.path();
            if skip.contains(&path) {
                continue;
            }
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(path);
            } else if ft.is_symlink() {
                let target = std::fs::read_link(&path).unwrap();
                out.insert(path, digest(target.into_os_string().into_encoded_bytes()));
            } else {
                let bytes = std::fs::read(&path).unwrap();
                out.insert(path, digest(bytes));
            }
        }
    }
    out
}

/// The demo project after a real sync: its listing as the journal recorded it, each file's
/// local path, and the text of the mirrored `SAMPLE_INFO.txt`.
struct DemoListing {
    listing: Vec<RemoteFile>,
    paths: BTreeMap<FileId, RelPath>,
    sample_info: String,
}

async fn synced_demo_listing() -> DemoListing {
    let sandbox = Sandbox::start(SandboxOptions::default()).await.unwrap();
    let project = sandbox.projects()[0].clone();
    let env = Env::for_sandbox(&sandbox, vec![project.clone()], "chunk-size = \"64KiB\"");
    let summary = env.sync().await.unwrap();
    assert!(summary.is_ok(), "{summary:#?}");

    let reader = JournalReader::open(&env.state()).unwrap();
    let dir = env
        .mirror()
        .join(reader.project(&project).unwrap().unwrap().dir_name.unwrap());
    let rows = reader.files(&project).unwrap();
    DemoListing {
        listing: rows.iter().map(|r| r.remote()).collect(),
        paths: rows
            .iter()
            .map(|r| (r.file_id.clone(), RelPath::new(&r.rel_path).unwrap()))
            .collect(),
        sample_info: std::fs::read_to_string(dir.join("SAMPLE_INFO.txt")).unwrap(),
    }
}

impl DemoListing {
    /// The names of the files `filter` selects (with the parsed `SAMPLE_INFO.txt`), sorted.
    fn selected_by(&self, filter: Filter) -> Vec<String> {
        let info = SampleInfo::parse(&self.sample_info).unwrap();
        let mut rules = SelectionRules::default();
        rules.push("[filter]", filter);
        let sel = select(&self.listing, &self.paths, &rules, Some(&info));
        assert_eq!(sel.selected.len() + sel.excluded.len(), self.listing.len());
        let mut names: Vec<String> = self
            .listing
            .iter()
            .filter(|f| sel.selected.contains(&f.id))
            .map(|f| f.name.clone())
            .collect();
        names.sort();
        names.dedup();
        names
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

#[tokio::test]
async fn the_demo_sample_info_parses_and_cross_checks_clean_against_the_listing() {
    let demo = synced_demo_listing().await;
    let info_file: Vec<&RemoteFile> = demo
        .listing
        .iter()
        .filter(|f| selection::is_sample_info(f))
        .collect();
    assert_eq!(info_file.len(), 1);
    let info = SampleInfo::parse(&demo.sample_info).unwrap();
    assert!(info.columns().iter().any(|c| c == "sequencing_type"));
    assert_eq!(cross_check(&info, &demo.listing), Vec::<String>::new());
}

#[tokio::test]
async fn a_size_disagreement_in_sample_info_is_reported() {
    let demo = synced_demo_listing().await;
    let tampered = demo.sample_info.replacen("\t70001\t", "\t70002\t", 1);
    assert_ne!(tampered, demo.sample_info);
    let report = cross_check(&SampleInfo::parse(&tampered).unwrap(), &demo.listing);
    assert_eq!(report.len(), 1, "{report:?}");
    assert!(
        report[0].contains("file_size 70002 but the listing says 70001"),
        "{report:?}"
    );
}

#[tokio::test]
async fn sample_info_columns_file_types_and_paths_drive_the_filters() {
    let demo = synced_demo_listing().await;
    // RNA-Seq only: the one RNA-Seq BAM, plus SAMPLE_INFO.txt.
    let rna = demo.selected_by(
        Filter::new(
            &[],
            &[],
            &[],
            BTreeMap::from([("sequencing_type".into(), strings(&["RNA-Seq"]))]),
        )
        .unwrap(),
    );
    assert_eq!(rna, ["SAMPLE_INFO.txt", "SJOS001101_D1.RNA-Seq.bam"]);
    // Germline samples of one subject: its BAM and gVCF with their indexes.
    let germline = demo.selected_by(
        Filter::new(
            &[],
            &[],
            &[],
            BTreeMap::from([
                ("sample_type".into(), strings(&["Germline"])),
                ("subject_name".into(), strings(&["SJBALL020073"])),
            ]),
        )
        .unwrap(),
    );
    assert_eq!(
        germline,
        [
            "SAMPLE_INFO.txt",
            "SJBALL020073_G1.WGS.bam",
            "SJBALL020073_G1.WGS.bam.bai",
            "SJBALL020073_G1.gvcf.gz",
            "SJBALL020073_G1.gvcf.gz.tbi"
        ]
    );
    // Types and paths: gVCFs and indexes under restricted/, no BAM indexes.
    let typed = demo.selected_by(
        Filter::new(
            &strings(&["restricted/**"]),
            &strings(&["restricted/bam"]),
            &strings(&["gVCF", "index"]),
            BTreeMap::new(),
        )
        .unwrap(),
    );
    assert_eq!(
        typed,
        [
            "SAMPLE_INFO.txt",
            "SJBALL020073_G1.gvcf.gz",
            "SJBALL020073_G1.gvcf.gz.tbi",
            "SJOS001101_G1.gvcf.gz"
        ]
    );
}

#[tokio::test]
async fn purge_deletes_exactly_one_project_and_audits_it() {
    let mk = |name: &str| {
        ProjectSpec::new(name)
            .file(
                FileSpec::new("/restricted/bam", "x.bam", 200 << 10)
                    .kind(FileSpecKind::PartsMd5(PartSizes::Uniform(100 << 10))),
            )
            .file(FileSpec::new("/", "SAMPLE_INFO.txt", 100))
            .file(FileSpec::new("/restricted/CNV", "x.CNV.txt", 5000))
    };
    let sandbox =
        sandbox_of(Dataset::build(44, vec![mk("request A"), mk("request B")]).unwrap()).await;
    let projects = sandbox.projects();
    let (pa, pb) = (projects[0].clone(), projects[1].clone());
    let env = Env::for_sandbox(
        &sandbox,
        vec![pa.clone(), pb.clone()],
        "chunk-size = \"64KiB\"",
    );
    let summary = env.sync().await.unwrap();
    assert!(summary.is_ok(), "{summary:#?}");

    let dir_of = |p: &ProjectId| {
        let reader = JournalReader::open(&env.state()).unwrap();
        env.mirror()
            .join(reader.project(p).unwrap().unwrap().dir_name.unwrap())
    };
    let (dir_a, dir_b) = (dir_of(&pa), dir_of(&pb));
    assert_eq!(files_under(&dir_a).len(), 4, "{:?}", files_under(&dir_a)); // 3 files + SHA256SUMS
    let bytes_a: u64 = snapshot(&dir_a, &[]).values().map(|v| v.0 as u64).sum();
    let state = env.state();
    // Everything but the purged directory, the journal and the lock file (which records the
    // pid of its latest holder).
    let keep_out = [
        dir_a.clone(),
        state.clone(),
        env.mirror().join(".dxmirror.lock"),
    ];
    let others_before = snapshot(env.dir.path(), &keep_out);
    assert!(others_before.keys().any(|p| p.starts_with(&dir_b)));

    // Without --yes: shows the plan, deletes nothing.
    let out = env.bin(&["purge", pa.as_str()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(stdout.contains("refusing without --yes"), "{stdout}");
    assert!(stdout.contains(&dir_a.display().to_string()), "{stdout}");
    let n_entries = snapshot(&dir_a, &[]).len();
    assert!(
        stdout.contains(&format!(": {n_entries} files,")),
        "{stdout}"
    );
    assert!(stdout.contains(&format!("({bytes_a} bytes)")), "{stdout}");
    assert!(stdout.contains("still listed in the config"), "{stdout}");
    assert_eq!(files_under(&dir_a).len(), 4);
    assert!(JournalReader::open(&state)
        .unwrap()
        .project(&pa)
        .unwrap()
        .is_some());

    // A second writer holds the lock: refused, nothing deleted.
    {
        let cfg = env.config();
        let _held = WriterLock::acquire(&cfg.state_dir, &cfg.mirror_root).unwrap();
        let out = env.bin(&["purge", "--yes", pa.as_str()]);
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("already holds"));
        assert!(dir_a.is_dir());
    }

    let started_ms = dxmirror::clock::now_ms();
    let out = env.bin(&["purge", "--yes", pa.as_str()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("audit record"), "{stdout}");
    // A person reads it: the user by name with the uid, the time in ISO 8601, no epoch ms.
    assert!(
        stdout.contains(" (uid ") && !stdout.contains(" ms: "),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            " at {}",
            &dxmirror::clock::local_iso(started_ms)[..4]
        )),
        "{stdout}"
    );
    assert!(!dir_a.exists());
    assert_eq!(
        snapshot(env.dir.path(), &keep_out),
        others_before,
        "something outside the purged project changed"
    );

    let reader = JournalReader::open(&state).unwrap();
    assert!(reader.project(&pa).unwrap().is_none());
    assert!(reader.files(&pa).unwrap().is_empty());
    assert_eq!(reader.files(&pb).unwrap().len(), 3);
    // The syncs above wrote `fetched` records; the purge wrote one `purged`.
    let audit: Vec<_> = reader
        .audit_since(started_ms - 1000)
        .unwrap()
        .into_iter()
        .filter(|r| r.action != "fetched")
        .collect();
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(audit[0].action, "purged");
    assert_eq!(audit[0].project_id, pa);
    assert_eq!(audit[0].size, Some(bytes_a));
    assert!(audit[0].identity.as_deref().unwrap().contains("(uid "));
    assert!(
        audit[0].detail.contains(&dir_a.display().to_string()),
        "{}",
        audit[0].detail
    );

    // Purging again: the journal no longer knows it; nothing else happens.
    let out = env.bin(&["purge", "--yes", pa.as_str()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not in the journal"));
    let n_purged = |r: &JournalReader| {
        r.audit_since(0)
            .unwrap()
            .iter()
            .filter(|a| a.action == "purged")
            .count()
    };
    assert_eq!(n_purged(&reader), 1);
    assert_eq!(snapshot(env.dir.path(), &keep_out), others_before);
}
