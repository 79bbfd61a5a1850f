//! Streaming digests: the platform's per-part algorithms (MD5, CRC32, CRC32C, CRC64NVME,
//! SHA-1, SHA-256), the CRC32C used for journaled chunk digests, and the whole-file SHA-256
//! of the local manifest.
//!
//! MD5 is computed with `md5-many` (an x86-64 tuned single-stream compressor, and SIMD lanes
//! for independent streams, see [`Md5Lanes`]); the sandbox computes the platform's MD5s with
//! the independent `md-5` crate, so every download test cross-checks the two implementations.
//!
//! This module is pure computation: it does no IO, never logs and cannot fail. Reading files
//! belongs to `verify`; deciding what a digest should be belongs to `planner` and `model`.

use sha2::Digest as _;

use crate::model::{ChecksumType, Digest};

/// The running state of one algorithm.
#[derive(Clone)]
enum State {
    Md5(Md5Hasher),
    Crc32(crc32fast::Hasher),
    Crc32c(u32),
    Crc64Nvme(crc64fast_nvme::Digest),
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
}

/// Computes, over streamed bytes, the same algorithm as an expected [`Digest`], so that the
/// result of [`SegmentHasher::finish`] compares with `==` to the expectation.
#[derive(Clone)]
pub struct SegmentHasher {
    state: State,
}

impl SegmentHasher {
    /// A hasher for the algorithm of `expected` (its value is not kept).
    pub fn for_digest(expected: &Digest) -> SegmentHasher {
        match expected {
            Digest::Md5(_) => SegmentHasher::md5(),
            Digest::Checksum(kind, _) => SegmentHasher::for_checksum(*kind),
        }
    }

    /// A hasher for MD5.
    pub fn md5() -> SegmentHasher {
        SegmentHasher {
            state: State::Md5(Md5Hasher::new()),
        }
    }

    /// A hasher for a part `checksum` of the given type.
    pub fn for_checksum(kind: ChecksumType) -> SegmentHasher {
        let state = match kind {
            ChecksumType::Crc32 => State::Crc32(crc32fast::Hasher::new()),
            ChecksumType::Crc32c => State::Crc32c(0),
            ChecksumType::Crc64Nvme => State::Crc64Nvme(crc64fast_nvme::Digest::new()),
            ChecksumType::Sha1 => State::Sha1(sha1::Sha1::new()),
            ChecksumType::Sha256 => State::Sha256(sha2::Sha256::new()),
        };
        SegmentHasher { state }
    }

    /// Feeds bytes.
    pub fn update(&mut self, data: &[u8]) {
        match &mut self.state {
            State::Md5(h) => h.update(data),
            State::Crc32(h) => h.update(data),
            State::Crc32c(crc) => *crc = crc32c::crc32c_append(*crc, data),
            State::Crc64Nvme(h) => h.write(data),
            State::Sha1(h) => h.update(data),
            State::Sha256(h) => h.update(data),
        }
    }

    /// The digest of everything fed, as raw big-endian bytes tagged with its algorithm.
    pub fn finish(self) -> Digest {
        match self.state {
            State::Md5(h) => Digest::Md5(h.finish()),
            State::Crc32(h) => {
                Digest::Checksum(ChecksumType::Crc32, h.finalize().to_be_bytes().to_vec())
            }
            State::Crc32c(crc) => {
                Digest::Checksum(ChecksumType::Crc32c, crc.to_be_bytes().to_vec())
            }
            State::Crc64Nvme(h) => {
                Digest::Checksum(ChecksumType::Crc64Nvme, h.sum64().to_be_bytes().to_vec())
            }
            State::Sha1(h) => Digest::Checksum(ChecksumType::Sha1, h.finalize().to_vec()),
            State::Sha256(h) => Digest::Checksum(ChecksumType::Sha256, h.finalize().to_vec()),
        }
    }
}

