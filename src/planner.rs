//! Pure planning: turns a platform file description into the work of mirroring it.
//!
//! A file is cut into *segments*, the ranges the platform gives a checksum for (its parts, or
//! the whole file for a parts-less symlink), and each segment into *chunks*, the unit one
//! connection fetches and the journal tracks. Chunks never cross a segment boundary, so a bad
//! segment is healed by re-fetching only its own chunks.
//!
//! This module does no IO and cannot fail except on descriptions that contradict themselves
//! (parts whose sizes do not add up to the file size, unparsable checksums).

use crate::model::{ByteRange, ChecksumType, Digest, DigestError, RemoteFile};

/// The drive of files on a published drive: dxpy downloads them like parts-less symlinks
/// whatever parts they list (their parts may carry no md5), and checks the whole-file `md5`.
pub const PUBLISHED_DRIVE: &str = "drive-PUBLISHED";

/// How a file's integrity is established (the file kinds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileKind {
    /// Platform parts, each with an `md5`.
    PartsMd5,
    /// Platform parts with only a `checksum` of the file's `checksumType`.
    PartsChecksum,
    /// A parts-less symlink with a whole-file `md5`, split locally.
    WholeMd5,
    /// A file on [`PUBLISHED_DRIVE`] whose parts do not all carry a checksum: verified, like
    /// a parts-less symlink, by its whole-file `md5` (one segment).
    PublishedMd5,
    /// Nothing from the platform to check against: mirrored and given a SHA-256 only.
    Unverified,
}

impl FileKind {
    /// Stable text form used in the journal and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            FileKind::PartsMd5 => "parts-md5",
            FileKind::PartsChecksum => "parts-checksum",
            FileKind::WholeMd5 => "whole-md5",
            FileKind::PublishedMd5 => "published-md5",
            FileKind::Unverified => "unverified",
        }
    }

    /// Parses [`FileKind::as_str`].
    pub fn parse(s: &str) -> Option<FileKind> {
        Some(match s {
            "parts-md5" => FileKind::PartsMd5,
            "parts-checksum" => FileKind::PartsChecksum,
            "whole-md5" => FileKind::WholeMd5,
            "published-md5" => FileKind::PublishedMd5,
            "unverified" => FileKind::Unverified,
            _ => return None,
        })
    }
}

/// A range with a platform checksum (or none): one part, or the whole file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// Position in the plan, from 0.
    pub idx: u32,
    /// The platform part number, when the segment is a platform part.
    pub part_index: Option<u32>,
    /// Bytes covered.
    pub range: ByteRange,
    /// What the bytes must hash to; `None` when the platform gives nothing.
    pub expect: Option<Digest>,
}

/// The unit of fetching and of journaled progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk {
    /// Position in the plan, from 0.
    pub idx: u32,
    /// The segment that contains it.
    pub segment: u32,
    /// Bytes covered (never empty).
    pub range: ByteRange,
}

/// Everything needed to fetch and verify one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilePlan {
    /// How integrity is established.
    pub kind: FileKind,
    /// File size in bytes.
    pub size: u64,
    /// Checksum ranges, in order, covering `[0, size)` exactly.
    pub segments: Vec<Segment>,
    /// Fetch ranges, in order, covering `[0, size)` exactly, each inside one segment.
    pub chunks: Vec<Chunk>,
}

impl FilePlan {
    /// The chunks of one segment.
    pub fn chunks_of(&self, segment: u32) -> impl Iterator<Item = &Chunk> {
        self.chunks.iter().filter(move |c| c.segment == segment)
    }
}

/// A file description that cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// Part sizes do not add up to the file size.
    #[error("the sizes of the parts add up to {parts_total} bytes but the file size is {size}")]
    SizeMismatch {
        /// Sum of the part sizes.
        parts_total: u64,
        /// The described size.
        size: u64,
    },
    /// Two parts share a number.
    #[error("part {0} is described twice")]
    DuplicatePart(u32),
    /// A checksum could not be parsed.
    #[error("part {part:?}: {source}")]
    Digest {
        /// The part number, or `None` for the whole-file md5.
        part: Option<u32>,
        /// What was wrong.
        source: DigestError,
    },
}

