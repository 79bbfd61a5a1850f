//! Fault injection knobs of the sandbox and the deterministic decision of when they fire.
//!
//! Whether a fault hits a response is a pure function of (seed, fault name, file id, range,
//! how many times this exact range was asked for), so runs are reproducible whatever the
//! concurrency. This module decides; it never touches a socket.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::dataset::hash_bytes;

/// A `--faults` string that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FaultError {
    /// An entry that is not `name=value`.
    #[error("fault entry {0:?} is not name=value")]
    Syntax(String),
    /// An unknown fault name.
    #[error("unknown fault {0:?}")]
    UnknownFault(String),
    /// A value that is not a number in range.
    #[error("bad value {value:?} for fault {name}: expected a rate in [0,1] (or a whole number for seed, stall_secs, flip_first)")]
    BadValue {
        /// The fault.
        name: String,
        /// The rejected text.
        value: String,
    },
}

/// Fault rates in [0, 1] (all 0 by default) and their parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FaultConfig {
    /// Seed of the deterministic decisions.
    pub seed: u64,
    /// Download/storage: RST mid-body.
    pub reset: f64,
    /// Download/storage: FIN mid-body.
    pub fin: f64,
    /// Download/storage: 500.
    pub status500: f64,
    /// Download/storage: 503 with `Retry-After`.
    pub status503: f64,
    /// Download/storage: fewer bytes than `Content-Length`, then close.
    pub short_body: f64,
    /// Download/storage: `Content-Length` larger than the body, then close.
    pub long_length: f64,
    /// Download/storage: 200 with the whole object where a range was asked.
    pub full_200: f64,
    /// Download/storage: a `Content-Range` that does not match the request.
    pub bad_content_range: f64,
    /// Download/storage: stop mid-body and hold the connection for `stall_secs`.
    pub stall: f64,
    /// Download/storage: one byte of the body flipped.
    pub flip: f64,
    /// Download/storage: 403 as if the URL expired.
    pub expire_early: f64,
    /// API: 500 `InternalError`.
    pub api500: f64,
    /// API: 503 `ServiceUnavailable` with `Retry-After`.
    pub api503: f64,
    /// API: 429 with `Retry-After`.
    pub api429: f64,
    /// API: 423 `Locked` (no `Retry-After`), as the platform answers for an object locked by
    /// another operation; DNAnexus's download agent retries it.
    pub api423: f64,
    /// How long a stalled response holds the connection, in seconds.
    pub stall_secs: u64,
    /// Download/storage: the first this many serves of every range each carry a flipped byte
    /// (whatever the other rates), so that a range heals only on its serve number
    /// `flip_first + 1`.
    pub flip_first: u64,
}

impl Default for FaultConfig {
    fn default() -> FaultConfig {
        FaultConfig {
            seed: 0,
            reset: 0.0,
            fin: 0.0,
            status500: 0.0,
            status503: 0.0,
            short_body: 0.0,
            long_length: 0.0,
            full_200: 0.0,
            bad_content_range: 0.0,
            stall: 0.0,
            flip: 0.0,
            expire_early: 0.0,
            api500: 0.0,
            api503: 0.0,
            api429: 0.0,
            api423: 0.0,
            stall_secs: 30,
            flip_first: 0,
        }
    }
}

/// A fault on a download or storage response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BodyFault {
    /// 403 as if expired.
    ExpireEarly,
    /// 500.
    Status500,
    /// 503 + Retry-After.
    Status503,
    /// RST mid-body.
    Reset,
    /// FIN mid-body.
    Fin,
    /// Short body then close.
    ShortBody,
    /// Content-Length too large, then close.
    LongLength,
    /// 200 with the whole object.
    Full200,
    /// Content-Range not matching the request.
    BadContentRange,
    /// Stall mid-body.
    Stall,
    /// One byte flipped.
    Flip,
}

