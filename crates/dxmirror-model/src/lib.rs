//! Domain types shared by every module: identifiers, the platform's description of a file,
//! expected digests and the byte ranges they cover.
//!
//! It is a crate of its own so that the sandbox crate can share these types without depending
//! on the library (which re-exports it as `dxmirror::model`).
//!
//! This crate is pure data with parse-validation. It knows nothing about HTTP, JSON wire
//! shapes, SQL or the local filesystem; `platform` converts wire structs into these types,
//! `journal` stores them (with the id column conversions of `sql.rs`, feature `rusqlite`),
//! `planner` turns them into work.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;

#[cfg(feature = "rusqlite")]
mod sql;
#[cfg(feature = "test-support")]
pub mod testing;

/// An identifier that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} id {value:?}: expected {kind}- followed by 24 letters or digits")]
pub struct IdError {
    /// What kind of id was expected (`project`, `file`).
    pub kind: &'static str,
    /// The rejected text (ids are not secret).
    pub value: String,
}

fn valid_id(prefix: &str, s: &str) -> bool {
    s.strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('-'))
        .is_some_and(|tail| tail.len() == 24 && tail.bytes().all(|b| b.is_ascii_alphanumeric()))
}

macro_rules! define_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The id as text, e.g. `project-B0vY9x9Q0b1QKq2F3Y4Z5a6b`.
            #[inline]
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                if valid_id($prefix, s) {
                    Ok(Self(s.to_owned()))
                } else {
                    Err(IdError { kind: $prefix, value: s.chars().take(80).collect() })
                }
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                s.parse()
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

define_id!(
    /// A DNAnexus project id (`project-` + 24 characters).
    ProjectId,
    "project"
);
define_id!(
    /// A DNAnexus file id (`file-` + 24 characters).
    FileId,
    "file"
);

/// The platform's per-file `checksumType`: the algorithm of each part's `checksum`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChecksumType {
    /// CRC-32 (ISO-HDLC), 4 bytes.
    Crc32,
    /// CRC-32C (Castagnoli), 4 bytes.
    Crc32c,
    /// CRC-64/NVME, 8 bytes.
    Crc64Nvme,
    /// SHA-1, 20 bytes.
    Sha1,
    /// SHA-256, 32 bytes.
    Sha256,
}

impl ChecksumType {
    /// The platform's spelling.
    #[inline]
    pub fn as_str(self) -> &'static str {
        match self {
            ChecksumType::Crc32 => "CRC32",
            ChecksumType::Crc32c => "CRC32C",
            ChecksumType::Crc64Nvme => "CRC64NVME",
            ChecksumType::Sha1 => "SHA1",
            ChecksumType::Sha256 => "SHA256",
        }
    }

    /// Length of the raw big-endian digest in bytes.
    #[inline]
    pub fn digest_len(self) -> usize {
        match self {
            ChecksumType::Crc32 | ChecksumType::Crc32c => 4,
            ChecksumType::Crc64Nvme => 8,
            ChecksumType::Sha1 => 20,
            ChecksumType::Sha256 => 32,
        }
    }
}

impl FromStr for ChecksumType {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, DigestError> {
        Ok(match s.to_ascii_uppercase().as_str() {
            "CRC32" => ChecksumType::Crc32,
            "CRC32C" => ChecksumType::Crc32c,
            "CRC64NVME" => ChecksumType::Crc64Nvme,
            "SHA1" => ChecksumType::Sha1,
            "SHA256" => ChecksumType::Sha256,
            _ => return Err(DigestError::UnknownType(s.chars().take(40).collect())),
        })
    }
}

impl fmt::Display for ChecksumType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A checksum value from the platform that could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    /// `checksumType` names an algorithm we do not know.
    #[error("unknown checksum type {0:?}")]
    UnknownType(String),
    /// An `md5` that is not 32 hex digits.
    #[error("malformed md5 {0:?}: expected 32 hex digits")]
    BadMd5(String),
    /// A `checksum` that is neither base64 nor hex of the right length.
    #[error(
        "malformed {kind} checksum {value:?}: expected base64 (or hex) of a {len}-byte digest"
    )]
    BadChecksum {
        /// The algorithm.
        kind: ChecksumType,
        /// The rejected text.
        value: String,
        /// The expected raw length.
        len: usize,
    },
}

