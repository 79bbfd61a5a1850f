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
use std::fmt;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use crate::model::{FileId, RemoteFile};
use crate::store::RelPath;

/// The name St. Jude gives the per-file metadata table of a data request.
pub const SAMPLE_INFO_NAME: &str = "SAMPLE_INFO.txt";

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

/// A compiled list of path globs (see the module doc for the matching rules).
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
    fn reject(&self, file: &FileCtx<'_>, rows: &RowLookup<'_>) -> Option<String> {
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
        self.layers.iter().any(|(_, f)| !f.sample_info.is_empty())
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

/// True for a `SAMPLE_INFO.txt` at the project root or directly under `immediate/` or
/// `restricted/`.
pub fn is_sample_info(file: &RemoteFile) -> bool {
    file.name == SAMPLE_INFO_NAME
        && matches!(norm_folder(&file.folder), "" | "immediate" | "restricted")
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

/// `SAMPLE_INFO.txt` that cannot be used at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SampleInfoError {
    /// No header row.
    #[error("SAMPLE_INFO.txt is empty")]
    Empty,
    /// The header names neither key column.
    #[error(
        "SAMPLE_INFO.txt header has neither a file_id nor a file_path column (found {found:?})"
    )]
    NoKeyColumn {
        /// The header's columns (first few).
        found: Vec<String>,
    },
}

/// One data row of `SAMPLE_INFO.txt`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleRow {
    /// Line number in the file (1-based).
    pub line: usize,
    /// Trimmed cells, one per header column (missing cells are empty).
    pub cells: Vec<String>,
}

/// A parsed `SAMPLE_INFO.txt`: tab-separated, a header row, open-ended columns, rows keyed
/// by `file_id` and `file_path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleInfo {
    columns: Vec<String>,
    rows: Vec<SampleRow>,
    by_id: HashMap<FileId, usize>,
    by_path: HashMap<String, Vec<usize>>,
    /// Rows that are suspicious but usable: (line, what).
    notes: Vec<(usize, String)>,
}

/// Lenient cell clean-up: trimmed, one pair of surrounding double quotes removed.
fn clean_cell(raw: &str) -> String {
    let t = raw.trim();
    let t = t
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(t);
    t.trim().to_owned()
}

fn norm_path(p: &str) -> String {
    p.trim().trim_matches('/').to_owned()
}

