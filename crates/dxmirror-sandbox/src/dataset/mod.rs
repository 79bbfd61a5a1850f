//! Synthetic datasets for the sandbox: projects, files, their deterministic content and the
//! checksums the platform would state for them.
//!
//! File content is a pure function of (dataset seed, file id, offset), generated on demand by a
//! counter-based PRNG, so multi-GB files need no storage. Checksums are computed once when a
//! dataset is built (in parallel with rayon). This module owns no sockets and no clocks.
//!
//! What a test asks for is in `spec` ([`FileSpec`], [`ProjectSpec`]); this file builds it into
//! a [`Dataset`]; `content` holds the generator and the checksums of its bytes; `named` the
//! datasets `--dataset` knows by name (the St. Jude demo, `large`, `mixed`, ...).

mod content;
mod named;
mod spec;

use rayon::prelude::*;

use crate::model::{ByteRange, ChecksumType, FileId, ProjectId};
use content::{checksum_of, make_id, md5_of, whole_and_block_md5};

pub(crate) use content::hash_bytes;
pub use content::{fill_content, BLOCK_MD5_SIZE};
pub use spec::{FileSpec, FileSpecKind, PartSizes, ProjectSpec, BASE_TIME_MS};

/// A dataset could not be built from its specification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DatasetError {
    /// Explicit part sizes do not add up to the file size.
    #[error("file {name:?}: parts add up to {parts_total} bytes but the size is {size}")]
    PartSizes {
        /// The file name (may be hostile; debug-quoted).
        name: String,
        /// Sum of the part sizes.
        parts_total: u64,
        /// Declared size.
        size: u64,
    },
    /// A uniform part size of zero for a non-empty file.
    #[error("file {name:?}: part size must be positive")]
    ZeroPartSize {
        /// The file name.
        name: String,
    },
    /// A dataset name `--dataset` does not know.
    #[error(
        "unknown dataset {0:?}: expected demo, large[:SIZE], small[:N], many[:N] or mixed[:SIZE]"
    )]
    UnknownDataset(String),
}

/// One part of a built file, with the platform's checksums for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltPart {
    /// Part number, from 1.
    pub index: u32,
    /// Bytes covered.
    pub range: ByteRange,
    /// Hex md5, when the kind states one.
    pub md5: Option<String>,
    /// Base64 raw digest of the file's checksum type, when the kind states one.
    pub checksum: Option<String>,
}

/// A file of a built dataset: its spec, id, parts and checksums.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltFile {
    /// The file id.
    pub id: FileId,
    /// The project holding it.
    pub project: ProjectId,
    /// The specification it came from.
    pub spec: FileSpec,
    /// Parts (empty for parts-less symlinks).
    pub parts: Vec<BuiltPart>,
    /// Whole-file md5 (symlinks with md5 and published-drive files).
    pub md5: Option<String>,
    /// The checksum type of part `checksum`s.
    pub checksum_type: Option<ChecksumType>,
    /// Key of the content generator.
    pub content_key: u64,
    /// Literal bytes replacing the generated stream (SAMPLE_INFO.txt).
    pub literal: Option<std::sync::Arc<[u8]>>,
    /// For drive-backed files: the MD5 of each 4 MiB-aligned block, which the storage host
    /// states as `Content-MD5` for a range asked with `x-ms-range-get-content-md5` (as Azure
    /// does), precomputed so that serving costs nothing.
    pub block_md5: Vec<[u8; 16]>,
    /// The ETag its describe states (`symlinkTargetIdentifier.ETag`), for pinned drive-backed
    /// files.
    pub etag: Option<String>,
    /// The ETag of the backing object as the storage host holds it now: the described one
    /// until the object is overwritten behind the platform's back.
    pub object_etag: Option<String>,
}

impl BuiltFile {
    /// The file as the platform describes it once it is re-vended after its backing object
    /// was overwritten: the describe's ETag, whole-file md5 and part checksums become those
    /// of the object's current bytes.
    pub fn revended(&self) -> BuiltFile {
        let mut file = self.clone();
        file.etag = file.object_etag.clone();
        if file.md5.is_some() {
            let (whole, blocks) = whole_and_block_md5(file.content_key, file.spec.size);
            file.md5 = Some(whole);
            file.block_md5 = blocks;
        }
        for part in &mut file.parts {
            if part.md5.is_some() {
                part.md5 = Some(md5_of(file.content_key, part.range));
            }
            if let (Some(_), Some(kind)) = (&part.checksum, file.checksum_type) {
                part.checksum = Some(checksum_of(kind, file.content_key, part.range));
            }
        }
        file
    }