/// An expected digest of a byte range, as the platform states it.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Digest {
    /// MD5 (part `md5`, or a symlink's whole-file `md5`).
    Md5([u8; 16]),
    /// A part `checksum` of the file's `checksumType`: raw big-endian digest bytes.
    Checksum(ChecksumType, Vec<u8>),
}

impl Digest {
    /// Parses an `md5` field (32 hex digits, either case).
    pub fn md5_hex(s: &str) -> Result<Digest, DigestError> {
        let mut out = [0u8; 16];
        hex::decode_to_slice(s.trim(), &mut out)
            .map_err(|_| DigestError::BadMd5(s.chars().take(80).collect()))?;
        Ok(Digest::Md5(out))
    }

    /// Parses a part `checksum`: base64 of the big-endian raw digest. Hex of the right length
    /// is accepted too, because dxda's inspect compares SHA digests as hex.
    pub fn checksum(kind: ChecksumType, s: &str) -> Result<Digest, DigestError> {
        let s = s.trim();
        let len = kind.digest_len();
        let bad = || DigestError::BadChecksum {
            kind,
            value: s.chars().take(100).collect(),
            len,
        };
        if s.len() == len * 2 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return hex::decode(s)
                .map(|raw| Digest::Checksum(kind, raw))
                .map_err(|_| bad());
        }
        let raw = base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(|_| bad())?;
        if raw.len() != len {
            return Err(bad());
        }
        Ok(Digest::Checksum(kind, raw))
    }

    /// Short name of the algorithm (`MD5`, `CRC32C`, ...).
    pub fn algorithm(&self) -> &'static str {
        match self {
            Digest::Md5(_) => "MD5",
            Digest::Checksum(kind, _) => kind.as_str(),
        }
    }

    /// The digest as lower-case hex, for reports and the journal.
    pub fn to_hex(&self) -> String {
        match self {
            Digest::Md5(raw) => hex::encode(raw),
            Digest::Checksum(_, raw) => hex::encode(raw),
        }
    }

    /// Text form stored in the journal: `ALGO:hex`. Round-trips through [`Digest::from_tagged`].
    pub fn to_tagged(&self) -> String {
        format!("{}:{}", self.algorithm(), self.to_hex())
    }

    /// Parses the journal form `ALGO:hex`.
    pub fn from_tagged(s: &str) -> Result<Digest, DigestError> {
        let (algo, value) = s
            .split_once(':')
            .ok_or_else(|| DigestError::BadMd5(s.to_owned()))?;
        if algo == "MD5" {
            Digest::md5_hex(value)
        } else {
            Digest::checksum(algo.parse()?, value)
        }
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_tagged())
    }
}

/// A file's lifecycle state on the platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteState {
    /// Still being uploaded: cannot be downloaded.
    Open,
    /// Being finalised: cannot be downloaded yet.
    Closing,
    /// Immutable and downloadable (if live).
    Closed,
    /// Anything else the platform may say.
    Other(String),
}

impl RemoteState {
    /// Maps the platform's `state` string.
    pub fn parse(s: &str) -> RemoteState {
        match s {
            "open" => RemoteState::Open,
            "closing" => RemoteState::Closing,
            "closed" => RemoteState::Closed,
            other => RemoteState::Other(other.to_owned()),
        }
    }

    /// The platform's spelling.
    pub fn as_str(&self) -> &str {
        match self {
            RemoteState::Open => "open",
            RemoteState::Closing => "closing",
            RemoteState::Closed => "closed",
            RemoteState::Other(s) => s,
        }
    }
}

/// One platform part of a file, as described (`parts` of `describe`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemotePart {
    /// Part number (parts are numbered from 1, possibly with gaps).
    pub index: u32,
    /// Size in bytes.
    pub size: u64,
    /// Part `md5`, when present.
    pub md5: Option<String>,
    /// Part `checksum` (base64 of the raw digest of the file's `checksumType`), when present.
    pub checksum: Option<String>,
}

/// A file's archival state on the platform (`archivalState`). Lossless: a word this build does
/// not know is kept as it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArchivalState {
    /// In live storage: downloadable.
    Live,
    /// Being moved to archival storage.
    Archival,
    /// In archival storage: must be unarchived first.
    Archived,
    /// Being brought back to live storage.
    Unarchiving,
    /// Anything else the platform may say.
    Other(String),
}

