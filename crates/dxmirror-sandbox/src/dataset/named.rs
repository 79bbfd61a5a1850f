//! The datasets `--dataset` knows by name: the St. Jude demo (every file kind, a
//! `SAMPLE_INFO.txt`, an archived and an open file), `large`, `chaos`, `small`, `many` and
//! `mixed` for the kill tests and the benchmark.

use std::collections::BTreeSet;

use md5::Digest as _;

use super::{
    parse_size, BuiltPart, Dataset, DatasetError, FileSpec, FileSpecKind, PartSizes, ProjectSpec,
    BASE_TIME_MS,
};
use crate::model::{ByteRange, ChecksumType, ProjectId};

impl Dataset {
    /// The St. Jude demo: one data-request project (tens of MB) covering every file kind.
    pub fn stjude_demo() -> Dataset {
        let mib = 1u64 << 20;
        let t = |days: i64| BASE_TIME_MS + days * 86_400_000;
        let mut files = vec![
            FileSpec::new(
                "/restricted/bam",
                "SJBALL020073_D1.WGS.bam",
                9 * mib + 12_345,
            )
            .kind(FileSpecKind::PartsMd5(PartSizes::Explicit(vec![
                4 * mib,
                3 * mib + 777,
                mib,
                mib - 777 + 12_345,
            ])))
            .times(t(1), t(1)),
            FileSpec::new("/restricted/bam", "SJBALL020073_D1.WGS.bam.bai", 70_001)
                .kind(FileSpecKind::PartsMd5(PartSizes::Uniform(5 * mib)))
                .times(t(1), t(1)),
            FileSpec::new("/restricted/bam", "SJBALL020073_G1.WGS.bam", 6 * mib + 3)
                .kind(FileSpecKind::SymlinkWholeMd5)
                .times(t(2), t(2)),
            FileSpec::new("/restricted/bam", "SJBALL020073_G1.WGS.bam.bai", 48_000)
                .kind(FileSpecKind::SymlinkWholeMd5)
                .times(t(2), t(2)),
            FileSpec::new(
                "/restricted/bam",
                "SJOS001101_D1.RNA-Seq.bam",
                5 * mib + 999,
            )
            .kind(FileSpecKind::SinglePart)
            .times(t(3), t(3)),
            FileSpec::new(
                "/restricted/gVCF",
                "SJBALL020073_G1.gvcf.gz",
                2 * mib + 4097,
            )
            .kind(FileSpecKind::PartsChecksum(
                ChecksumType::Crc32,
                PartSizes::Uniform(mib),
            ))
            .times(t(4), t(4)),
            FileSpec::new("/restricted/gVCF", "SJBALL020073_G1.gvcf.gz.tbi", 33_333)
                .kind(FileSpecKind::PartsChecksum(
                    ChecksumType::Crc32c,
                    PartSizes::Uniform(mib),
                ))
                .times(t(4), t(4)),
            FileSpec::new("/restricted/gVCF", "SJOS001101_G1.gvcf.gz", 3 * mib + 1)
                .kind(FileSpecKind::PartsChecksum(
                    ChecksumType::Crc64Nvme,
                    PartSizes::Explicit(vec![2 * mib, mib + 1]),
                ))
                .times(t(5), t(5)),
            FileSpec::new(
                "/restricted/Somatic_VCF",
                "SJBALL020073_D1.somatic.vcf.gz",
                1_500_000,
            )
            .kind(FileSpecKind::PartsChecksum(
                ChecksumType::Sha1,
                PartSizes::Uniform(mib),
            ))
            .times(t(6), t(6)),
            FileSpec::new(
                "/restricted/Somatic_VCF",
                "SJOS001101_D1.somatic.vcf.gz",
                1_200_000,
            )
            .kind(FileSpecKind::PartsChecksum(
                ChecksumType::Sha256,
                PartSizes::Uniform(mib),
            ))
            .times(t(6), t(6)),
            FileSpec::new("/restricted/CNV", "SJBALL020073_D1.CNV.txt", 250_000)
                .kind(FileSpecKind::NoChecksum(PartSizes::Uniform(mib)))
                .times(t(7), t(7)),
            FileSpec::new("/restricted/CNV", "SJOS001101_D1.CNV.txt", 0).times(t(7), t(7)),
            FileSpec::new(
                "/restricted/CNV",
                "SJOS001101 D1 Zürich ß 試料.CNV.txt",
                77_777,
            )
            .times(t(8), t(8)),
            FileSpec::new("/restricted/CNV", "SJBALL020073_D1.segments.txt", 10_000)
                .times(t(8), t(8)),
            FileSpec::new("/restricted/CNV", "SJBALL020073_D1.segments.txt", 12_000)
                .times(t(9), t(9)),
            FileSpec::new("/restricted/bam", "SJBALL020074_D1.WGS.bam", 3 * mib)
                .archival("archived")
                .times(t(0), t(0)),
            FileSpec::new("/restricted/bam", "SJBALL020075_D1.WGS.bam", 0)
                .state("open")
                .times(t(10), t(10)),
        ];
        let mut ds = Dataset::new(2026);
        let project = ProjectSpec::new("SJ Data Request 2026-001").tag("sjcp-project-data");
        let pid = match ds.add_project(project) {
            Ok(pid) => pid,
            Err(_) => return ds,
        };
        // Data file ids are needed for SAMPLE_INFO.txt, so fix them before adding it.
        for f in &mut files {
            f.id = Some(ds.new_file_id());
        }
        let sample_info = sample_info_text(&files);
        let mut info = FileSpec::new("/", "SAMPLE_INFO.txt", sample_info.len() as u64)
            .times(t(11), t(11))
            .id(ds.new_file_id());
        info.kind = FileSpecKind::SinglePart;
        files.push(info);
        // Built-in specs are valid by construction; a failure here would be a bug in the table.
        let _ = ds.add_files(&pid, files);
        ds.set_literal_content(&pid, "/", "SAMPLE_INFO.txt", sample_info.into_bytes());
        ds
    }

