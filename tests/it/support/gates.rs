//! The gates: tests that need something outside the build (a tool, root) run only when their
//! variable is `1`, and then fail if what they need is missing. `.ci/run` sets every gate, so
//! nothing is skipped in CI; elsewhere a skipped test says so on stderr.

use std::io::Write as _;

/// A gate and the variable that opens it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// The real `dx` client against the sandbox.
    Dxpy,
    /// The disk-full test on a size-limited tmpfs.
    Tmpfs,
    /// `systemd-analyze` on the shipped unit.
    Systemd,
}

impl Gate {
    /// Every gate.
    pub const ALL: [Gate; 3] = [Gate::Dxpy, Gate::Tmpfs, Gate::Systemd];

    /// The environment variable that opens the gate (when it is `1`).
    pub fn var(self) -> &'static str {
        match self {
            Gate::Dxpy => "DXMIRROR_TEST_DXPY",
            Gate::Tmpfs => "DXMIRROR_TEST_TMPFS",
            Gate::Systemd => "DXMIRROR_TEST_SYSTEMD",
        }
    }

    /// What the gated tests need.
    pub fn needs(self) -> &'static str {
        match self {
            Gate::Dxpy => "needs dx (pip install dxpy) and aria2c",
            Gate::Tmpfs => "needs root, to mount a tmpfs",
            Gate::Systemd => "needs systemd-analyze",
        }
    }

    /// Whether `test` runs. When the gate is shut this writes `skipped: <test>: ...` straight
    /// to stderr, past the test harness's capture, so that `cargo test` shows it.
    pub fn enabled(self, test: &str) -> bool {
        if std::env::var(self.var()).is_ok_and(|v| v == "1") {
            return true;
        }
        let line = format!("skipped: {test}: set {}=1 ({})\n", self.var(), self.needs());
        let _ = std::io::stderr().write_all(line.as_bytes());
        false
    }
}

/// Every gate is set by CI's `.ci/run` and listed in ARCHITECTURE.md, so that CI skips none
/// and a newcomer finds them all.
#[test]
fn every_gate_is_set_by_ci_and_documented() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let ci = std::fs::read_to_string(root.join(".ci/run")).unwrap();
    let doc = std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap();
    for gate in Gate::ALL {
        let var = gate.var();
        assert!(
            ci.lines().any(|l| l.trim() == format!("export {var}=1")),
            ".ci/run does not export {var}=1"
        );
        assert!(
            doc.contains(&format!("`{var}=1`")),
            "ARCHITECTURE.md does not list {var}"
        );
    }
}
