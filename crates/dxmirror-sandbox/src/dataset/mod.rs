//! Synthetic datasets for the sandbox: projects, files, their deterministic content and the
//! checksums the platform would state for them.
//!
//! File content is a pure function of (dataset seed, file id, offset), generated on demand by a
//! counter-based PRNG, so multi-GB files need no storage. Checksums are computed once when a
//! dataset is built (in parallel with rayon). This module owns no sockets and no clocks.

use std::collections::BTreeSet;

use base64::Engine as _;
use md5::Digest as _;
use rayon::prelude::*;

use crate::model::{ByteRange, ChecksumType, FileId, ProjectId};

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

/// How a file is cut into platform parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartSizes {
    /// Parts of this size, the last one holding the remainder.
    Uniform(u64),
    /// These exact sizes, in order (must add up to the file size).
    Explicit(Vec<u64>),
}

/// What the platform says about a file's integrity (the file kinds to serve).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileSpecKind {
    /// Parts, each with an `md5`.
    PartsMd5(PartSizes),
    /// Parts with only a `checksum` of this `checksumType`.
    PartsChecksum(ChecksumType, PartSizes),
    /// A drive-backed (symlink) file without parts, with a whole-file `md5`.
    SymlinkWholeMd5,
    /// A drive-backed (symlink) file without parts and without any checksum.
    SymlinkNoChecksum,
    /// One part covering the whole file, with an `md5`.
    SinglePart,
    /// Parts that carry neither `md5` nor `checksum`.
    NoChecksum(PartSizes),
    /// A drive-backed file exposing one part (with an `md5`) that covers the whole file, as
    /// "Symlinks 2.0" files do: described with `drive` and `parts`, served through the 302.
    DriveSinglePart,
}

impl FileSpecKind {
    /// True for parts-less drive-backed files (old-style symlinks).
    pub fn is_symlink(&self) -> bool {
        matches!(
            self,
            FileSpecKind::SymlinkWholeMd5 | FileSpecKind::SymlinkNoChecksum
        )
    }

    /// True for every drive-backed file: described with `drive`, served through a 302 to the
    /// storage host.
    pub fn is_drive(&self) -> bool {
        self.is_symlink() || *self == FileSpecKind::DriveSinglePart
    }

    /// Short stable name, for listings and stats.
    pub fn as_str(&self) -> &'static str {
        match self {
            FileSpecKind::PartsMd5(_) => "parts-md5",
            FileSpecKind::PartsChecksum(..) => "parts-checksum",
            FileSpecKind::SymlinkWholeMd5 => "symlink-md5",
            FileSpecKind::SymlinkNoChecksum => "symlink-no-checksum",
            FileSpecKind::SinglePart => "single-part",
            FileSpecKind::NoChecksum(_) => "no-checksum",
            FileSpecKind::DriveSinglePart => "drive-single-part",
        }
    }
}

/// A file to put in a dataset. Names and folders are served verbatim, however hostile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSpec {
    /// Fixed id; `None` derives one from the dataset seed and a counter.
    pub id: Option<FileId>,
    /// File name (anything, including `/`, `..`, NUL, control characters).
    pub name: String,
    /// Folder, starting with `/`.
    pub folder: String,
    /// Size in bytes.
    pub size: u64,
    /// Integrity kind and part layout.
    pub kind: FileSpecKind,
    /// `open`, `closing` or `closed`.
    pub state: String,
    /// `live`, `archival`, `archived` or `unarchiving`.
    pub archival_state: String,
    /// Creation time, ms since the epoch.
    pub created_ms: i64,
    /// Last modification time, ms since the epoch.
    pub modified_ms: i64,
}

/// Base timestamp of synthetic datasets (2026-01-05T00:00:00Z), in ms.
pub const BASE_TIME_MS: i64 = 1_767_571_200_000;

impl FileSpec {
    /// A closed, live file with per-part md5 in 16 MiB parts, created at [`BASE_TIME_MS`].
    pub fn new(folder: &str, name: &str, size: u64) -> FileSpec {
        FileSpec {
            id: None,
            name: name.to_owned(),
            folder: folder.to_owned(),
            size,
            kind: FileSpecKind::PartsMd5(PartSizes::Uniform(16 << 20)),
            state: "closed".to_owned(),
            archival_state: "live".to_owned(),
            created_ms: BASE_TIME_MS,
            modified_ms: BASE_TIME_MS,
        }
    }