impl SampleInfo {
    /// Parses the table. Lenient: a BOM, CRLF line ends, blank lines, surrounding white space
    /// and double quotes around a cell are ignored; short rows are padded, long rows cut (and
    /// noted for [`cross_check`]). Column names are compared in lower case.
    pub fn parse(text: &str) -> Result<SampleInfo, SampleInfoError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut lines = text
            .split('\n')
            .enumerate()
            .map(|(i, l)| (i + 1, l.strip_suffix('\r').unwrap_or(l)))
            .filter(|(_, l)| !l.trim().is_empty());
        let Some((_, header)) = lines.next() else {
            return Err(SampleInfoError::Empty);
        };
        let columns: Vec<String> = header
            .split('\t')
            .map(|c| clean_cell(c).to_ascii_lowercase())
            .collect();
        let find = |name: &str| columns.iter().position(|c| c == name);
        let (id_col, path_col) = (find("file_id"), find("file_path"));
        if id_col.is_none() && path_col.is_none() {
            return Err(SampleInfoError::NoKeyColumn {
                found: columns.iter().take(20).cloned().collect(),
            });
        }
        let mut info = SampleInfo {
            columns,
            rows: Vec::new(),
            by_id: HashMap::new(),
            by_path: HashMap::new(),
            notes: Vec::new(),
        };
        let width = info.columns.len();
        for (line, text) in lines {
            let mut cells: Vec<String> = text.split('\t').map(clean_cell).collect();
            if cells.len() > width {
                if cells[width..].iter().any(|c| !c.is_empty()) {
                    info.notes.push((
                        line,
                        format!("has {} cells for {width} columns", cells.len()),
                    ));
                }
                cells.truncate(width);
            }
            cells.resize(width, String::new());
            let idx = info.rows.len();
            if let Some(c) = id_col {
                let raw = &cells[c];
                match raw.parse::<FileId>() {
                    Ok(id) => {
                        if let std::collections::hash_map::Entry::Vacant(e) =
                            info.by_id.entry(id.clone())
                        {
                            e.insert(idx);
                        } else {
                            info.notes
                                .push((line, format!("repeats file_id {id} of an earlier row")));
                        }
                    }
                    Err(_) if raw.is_empty() => {}
                    Err(_) => info
                        .notes
                        .push((line, format!("file_id {raw:?} is not a file id"))),
                }
            }
            if let Some(c) = path_col {
                let p = norm_path(&cells[c]);
                if !p.is_empty() {
                    info.by_path.entry(p).or_default().push(idx);
                }
            }
            info.rows.push(SampleRow { line, cells });
        }
        Ok(info)
    }

    /// The column names (lower case), in file order.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// The data rows, in file order.
    pub fn rows(&self) -> &[SampleRow] {
        &self.rows
    }

    /// A row's value in `column` (lower case); `None` when there is no such column.
    pub fn get<'a>(&self, row: &'a SampleRow, column: &str) -> Option<&'a str> {
        let i = self.columns.iter().position(|c| c == column)?;
        row.cells.get(i).map(String::as_str)
    }

    /// The row with this `file_id` (the first one, if repeated).
    pub fn row_by_id(&self, id: &FileId) -> Option<&SampleRow> {
        self.by_id.get(id).and_then(|&i| self.rows.get(i))
    }

    /// The only row with this `file_path` (leading `/` ignored); `None` when absent or when
    /// several rows share it.
    pub fn unique_row_by_path(&self, path: &str) -> Option<&SampleRow> {
        match self.by_path.get(&norm_path(path)).map(Vec::as_slice) {
            Some([i]) => self.rows.get(*i),
            _ => None,
        }
    }

    /// The row of a listed file: by `file_id`, else by a unique `file_path`.
    pub fn row_of(&self, file: &RemoteFile) -> Option<&SampleRow> {
        self.row_by_id(&file.id)
            .or_else(|| self.unique_row_by_path(&remote_path(file)))
    }
}

