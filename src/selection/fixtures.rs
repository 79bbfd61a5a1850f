//! Fixtures of the selection tests: a small listing shaped like a St. Jude data request, and
//! its `SAMPLE_INFO.txt`.

use crate::model::testing::{file_id as fid, project_id, RemoteFileBuilder};
use crate::model::RemoteFile;

/// File `n` of project 1, at `folder/name`, of `size` bytes.
pub(super) fn rf(n: u32, folder: &str, name: &str, size: u64) -> RemoteFile {
    RemoteFileBuilder::new(&project_id(1), n)
        .name(name)
        .folder(folder)
        .size(size)
        .build()
}

/// Ten files: BAMs with both index namings, a gVCF and its index, CNV, somatic VCF, an RNA-Seq
/// BAM, and `SAMPLE_INFO.txt` (file 9).
pub(super) fn listing() -> Vec<RemoteFile> {
    vec![
        rf(1, "/restricted/bam", "A_D1.WGS.bam", 100),
        rf(2, "/restricted/bam", "A_D1.WGS.bam.bai", 10),
        rf(3, "/restricted/bam", "B_G1.WGS.bam", 200),
        rf(4, "/restricted/bam", "B_G1.WGS.bai", 20),
        rf(5, "/restricted/gVCF", "B_G1.gvcf.gz", 300),
        rf(6, "/restricted/gVCF", "B_G1.gvcf.gz.tbi", 30),
        rf(7, "/immediate/CNV", "A_D1.segments.txt", 40),
        rf(8, "/restricted/Somatic_VCF", "A_D1.vcf.gz", 50),
        rf(9, "/", "SAMPLE_INFO.txt", 999),
        rf(10, "/restricted/bam", "C_D1.RNA-Seq.bam", 60),
    ]
}

/// The `SAMPLE_INFO.txt` of [`listing`]: a BOM, CRLF line ends, blank lines at the end, and a
/// row for every file but the index files 2 and 4 (which follow their data file) and itself.
pub(super) fn sample_info_text() -> String {
    let mut t = String::from(
        "\u{feff}file_path\tfile_id\tsubject_name\tsample_type\tsequencing_type\tfile_size\r\n",
    );
    for (n, path, subject, st, seq, size) in [
        (
            1,
            "restricted/bam/A_D1.WGS.bam",
            "A",
            "Diagnosis",
            "WGS",
            100,
        ),
        (
            3,
            "restricted/bam/B_G1.WGS.bam",
            "B",
            "Germline",
            "WGS",
            200,
        ),
        (
            5,
            "restricted/gVCF/B_G1.gvcf.gz",
            "B",
            "Germline",
            "WGS",
            300,
        ),
        (
            6,
            "restricted/gVCF/B_G1.gvcf.gz.tbi",
            "B",
            "Germline",
            "WGS",
            30,
        ),
        (
            7,
            "immediate/CNV/A_D1.segments.txt",
            "A",
            "Diagnosis",
            "WGS",
            40,
        ),
        (
            8,
            "restricted/Somatic_VCF/A_D1.vcf.gz",
            "A",
            "Diagnosis",
            "WGS",
            50,
        ),
        (
            10,
            "restricted/bam/C_D1.RNA-Seq.bam",
            "C",
            "Relapse",
            "RNA-Seq",
            60,
        ),
    ] {
        t.push_str(&format!(
            "{path}\t{}\t{subject}\t{st}\t{seq}\t{size}\r\n",
            fid(n)
        ));
    }
    t.push_str("\r\n\n");
    t
}
