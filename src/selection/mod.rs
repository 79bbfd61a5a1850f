//! Which files of a project listing are mirrored: path globs, file types and `SAMPLE_INFO.txt`
//! column filters, plus the `SAMPLE_INFO.txt` parser and its cross-check against the listing.
//!
//! Pure: no IO, no clock, no logging. It receives a listing, the local paths `store` decided,
//! the rules `config` validated and, when needed, the parsed `SAMPLE_INFO.txt`; it returns
//! the selected file ids and a human reason for every file left out. It must not fetch,
//! journal or decide local paths.
//!
//! # Semantics
//!
//! Rules come in layers: the global `[filter]` table and the project's own keys. A file is
//! selected iff it passes every layer; inside one layer it must
//!
//! 1. match one `include` glob when `include` is not empty,
//! 2. match no `exclude` glob,
//! 3. be of a listed [`FileType`] when `file-types` is not empty,
//! 4. when `sample-info` is not empty, have a `SAMPLE_INFO.txt` row (found by `file_id`, else
//!    by a unique `file_path`) whose value in every filtered column is one of the listed
//!    values (ASCII case-insensitive, trimmed). An index file without a row of its own uses
//!    its data file's row (`x.bam.bai` and `x.bai` follow `x.bam`).
//!
//! A `SAMPLE_INFO.txt` at the project root, or directly under `immediate/` or `restricted/`,
//! is always selected, whatever the rules.
//!
//! Globs are matched against the path relative to the project root, without a leading `/`
//! (`restricted/gVCF/x.g.vcf.gz`), both the platform's path and the local one `store`
//! decided (they differ only for sanitised or duplicate names). `*` and `?` never cross
//! `/`, `**` does; a glob that matches a folder matches everything under it
//! (`restricted/CNV` is `restricted/CNV/**`). Matching is case-sensitive.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::model::{FileId, RemoteFile};
use crate::store::RelPath;

mod file_type;
#[cfg(test)]
mod fixtures;
mod rules;
mod sample_info;

pub use file_type::{index_targets, FileType};
pub use rules::{Filter, PathGlobs};
pub use sample_info::{
    cross_check, is_sample_info, SampleInfo, SampleInfoError, SampleRow, SAMPLE_INFO_NAME,
};

/// The rules that apply to one project: the global layer and the project's own.
#[derive(Debug, Clone, Default)]
pub struct SelectionRules {
    layers: Vec<(String, Filter)>,
}

impl SelectionRules {
    /// Adds a layer; `scope` names it in exclusion reasons. An empty layer is dropped.
    pub fn push(&mut self, scope: &str, filter: Filter) {
        if !filter.is_empty() {
            self.layers.push((scope.to_owned(), filter));
        }
    }

    /// True when some layer filters on `SAMPLE_INFO.txt` columns: the caller must mirror
    /// and parse `SAMPLE_INFO.txt` before selecting.
    pub fn needs_sample_info(&self) -> bool {
        self.layers.iter().any(|(_, f)| !f.sample_info().is_empty())
    }

    /// True when every file is selected.
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }
}

/// The outcome of [`select`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// Files to mirror.
    pub selected: HashSet<FileId>,
    /// Files left out, in listing order, each with a human reason.
    pub excluded: Vec<(FileId, String)>,
}

/// One file as the rules see it.
struct FileCtx<'a> {
    remote: &'a RemoteFile,
    remote_path: String,
    local_path: Option<&'a str>,
    ftype: FileType,
}

impl FileCtx<'_> {
    fn paths(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.remote_path.as_str()).chain(self.local_path)
    }
}

/// Finds SAMPLE_INFO rows for listed files, following index files to their data file.
struct RowLookup<'a> {
    info: Option<&'a SampleInfo>,
    by_place: HashMap<(&'a str, &'a str), Vec<&'a RemoteFile>>,
}

impl<'a> RowLookup<'a> {
    fn new(info: Option<&'a SampleInfo>, files: &'a [RemoteFile]) -> RowLookup<'a> {
        let mut by_place: HashMap<(&str, &str), Vec<&RemoteFile>> = HashMap::new();
        for f in files {
            by_place
                .entry((norm_folder(&f.folder), f.name.as_str()))
                .or_default()
                .push(f);
        }
        RowLookup { info, by_place }
    }

    /// The row of `file`, and the data file's path when the row is borrowed from it.
    fn row_for(&self, file: &RemoteFile) -> Result<(&'a SampleRow, Option<String>), String> {
        let Some(info) = self.info else {
            return Err("SAMPLE_INFO.txt is not available".into());
        };
        if let Some(row) = info.row_of(file) {
            return Ok((row, None));
        }
        let folder = norm_folder(&file.folder);
        for target in index_targets(&file.name) {
            let data_path = join_path(folder, &target);
            if let Some(datas) = self.by_place.get(&(folder, target.as_str())) {
                if let Some(row) = datas.iter().find_map(|d| info.row_of(d)) {
                    return Ok((row, Some(data_path)));
                }
            }
            if let Some(row) = info.unique_row_by_path(&data_path) {
                return Ok((row, Some(data_path)));
            }
        }
        Err("no SAMPLE_INFO.txt row (by file_id or file_path)".into())
    }
}

