//! The bytes of synthetic files and the checksums of those bytes: a counter-based generator
//! (SplitMix64) that fills any range of any file without storing it, the ids derived from the
//! dataset seed, and the MD5s and platform checksums (CRC32, CRC32C, CRC64NVME, SHA1, SHA256)
//! of a range, computed with crates independent of dxmirror's own hashing.

use base64::Engine as _;
use md5::Digest as _;

use crate::model::{ByteRange, ChecksumType};

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

pub(super) fn make_id(seed: u64, kind: &str, n: u64) -> String {
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

pub(super) fn md5_of(key: u64, range: ByteRange) -> String {
    let mut h = md5::Md5::new();
    for_each_piece(key, range, |b| h.update(b));
    hex::encode(h.finalize())
}

/// Size of the blocks of [`BuiltFile::block_md5`] (Azure's limit for a range's MD5).
pub const BLOCK_MD5_SIZE: u64 = 4 << 20;

/// The whole-file MD5 (hex) and the MD5 of each [`BLOCK_MD5_SIZE`] block, in one pass.
pub(super) fn whole_and_block_md5(key: u64, size: u64) -> (String, Vec<[u8; 16]>) {
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

pub(super) fn checksum_of(kind: ChecksumType, key: u64, range: ByteRange) -> String {
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
}
