#!/usr/bin/env bash
# dxmirror benchmark: one command.
#
#   benches/run.sh [--quick] [--only large,small,mixed,many] [--contenders dxmirror,aria2c,dx]
#                  [--workdir DIR]
#
# Builds the release binary, checks the outside contenders (aria2c, dx) are installed (and
# says how to install them if not), then runs benches/bench.py: per workload it serves a
# sandbox dataset on loopback with `dxmirror sandbox`, runs dxmirror, aria2c and
# `dx download -r` one after another against it, checks every output file (size + SHA-256
# against dxmirror's SHA256SUMS), measures the limit line (dd conv=fdatasync and curl from
# the sandbox) and prints the table. Loopback only. Full run: several minutes; --quick: ~1-2.
# The work directory (default target/bench, or $DXMIRROR_BENCH_DIR) must be on the filesystem
# you want to measure; datasets are scaled down, with a note, when it lacks free space.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v aria2c >/dev/null 2>&1 || missing+=("aria2c: apt-get install -y aria2")
command -v dx >/dev/null 2>&1 || missing+=("dx: pip install dxpy")
command -v curl >/dev/null 2>&1 || missing+=("curl: apt-get install -y curl")
command -v python3 >/dev/null 2>&1 || missing+=("python3: apt-get install -y python3")
[ -x /usr/bin/time ] || missing+=("/usr/bin/time: apt-get install -y time")
if [ ${#missing[@]} -gt 0 ]; then
    if [ "${DXMIRROR_BENCH_INSTALL:-0}" = 1 ]; then
        echo "[bench] installing benchmark-only tools" >&2
        command -v aria2c >/dev/null 2>&1 || apt-get install -y aria2
        command -v dx >/dev/null 2>&1 || pip install dxpy
        command -v curl >/dev/null 2>&1 || apt-get install -y curl
        [ -x /usr/bin/time ] || apt-get install -y time
    else
        echo "benchmark-only tools are missing; install them (or rerun with DXMIRROR_BENCH_INSTALL=1):" >&2
        printf '  %s\n' "${missing[@]}" >&2
        exit 2
    fi
fi

echo "[bench] cargo build --release" >&2
cargo build --release --quiet
exec python3 benches/bench.py "$@"