    /// Fills `buf` with the file's bytes starting at `offset` (past the end: zeros).
    pub fn fill(&self, offset: u64, buf: &mut [u8]) {
        match &self.literal {
            Some(bytes) => {
                for (i, b) in buf.iter_mut().enumerate() {
                    *b = usize::try_from(offset + i as u64)
                        .ok()
                        .and_then(|o| bytes.get(o).copied())
                        .unwrap_or(0);
                }
            }
            None => fill_content(self.content_key, offset, buf),
        }
    }
}

/// A built project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltProject {
    /// The id.
    pub id: ProjectId,
    /// The specification (its `files` are moved into [`Dataset::files`]).
    pub spec: ProjectSpec,
    /// Creation time, ms.
    pub created_ms: i64,
}

/// A set of projects with files, ready to serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dataset {
    /// The seed all ids and contents derive from.
    pub seed: u64,
    /// Projects.
    pub projects: Vec<BuiltProject>,
    /// Files of every project.
    pub files: Vec<std::sync::Arc<BuiltFile>>,
    counter: u64,
}

fn part_sizes(spec: &FileSpec, layout: &PartSizes) -> Result<Vec<u64>, DatasetError> {
    match layout {
        PartSizes::Explicit(sizes) => {
            let total: u64 = sizes.iter().sum();
            if total != spec.size {
                return Err(DatasetError::PartSizes {
                    name: spec.name.clone(),
                    parts_total: total,
                    size: spec.size,
                });
            }
            Ok(sizes.clone())
        }
        PartSizes::Uniform(_) if spec.size == 0 => Ok(vec![0]),
        PartSizes::Uniform(0) => Err(DatasetError::ZeroPartSize {
            name: spec.name.clone(),
        }),
        PartSizes::Uniform(part) => {
            let mut sizes = Vec::new();
            let mut left = spec.size;
            while left > 0 {
                let n = left.min(*part);
                sizes.push(n);
                left -= n;
            }
            Ok(sizes)
        }
    }
}

/// Work item for the parallel checksum pass.
/// A hash job's result: (file, part or whole, is md5, value, block MD5s of a whole file).
type HashResult = (usize, Option<usize>, bool, String, Vec<[u8; 16]>);

enum HashJob {
    PartMd5(usize, usize),
    PartChecksum(usize, usize, ChecksumType),
    WholeMd5(usize),
}

impl Dataset {
    /// An empty dataset.
    pub fn new(seed: u64) -> Dataset {
        Dataset {
            seed,
            projects: Vec::new(),
            files: Vec::new(),
            counter: 0,
        }
    }

    /// Builds projects (ids, parts, checksums). Checksums are computed in parallel.
    pub fn build(seed: u64, projects: Vec<ProjectSpec>) -> Result<Dataset, DatasetError> {
        let mut ds = Dataset::new(seed);
        for p in projects {
            ds.add_project(p)?;
        }
        Ok(ds)
    }

    fn next_n(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }

    /// A fresh project id derived from the seed.
    pub fn new_project_id(&mut self) -> ProjectId {
        let n = self.next_n();
        make_id(self.seed, "project", n)
            .parse()
            .unwrap_or_else(|_| unreachable_id())
    }

    /// A fresh file id derived from the seed.
    pub fn new_file_id(&mut self) -> FileId {
        let n = self.next_n();
        make_id(self.seed, "file", n)
            .parse()
            .unwrap_or_else(|_| unreachable_id())
    }

    /// Adds a project with its files; returns its id.
    pub fn add_project(&mut self, mut spec: ProjectSpec) -> Result<ProjectId, DatasetError> {
        let id = match spec.id.clone() {
            Some(id) => id,
            None => self.new_project_id(),
        };
        let files = std::mem::take(&mut spec.files);
        spec.id = Some(id.clone());
        self.projects.push(BuiltProject {
            id: id.clone(),
            spec,
            created_ms: BASE_TIME_MS,
        });
        self.add_files(&id, files)?;
        Ok(id)
    }