    /// Large dataset for benchmarks: about `total` bytes in three files (96 MiB parts; a
    /// parts-less symlink; one single huge part).
    pub fn large(total: u64) -> Dataset {
        let third = (total / 3).max(1);
        let files = vec![
            FileSpec::new("/restricted/bam", "LARGE_parts.bam", third)
                .kind(FileSpecKind::PartsMd5(PartSizes::Uniform(96 << 20))),
            FileSpec::new("/restricted/bam", "LARGE_symlink.bam", third)
                .kind(FileSpecKind::SymlinkWholeMd5)
                .times(BASE_TIME_MS + 1, BASE_TIME_MS + 1),
            FileSpec::new(
                "/restricted/bam",
                "LARGE_single_part.bam",
                total - 2 * third,
            )
            .kind(FileSpecKind::SinglePart)
            .times(BASE_TIME_MS + 2, BASE_TIME_MS + 2),
        ];
        Dataset::data_request("SJ Data Request LARGE", 7, files)
    }

    /// `n` files of `size` bytes each (one md5 part), spread over folders of 1000.
    pub fn many_files(name: &str, n: usize, size: u64) -> Dataset {
        let mut p = ProjectSpec::new(name).tag("sjcp-project-data");
        p.files = (0..n)
            .map(|i| {
                FileSpec::new(
                    &format!("/restricted/d{:03}", i / 1000),
                    &format!("f{i:06}.bin"),
                    size,
                )
                .times(BASE_TIME_MS + i as i64, BASE_TIME_MS + i as i64)
            })
            .collect();
        Dataset::build(11, vec![p]).unwrap_or_else(|_| Dataset::new(11))
    }

