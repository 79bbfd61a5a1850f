//! Streaming digests: the platform's per-part algorithms (MD5, CRC32, CRC32C, CRC64NVME,
//! SHA-1, SHA-256), the CRC32C used for journaled chunk digests, and the whole-file SHA-256
//! of the local manifest.
//!
//! MD5 is computed with `md5-many` (an x86-64 tuned single-stream compressor, and SIMD lanes
//! for independent streams, see [`Md5Lanes`]); the sandbox computes the platform's MD5s with
//! the independent `md-5` crate, so every download test cross-checks the two implementations.
//!
//! This module is pure computation: it does no IO, never logs and cannot fail. Reading files
//! belongs to `readback`; deciding what a digest should be belongs to `planner` and `model`.

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

/// Below this many streams with bytes to take, [`Md5Lanes::update`] feeds each stream through
/// the single-stream compressor instead of the SIMD lanes (one or two lanes are slower than it).
const MIN_SIMD_STREAMS: usize = 3;

/// Many independent MD5 streams hashed together in SIMD lanes (`md5-many`'s multi-buffer
/// compressor: with AVX-512, 16 blocks of 16 streams per instruction, and up to three such
/// groups interleaved). Stream `i` is the concatenation of everything given as `inputs[i]` to
/// [`Md5Lanes::update`], and [`Md5Lanes::finish`] returns the MD5 of each stream, in order.
///
/// For speed, feed every stream that still has bytes an equal-sized piece in each call
/// (a multiple of 64 bytes); streams given an empty slice are left out of that round, and the
/// streams that do take bytes are packed together so that the lanes stay full.
#[derive(Clone)]
pub struct Md5Lanes {
    engine: md5_many::Md5Many,
    states: Vec<md5_many::Md5State>,
}

impl Md5Lanes {
    /// `streams` empty streams (more appear when [`Md5Lanes::update`] is given more inputs).
    pub fn new(streams: usize) -> Md5Lanes {
        Md5Lanes {
            engine: md5_many::Md5Many::new(),
            states: vec![md5_many::Md5State::new(); streams],
        }
    }

    /// The number of streams.
    pub fn len(&self) -> usize {
        self.states.len()
    }

