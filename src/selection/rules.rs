//! One layer of selection rules ([`Filter`]: include and exclude path globs, file types,
//! `SAMPLE_INFO.txt` column values) and the compiled path globs it matches with
//! ([`PathGlobs`]); `selection`'s module doc states the matching rules.

use std::collections::BTreeMap;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use super::{FileCtx, FileType, RowLookup};

/// A compiled list of path globs (`selection`'s module doc states the matching rules).
#[derive(Debug, Clone, Default)]
pub struct PathGlobs {
    patterns: Vec<String>,
    set: GlobSet,
}

impl PathGlobs {
    /// Compiles the patterns; the error names the bad pattern and why.
    pub fn new(patterns: &[String]) -> Result<PathGlobs, String> {
        let mut builder = GlobSetBuilder::new();
        for p in patterns {
            let trimmed = p.trim().trim_start_matches('/').trim_end_matches('/');
            if trimmed.is_empty() {
                return Err(format!("empty glob {p:?}"));
            }
            let glob = GlobBuilder::new(trimmed)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| format!("invalid glob {p:?}: {}", e.kind()))?;
            builder.add(glob);
        }
        let set = builder
            .build()
            .map_err(|e| format!("invalid globs {patterns:?}: {e}"))?;
        Ok(PathGlobs {
            patterns: patterns.to_vec(),
            set,
        })
    }

    /// True when there are no patterns.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// The patterns as written.
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    /// The first pattern (in config order) matching `path` or one of its folders.
    pub fn first_match(&self, path: &str) -> Option<&str> {
        let path = path.trim_start_matches('/');
        let mut best: Option<usize> = None;
        let mut candidate = path;
        loop {
            if let Some(&i) = self.set.matches(candidate).iter().min() {
                best = Some(best.map_or(i, |b| b.min(i)));
            }
            match candidate.rfind('/') {
                Some(cut) => candidate = &candidate[..cut],
                None => break,
            }
        }
        best.and_then(|i| self.patterns.get(i)).map(String::as_str)
    }
}

/// One layer of selection rules: the global `[filter]` table or one project's keys.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    include: PathGlobs,
    exclude: PathGlobs,
    file_types: Vec<FileType>,
    sample_info: BTreeMap<String, Vec<String>>,
}

impl Filter {
    /// Validates and compiles a layer. The error names the key (`include`, `exclude`,
    /// `file-types`, `sample-info`) and the bad value.
    pub fn new(
        include: &[String],
        exclude: &[String],
        file_types: &[String],
        sample_info: BTreeMap<String, Vec<String>>,
    ) -> Result<Filter, String> {
        let include = PathGlobs::new(include).map_err(|e| format!("include: {e}"))?;
        let exclude = PathGlobs::new(exclude).map_err(|e| format!("exclude: {e}"))?;
        let mut types = Vec::new();
        for t in file_types {
            let parsed = FileType::parse(t).ok_or_else(|| {
                let known: Vec<&str> = FileType::ALL.iter().map(|t| t.as_str()).collect();
                format!(
                    "file-types: unknown type {t:?} (known: {})",
                    known.join(", ")
                )
            })?;
            if !types.contains(&parsed) {
                types.push(parsed);
            }
        }
        let mut columns = BTreeMap::new();
        for (column, values) in sample_info {
            let column = column.trim().to_ascii_lowercase();
            if column.is_empty() {
                return Err("sample-info: empty column name".into());
            }
            let values: Vec<String> = values.iter().map(|v| v.trim().to_owned()).collect();
            if values.is_empty() {
                return Err(format!(
                    "sample-info: column {column:?} lists no values (it would exclude every file)"
                ));
            }
            columns.insert(column, values);
        }
        Ok(Filter {
            include,
            exclude,
            file_types: types,
            sample_info: columns,
        })
    }

