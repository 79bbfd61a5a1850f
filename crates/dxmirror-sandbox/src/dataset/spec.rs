//! What a test asks a dataset for: projects and files with their names, sizes, states, times
//! and integrity kinds (part layout, which checksums the platform states). Plain data with
//! builder methods; [`super::Dataset::build`] turns it into served files.

use crate::model::{ChecksumType, FileId, ProjectId};

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
    /// A file on the published drive (`drive-PUBLISHED`): parts that carry no `md5`, and the
    /// whole-file `md5`; served through the 302 like every drive-backed file.
    PublishedDrive(PartSizes),
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
        self.is_symlink()
            || matches!(
                self,
                FileSpecKind::DriveSinglePart | FileSpecKind::PublishedDrive(_)
            )
    }

    /// True for the kinds whose describe states a whole-file `md5`.
    pub fn has_whole_md5(&self) -> bool {
        matches!(
            self,
            FileSpecKind::SymlinkWholeMd5 | FileSpecKind::PublishedDrive(_)
        )
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
            FileSpecKind::PublishedDrive(_) => "published-drive",
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
    /// A drive-backed file pinned to its backing object: its describe carries
    /// `symlinkTargetIdentifier: {"ETag": ...}` and the storage host honours `If-Match`
    /// (off by default; ignored for files that are not drive-backed).
    pub etag: bool,
    /// Changes to every describe of this file, applied last, as the platform of another
    /// region or release might answer: each key set to the value, or removed for `None`
    /// (none by default). E.g. `archivalState` removed, an unknown field added, `size` made
    /// a string.
    pub describe_patch: Vec<(String, Option<serde_json::Value>)>,
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
            etag: false,
            describe_patch: Vec::new(),
        }
    }

    /// Sets `key` to `value` in every describe of this file (see [`FileSpec::describe_patch`]).
    pub fn describe_set(mut self, key: &str, value: serde_json::Value) -> FileSpec {
        self.describe_patch.push((key.to_owned(), Some(value)));
        self
    }

    /// Removes `key` from every describe of this file (see [`FileSpec::describe_patch`]).
    pub fn describe_without(mut self, key: &str) -> FileSpec {
        self.describe_patch.push((key.to_owned(), None));
        self
    }

    /// Pins a drive-backed file to its backing object's ETag (see [`FileSpec::etag`]).
    pub fn pinned(mut self) -> FileSpec {
        self.etag = true;
        self
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