    /// True when there is no stream.
    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }

    /// Appends `inputs[i]` to stream `i`. Streams past `inputs.len()` take nothing; inputs past
    /// the number of streams start new streams.
    pub fn update(&mut self, inputs: &[&[u8]]) {
        if inputs.len() > self.states.len() {
            self.states.resize(inputs.len(), md5_many::Md5State::new());
        }
        let active: Vec<usize> = (0..inputs.len())
            .filter(|&i| !inputs[i].is_empty())
            .collect();
        if active.len() < MIN_SIMD_STREAMS {
            for i in active {
                self.states[i].update(inputs[i]);
            }
            return;
        }
        let len = inputs[active[0]].len();
        let equal = active.iter().all(|&i| inputs[i].len() == len);
        if active.len() == self.states.len()
            && (!equal || active.len().is_multiple_of(self.engine.lanes().max(1)))
        {
            // Every stream takes bytes and no padding helps: hash in place.
            self.engine.update_many(&mut self.states, inputs);
            return;
        }
        let mut packed: Vec<md5_many::Md5State> = active.iter().map(|&i| self.states[i]).collect();
        let mut packed_inputs: Vec<&[u8]> = active.iter().map(|&i| inputs[i]).collect();
        if equal {
            // md5-many is fastest on whole SIMD groups of equal inputs: fill the last group with
            // throw-away streams fed the same bytes (idle lanes would cost as much).
            let lanes = self.engine.lanes().max(1);
            let padded = active.len().div_ceil(lanes) * lanes;
            packed.resize(padded, md5_many::Md5State::new());
            packed_inputs.resize(padded, inputs[active[0]]);
        }
        self.engine.update_many(&mut packed, &packed_inputs);
        for (state, &i) in packed.into_iter().zip(&active) {
            self.states[i] = state;
        }
    }

    /// The 16-byte digest of each stream, in stream order. The streams are not consumed: more
    /// bytes may be appended afterwards.
    pub fn finish(&self) -> Vec<[u8; 16]> {
        let mut out = vec![[0u8; 16]; self.states.len()];
        self.engine.finalize_many(&self.states, &mut out);
        out
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

    /// Digests of `streams` computed by the independent `md-5` crate.
    fn reference_md5s(streams: &[Vec<u8>]) -> Vec<[u8; 16]> {
        use md5::Digest as _;
        streams.iter().map(|s| md5::Md5::digest(s).into()).collect()
    }

    #[test]
    fn md5_lanes_agree_with_the_independent_md5_crate() {
        let mut rng = fastrand::Rng::with_seed(13);
        let lens: Vec<usize> = [0, 1, 55, 56, 57, 63, 64, 65, 119, 120, 127, 128, 129, 1000]
            .into_iter()
            .chain([4095, 4096, 65_535, 65_536, 65_600, 300_001, 1 << 20])
            .chain((0..30).map(|_| rng.usize(0..200_000)))
            .collect();
        let streams: Vec<Vec<u8>> = lens
            .iter()
            .map(|&n| (0..n).map(|_| rng.u8(..)).collect())
            .collect();
        let want = reference_md5s(&streams);

        // All at once, each stream whole.
        let mut lanes = Md5Lanes::new(streams.len());
        let whole: Vec<&[u8]> = streams.iter().map(Vec::as_slice).collect();
        lanes.update(&whole);
        assert_eq!(lanes.finish(), want);

        // In equal pieces per round (the read-back's shape), streams ending at different rounds.
        for piece in [64usize, 4096, 65_536, 100_000] {
            let mut lanes = Md5Lanes::new(streams.len());
            let mut at = 0;
            while streams.iter().any(|s| s.len() > at) {
                let round: Vec<&[u8]> = streams
                    .iter()
                    .map(|s| &s[at.min(s.len())..(at + piece).min(s.len())])
                    .collect();
                lanes.update(&round);
                at += piece;
            }
            assert_eq!(lanes.finish(), want, "piece {piece}");
        }

        // In uneven random pieces, a random subset of streams fed in each round, some rounds
        // with fewer inputs than streams.
        for _ in 0..5 {
            let mut lanes = Md5Lanes::new(streams.len());
            let mut at = vec![0usize; streams.len()];
            while at.iter().zip(&streams).any(|(a, s)| *a < s.len()) {
                let k = rng.usize(1..=streams.len());
                let round: Vec<&[u8]> = streams[..k]
                    .iter()
                    .zip(&mut at)
                    .map(|(s, a)| {
                        let n = if rng.bool() {
                            rng.usize(0..=(s.len() - *a).min(70_000))
                        } else {
                            0
                        };
                        let piece = &s[*a..*a + n];
                        *a += n;
                        piece
                    })
                    .collect();
                lanes.update(&round);
            }
            assert_eq!(lanes.finish(), want);
        }
    }

    #[test]
    fn md5_lanes_grow_and_agree_with_one_stream() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut lanes = Md5Lanes::new(0);
        assert!(lanes.is_empty());
        lanes.update(&[&data[..10], &data[..5000]]);
        lanes.update(&[&data[10..], &data[5000..], &data[..]]);
        assert_eq!(lanes.len(), 3);
        let want = reference_md5s(&[data.clone(), data.clone(), data.clone()]);
        assert_eq!(lanes.finish(), want);
        let mut one = Md5Hasher::new();
        one.update(&data);
        assert_eq!(one.finish(), want[0]);
        // finish does not consume: more bytes may follow.
        lanes.update(&[b"x"]);
        let mut more = data.clone();
        more.push(b'x');
        assert_eq!(lanes.finish()[0], reference_md5s(&[more])[0]);
        assert_eq!(Md5Lanes::new(2).finish(), reference_md5s(&[vec![], vec![]]));
    }

    /// Prints throughput by stream count; asserts only correctness.
    #[test]
    fn md5_lanes_throughput() {
        let piece = 128 << 10;
        let rounds = 16;
        let data: Vec<u8> = (0..piece * rounds).map(|i| (i % 253) as u8).collect();
        for n in [1usize, 2, 3, 4, 8, 15, 16, 32] {
            let started = std::time::Instant::now();
            let mut lanes = Md5Lanes::new(n);
            for r in 0..rounds {
                let inputs: Vec<&[u8]> = vec![&data[r * piece..(r + 1) * piece]; n];
                lanes.update(&inputs);
            }
            let out = lanes.finish();
            let secs = started.elapsed().as_secs_f64().max(1e-9);
            eprintln!(
                "md5 lanes x{n}: {:.0} MB/s",
                (n * data.len()) as f64 / secs / 1e6
            );
            assert!(out.iter().all(|d| *d == out[0]));
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
