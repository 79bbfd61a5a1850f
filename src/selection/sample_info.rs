//! `SAMPLE_INFO.txt`, the per-file metadata table of a St. Jude data request: where it sits in
//! a listing ([`is_sample_info`]), its lenient parser ([`SampleInfo`]), and its cross-check
//! against the listing ([`cross_check`]).

use std::collections::HashMap;

use crate::model::{FileId, RemoteFile};

use super::{norm_folder, remote_path, RowLookup};

/// The name St. Jude gives the per-file metadata table of a data request.
pub const SAMPLE_INFO_NAME: &str = "SAMPLE_INFO.txt";

/// True for a `SAMPLE_INFO.txt` at the project root or directly under `immediate/` or
/// `restricted/`.
pub fn is_sample_info(file: &RemoteFile) -> bool {
    file.name == SAMPLE_INFO_NAME
        && matches!(norm_folder(&file.folder), "" | "immediate" | "restricted")
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
    use crate::model::testing::file_id as fid;
    use crate::model::ArchivalState;
    use crate::selection::fixtures::{listing, rf, sample_info_text};

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