impl BodyFault {
    /// Every body fault, in the order they are tried.
    pub const ALL: [BodyFault; 11] = [
        BodyFault::ExpireEarly,
        BodyFault::Status500,
        BodyFault::Status503,
        BodyFault::Reset,
        BodyFault::Fin,
        BodyFault::ShortBody,
        BodyFault::LongLength,
        BodyFault::Full200,
        BodyFault::BadContentRange,
        BodyFault::Stall,
        BodyFault::Flip,
    ];

    /// The knob's name.
    pub fn name(self) -> &'static str {
        match self {
            BodyFault::ExpireEarly => "expire_early",
            BodyFault::Status500 => "status500",
            BodyFault::Status503 => "status503",
            BodyFault::Reset => "reset",
            BodyFault::Fin => "fin",
            BodyFault::ShortBody => "short_body",
            BodyFault::LongLength => "long_length",
            BodyFault::Full200 => "full_200",
            BodyFault::BadContentRange => "bad_content_range",
            BodyFault::Stall => "stall",
            BodyFault::Flip => "flip",
        }
    }
}

/// A fault on an API response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiFault {
    /// 500 InternalError.
    Api500,
    /// 503 ServiceUnavailable + Retry-After.
    Api503,
    /// 429 + Retry-After.
    Api429,
    /// 423 Locked, without Retry-After.
    Api423,
}

fn fires(seed: u64, name: &str, key: &[u8], start: u64, end: u64, nth: u64, rate: f64) -> bool {
    if rate <= 0.0 {
        return false;
    }
    if rate >= 1.0 {
        return true;
    }
    let h = hash_bytes(
        seed,
        &[
            name.as_bytes(),
            key,
            &start.to_le_bytes(),
            &end.to_le_bytes(),
            &nth.to_le_bytes(),
        ],
    );
    ((h >> 11) as f64 / (1u64 << 53) as f64) < rate
}

impl FaultConfig {
    /// The rate of a body fault.
    pub fn rate(&self, fault: BodyFault) -> f64 {
        match fault {
            BodyFault::ExpireEarly => self.expire_early,
            BodyFault::Status500 => self.status500,
            BodyFault::Status503 => self.status503,
            BodyFault::Reset => self.reset,
            BodyFault::Fin => self.fin,
            BodyFault::ShortBody => self.short_body,
            BodyFault::LongLength => self.long_length,
            BodyFault::Full200 => self.full_200,
            BodyFault::BadContentRange => self.bad_content_range,
            BodyFault::Stall => self.stall,
            BodyFault::Flip => self.flip,
        }
    }

    /// The first body fault that fires for the `nth` request (from 0) of `[start, end)` of a file.
    pub fn body_fault(&self, file: &str, start: u64, end: u64, nth: u64) -> Option<BodyFault> {
        if nth < self.flip_first {
            return Some(BodyFault::Flip);
        }
        BodyFault::ALL.into_iter().find(|f| {
            fires(
                self.seed,
                f.name(),
                file.as_bytes(),
                start,
                end,
                nth,
                self.rate(*f),
            )
        })
    }

    /// The API fault that fires for the `nth` call (from 0) of `route`, if any.
    pub fn api_fault(&self, route: &str, nth: u64) -> Option<ApiFault> {
        let key = route.as_bytes();
        [
            (ApiFault::Api500, "api500", self.api500),
            (ApiFault::Api503, "api503", self.api503),
        ]
        .into_iter()
        .chain([
            (ApiFault::Api429, "api429", self.api429),
            (ApiFault::Api423, "api423", self.api423),
        ])
        .find(|(_, name, rate)| fires(self.seed, name, key, 0, 0, nth, *rate))
        .map(|(f, _, _)| f)
    }

    /// How long a stall holds the connection.
    pub fn stall_duration(&self) -> Duration {
        Duration::from_secs(self.stall_secs)
    }