impl ArchivalState {
    /// Maps the platform's `archivalState` string.
    pub fn parse(s: &str) -> ArchivalState {
        match s {
            "live" => ArchivalState::Live,
            "archival" => ArchivalState::Archival,
            "archived" => ArchivalState::Archived,
            "unarchiving" => ArchivalState::Unarchiving,
            other => ArchivalState::Other(other.to_owned()),
        }
    }

    /// The platform's spelling.
    pub fn as_str(&self) -> &str {
        match self {
            ArchivalState::Live => "live",
            ArchivalState::Archival => "archival",
            ArchivalState::Archived => "archived",
            ArchivalState::Unarchiving => "unarchiving",
            ArchivalState::Other(s) => s,
        }
    }
}

impl fmt::Display for ArchivalState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A value as the platform stated it: its text, kept verbatim (the journal stores it, and a
/// re-listing compares it), and what parsing that text gave. A malformed value is kept, not
/// refused, so that it fails the one file at planning rather than the whole listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stated<T> {
    raw: String,
    parsed: Result<T, DigestError>,
}

impl Stated<Digest> {
    /// A whole-file `md5` (32 hex digits, either case).
    pub fn md5(raw: impl Into<String>) -> Stated<Digest> {
        let raw = raw.into();
        let parsed = Digest::md5_hex(&raw);
        Stated { raw, parsed }
    }
}

impl Stated<ChecksumType> {
    /// A `checksumType` (the algorithm's name, any case).
    pub fn checksum_type(raw: impl Into<String>) -> Stated<ChecksumType> {
        let raw = raw.into();
        let parsed = raw.parse();
        Stated { raw, parsed }
    }
}

impl<T> Stated<T> {
    /// The platform's text, verbatim.
    pub fn raw(&self) -> &str {
        &self.raw
    }

    /// The parsed value, or why the text could not be understood.
    pub fn get(&self) -> Result<&T, &DigestError> {
        self.parsed.as_ref()
    }
}

/// A file as the platform describes it. Only `platform` constructs these from the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteFile {
    /// The file id.
    pub id: FileId,
    /// The project the listing came from.
    pub project: ProjectId,
    /// File name (untrusted: may contain anything).
    pub name: String,
    /// Folder, starting with `/` (untrusted).
    pub folder: String,
    /// Size in bytes.
    pub size: u64,
    /// Lifecycle state.
    pub state: RemoteState,
    /// Archival state: only a `live` file can be downloaded.
    pub archival_state: ArchivalState,
    /// Creation time, ms since the epoch.
    pub created_ms: i64,
    /// Last modification time, ms since the epoch.
    pub modified_ms: i64,
    /// Parts sorted by index, when the platform gave them.
    pub parts: Option<Vec<RemotePart>>,
    /// The drive of a symlink (drive-backed) file.
    pub drive: Option<String>,
    /// Whole-file MD5 (symlinks).
    pub md5: Option<Stated<Digest>>,
    /// Algorithm of the part `checksum`s.
    pub checksum_type: Option<Stated<ChecksumType>>,
    /// The backing object's ETag of a drive-backed file (`symlinkTargetIdentifier.ETag`),
    /// verbatim: every ranged GET sends it back as `If-Match`, so that bytes of another
    /// version of the object are refused (`412`) rather than mixed in.
    pub etag: Option<String>,
}

impl RemoteFile {
    /// True when the file can be downloaded now (closed and live).
    pub fn is_downloadable(&self) -> bool {
        self.state == RemoteState::Closed && self.archival_state == ArchivalState::Live
    }

    /// Why the file cannot be downloaded, if it cannot.
    pub fn skip_reason(&self) -> Option<String> {
        if self.state != RemoteState::Closed {
            return Some(format!("file is {} (not closed)", self.state.as_str()));
        }
        if self.archival_state != ArchivalState::Live {
            return Some(format!("file is {} (not live)", self.archival_state));
        }
        None
    }
}

/// A project as described by `/project-xxxx/describe`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectInfo {
    /// The id.
    pub id: ProjectId,
    /// The name (untrusted text).
    pub name: String,
    /// True when the project forbids downloads.
    pub download_restricted: bool,
    /// The caller's permission level, when given.
    pub level: Option<String>,
}

/// A half-open byte range `[offset, offset + len)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ByteRange {
    /// First byte.
    pub offset: u64,
    /// Number of bytes.
    pub len: u64,
}