/// Plans a file: segments from its parts (or the whole file), chunks of at most `chunk_size`
/// bytes inside each segment.
///
/// A file on [`PUBLISHED_DRIVE`] with a whole-file `md5` keeps its part segments when every
/// part carries a checksum (they check every byte, each located to its part); otherwise it is
/// planned as one segment checked by the whole-file `md5` ([`FileKind::PublishedMd5`]), as
/// dxpy does, instead of ending `unverified` for want of part checksums.
pub fn plan_file(file: &RemoteFile, chunk_size: u64) -> Result<FilePlan, PlanError> {
    let chunk_size = chunk_size.max(1);
    let plan = plan_segments(file, chunk_size)?;
    let published = file.drive.as_deref() == Some(PUBLISHED_DRIVE);
    if !published || plan.kind != FileKind::Unverified || file.md5.is_none() {
        return Ok(plan);
    }
    let mut parts_less = file.clone();
    parts_less.parts = None;
    let mut plan = plan_segments(&parts_less, chunk_size)?;
    plan.kind = FileKind::PublishedMd5;
    Ok(plan)
}

fn plan_segments(file: &RemoteFile, chunk_size: u64) -> Result<FilePlan, PlanError> {
    let checksum_type: Option<ChecksumType> = match &file.checksum_type {
        Some(t) => Some(*t.get().map_err(|source| PlanError::Digest {
            part: None,
            source: source.clone(),
        })?),
        None => None,
    };

    let mut segments = Vec::new();
    let mut kind = FileKind::Unverified;
    match &file.parts {
        Some(parts) if !parts.is_empty() => {
            let mut sorted: Vec<_> = parts.iter().collect();
            sorted.sort_by_key(|p| p.index);
            let mut offset = 0u64;
            let (mut n_md5, mut n_checksum) = (0usize, 0usize);
            for (pos, part) in sorted.iter().enumerate() {
                if pos > 0 && sorted[pos - 1].index == part.index {
                    return Err(PlanError::DuplicatePart(part.index));
                }
                // The dxpy rule: a part's md5 is the check; its checksum only when md5 is absent.
                let expect = if let Some(md5) = &part.md5 {
                    n_md5 += 1;
                    Some(Digest::md5_hex(md5).map_err(|source| PlanError::Digest {
                        part: Some(part.index),
                        source,
                    })?)
                } else if let (Some(sum), Some(ty)) = (&part.checksum, checksum_type) {
                    n_checksum += 1;
                    Some(
                        Digest::checksum(ty, sum).map_err(|source| PlanError::Digest {
                            part: Some(part.index),
                            source,
                        })?,
                    )
                } else {
                    None
                };
                segments.push(Segment {
                    idx: pos as u32,
                    part_index: Some(part.index),
                    range: ByteRange::new(offset, part.size),
                    expect,
                });
                offset += part.size;
            }
            if offset != file.size {
                return Err(PlanError::SizeMismatch {
                    parts_total: offset,
                    size: file.size,
                });
            }
            if n_md5 + n_checksum == segments.len() {
                kind = if n_checksum == 0 {
                    FileKind::PartsMd5
                } else {
                    FileKind::PartsChecksum
                };
            }
        }
        _ => {
            let expect = match &file.md5 {
                Some(md5) => Some(md5.get().cloned().map_err(|source| PlanError::Digest {
                    part: None,
                    source: source.clone(),
                })?),
                None => None,
            };
            if expect.is_some() {
                kind = FileKind::WholeMd5;
            }
            segments.push(Segment {
                idx: 0,
                part_index: None,
                range: ByteRange::new(0, file.size),
                expect,
            });
        }
    }

    let mut chunks = Vec::new();
    for seg in &segments {
        let mut offset = seg.range.offset;
        while offset < seg.range.end() {
            let len = chunk_size.min(seg.range.end() - offset);
            chunks.push(Chunk {
                idx: chunks.len() as u32,
                segment: seg.idx,
                range: ByteRange::new(offset, len),
            });
            offset += len;
        }
    }
    Ok(FilePlan {
        kind,
        size: file.size,
        segments,
        chunks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::testing::{md5_part, project_id, RemoteFileBuilder};
    use crate::model::Stated;

    fn file(size: u64, parts: Option<Vec<(u32, u64)>>, md5: Option<&str>) -> RemoteFile {
        let parts = parts.map(|ps| {
            ps.into_iter()
                .map(|(index, size)| md5_part(index, size, "d41d8cd98f00b204e9800998ecf8427e"))
                .collect()
        });
        let mut f = RemoteFileBuilder::new(&project_id(1), 1)
            .name("x")
            .size(size)
            .parts(parts)
            .build();
        f.md5 = md5.map(Stated::md5);
        f
    }

    /// Chunks and segments must each tile `[0, size)` exactly, and chunks stay inside segments.
    fn check_tiling(plan: &FilePlan, chunk_size: u64) {
        let mut at = 0;
        for seg in &plan.segments {
            assert_eq!(seg.range.offset, at);
            at = seg.range.end();
        }
        assert_eq!(at, plan.size);
        let mut at = 0;
        for (i, c) in plan.chunks.iter().enumerate() {
            assert_eq!(c.idx as usize, i);
            assert_eq!(c.range.offset, at);
            assert!(c.range.len > 0 && c.range.len <= chunk_size);
            let seg = &plan.segments[c.segment as usize];
            assert!(c.range.offset >= seg.range.offset && c.range.end() <= seg.range.end());
            at = c.range.end();
        }
        assert_eq!(at, plan.size);
    }

    #[test]
    fn parts_are_split_at_part_boundaries() {
        let f = file(25, Some(vec![(1, 10), (2, 10), (3, 5)]), None);
        let plan = plan_file(&f, 4).unwrap();
        assert_eq!(plan.kind, FileKind::PartsMd5);
        assert_eq!(plan.segments.len(), 3);
        // 10 -> 4,4,2 ; 10 -> 4,4,2 ; 5 -> 4,1
        let lens: Vec<u64> = plan.chunks.iter().map(|c| c.range.len).collect();
        assert_eq!(lens, vec![4, 4, 2, 4, 4, 2, 4, 1]);
        check_tiling(&plan, 4);
    }

    #[test]
    fn part_sizes_must_add_up() {
        let f = file(26, Some(vec![(1, 10), (2, 10), (3, 5)]), None);
        assert_eq!(
            plan_file(&f, 4),
            Err(PlanError::SizeMismatch {
                parts_total: 25,
                size: 26
            })
        );
    }

    #[test]
    fn symlink_without_parts_is_one_segment() {
        let f = file(10, None, Some("d41d8cd98f00b204e9800998ecf8427e"));
        let plan = plan_file(&f, 3).unwrap();
        assert_eq!(plan.kind, FileKind::WholeMd5);
        assert_eq!(plan.segments.len(), 1);
        assert_eq!(plan.chunks.len(), 4);
        check_tiling(&plan, 3);
    }

    #[test]
    fn zero_byte_file_has_no_chunks() {
        let plan = plan_file(&file(0, Some(vec![(1, 0)]), None), 3).unwrap();
        assert!(plan.chunks.is_empty());
        assert_eq!(plan.segments.len(), 1);
        let plan = plan_file(&file(0, None, None), 3).unwrap();
        assert_eq!(plan.kind, FileKind::Unverified);
        assert!(plan.chunks.is_empty());
    }

    #[test]
    fn unordered_parts_with_gaps_in_numbering() {
        let f = file(7, Some(vec![(11, 3), (1, 4)]), None);
        let plan = plan_file(&f, 100).unwrap();
        assert_eq!(plan.segments[0].part_index, Some(1));
        assert_eq!(plan.segments[0].range, ByteRange::new(0, 4));
        assert_eq!(plan.segments[1].part_index, Some(11));
        check_tiling(&plan, 100);
    }

    #[test]
    fn checksum_only_parts() {
        let mut f = file(4, Some(vec![(1, 4)]), None);
        f.checksum_type = Some(Stated::checksum_type("CRC32C"));
        let parts = f.parts.as_mut().unwrap();
        parts[0].md5 = None;
        parts[0].checksum = Some("ImIEBA==".into());
        let plan = plan_file(&f, 100).unwrap();
        assert_eq!(plan.kind, FileKind::PartsChecksum);
        assert_eq!(
            plan.segments[0].expect.as_ref().unwrap().algorithm(),
            "CRC32C"
        );
    }

    fn published(size: u64, parts: Vec<(u32, u64, bool)>, md5: Option<&str>) -> RemoteFile {
        let mut f = file(size, Some(parts.iter().map(|p| (p.0, p.1)).collect()), md5);
        f.drive = Some(PUBLISHED_DRIVE.to_owned());
        for (part, (_, _, with_md5)) in f.parts.iter_mut().flatten().zip(&parts) {
            if !with_md5 {
                part.md5 = None;
            }
        }
        f
    }

    #[test]
    fn published_drive_files_are_verified_by_their_whole_md5() {
        let whole = "0cc175b9c0f1b6a831c399e269772661";
        // Parts without md5: one whole-file segment with the whole-file md5.
        let f = published(10, vec![(1, 6, false), (2, 4, false)], Some(whole));
        let plan = plan_file(&f, 3).unwrap();
        assert_eq!(plan.kind, FileKind::PublishedMd5);
        assert_eq!(plan.segments.len(), 1);
        assert_eq!(plan.segments[0].part_index, None);
        assert_eq!(
            plan.segments[0].expect,
            Some(Digest::md5_hex(whole).unwrap())
        );
        check_tiling(&plan, 3);
        // Some parts with md5, some without: the whole-file md5 still covers every byte.
        let f = published(10, vec![(1, 6, true), (2, 4, false)], Some(whole));
        assert_eq!(plan_file(&f, 3).unwrap().kind, FileKind::PublishedMd5);
        // Every part with md5: the parts, each located.
        let f = published(10, vec![(1, 6, true), (2, 4, true)], Some(whole));
        let plan = plan_file(&f, 3).unwrap();
        assert_eq!(plan.kind, FileKind::PartsMd5);
        assert_eq!(plan.segments.len(), 2);
        // No whole-file md5: nothing to check against.
        let f = published(10, vec![(1, 6, false), (2, 4, false)], None);
        assert_eq!(plan_file(&f, 3).unwrap().kind, FileKind::Unverified);
        // A bad whole-file md5 is a planning error, not an unverified file.
        let f = published(10, vec![(1, 10, false)], Some("xyz"));
        assert!(matches!(
            plan_file(&f, 3),
            Err(PlanError::Digest { part: None, .. })
        ));
        // Another drive keeps today's rule: parts without md5 are unverified.
        let mut f = published(10, vec![(1, 10, false)], Some(whole));
        f.drive = Some("drive-SJCLOUD".to_owned());
        assert_eq!(plan_file(&f, 3).unwrap().kind, FileKind::Unverified);
        // The kind's text round-trips.
        assert_eq!(
            FileKind::parse(FileKind::PublishedMd5.as_str()),
            Some(FileKind::PublishedMd5)
        );
    }

    #[test]
    fn tiling_holds_for_many_shapes() {
        for size in [1u64, 2, 7, 64, 1000] {
            for chunk in [1u64, 3, 64, 1 << 20] {
                let parts = vec![(1, size / 3), (2, size / 3), (3, size - 2 * (size / 3))];
                check_tiling(
                    &plan_file(&file(size, Some(parts), None), chunk).unwrap(),
                    chunk,
                );
                check_tiling(&plan_file(&file(size, None, None), chunk).unwrap(), chunk);
            }
        }
    }
}
