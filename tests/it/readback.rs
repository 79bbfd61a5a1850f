//! Integration tests: read-back hashing on a real filesystem finds flipped bytes in the right
//! segment and chunk, over zero-byte, one-byte, buffer-multiple and odd-tailed shapes.

// Test helpers outside #[test] functions may unwrap too: a failure is a failed test.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::FileExt;

use dxmirror::model::testing::md5_part;
use dxmirror::model::RemoteFile;
use dxmirror::planner::plan_file;
use dxmirror::readback::read_back;
use dxmirror::store::ProjectStore;
use md5::Digest as _;

use crate::store::{fid, remote};

/// A file described with md5 parts of `part_sizes` over `bytes`.
fn md5_file(bytes: &[u8], part_sizes: &[u64]) -> RemoteFile {
    let mut at = 0usize;
    let parts = part_sizes
        .iter()
        .enumerate()
        .map(|(i, &s)| {
            let s = s as usize;
            let part = md5_part(
                i as u32 + 1,
                s as u64,
                hex::encode(md5::Md5::digest(&bytes[at..at + s])),
            );
            at += s;
            part
        })
        .collect();
    let mut f = remote(1, "/", "f", 0);
    f.size = bytes.len() as u64;
    f.parts = Some(parts);
    f
}

#[test]
fn read_back_finds_flipped_bytes_in_the_right_segment_and_chunk() {
    let root = tempfile::tempdir().unwrap();
    let store = ProjectStore::open(root.path(), "P").unwrap();
    let mut rng = fastrand::Rng::with_seed(42);
    let mib = 1u64 << 20;
    // (part sizes, chunk size): zero-byte, one byte, exact buffer multiples, odd tails.
    let shapes: Vec<(Vec<u64>, u64)> = vec![
        (vec![0], 64),
        (vec![1], 64),
        (vec![mib, mib], mib / 2),
        (vec![mib + 1, 0, 3 * mib - 1, 17], 700_001),
        (vec![5, 7, 11], 4),
    ];
    for (n, (sizes, chunk)) in shapes.into_iter().enumerate() {
        let size: u64 = sizes.iter().sum();
        let bytes: Vec<u8> = (0..size).map(|_| rng.u8(..)).collect();
        let plan = plan_file(&md5_file(&bytes, &sizes), chunk).unwrap();
        let id = fid(n as u32 + 1);
        let (f, _) = store.open_staging(&id, size).unwrap();
        f.write_all_at(&bytes, 0).unwrap();
        let path = store.staging_path(&id);

        let good = read_back(&path, &plan).unwrap();
        assert!(good.all_ok(), "shape {n}: {good:?}");
        assert_eq!(
            good.sha256,
            <[u8; 32]>::from(sha2::Sha256::digest(&bytes)),
            "shape {n}"
        );
        for c in &plan.chunks {
            let want = crc32c::crc32c(&bytes[c.range.offset as usize..c.range.end() as usize]);
            assert_eq!(good.chunk_crcs[c.idx as usize], want);
        }

        if size == 0 {
            continue;
        }
        for _ in 0..3 {
            let at = rng.u64(0..size);
            let mut byte = [0u8];
            f.read_exact_at(&mut byte, at).unwrap();
            f.write_all_at(&[byte[0] ^ 0x40], at).unwrap();
            let bad = read_back(&path, &plan).unwrap();
            f.write_all_at(&byte, at).unwrap();

            let seg = plan
                .segments
                .iter()
                .find(|s| s.range.offset <= at && at < s.range.end())
                .unwrap();
            let chunk = plan
                .chunks
                .iter()
                .find(|c| c.range.offset <= at && at < c.range.end())
                .unwrap();
            let bad_segs: Vec<u32> = bad.bad_segments().map(|s| s.idx).collect();
            assert_eq!(bad_segs, vec![seg.idx], "shape {n} offset {at}");
            let differing: Vec<usize> = (0..plan.chunks.len())
                .filter(|&i| bad.chunk_crcs[i] != good.chunk_crcs[i])
                .collect();
            assert_eq!(differing, vec![chunk.idx as usize], "shape {n} offset {at}");
            assert_ne!(bad.sha256, good.sha256);
            assert!(bad.size_ok && !bad.all_ok());
        }
        assert!(read_back(&path, &plan).unwrap().all_ok());
    }
}