/// Extends a CRC32C (Castagnoli) over more bytes: `crc32c_append(crc32c_append(0, a), b)` is the
/// CRC32C of `a ++ b`. Start from 0. Chunk digests are journaled as bytes arrive and resumed
/// from the stored value with this.
pub fn crc32c_append(crc: u32, data: &[u8]) -> u32 {
    crc32c::crc32c_append(crc, data)
}

/// A streaming MD5 (one stream; `md5-many`'s tuned compressor).
#[derive(Clone, Copy, Default)]
pub struct Md5Hasher(md5_many::Md5State);

impl Md5Hasher {
    /// A fresh hasher.
    pub fn new() -> Md5Hasher {
        Md5Hasher(md5_many::Md5State::new())
    }

    /// Feeds bytes.
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    /// The 16-byte digest of everything fed.
    pub fn finish(self) -> [u8; 16] {
        self.0.finalize()
    }
}

/// Advances independent MD5 streams together: `inputs[i]` is appended to `hashers[i]`, full
/// 64-byte blocks of all streams running side by side in the CPU's SIMD lanes (16 with
/// AVX-512, 8 with AVX2). The result is exactly that of feeding each stream on its own.
pub fn md5_update_many(engine: md5_many::Md5Many, hashers: &mut [Md5Hasher], inputs: &[&[u8]]) {
    let mut states: Vec<md5_many::Md5State> = hashers.iter().map(|h| h.0).collect();
    engine.update_many(&mut states, inputs);
    for (h, s) in hashers.iter_mut().zip(states) {
        h.0 = s;
    }
}

/// A whole-file SHA-256 (the local manifest's digest).
#[derive(Clone, Default)]
pub struct Sha256Hasher(sha2::Sha256);

impl Sha256Hasher {
    /// A fresh hasher.
    pub fn new() -> Sha256Hasher {
        Sha256Hasher(sha2::Sha256::new())
    }