/// Compares `SAMPLE_INFO.txt` with the project listing and describes every disagreement:
/// rows whose `file_id` is not listed, downloadable listed files (other than
/// `SAMPLE_INFO.txt` and index files whose data file has a row) without a row, and
/// `file_size` or `file_path` values that differ from the listing. Also reports rows that
/// are malformed (a bad or repeated `file_id`, too many cells).
pub fn cross_check(info: &SampleInfo, files: &[RemoteFile]) -> Vec<String> {
    let mut out: Vec<String> = info
        .notes
        .iter()
        .map(|(line, what)| format!("SAMPLE_INFO.txt line {line} {what}"))
        .collect();
    let listed: HashMap<&FileId, &RemoteFile> = files.iter().map(|f| (&f.id, f)).collect();
    let id_col = info.columns.iter().position(|c| c == "file_id");
    let path_col = info.columns.iter().position(|c| c == "file_path");
    let size_col = info.columns.iter().position(|c| c == "file_size");
    for (idx, row) in info.rows.iter().enumerate() {
        let cell = |c: Option<usize>| c.and_then(|c| row.cells.get(c)).map(String::as_str);
        let Some(id) = cell(id_col).and_then(|s| s.parse::<FileId>().ok()) else {
            continue;
        };
        if info.by_id.get(&id) != Some(&idx) {
            continue; // a repeated id, already noted
        }
        let path = cell(path_col).unwrap_or_default();
        let Some(f) = listed.get(&id) else {
            out.push(format!(
                "SAMPLE_INFO.txt line {}: file_id {id} ({path}) is not in the project listing",
                row.line
            ));
            continue;
        };
        if let Some(size) = cell(size_col).filter(|s| !s.is_empty()) {
            match size.parse::<u64>() {
                Ok(n) if n == f.size => {}
                Ok(n) => out.push(format!(
                    "SAMPLE_INFO.txt line {}: {id} file_size {n} but the listing says {}",
                    row.line, f.size
                )),
                Err(_) => out.push(format!(
                    "SAMPLE_INFO.txt line {}: {id} file_size {size:?} is not a number",
                    row.line
                )),
            }
        }
        if path_col.is_some() && !path.is_empty() && norm_path(path) != remote_path(f) {
            out.push(format!(
                "SAMPLE_INFO.txt line {}: {id} file_path {path:?} but the listing says {:?}",
                row.line,
                remote_path(f)
            ));
        }
    }
    let lookup = RowLookup::new(Some(info), files);
    for f in files {
        if is_sample_info(f) || !f.is_downloadable() {
            continue;
        }
        if lookup.row_for(f).is_err() {
            out.push(format!(
                "{} ({}) is listed but has no SAMPLE_INFO.txt row",
                f.id,
                remote_path(f)
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::model::testing::{file_id as fid, project_id, RemoteFileBuilder};
    use crate::model::{ArchivalState, ProjectId};

    fn pid() -> ProjectId {
        project_id(1)
    }

    fn rf(n: u32, folder: &str, name: &str, size: u64) -> RemoteFile {
        RemoteFileBuilder::new(&pid(), n)
            .name(name)
            .folder(folder)
            .size(size)
            .build()
    }

    fn listing() -> Vec<RemoteFile> {
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

    fn sample_info_text() -> String {
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

    #[test]
    fn sample_info_detection() {
        assert!(is_sample_info(&rf(1, "/", "SAMPLE_INFO.txt", 1)));
        assert!(is_sample_info(&rf(1, "/restricted", "SAMPLE_INFO.txt", 1)));
        assert!(is_sample_info(&rf(1, "/immediate/", "SAMPLE_INFO.txt", 1)));
        assert!(!is_sample_info(&rf(
            1,
            "/restricted/bam",
            "SAMPLE_INFO.txt",
            1
        )));
        assert!(!is_sample_info(&rf(1, "/", "sample_info.txt", 1)));
    }

    #[test]
    fn parse_is_lenient() {
        let info = SampleInfo::parse(&sample_info_text()).unwrap();
        assert_eq!(info.columns()[0], "file_path");
        assert_eq!(info.rows().len(), 7);
        let row = info.row_by_id(&fid(10)).unwrap();
        assert_eq!(info.get(row, "sequencing_type"), Some("RNA-Seq"));
        assert_eq!(info.get(row, "file_size"), Some("60"));
        assert_eq!(info.get(row, "nope"), None);
        assert!(info
            .unique_row_by_path("/restricted/bam/A_D1.WGS.bam")
            .is_some());
        let quoted = SampleInfo::parse("FILE_ID\t\"sample_type\" \n \"file-000000000000000000000001\"\t Diagnosis\nfile-000000000000000000000002\n").unwrap();
        let row = quoted.row_by_id(&fid(1)).unwrap();
        assert_eq!(quoted.get(row, "sample_type"), Some("Diagnosis"));
        assert_eq!(
            quoted.get(quoted.row_by_id(&fid(2)).unwrap(), "sample_type"),
            Some("")
        );
        assert_eq!(
            SampleInfo::parse("\u{feff}\r\n\n").unwrap_err(),
            SampleInfoError::Empty
        );
        assert!(matches!(
            SampleInfo::parse("a\tb\n1\t2\n"),
            Err(SampleInfoError::NoKeyColumn { .. })
        ));
    }

    #[test]
    fn cross_check_reports_disagreements() {
        let info = SampleInfo::parse(&sample_info_text()).unwrap();
        assert_eq!(cross_check(&info, &listing()), Vec::<String>::new());
        let mut files = listing();
        files.retain(|f| f.id != fid(8)); // row without a listed file
        files[0].size = 101; // size disagreement
        files[2].folder = "/restricted/moved".into(); // path disagreement (id 3)
        files.push(rf(12, "/restricted/CNV", "new.CNV.txt", 1)); // listed without a row
        let mut archived = rf(13, "/restricted/CNV", "old.CNV.txt", 1);
        archived.archival_state = ArchivalState::Archived; // not downloadable: not reported
        files.push(archived);
        let text = format!(
            "{}{}\tjunk\nrestricted/x\t{}\n",
            sample_info_text(),
            "restricted/y\tfile-bad",
            fid(1)
        );
        let info2 = SampleInfo::parse(&text).unwrap();
        let report = cross_check(&info2, &files);
        let joined = report.join("\n");
        assert!(
            joined.contains(&format!(
                "{} (restricted/Somatic_VCF/A_D1.vcf.gz) is not in the project listing",
                fid(8)
            )),
            "{joined}"
        );
        assert!(
            joined.contains("file_size 100 but the listing says 101"),
            "{joined}"
        );
        assert!(joined.contains("file_path \"restricted/bam/B_G1.WGS.bam\" but the listing says \"restricted/moved/B_G1.WGS.bam\""), "{joined}");
        assert!(
            joined.contains(&format!(
                "{} (restricted/CNV/new.CNV.txt) is listed but has no SAMPLE_INFO.txt row",
                fid(12)
            )),
            "{joined}"
        );
        assert!(
            joined.contains("file_id \"file-bad\" is not a file id"),
            "{joined}"
        );
        assert!(
            joined.contains(&format!("repeats file_id {}", fid(1))),
            "{joined}"
        );
        assert!(!joined.contains(&fid(13).to_string()), "{joined}");
        // B_G1.WGS.bai still follows its data file's row by path: not reported.
        assert!(!joined.contains(&fid(4).to_string()), "{joined}");
        assert_eq!(report.len(), 6, "{joined}");
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        fn cell() -> impl Strategy<Value = String> {
            // No tabs, line breaks or quotes; no surrounding white space.
            "[A-Za-z0-9_.-]([A-Za-z0-9_. /-]{0,10}[A-Za-z0-9_./-])?"
        }

        proptest! {
            #[test]
            fn parse_never_panics(text in "(?s).{0,400}") {
                let _ = SampleInfo::parse(&text);
            }

            #[test]
            fn parse_never_panics_on_tabular_noise(text in "[a-z_\t\r\n\"\u{feff} ]{0,300}") {
                if let Ok(info) = SampleInfo::parse(&text) {
                    let _ = cross_check(&info, &listing());
                }
            }

            #[test]
            fn generated_tables_round_trip(
                extra in proptest::collection::vec("[a-z][a-z_]{0,8}", 0..5),
                rows in proptest::collection::vec((any::<u32>(), proptest::collection::vec(cell(), 5)), 0..20),
                crlf in any::<bool>(),
                bom in any::<bool>(),
            ) {
                let mut columns = vec!["file_path".to_owned(), "file_id".to_owned()];
                for (i, c) in extra.iter().enumerate() {
                    columns.push(format!("x{i}_{c}"));
                }
                let eol = if crlf { "\r\n" } else { "\n" };
                let mut text = String::new();
                if bom { text.push('\u{feff}'); }
                text.push_str(&columns.join("\t"));
                text.push_str(eol);
                let mut expect = Vec::new();
                for (i, (n, cells)) in rows.iter().enumerate() {
                    let mut row = vec![format!("folder/f{i}"), fid(*n).to_string()];
                    row.extend(cells.iter().take(columns.len() - 2).cloned());
                    row.resize(columns.len(), String::new());
                    text.push_str(&row.join("\t"));
                    text.push_str(eol);
                    expect.push(row);
                }
                let info = SampleInfo::parse(&text).unwrap();
                prop_assert_eq!(info.columns(), &columns[..]);
                let got: Vec<Vec<String>> = info.rows().iter().map(|r| r.cells.clone()).collect();
                prop_assert_eq!(&got, &expect);
                for (i, (n, _)) in rows.iter().enumerate() {
                    let first = rows.iter().position(|(m, _)| m == n).unwrap();
                    let row = info.row_by_id(&fid(*n)).unwrap();
                    prop_assert_eq!(&row.cells, &expect[first]);
                    let by_path = info.unique_row_by_path(&format!("/folder/f{i}")).unwrap();
                    prop_assert_eq!(&by_path.cells, &expect[i]);
                }
            }
        }
    }
}