impl ByteRange {
    /// Builds a range.
    #[inline]
    pub fn new(offset: u64, len: u64) -> ByteRange {
        ByteRange { offset, len }
    }

    /// One past the last byte.
    #[inline]
    pub fn end(&self) -> u64 {
        self.offset + self.len
    }

    /// The inclusive HTTP form `bytes=a-b`; `None` for an empty range.
    #[inline]
    pub fn http_header(&self) -> Option<String> {
        (self.len > 0).then(|| format!("bytes={}-{}", self.offset, self.end() - 1))
    }
}

/// A DNAnexus API token. It never prints: `Debug` shows `ApiToken(***)` and there is no
/// `Display`, so it cannot reach a log line, an error message or the journal by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiToken(String);

impl ApiToken {
    /// Wraps a token (surrounding white space removed).
    pub fn new(token: &str) -> ApiToken {
        ApiToken(token.trim().to_owned())
    }

    /// The secret itself, for the `Authorization` header only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True when the token is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiToken(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_validate() {
        assert!("project-B0vY9x9Q0b1QKq2F3Y4Z5a6b"
            .parse::<ProjectId>()
            .is_ok());
        assert!("file-B0vY9x9Q0b1QKq2F3Y4Z5a6b".parse::<FileId>().is_ok());
        assert!("file-B0vY9x9Q0b1QKq2F3Y4Z5a6".parse::<FileId>().is_err());
        assert!("project-../../etc/passwd0000000"
            .parse::<ProjectId>()
            .is_err());
        assert!("file-B0vY9x9Q0b1QKq2F3Y4Z5a6b"
            .parse::<ProjectId>()
            .is_err());
    }

    #[test]
    fn checksum_accepts_base64_and_hex() {
        let b64 = Digest::checksum(ChecksumType::Crc32c, "ImIEBA==").unwrap();
        let hex = Digest::checksum(ChecksumType::Crc32c, "22620404").unwrap();
        assert_eq!(b64, hex);
        assert!(Digest::checksum(ChecksumType::Crc64Nvme, "ImIEBA==").is_err());
        assert!(Digest::checksum(ChecksumType::Sha1, "not base64!").is_err());
    }

    #[test]
    fn tagged_round_trip() {
        let d = Digest::md5_hex("9e107d9d372bb6826bd81d3542a419d6").unwrap();
        assert_eq!(Digest::from_tagged(&d.to_tagged()).unwrap(), d);
        let c = Digest::checksum(ChecksumType::Crc64Nvme, "12xUBUlUwUM=").unwrap();
        assert_eq!(Digest::from_tagged(&c.to_tagged()).unwrap(), c);
    }

    #[test]
    fn token_never_prints() {
        let t = ApiToken::new(" s3cr3t-token\n");
        assert_eq!(t.expose(), "s3cr3t-token");
        assert_eq!(format!("{t:?}"), "ApiToken(***)");
    }

    #[test]
    fn stated_values_keep_the_text_and_the_parse() {
        let md5 = Stated::md5("9E107D9D372BB6826BD81D3542A419D6");
        assert_eq!(md5.raw(), "9E107D9D372BB6826BD81D3542A419D6");
        assert_eq!(
            md5.get(),
            Ok(&Digest::md5_hex("9e107d9d372bb6826bd81d3542a419d6").unwrap())
        );
        let bad = Stated::md5("nope");
        assert_eq!(bad.raw(), "nope");
        assert!(matches!(bad.get(), Err(DigestError::BadMd5(_))));
        let ty = Stated::checksum_type("crc32c");
        assert_eq!((ty.raw(), ty.get()), ("crc32c", Ok(&ChecksumType::Crc32c)));
        assert!(Stated::checksum_type("XXH3").get().is_err());
    }

    #[test]
    fn archival_state_is_lossless() {
        for word in ["live", "archival", "archived", "unarchiving", "frozen"] {
            assert_eq!(ArchivalState::parse(word).as_str(), word);
        }
        assert_eq!(
            ArchivalState::parse("frozen"),
            ArchivalState::Other("frozen".into())
        );
    }

    #[test]
    fn range_header() {
        assert_eq!(
            ByteRange::new(0, 10).http_header().as_deref(),
            Some("bytes=0-9")
        );
        assert_eq!(ByteRange::new(5, 0).http_header(), None);
    }
}