/// The `SAMPLE_INFO.txt` row of each of `files` (by `file_id`, else a unique `file_path`; an
/// index file without one follows its data file), as the selection finds them; `None` where
/// there is none.
pub fn sample_rows<'a>(
    info: &'a SampleInfo,
    files: &'a [RemoteFile],
) -> Vec<Option<&'a SampleRow>> {
    let lookup = RowLookup::new(Some(info), files);
    files
        .iter()
        .map(|f| lookup.row_for(f).ok().map(|(row, _)| row))
        .collect()
}

fn norm_folder(folder: &str) -> &str {
    folder.trim_matches('/')
}

fn join_path(folder: &str, name: &str) -> String {
    let folder = norm_folder(folder);
    if folder.is_empty() {
        name.to_owned()
    } else {
        format!("{folder}/{name}")
    }
}

/// The platform path of a file relative to the project root, without a leading `/`.
pub fn remote_path(file: &RemoteFile) -> String {
    join_path(&file.folder, &file.name)
}

/// Applies `rules` to a listing. `paths` holds the local paths `store` decided (files absent
/// from it are matched on their platform path only). `sample_info` is needed when
/// [`SelectionRules::needs_sample_info`]; without it every file but `SAMPLE_INFO.txt` is
/// excluded with a reason saying so.
pub fn select(
    files: &[RemoteFile],
    paths: &BTreeMap<FileId, RelPath>,
    rules: &SelectionRules,
    sample_info: Option<&SampleInfo>,
) -> Selection {
    let rows = RowLookup::new(sample_info, files);
    let mut out = Selection::default();
    for f in files {
        if is_sample_info(f) || rules.is_empty() {
            out.selected.insert(f.id.clone());
            continue;
        }
        let ctx = FileCtx {
            remote: f,
            remote_path: remote_path(f),
            local_path: paths.get(&f.id).map(RelPath::as_str),
            ftype: FileType::of(&f.folder, &f.name),
        };
        let reason = rules.layers.iter().find_map(|(scope, filter)| {
            filter.reject(&ctx, &rows).map(|r| format!("{scope}: {r}"))
        });
        match reason {
            Some(reason) => out.excluded.push((f.id.clone(), reason)),
            None => {
                out.selected.insert(f.id.clone());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::model::testing::file_id as fid;
    use crate::selection::fixtures::{listing, rf, sample_info_text};

    fn filter(
        include: &[&str],
        exclude: &[&str],
        types: &[&str],
        si: &[(&str, &[&str])],
    ) -> Filter {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        Filter::new(
            &s(include),
            &s(exclude),
            &s(types),
            si.iter().map(|(k, v)| (k.to_string(), s(v))).collect(),
        )
        .unwrap()
    }

    fn rules(f: Filter) -> SelectionRules {
        let mut r = SelectionRules::default();
        r.push("[filter]", f);
        r
    }

    fn selected_ids(sel: &Selection) -> Vec<u32> {
        let mut v: Vec<u32> = (1..=10)
            .filter(|n| sel.selected.contains(&fid(*n)))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn no_rules_select_everything() {
        let files = listing();
        let sel = select(&files, &BTreeMap::new(), &SelectionRules::default(), None);
        assert_eq!(sel.selected.len(), files.len());
        assert!(sel.excluded.is_empty());
    }

    #[test]
    fn include_and_exclude_paths() {
        let files = listing();
        let r = rules(filter(
            &["restricted/**"],
            &["restricted/bam/B_*"],
            &[],
            &[],
        ));
        let sel = select(&files, &BTreeMap::new(), &r, None);
        assert_eq!(selected_ids(&sel), vec![1, 2, 5, 6, 8, 9, 10]);
        let why: HashMap<_, _> = sel.excluded.iter().cloned().collect();
        assert!(
            why[&fid(3)].contains("exclude glob \"restricted/bam/B_*\""),
            "{}",
            why[&fid(3)]
        );
        assert!(
            why[&fid(7)].contains("matches no include glob"),
            "{}",
            why[&fid(7)]
        );
        assert!(why[&fid(7)].starts_with("[filter]: "), "{}", why[&fid(7)]);
    }

    #[test]
    fn local_paths_are_matched_too() {
        let files = vec![rf(1, "/restricted/bam", "x.bam", 1)];
        let mut paths = BTreeMap::new();
        paths.insert(fid(1), RelPath::new("restricted/bam/renamed.bam").unwrap());
        let r = rules(filter(&[], &["**/renamed.bam"], &[], &[]));
        let sel = select(&files, &paths, &r, None);
        assert!(sel.selected.is_empty());
    }

    #[test]
    fn file_type_filter() {
        let files = listing();
        let r = rules(filter(&[], &[], &["gVCF", "index"], &[]));
        let sel = select(&files, &BTreeMap::new(), &r, None);
        assert_eq!(selected_ids(&sel), vec![2, 4, 5, 6, 9]);
        let why: HashMap<_, _> = sel.excluded.iter().cloned().collect();
        assert!(
            why[&fid(1)].contains("file type bam is not in file-types (gVCF, index)"),
            "{}",
            why[&fid(1)]
        );
    }

    #[test]
    fn sample_info_filter_with_index_files_following_their_data_file() {
        let files = listing();
        let info = SampleInfo::parse(&sample_info_text()).unwrap();
        let r = rules(filter(
            &[],
            &[],
            &[],
            &[
                ("sample_type", &["diagnosis", "Germline"]),
                ("sequencing_type", &["WGS"]),
            ],
        ));
        assert!(r.needs_sample_info());
        let sel = select(&files, &BTreeMap::new(), &r, Some(&info));
        // 2 (A_D1.WGS.bam.bai) has no row and follows 1; 4 (B_G1.WGS.bai) follows 3 (x.bai -> x.bam);
        // 10 is RNA-Seq; 9 is SAMPLE_INFO.txt itself.
        assert_eq!(selected_ids(&sel), vec![1, 2, 3, 4, 5, 6, 7, 8, 9]);
        let r = rules(filter(&[], &[], &[], &[("subject_name", &["A"])]));
        let sel = select(&files, &BTreeMap::new(), &r, Some(&info));
        assert_eq!(selected_ids(&sel), vec![1, 2, 7, 8, 9]);
        let why: HashMap<_, _> = sel.excluded.iter().cloned().collect();
        assert!(
            why[&fid(4)].contains("the row of its data file restricted/bam/B_G1.WGS.bam"),
            "{}",
            why[&fid(4)]
        );
        assert!(
            why[&fid(10)].contains("subject_name = \"C\""),
            "{}",
            why[&fid(10)]
        );
    }

    #[test]
    fn sample_info_filter_without_table_or_row_or_column() {
        let mut files = listing();
        files.push(rf(11, "/restricted/bam", "orphan.bam", 5));
        let r = rules(filter(&[], &[], &[], &[("sample_type", &["Diagnosis"])]));
        let sel = select(&files, &BTreeMap::new(), &r, None);
        assert_eq!(sel.selected, HashSet::from([fid(9)]));
        assert!(sel.excluded[0]
            .1
            .contains("SAMPLE_INFO.txt is not available"));
        let info = SampleInfo::parse(&sample_info_text()).unwrap();
        let sel = select(&files, &BTreeMap::new(), &r, Some(&info));
        let why: HashMap<_, _> = sel.excluded.iter().cloned().collect();
        assert!(
            why[&fid(11)].contains("no SAMPLE_INFO.txt row"),
            "{}",
            why[&fid(11)]
        );
        let r = rules(filter(&[], &[], &[], &[("attr_sex", &["Female"])]));
        let sel = select(&files, &BTreeMap::new(), &r, Some(&info));
        assert!(sel
            .excluded
            .iter()
            .all(|(_, w)| w.contains("no column \"attr_sex\"")
                || w.contains("no SAMPLE_INFO.txt row")));
        assert_eq!(sel.selected, HashSet::from([fid(9)]));
    }

    #[test]
    fn layers_all_apply_and_name_their_scope() {
        let files = listing();
        let mut r = rules(filter(&[], &["**/*.tbi"], &[], &[]));
        r.push("[[project]] p", filter(&["restricted/gVCF"], &[], &[], &[]));
        let sel = select(&files, &BTreeMap::new(), &r, None);
        assert_eq!(selected_ids(&sel), vec![5, 9]);
        let why: HashMap<_, _> = sel.excluded.iter().cloned().collect();
        assert!(
            why[&fid(6)].starts_with("[filter]: matches exclude"),
            "{}",
            why[&fid(6)]
        );
        assert!(
            why[&fid(1)].starts_with("[[project]] p: matches no include"),
            "{}",
            why[&fid(1)]
        );
        assert_eq!(sel.selected.len() + sel.excluded.len(), files.len());
    }
}
