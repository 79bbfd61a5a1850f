//! Test factories for the domain types (ids, `RemoteFile`s), behind the `test-support` feature,
//! so that the library's unit tests and the integration tests build them in one way.
//! Only test builds enable it (through dev-dependencies); release binaries carry none of it.

use crate::{
    ArchivalState, ChecksumType, Digest, FileId, ProjectId, RemoteFile, RemotePart, RemoteState,
    Stated,
};

/// The project id numbered `n`: `project-` and `n` in 24 decimal digits.
pub fn project_id(n: u32) -> ProjectId {
    ProjectId(format!("project-{n:024}"))
}

/// The file id numbered `n`: `file-` and `n` in 24 decimal digits.
pub fn file_id(n: u32) -> FileId {
    FileId(format!("file-{n:024}"))
}

/// One part of `size` bytes numbered `index`, checked by its `md5` (hex).
pub fn md5_part(index: u32, size: u64, md5: impl Into<String>) -> RemotePart {
    RemotePart {
        index,
        size,
        md5: Some(md5.into()),
        checksum: None,
    }
}

/// Builds a [`RemoteFile`]: by default the file [`file_id`]`(n)` named `f{n}` in `/` of
/// `project`, empty, closed and live, created and modified at 0, without parts, drive or
/// checksums.
#[derive(Debug, Clone)]
pub struct RemoteFileBuilder {
    file: RemoteFile,
}

impl RemoteFileBuilder {
    /// The defaults above.
    pub fn new(project: &ProjectId, n: u32) -> RemoteFileBuilder {
        RemoteFileBuilder {
            file: RemoteFile {
                id: file_id(n),
                project: project.clone(),
                name: format!("f{n}"),
                folder: "/".into(),
                size: 0,
                state: RemoteState::Closed,
                archival_state: ArchivalState::Live,
                created_ms: 0,
                modified_ms: 0,
                parts: None,
                drive: None,
                md5: None,
                checksum_type: None,
                etag: None,
            },
        }
    }

    /// The file name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.file.name = name.into();
        self
    }

    /// The folder (starting with `/`).
    pub fn folder(mut self, folder: impl Into<String>) -> Self {
        self.file.folder = folder.into();
        self
    }

    /// The size in bytes.
    pub fn size(mut self, size: u64) -> Self {
        self.file.size = size;
        self
    }

    /// The lifecycle state.
    pub fn state(mut self, state: RemoteState) -> Self {
        self.file.state = state;
        self
    }

    /// The parts (`None`: the platform gave none).
    pub fn parts(mut self, parts: impl Into<Option<Vec<RemotePart>>>) -> Self {
        self.file.parts = parts.into();
        self
    }

    /// The whole-file `md5` as the platform would state it (kept even when malformed).
    pub fn md5(mut self, md5: impl Into<String>) -> Self {
        self.file.md5 = Some(Stated::<Digest>::md5(md5));
        self
    }

    /// The `checksumType` as the platform would state it (kept even when unknown).
    pub fn checksum_type(mut self, checksum_type: impl Into<String>) -> Self {
        self.file.checksum_type = Some(Stated::<ChecksumType>::checksum_type(checksum_type));
        self
    }

    /// The creation time, ms since the epoch.
    pub fn created(mut self, ms: i64) -> Self {
        self.file.created_ms = ms;
        self
    }

    /// The modification time, ms since the epoch.
    pub fn modified(mut self, ms: i64) -> Self {
        self.file.modified_ms = ms;
        self
    }

    /// The archival state as the platform would state it (`live`, `archived`, ...).
    pub fn archival(mut self, state: &str) -> Self {
        self.file.archival_state = ArchivalState::parse(state);
        self
    }

    /// The backing object's ETag (`symlinkTargetIdentifier.ETag`).
    pub fn etag(mut self, etag: &str) -> Self {
        self.file.etag = Some(etag.to_owned());
        self
    }

    /// The file.
    pub fn build(self) -> RemoteFile {
        self.file
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_valid() {
        assert_eq!(
            project_id(1).as_str().parse::<ProjectId>().as_ref(),
            Ok(&project_id(1))
        );
        assert_eq!(
            file_id(u32::MAX).as_str().parse::<FileId>().as_ref(),
            Ok(&file_id(u32::MAX))
        );
    }

    #[test]
    fn the_builder_sets_what_it_is_told() {
        let f = RemoteFileBuilder::new(&project_id(2), 7)
            .name("a.bam")
            .folder("/x")
            .size(10)
            .md5("nope")
            .checksum_type("CRC32C")
            .archival("archived")
            .created(5)
            .modified(6)
            .build();
        assert_eq!((f.id, f.project), (file_id(7), project_id(2)));
        assert_eq!(
            (f.name.as_str(), f.folder.as_str(), f.size),
            ("a.bam", "/x", 10)
        );
        assert_eq!(f.md5.as_ref().map(Stated::raw), Some("nope"));
        assert_eq!(
            f.checksum_type.as_ref().map(|t| t.get().ok().copied()),
            Some(Some(ChecksumType::Crc32c))
        );
        assert_eq!(f.archival_state, ArchivalState::Archived);
        assert_eq!((f.created_ms, f.modified_ms), (5, 6));
    }
}