    /// Adds files to an existing project (checksums computed in parallel); returns their ids.
    pub fn add_files(
        &mut self,
        project: &ProjectId,
        specs: Vec<FileSpec>,
    ) -> Result<Vec<FileId>, DatasetError> {
        let mut built: Vec<BuiltFile> = Vec::with_capacity(specs.len());
        let mut ids = Vec::with_capacity(specs.len());
        let mut jobs = Vec::new();
        for spec in specs {
            let id = match spec.id.clone() {
                Some(id) => id,
                None => self.new_file_id(),
            };
            let content_key = hash_bytes(self.seed, &[b"content", id.as_str().as_bytes()]);
            let (sizes, checksum_type) = match &spec.kind {
                FileSpecKind::PartsMd5(l)
                | FileSpecKind::NoChecksum(l)
                | FileSpecKind::PublishedDrive(l) => (part_sizes(&spec, l)?, None),
                FileSpecKind::PartsChecksum(t, l) => (part_sizes(&spec, l)?, Some(*t)),
                FileSpecKind::SinglePart | FileSpecKind::DriveSinglePart => (vec![spec.size], None),
                FileSpecKind::SymlinkWholeMd5 | FileSpecKind::SymlinkNoChecksum => {
                    (Vec::new(), None)
                }
            };
            let file_idx = ids.len();
            let mut parts = Vec::with_capacity(sizes.len());
            let mut offset = 0u64;
            for (i, size) in sizes.into_iter().enumerate() {
                parts.push(BuiltPart {
                    index: i as u32 + 1,
                    range: ByteRange::new(offset, size),
                    md5: None,
                    checksum: None,
                });
                offset += size;
                match &spec.kind {
                    FileSpecKind::PartsMd5(_)
                    | FileSpecKind::SinglePart
                    | FileSpecKind::DriveSinglePart => jobs.push(HashJob::PartMd5(file_idx, i)),
                    FileSpecKind::PartsChecksum(t, _) => {
                        jobs.push(HashJob::PartChecksum(file_idx, i, *t))
                    }
                    _ => {}
                }
            }
            if spec.kind.has_whole_md5() {
                jobs.push(HashJob::WholeMd5(file_idx));
            }
            let etag = (spec.etag && spec.kind.is_drive()).then(|| {
                // Azure's form: a quoted hex number.
                format!("\"0x8D{:014X}\"", content_key & 0x00FF_FFFF_FFFF_FFFF)
            });
            ids.push(id.clone());
            built.push(BuiltFile {
                object_etag: etag.clone(),
                etag,
                id,
                project: project.clone(),
                spec,
                parts,
                md5: None,
                checksum_type,
                content_key,
                literal: None,
                block_md5: Vec::new(),
            });
        }
        let files = &built;
        let results: Vec<HashResult> = jobs
            .par_iter()
            .map(|job| match job {
                HashJob::PartMd5(f, p) => {
                    let file = &files[*f];
                    (
                        *f,
                        Some(*p),
                        true,
                        md5_of(file.content_key, file.parts[*p].range),
                        Vec::new(),
                    )
                }
                HashJob::PartChecksum(f, p, t) => {
                    let file = &files[*f];
                    (
                        *f,
                        Some(*p),
                        false,
                        checksum_of(*t, file.content_key, file.parts[*p].range),
                        Vec::new(),
                    )
                }
                HashJob::WholeMd5(f) => {
                    let file = &files[*f];
                    let (whole, blocks) = whole_and_block_md5(file.content_key, file.spec.size);
                    (*f, None, true, whole, blocks)
                }
            })
            .collect();
        for (f, p, is_md5, value, blocks) in results {
            let file = &mut built[f];
            if !blocks.is_empty() {
                file.block_md5 = blocks;
            }
            match p {
                Some(p) if is_md5 => file.parts[p].md5 = Some(value),
                Some(p) => file.parts[p].checksum = Some(value),
                None => file.md5 = Some(value),
            }
        }
        self.files
            .extend(built.into_iter().map(std::sync::Arc::new));
        Ok(ids)
    }
}

fn unreachable_id<T>() -> T {
    // make_id always yields prefix-24 alphanumerics; this cannot be reached.
    panic!("generated id failed validation")
}

/// Parses `4GiB`, `512M`, `1000`, `1.5G` (binary multiples).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let num: f64 = num.trim().parse().ok()?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" | "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    let v = num * mult;
    (v.is_finite() && v >= 0.0).then_some(v as u64)
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;

    use super::*;

    #[test]
    fn checksums_match_known_vectors_of_generated_content() {
        let ds = Dataset::build(
            1,
            vec![
                ProjectSpec::new("p").file(FileSpec::new("/", "x", 100).kind(
                    FileSpecKind::PartsChecksum(ChecksumType::Crc32c, PartSizes::Uniform(60)),
                )),
            ],
        )
        .unwrap();
        let f = &ds.files[0];
        let mut buf = vec![0u8; 40];
        f.fill(60, &mut buf);
        let expect =
            base64::engine::general_purpose::STANDARD.encode(crc32c::crc32c(&buf).to_be_bytes());
        assert_eq!(f.parts[1].checksum.as_deref(), Some(expect.as_str()));
        assert_eq!(f.parts[1].range, ByteRange::new(60, 40));
    }

    #[test]
    fn explicit_sizes_must_add_up() {
        let err = Dataset::build(
            1,
            vec![ProjectSpec::new("p").file(
                FileSpec::new("/", "x", 100)
                    .kind(FileSpecKind::PartsMd5(PartSizes::Explicit(vec![50, 49]))),
            )],
        )
        .unwrap_err();
        assert!(matches!(
            err,
            DatasetError::PartSizes {
                parts_total: 99,
                ..
            }
        ));
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("4GiB"), Some(4 << 30));
        assert_eq!(parse_size("512m"), Some(512 << 20));
        assert_eq!(parse_size("1000"), Some(1000));
        assert_eq!(parse_size("x"), None);
    }
}