    /// Sets the kind.
    pub fn kind(mut self, kind: FileSpecKind) -> FileSpec {
        self.kind = kind;
        self
    }

    /// Sets `state` (e.g. `open`).
    pub fn state(mut self, state: &str) -> FileSpec {
        self.state = state.to_owned();
        self
    }

    /// Sets `archivalState` (e.g. `archived`).
    pub fn archival(mut self, archival_state: &str) -> FileSpec {
        self.archival_state = archival_state.to_owned();
        self
    }

    /// Sets created and modified times (ms since the epoch).
    pub fn times(mut self, created_ms: i64, modified_ms: i64) -> FileSpec {
        self.created_ms = created_ms;
        self.modified_ms = modified_ms;
        self
    }

    /// Sets a fixed id. The same id may be given to files of several projects, as the
    /// platform allows (clones): the copies have the same content, which derives from the id,
    /// so give them the same size and kind; folder and name may differ.
    pub fn id(mut self, id: FileId) -> FileSpec {
        self.id = Some(id);
        self
    }
}

/// A project to put in a dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectSpec {
    /// Fixed id; `None` derives one.
    pub id: Option<ProjectId>,
    /// Project name (a St. Jude data request's name).
    pub name: String,
    /// Tags, e.g. `sjcp-project-data`.
    pub tags: Vec<String>,
    /// Properties.
    pub properties: Vec<(String, String)>,
    /// The caller's level: `VIEW`, `UPLOAD`, `CONTRIBUTE`, `ADMINISTER`.
    pub level: String,
    /// True when the project forbids downloads.
    pub download_restricted: bool,
    /// Files.
    pub files: Vec<FileSpec>,
}

impl ProjectSpec {
    /// An empty VIEW-level project.
    pub fn new(name: &str) -> ProjectSpec {
        ProjectSpec {
            id: None,
            name: name.to_owned(),
            tags: Vec::new(),
            properties: Vec::new(),
            level: "VIEW".to_owned(),
            download_restricted: false,
            files: Vec::new(),
        }
    }

    /// Adds a tag.
    pub fn tag(mut self, tag: &str) -> ProjectSpec {
        self.tags.push(tag.to_owned());
        self
    }

    /// Adds a file.
    pub fn file(mut self, file: FileSpec) -> ProjectSpec {
        self.files.push(file);
        self
    }
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
    /// Whole-file md5 (symlinks with md5 only).
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
}