    /// Parses `reset=0.05,flip=0.01,seed=7,stall_secs=5,flip_first=2` (empty string: no
    /// faults).
    pub fn parse(s: &str) -> Result<FaultConfig, FaultError> {
        let mut cfg = FaultConfig::default();
        for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (name, value) = entry
                .split_once('=')
                .ok_or_else(|| FaultError::Syntax(entry.to_owned()))?;
            let (name, value) = (name.trim(), value.trim());
            let bad = || FaultError::BadValue {
                name: name.to_owned(),
                value: value.to_owned(),
            };
            let count = match name {
                "seed" => Some(&mut cfg.seed),
                "stall_secs" => Some(&mut cfg.stall_secs),
                "flip_first" => Some(&mut cfg.flip_first),
                _ => None,
            };
            if let Some(slot) = count {
                *slot = value.parse().map_err(|_| bad())?;
                continue;
            }
            let rate: f64 = value.parse().map_err(|_| bad())?;
            if !(0.0..=1.0).contains(&rate) {
                return Err(bad());
            }
            let slot = match name {
                "api500" => &mut cfg.api500,
                "api503" => &mut cfg.api503,
                "api429" => &mut cfg.api429,
                "api423" => &mut cfg.api423,
                other => match BodyFault::ALL.into_iter().find(|f| f.name() == other) {
                    Some(f) => cfg.slot(f),
                    None => return Err(FaultError::UnknownFault(other.to_owned())),
                },
            };
            *slot = rate;
        }
        Ok(cfg)
    }

    fn slot(&mut self, fault: BodyFault) -> &mut f64 {
        match fault {
            BodyFault::ExpireEarly => &mut self.expire_early,
            BodyFault::Status500 => &mut self.status500,
            BodyFault::Status503 => &mut self.status503,
            BodyFault::Reset => &mut self.reset,
            BodyFault::Fin => &mut self.fin,
            BodyFault::ShortBody => &mut self.short_body,
            BodyFault::LongLength => &mut self.long_length,
            BodyFault::Full200 => &mut self.full_200,
            BodyFault::BadContentRange => &mut self.bad_content_range,
            BodyFault::Stall => &mut self.stall,
            BodyFault::Flip => &mut self.flip,
        }
    }

    /// Sets one body fault's rate (builder style, for tests).
    pub fn with(mut self, fault: BodyFault, rate: f64) -> FaultConfig {
        *self.slot(fault) = rate;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_decide() {
        let cfg = FaultConfig::parse("reset=0.5, flip=1, seed=7,api429=0").unwrap();
        assert_eq!(cfg.seed, 7);
        assert_eq!(cfg.reset, 0.5);
        assert!(cfg.body_fault("file-x", 0, 10, 0).is_some());
        assert!(FaultConfig::parse("nope=1").is_err());
        assert!(FaultConfig::parse("reset=2").is_err());
        assert!(FaultConfig::parse("reset").is_err());
        assert_eq!(FaultConfig::default().body_fault("f", 0, 1, 0), None);
    }

    #[test]
    fn flip_first_damages_exactly_the_first_serves_of_every_range() {
        let cfg = FaultConfig::parse("flip_first=2").unwrap();
        assert_eq!(cfg.flip_first, 2);
        for (start, end) in [(0, 10), (10, 4096)] {
            assert_eq!(cfg.body_fault("f", start, end, 0), Some(BodyFault::Flip));
            assert_eq!(cfg.body_fault("f", start, end, 1), Some(BodyFault::Flip));
            assert_eq!(cfg.body_fault("f", start, end, 2), None);
        }
        assert!(FaultConfig::parse("flip_first=0.5").is_err());
    }

    #[test]
    fn decisions_are_deterministic_and_near_rate() {
        let cfg = FaultConfig::parse("reset=0.25,seed=3").unwrap();
        let hits = (0..4000)
            .filter(|n| cfg.body_fault("file-a", 0, 100, *n).is_some())
            .count();
        assert!((800..1200).contains(&hits), "{hits}");
        let again = (0..4000)
            .filter(|n| cfg.body_fault("file-a", 0, 100, *n).is_some())
            .count();
        assert_eq!(hits, again);
    }
}