    /// A one-line summary for `check-config` (`everything` when empty).
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.include.is_empty() {
            parts.push(format!("include {:?}", self.include.patterns()));
        }
        if !self.exclude.is_empty() {
            parts.push(format!("exclude {:?}", self.exclude.patterns()));
        }
        if !self.file_types.is_empty() {
            let t: Vec<&str> = self.file_types.iter().map(|t| t.as_str()).collect();
            parts.push(format!("file-types {t:?}"));
        }
        for (column, values) in &self.sample_info {
            parts.push(format!("sample-info {column} in {values:?}"));
        }
        if parts.is_empty() {
            "everything".to_owned()
        } else {
            parts.join("; ")
        }
    }

    /// True when the layer selects everything.
    pub fn is_empty(&self) -> bool {
        self.include.is_empty()
            && self.exclude.is_empty()
            && self.file_types.is_empty()
            && self.sample_info.is_empty()
    }

    /// The include globs.
    pub fn include(&self) -> &PathGlobs {
        &self.include
    }

    /// The exclude globs.
    pub fn exclude(&self) -> &PathGlobs {
        &self.exclude
    }

    /// The accepted file types (empty: any).
    pub fn file_types(&self) -> &[FileType] {
        &self.file_types
    }

    /// Column (lower case) to accepted values.
    pub fn sample_info(&self) -> &BTreeMap<String, Vec<String>> {
        &self.sample_info
    }

    /// Why a file fails this layer, if it does.
    pub(super) fn reject(&self, file: &FileCtx<'_>, rows: &RowLookup<'_>) -> Option<String> {
        if !self.include.is_empty() && file.paths().all(|p| self.include.first_match(p).is_none()) {
            return Some(format!(
                "matches no include glob ({})",
                self.include.patterns().join(", ")
            ));
        }
        if let Some(glob) = file.paths().find_map(|p| self.exclude.first_match(p)) {
            return Some(format!("matches exclude glob {glob:?}"));
        }
        if !self.file_types.is_empty() && !self.file_types.contains(&file.ftype) {
            let listed: Vec<&str> = self.file_types.iter().map(|t| t.as_str()).collect();
            return Some(format!(
                "file type {} is not in file-types ({})",
                file.ftype,
                listed.join(", ")
            ));
        }
        if self.sample_info.is_empty() {
            return None;
        }
        let Some(info) = rows.info else {
            return Some("a sample-info filter is set but SAMPLE_INFO.txt is not available".into());
        };
        let (row, via) = match rows.row_for(file.remote) {
            Ok(found) => found,
            Err(why) => return Some(why),
        };
        let via = via
            .map(|data| format!(" (the row of its data file {data})"))
            .unwrap_or_default();
        for (column, accepted) in &self.sample_info {
            let Some(value) = info.get(row, column) else {
                return Some(format!("SAMPLE_INFO.txt has no column {column:?}"));
            };
            if !accepted.iter().any(|a| a.eq_ignore_ascii_case(value)) {
                return Some(format!(
                    "SAMPLE_INFO.txt {column} = {value:?}{via} is not one of {accepted:?}"
                ));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn globs_match_paths_and_folders() {
        let g = PathGlobs::new(&[
            "restricted/gVCF/**".into(),
            "/immediate/CNV".into(),
            "*/bam/*.bai".into(),
        ])
        .unwrap();
        assert_eq!(
            g.first_match("restricted/gVCF/a.gvcf.gz"),
            Some("restricted/gVCF/**")
        );
        assert_eq!(
            g.first_match("immediate/CNV/x/y.txt"),
            Some("/immediate/CNV")
        );
        assert_eq!(
            g.first_match("restricted/bam/x.bam.bai"),
            Some("*/bam/*.bai")
        );
        assert_eq!(g.first_match("restricted/bam/x.bam"), None);
        // `*` does not cross `/`.
        assert_eq!(g.first_match("a/b/bam/x.bai"), None);
        let err = PathGlobs::new(&["restricted/[gVCF".into()]).unwrap_err();
        assert!(err.contains("restricted/[gVCF"), "{err}");
        assert!(PathGlobs::new(&["".into()]).is_err());
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_layer_is_validated_and_described() {
        let f = Filter::new(
            &strings(&["restricted/**"]),
            &strings(&["**/*.tmp"]),
            &strings(&["gvcf", "GVCF", "index"]),
            BTreeMap::from([(" Sample_Type ".to_owned(), strings(&[" Diagnosis "]))]),
        )
        .unwrap();
        assert_eq!(f.file_types(), [FileType::Gvcf, FileType::Index]);
        assert_eq!(f.sample_info()["sample_type"], ["Diagnosis"]);
        assert_eq!(
            f.describe(),
            "include [\"restricted/**\"]; exclude [\"**/*.tmp\"]; file-types [\"gVCF\", \"index\"]; \
             sample-info sample_type in [\"Diagnosis\"]"
        );
        let empty = Filter::new(&[], &[], &[], BTreeMap::new()).unwrap();
        assert!(empty.is_empty());
        assert_eq!(empty.describe(), "everything");

        let err = |include: &[&str], types: &[&str], si: &[(&str, &[&str])]| {
            let si = si
                .iter()
                .map(|(k, v)| (k.to_string(), strings(v)))
                .collect();
            Filter::new(&strings(include), &[], &strings(types), si).unwrap_err()
        };
        assert!(err(&["a/[b"], &[], &[]).starts_with("include: invalid glob"));
        let e = err(&[], &["fastq"], &[]);
        assert!(
            e.starts_with("file-types: unknown type \"fastq\" (known: bam, cram, gVCF"),
            "{e}"
        );
        assert_eq!(
            err(&[], &[], &[(" ", &["x"])]),
            "sample-info: empty column name"
        );
        assert!(err(&[], &[], &[("sample_type", &[])]).contains("lists no values"));
    }
}