impl BuiltFile {
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

/// A SplitMix64 step: the finaliser used as a counter-based generator.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// Hashes bytes into a u64 (FNV-1a then a SplitMix finish). Not cryptographic.
pub(crate) fn hash_bytes(seed: u64, parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for part in parts {
        for &b in *part {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h = mix64(h ^ part.len() as u64);
    }
    mix64(h)
}

/// The word at word index `w` of the stream with key `key`.
#[inline]
fn word(key: u64, w: u64) -> [u8; 8] {
    mix64(key.wrapping_add(w.wrapping_add(1).wrapping_mul(GAMMA))).to_le_bytes()
}

/// Fills `buf` with the content stream `key` from byte `offset`. Random access, any alignment.
pub fn fill_content(key: u64, offset: u64, buf: &mut [u8]) {
    let mut pos = 0usize;
    let mut off = offset;
    let head = (off % 8) as usize;
    if head != 0 && !buf.is_empty() {
        let w = word(key, off / 8);
        let n = (8 - head).min(buf.len());
        buf[..n].copy_from_slice(&w[head..head + n]);
        pos += n;
        off += n as u64;
    }
    let mut widx = off / 8;
    let mut chunks = buf[pos..].chunks_exact_mut(8);
    for chunk in &mut chunks {
        chunk.copy_from_slice(&word(key, widx));
        widx += 1;
    }
    let rest = chunks.into_remainder();
    if !rest.is_empty() {
        let w = word(key, widx);
        let n = rest.len();
        rest.copy_from_slice(&w[..n]);
    }
}

const ID_ALPHABET: &[u8] = b"0123456789BFGJKPQVXYZbfgjkpqvxyz";

fn make_id(seed: u64, kind: &str, n: u64) -> String {
    let mut s = String::with_capacity(kind.len() + 25);
    s.push_str(kind);
    s.push('-');
    let mut h = hash_bytes(seed, &[kind.as_bytes(), &n.to_le_bytes()]);
    for i in 0..24 {
        if i == 12 {
            h = mix64(h ^ n);
        }
        s.push(char::from(ID_ALPHABET[(h & 31) as usize]));
        h >>= 5;
    }
    s
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

/// Streams the content of `range` through `f` in 1 MiB pieces.
fn for_each_piece(key: u64, range: ByteRange, mut f: impl FnMut(&[u8])) {
    let mut buf = vec![0u8; (1usize << 20).min(range.len as usize)];
    let mut off = range.offset;
    while off < range.end() {
        let n = (range.end() - off).min(buf.len() as u64) as usize;
        fill_content(key, off, &mut buf[..n]);
        f(&buf[..n]);
        off += n as u64;
    }
}

fn md5_of(key: u64, range: ByteRange) -> String {
    let mut h = md5::Md5::new();
    for_each_piece(key, range, |b| h.update(b));
    hex::encode(h.finalize())
}

/// Size of the blocks of [`BuiltFile::block_md5`] (Azure's limit for a range's MD5).
pub const BLOCK_MD5_SIZE: u64 = 4 << 20;

/// The whole-file MD5 (hex) and the MD5 of each [`BLOCK_MD5_SIZE`] block, in one pass.
fn whole_and_block_md5(key: u64, size: u64) -> (String, Vec<[u8; 16]>) {
    let mut whole = md5::Md5::new();
    let mut blocks = Vec::new();
    let mut start = 0;
    while start < size {
        let end = (start + BLOCK_MD5_SIZE).min(size);
        let mut block = md5::Md5::new();
        for_each_piece(key, ByteRange::new(start, end - start), |b| {
            whole.update(b);
            block.update(b);
        });
        blocks.push(block.finalize().into());
        start = end;
    }
    (hex::encode(whole.finalize()), blocks)
}

fn checksum_of(kind: ChecksumType, key: u64, range: ByteRange) -> String {
    let raw: Vec<u8> = match kind {
        ChecksumType::Crc32 => {
            let mut h = crc32fast::Hasher::new();
            for_each_piece(key, range, |b| h.update(b));
            h.finalize().to_be_bytes().to_vec()
        }
        ChecksumType::Crc32c => {
            let mut crc = 0u32;
            for_each_piece(key, range, |b| crc = crc32c::crc32c_append(crc, b));
            crc.to_be_bytes().to_vec()
        }
        ChecksumType::Crc64Nvme => {
            let mut h = crc64fast_nvme::Digest::new();
            for_each_piece(key, range, |b| h.write(b));
            h.sum64().to_be_bytes().to_vec()
        }
        ChecksumType::Sha1 => {
            let mut h = sha1::Sha1::new();
            for_each_piece(key, range, |b| h.update(b));
            h.finalize().to_vec()
        }
        ChecksumType::Sha256 => {
            let mut h = sha2::Sha256::new();
            for_each_piece(key, range, |b| h.update(b));
            h.finalize().to_vec()
        }
    };
    base64::engine::general_purpose::STANDARD.encode(raw)
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
                FileSpecKind::PartsMd5(l) | FileSpecKind::NoChecksum(l) => {
                    (part_sizes(&spec, l)?, None)
                }
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
            if spec.kind == FileSpecKind::SymlinkWholeMd5 {
                jobs.push(HashJob::WholeMd5(file_idx));
            }
            ids.push(id.clone());
            built.push(BuiltFile {
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
    fn content_is_random_access() {
        let mut whole = vec![0u8; 1000];
        fill_content(42, 0, &mut whole);
        for start in [0usize, 1, 7, 8, 9, 333, 999] {
            for len in [0usize, 1, 5, 8, 17, 1000 - start] {
                let len = len.min(1000 - start);
                let mut part = vec![0u8; len];
                fill_content(42, start as u64, &mut part);
                assert_eq!(
                    &part[..],
                    &whole[start..start + len],
                    "start {start} len {len}"
                );
            }
        }
        let mut other = vec![0u8; 1000];
        fill_content(43, 0, &mut other);
        assert_ne!(whole, other);
    }

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

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("4GiB"), Some(4 << 30));
        assert_eq!(parse_size("512m"), Some(512 << 20));
        assert_eq!(parse_size("1000"), Some(1000));
        assert_eq!(parse_size("x"), None);
    }
}
