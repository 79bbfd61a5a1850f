//! The kind of data a file holds ([`FileType`], as `file-types` names it), decided from its
//! name and folders, and the names an index file's data file may have ([`index_targets`]).

use std::fmt;

/// Extensions (lower case, with the dot) that mark an index file.
const INDEX_EXTS: [&str; 7] = [".bai", ".crai", ".tbi", ".csi", ".idx", ".fai", ".gzi"];

/// The kind of data a file holds, as named in `file-types`.
///
/// A file's type is decided from its name first, then from its folders (St. Jude puts each
/// kind in its own folder, e.g. `restricted/gVCF/`):
///
/// | type | name (case-insensitive) | or a folder named |
/// |---|---|---|
/// | `index` | ends with `.bai`, `.crai`, `.tbi`, `.csi`, `.idx`, `.fai`, `.gzi` | — |
/// | `bam` | ends with `.bam` | — |
/// | `cram` | ends with `.cram` | — |
/// | `gVCF` | ends with `.g.vcf`, `.gvcf`, `.g.vcf.gz`, `.gvcf.gz` | `gVCF` |
/// | `Somatic_VCF` | a VCF whose name contains `somatic` | `Somatic_VCF` |
/// | `CNV` | contains `.cnv.` or ends with `.cnv` | `CNV` |
/// | `VCF` | any other `.vcf`, `.vcf.gz`, `.bcf` | — |
/// | `other` | anything else | — |
///
/// Index rules win (`x.g.vcf.gz.tbi` is `index`), then name rules, then folder rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FileType {
    /// Aligned reads (`.bam`).
    Bam,
    /// Aligned reads (`.cram`).
    Cram,
    /// Germline genomic VCF.
    Gvcf,
    /// Somatic variant calls.
    SomaticVcf,
    /// Any other VCF/BCF.
    Vcf,
    /// Copy-number results.
    Cnv,
    /// An index accompanying a data file (`.bai`, `.crai`, `.tbi`, `.csi`, ...).
    Index,
    /// None of the above.
    Other,
}

impl FileType {
    /// Every type, in display order.
    pub const ALL: [FileType; 8] = [
        FileType::Bam,
        FileType::Cram,
        FileType::Gvcf,
        FileType::SomaticVcf,
        FileType::Vcf,
        FileType::Cnv,
        FileType::Index,
        FileType::Other,
    ];

    /// The spelling used in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            FileType::Bam => "bam",
            FileType::Cram => "cram",
            FileType::Gvcf => "gVCF",
            FileType::SomaticVcf => "Somatic_VCF",
            FileType::Vcf => "VCF",
            FileType::Cnv => "CNV",
            FileType::Index => "index",
            FileType::Other => "other",
        }
    }

    /// Parses a config name, ignoring case and treating `-` like `_`.
    pub fn parse(s: &str) -> Option<FileType> {
        let norm = s.trim().to_ascii_lowercase().replace('-', "_");
        FileType::ALL
            .into_iter()
            .find(|t| t.as_str().to_ascii_lowercase() == norm)
    }

    /// The type of a file from its folder (`/restricted/gVCF`) and name.
    pub fn of(folder: &str, name: &str) -> FileType {
        let lower = name.to_ascii_lowercase();
        if INDEX_EXTS.iter().any(|e| lower.ends_with(e)) {
            return FileType::Index;
        }
        if lower.ends_with(".bam") {
            return FileType::Bam;
        }
        if lower.ends_with(".cram") {
            return FileType::Cram;
        }
        if [".g.vcf", ".gvcf", ".g.vcf.gz", ".gvcf.gz"]
            .iter()
            .any(|e| lower.ends_with(e))
        {
            return FileType::Gvcf;
        }
        let is_vcf = [".vcf", ".vcf.gz", ".bcf"]
            .iter()
            .any(|e| lower.ends_with(e));
        if is_vcf && lower.contains("somatic") {
            return FileType::SomaticVcf;
        }
        if lower.contains(".cnv.") || lower.ends_with(".cnv") {
            return FileType::Cnv;
        }
        for dir in folder.split('/').rev() {
            match dir.to_ascii_lowercase().as_str() {
                "gvcf" => return FileType::Gvcf,
                "somatic_vcf" => return FileType::SomaticVcf,
                "cnv" => return FileType::Cnv,
                _ => {}
            }
        }
        if is_vcf {
            return FileType::Vcf;
        }
        FileType::Other
    }
}

impl fmt::Display for FileType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The names an index file's data file may have: `x.bam.bai` gives `x.bam`, `x.bai` gives
/// `x.bam`, `x.crai` gives `x.cram`. Empty for a file that is not an index.
pub fn index_targets(name: &str) -> Vec<String> {
    let lower = name.to_ascii_lowercase();
    let Some(ext) = INDEX_EXTS.iter().find(|e| lower.ends_with(*e)) else {
        return Vec::new();
    };
    let stem = &name[..name.len() - ext.len()];
    let mut out = Vec::new();
    if stem.contains('.') {
        out.push(stem.to_owned());
    }
    match *ext {
        ".bai" if !stem.to_ascii_lowercase().ends_with(".bam") => out.push(format!("{stem}.bam")),
        ".crai" if !stem.to_ascii_lowercase().ends_with(".cram") => {
            out.push(format!("{stem}.cram"))
        }
        _ => {}
    }
    out.retain(|s| !s.is_empty());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_types_are_classified() {
        assert_eq!(FileType::of("/restricted/bam", "x.bam"), FileType::Bam);
        assert_eq!(
            FileType::of("/restricted/bam", "x.bam.bai"),
            FileType::Index
        );
        assert_eq!(FileType::of("/x", "y.cram.crai"), FileType::Index);
        assert_eq!(
            FileType::of("/restricted/gVCF", "y.gvcf.gz.tbi"),
            FileType::Index
        );
        assert_eq!(
            FileType::of("/restricted/gVCF", "y.gvcf.gz"),
            FileType::Gvcf
        );
        assert_eq!(FileType::of("/other", "y.g.vcf.gz"), FileType::Gvcf);
        assert_eq!(
            FileType::of("/restricted/Somatic_VCF", "y.vcf.gz"),
            FileType::SomaticVcf
        );
        assert_eq!(FileType::of("/", "y.somatic.vcf.gz"), FileType::SomaticVcf);
        assert_eq!(
            FileType::of("/restricted/CNV", "y.segments.txt"),
            FileType::Cnv
        );
        assert_eq!(FileType::of("/", "y.CNV.txt"), FileType::Cnv);
        assert_eq!(FileType::of("/", "y.vcf"), FileType::Vcf);
        assert_eq!(FileType::of("/", "README"), FileType::Other);
        assert_eq!(FileType::parse("somatic-vcf"), Some(FileType::SomaticVcf));
        assert_eq!(FileType::parse("GVCF"), Some(FileType::Gvcf));
        assert_eq!(FileType::parse("fastq"), None);
        for t in FileType::ALL {
            assert_eq!(FileType::parse(t.as_str()), Some(t));
        }
    }

    #[test]
    fn index_targets_strip_the_index_extension() {
        assert_eq!(index_targets("x.bam.bai"), vec!["x.bam"]);
        assert_eq!(index_targets("x.bai"), vec!["x.bam"]);
        assert_eq!(index_targets("x.cram.crai")[0], "x.cram");
        assert_eq!(index_targets("x.vcf.gz.tbi"), vec!["x.vcf.gz"]);
        assert!(index_targets("x.bam").is_empty());
    }
}