    /// A St. Jude-shaped data request of about `total` bytes for benchmarks: eight samples,
    /// each with a WGS BAM in 64 MiB md5 parts, a germline BAM behind a parts-less symlink, a
    /// single-part RNA-Seq BAM, gVCF and somatic VCF with CRC32C / SHA-256 part checksums, their
    /// small indexes, and a CNV table without any checksum. Every file is closed and live, and
    /// no two share a path, so every client has the same work to do.
    pub fn mixed(total: u64) -> Dataset {
        const SAMPLES: u64 = 8;
        let per = (total / SAMPLES).max(1 << 20);
        let share = |permille: u64| (per / 1000 * permille).max(1);
        let mut files = Vec::new();
        for i in 0..SAMPLES {
            let t = BASE_TIME_MS + i as i64 * 86_400_000;
            let subject = format!("SJBALL0201{i:02}");
            let bam = "/restricted/bam";
            files.push(
                FileSpec::new(bam, &format!("{subject}_D1.WGS.bam"), share(440))
                    .kind(FileSpecKind::PartsMd5(PartSizes::Uniform(64 << 20)))
                    .times(t, t),
            );
            files.push(
                FileSpec::new(bam, &format!("{subject}_D1.WGS.bam.bai"), 1_500_000 + i)
                    .kind(FileSpecKind::PartsMd5(PartSizes::Uniform(64 << 20)))
                    .times(t, t),
            );
            files.push(
                FileSpec::new(bam, &format!("{subject}_G1.WGS.bam"), share(250))
                    .kind(FileSpecKind::SymlinkWholeMd5)
                    .times(t + 1, t + 1),
            );
            files.push(
                FileSpec::new(bam, &format!("{subject}_G1.WGS.bam.bai"), 1_200_000 + i)
                    .kind(FileSpecKind::SymlinkWholeMd5)
                    .times(t + 1, t + 1),
            );
            files.push(
                FileSpec::new(bam, &format!("{subject}_D1.RNA-Seq.bam"), share(200))
                    .kind(FileSpecKind::SinglePart)
                    .times(t + 2, t + 2),
            );
            let gvcf = "/restricted/gVCF";
            files.push(
                FileSpec::new(gvcf, &format!("{subject}_G1.gvcf.gz"), share(90))
                    .kind(FileSpecKind::PartsChecksum(
                        ChecksumType::Crc32c,
                        PartSizes::Uniform(16 << 20),
                    ))
                    .times(t + 3, t + 3),
            );
            files.push(
                FileSpec::new(gvcf, &format!("{subject}_G1.gvcf.gz.tbi"), 300_000 + i)
                    .kind(FileSpecKind::PartsChecksum(
                        ChecksumType::Crc32c,
                        PartSizes::Uniform(16 << 20),
                    ))
                    .times(t + 3, t + 3),
            );
            let vcf = "/restricted/Somatic_VCF";
            files.push(
                FileSpec::new(vcf, &format!("{subject}_D1.somatic.vcf.gz"), share(15))
                    .kind(FileSpecKind::PartsChecksum(
                        ChecksumType::Sha256,
                        PartSizes::Uniform(16 << 20),
                    ))
                    .times(t + 4, t + 4),
            );
            files.push(
                FileSpec::new(
                    "/restricted/CNV",
                    &format!("{subject}_D1.CNV.txt"),
                    250_000 + i,
                )
                .kind(FileSpecKind::NoChecksum(PartSizes::Uniform(16 << 20)))
                .times(t + 5, t + 5),
            );
        }
        Dataset::data_request("SJ Data Request MIXED", 13, files)
    }

    /// One St. Jude data-request project (tagged `sjcp-project-data`) holding `files`, built
    /// with `seed`; an empty dataset if the files contradict themselves.
    fn data_request(name: &str, seed: u64, files: Vec<FileSpec>) -> Dataset {
        let mut p = ProjectSpec::new(name).tag("sjcp-project-data");
        p.files = files;
        Dataset::build(seed, vec![p]).unwrap_or_else(|_| Dataset::new(seed))
    }