    /// Feeds bytes.
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    /// The 32-byte digest of everything fed.
    pub fn finish(self) -> [u8; 32] {
        self.0.finalize().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FOX: &[u8] = b"The quick brown fox jumps over the lazy dog";

    fn one_shot(expected: &Digest, data: &[u8]) -> Digest {
        let mut h = SegmentHasher::for_digest(expected);
        h.update(data);
        h.finish()
    }

    fn all_expectations() -> Vec<Digest> {
        vec![
            Digest::md5_hex("9e107d9d372bb6826bd81d3542a419d6").unwrap(),
            Digest::checksum(ChecksumType::Crc32, "QU+jOQ==").unwrap(),
            Digest::checksum(ChecksumType::Crc32c, "ImIEBA==").unwrap(),
            Digest::checksum(ChecksumType::Crc64Nvme, "12xUBUlUwUM=").unwrap(),
            Digest::checksum(
                ChecksumType::Sha1,
                "2fd4e1c67a2d28fced849ee1bb76e7391b93eb12",
            )
            .unwrap(),
            Digest::checksum(
                ChecksumType::Sha256,
                "d7a8fbb307d7809469ca9abcb0082e4f8d5651e46d3cdb762d02d0bf37c9e592",
            )
            .unwrap(),
        ]
    }

    #[test]
    fn published_vectors_of_the_fox() {
        for expected in all_expectations() {
            assert_eq!(
                one_shot(&expected, FOX),
                expected,
                "{}",
                expected.algorithm()
            );
        }
    }

    #[test]
    fn a_different_input_does_not_match() {
        for expected in all_expectations() {
            assert_ne!(
                one_shot(&expected, b"The quick brown fox jumps over the lazy cog"),
                expected
            );
        }
    }

    #[test]
    fn hex_and_base64_expectations_are_equal() {
        let b64 = |t, s| Digest::checksum(t, s).unwrap();
        assert_eq!(
            b64(ChecksumType::Crc32, "QU+jOQ=="),
            b64(ChecksumType::Crc32, "414fa339")
        );
        assert_eq!(
            b64(ChecksumType::Crc64Nvme, "12xUBUlUwUM="),
            b64(ChecksumType::Crc64Nvme, "d76c54054954c143")
        );
        // SHA-1 given as base64 equals its hex spelling.
        assert_eq!(
            b64(ChecksumType::Sha1, "L9ThxnotKPzthJ7hu3bnORuT6xI="),
            b64(
                ChecksumType::Sha1,
                "2fd4e1c67a2d28fced849ee1bb76e7391b93eb12"
            )
        );
    }

    #[test]
    fn streaming_in_random_splits_equals_one_shot() {
        let mut rng = fastrand::Rng::with_seed(7);
        let data: Vec<u8> = (0..100_000).map(|_| rng.u8(..)).collect();
        for expected in all_expectations() {
            let whole = one_shot(&expected, &data);
            for _ in 0..20 {
                let mut h = SegmentHasher::for_digest(&expected);
                let mut at = 0;
                while at < data.len() {
                    let n = rng.usize(0..=(data.len() - at).min(5000));
                    h.update(&data[at..at + n]);
                    at += n;
                }
                assert_eq!(h.finish(), whole, "{}", expected.algorithm());
            }
        }
    }

    #[test]
    fn md5_agrees_with_the_independent_md5_crate_at_every_length_around_block_edges() {
        use md5::Digest as _;
        let mut rng = fastrand::Rng::with_seed(11);
        let data: Vec<u8> = (0..70_000).map(|_| rng.u8(..)).collect();
        let lens = (0..=200).chain([1023, 1024, 1025, 4095, 65_536, 69_999]);
        for len in lens {
            let mut h = Md5Hasher::new();
            let (a, b) = data[..len].split_at(len / 3);
            h.update(a);
            h.update(b);
            let want: [u8; 16] = md5::Md5::digest(&data[..len]).into();
            assert_eq!(h.finish(), want, "length {len}");
        }
    }

    #[test]
    fn md5_update_many_equals_each_stream_alone() {
        use md5::Digest as _;
        let mut rng = fastrand::Rng::with_seed(5);
        let engine = md5_many::Md5Many::new();
        // 20 streams of different lengths, fed in three uneven rounds (some empty).
        let data: Vec<Vec<u8>> = (0..20)
            .map(|i| (0..(i * 977 + i % 3 * 63)).map(|_| rng.u8(..)).collect())
            .collect();
        let mut hashers = vec![Md5Hasher::new(); data.len()];
        let mut at = vec![0usize; data.len()];
        for round in 0..3 {
            let inputs: Vec<&[u8]> = data
                .iter()
                .zip(&mut at)
                .map(|(d, a)| {
                    let end = if round == 2 {
                        d.len()
                    } else {
                        (*a + d.len() / 3 + round).min(d.len())
                    };
                    let piece = &d[*a..end];
                    *a = end;
                    piece
                })
                .collect();
            md5_update_many(engine, &mut hashers, &inputs);
        }
        for (h, d) in hashers.into_iter().zip(&data) {
            let want: [u8; 16] = md5::Md5::digest(d).into();
            assert_eq!(h.finish(), want, "stream of {} bytes", d.len());
        }
    }

    #[test]
    fn crc32c_append_resumes() {
        let (a, b) = FOX.split_at(17);
        assert_eq!(crc32c_append(crc32c_append(0, a), b), 0x2262_0404);
        assert_eq!(crc32c_append(0, b""), 0);
    }

    #[test]
    fn sha256_wrapper() {
        let mut h = Sha256Hasher::new();
        h.update(&FOX[..5]);
        h.update(&FOX[5..]);
        assert_eq!(
            hex::encode(h.finish()),
            "d7a8fbb307d7809469ca9abcb0082e4f8d5651e46d3cdb762d02d0bf37c9e592"
        );
        assert_eq!(
            hex::encode(Sha256Hasher::new().finish()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