    /// Every kind the chaos test needs, about `total` bytes in all: plain multi-part (md5), parts
    /// with only a CRC32C `checksum`, a parts-less symlink with a whole-file md5, and a
    /// drive-backed single huge part ("Symlinks 2.0").
    pub fn chaos(total: u64) -> Dataset {
        let quarter = (total / 4).max(4);
        let files = vec![
            FileSpec::new("/restricted/bam", "CHAOS_parts.bam", quarter).kind(
                FileSpecKind::PartsMd5(PartSizes::Uniform((quarter / 5).max(1))),
            ),
            FileSpec::new("/restricted/gVCF", "CHAOS_crc32c.g.vcf.gz", quarter)
                .kind(FileSpecKind::PartsChecksum(
                    ChecksumType::Crc32c,
                    PartSizes::Uniform((quarter / 3).max(1)),
                ))
                .times(BASE_TIME_MS + 1, BASE_TIME_MS + 1),
            FileSpec::new("/restricted/bam", "CHAOS_symlink.bam", quarter)
                .kind(FileSpecKind::SymlinkWholeMd5)
                .times(BASE_TIME_MS + 2, BASE_TIME_MS + 2),
            FileSpec::new(
                "/restricted/bam",
                "CHAOS_drive_single_part.bam",
                total - 3 * quarter,
            )
            .kind(FileSpecKind::DriveSinglePart)
            .times(BASE_TIME_MS + 3, BASE_TIME_MS + 3),
        ];
        Dataset::data_request("SJ Data Request CHAOS", 11, files)
    }

    /// Parses a `--dataset` value: `demo`, `large[:SIZE]`, `chaos[:SIZE]`, `small[:N]`, `many[:N]`,
    /// `mixed[:SIZE]`.
    pub fn from_name(spec: &str) -> Result<Dataset, DatasetError> {
        let (name, arg) = match spec.split_once(':') {
            Some((n, a)) => (n, Some(a)),
            None => (spec, None),
        };
        let bad = || DatasetError::UnknownDataset(spec.to_owned());
        match name {
            "demo" if arg.is_none() => Ok(Dataset::stjude_demo()),
            "chaos" => {
                let size = match arg {
                    Some(a) => parse_size(a).ok_or_else(bad)?,
                    None => 64 << 20,
                };
                Ok(Dataset::chaos(size))
            }
            "large" => {
                let size = match arg {
                    Some(a) => parse_size(a).ok_or_else(bad)?,
                    None => 3 << 30,
                };
                Ok(Dataset::large(size))
            }
            "small" => {
                let n = match arg {
                    Some(a) => a.parse().map_err(|_| bad())?,
                    None => 1000,
                };
                Ok(Dataset::many_files("SJ Data Request SMALL", n, 64 << 10))
            }
            "mixed" => {
                let size = match arg {
                    Some(a) => parse_size(a).ok_or_else(bad)?,
                    None => 2 << 30,
                };
                Ok(Dataset::mixed(size))
            }
            "many" => {
                let n = match arg {
                    Some(a) => a.parse().map_err(|_| bad())?,
                    None => 100_000,
                };
                Ok(Dataset::many_files("SJ Data Request MANY", n, 16))
            }
            _ => Err(bad()),
        }
    }

    /// Literal content overrides (used for SAMPLE_INFO.txt): the content key stays, but the
    /// bytes come from a table. Recomputes the part checksums.
    fn set_literal_content(
        &mut self,
        project: &ProjectId,
        folder: &str,
        name: &str,
        bytes: Vec<u8>,
    ) {
        if let Some(f) = self
            .files
            .iter_mut()
            .find(|f| &f.project == project && f.spec.folder == folder && f.spec.name == name)
        {
            let f = std::sync::Arc::make_mut(f);
            let mut h = md5::Md5::new();
            h.update(&bytes);
            let md5 = hex::encode(h.finalize());
            f.parts = vec![BuiltPart {
                index: 1,
                range: ByteRange::new(0, bytes.len() as u64),
                md5: Some(md5),
                checksum: None,
            }];
            f.spec.size = bytes.len() as u64;
            f.literal = Some(bytes.into());
        }
    }
}

fn sample_info_text(files: &[FileSpec]) -> String {
    let cols = [
        "file_path",
        "file_id",
        "subject_name",
        "sample_name",
        "sample_type",
        "sequencing_type",
        "file_type",
        "description",
        "file_size",
        "sj_dataset_accession",
        "sj_embargo_date",
        "sj_long_disease_name",
        "attr_sex",
        "attr_diagnosis",
    ];
    let mut out = cols.join("\t");
    out.push('\n');
    let mut seen = BTreeSet::new();
    for f in files {
        if f.state != "closed" || f.archival_state != "live" {
            continue;
        }
        let id =
            f.id.as_ref()
                .map(|i| i.as_str().to_owned())
                .unwrap_or_default();
        if !seen.insert(id.clone()) {
            continue;
        }
        let sample = f.name.split('.').next().unwrap_or("").replace(' ', "_");
        let subject = sample.split('_').next().unwrap_or("").to_owned();
        let (seq, ftype) = if f.folder.ends_with("bam") {
            (
                if f.name.contains("RNA") {
                    "RNA-Seq"
                } else {
                    "WGS"
                },
                "BAM",
            )
        } else if f.folder.ends_with("gVCF") {
            ("WGS", "gVCF")
        } else if f.folder.ends_with("Somatic_VCF") {
            ("WGS", "Somatic VCF")
        } else {
            ("WGS", "CNV")
        };
        let sample_type = if sample.ends_with("G1") {
            "Germline"
        } else {
            "Diagnosis"
        };
        let row = [
            format!("{}/{}", f.folder.trim_start_matches('/'), f.name),
            id,
            subject,
            sample,
            sample_type.to_owned(),
            seq.to_owned(),
            ftype.to_owned(),
            format!("{ftype} file"),
            f.size.to_string(),
            "SJC-DS-1001".to_owned(),
            "01-05-2026".to_owned(),
            "B-cell Acute Lymphoblastic Leukemia".to_owned(),
            "Female".to_owned(),
            "BALL".to_owned(),
        ];
        out.push_str(&row.join("\t"));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_covers_every_kind() {
        let ds = Dataset::stjude_demo();
        let kinds: BTreeSet<&str> = ds.files.iter().map(|f| f.spec.kind.as_str()).collect();
        for k in [
            "parts-md5",
            "parts-checksum",
            "symlink-md5",
            "single-part",
            "no-checksum",
        ] {
            assert!(kinds.contains(k), "missing {k}");
        }
        let types: BTreeSet<&str> = ds
            .files
            .iter()
            .filter_map(|f| f.checksum_type.map(|t| t.as_str()))
            .collect();
        assert_eq!(types.len(), 5);
        let info = ds
            .files
            .iter()
            .find(|f| f.spec.name == "SAMPLE_INFO.txt")
            .unwrap();
        let mut buf = vec![0u8; info.spec.size as usize];
        info.fill(0, &mut buf);
        let text = String::from_utf8(buf).unwrap();
        assert!(text.starts_with("file_path\tfile_id\t"));
        assert!(text.contains(ds.files[0].id.as_str()));
        let mut h = md5::Md5::new();
        h.update(text.as_bytes());
        assert_eq!(
            info.parts[0].md5.as_deref(),
            Some(hex::encode(h.finalize()).as_str())
        );
    }

    #[test]
    fn mixed_is_st_jude_shaped_and_downloadable() {
        let ds = Dataset::from_name("mixed:64MiB").unwrap();
        assert_eq!(ds.projects.len(), 1);
        assert_eq!(ds.files.len(), 8 * 9);
        let kinds: BTreeSet<&str> = ds.files.iter().map(|f| f.spec.kind.as_str()).collect();
        for k in [
            "parts-md5",
            "parts-checksum",
            "symlink-md5",
            "single-part",
            "no-checksum",
        ] {
            assert!(kinds.contains(k), "missing {k}");
        }
        let paths: BTreeSet<(String, String)> = ds
            .files
            .iter()
            .map(|f| (f.spec.folder.clone(), f.spec.name.clone()))
            .collect();
        assert_eq!(paths.len(), ds.files.len(), "paths are unique");
        assert!(ds
            .files
            .iter()
            .all(|f| f.spec.state == "closed" && f.spec.archival_state == "live"));
        let total: u64 = ds.files.iter().map(|f| f.spec.size).sum();
        // The shares add up to 99.5 % of the size; the indexes and CNV tables add ~3.3 MB a sample.
        assert!((63 << 20..96 << 20).contains(&total), "{total}");
        assert!(Dataset::from_name("mixed:x").is_err());
    }
}
