#!/usr/bin/env bash
# dxmirror benchmark: one command.
#
#   benches/run.sh [--quick] [--only large,large16,small,mixed,many,memory]
#                  [--contenders dxmirror,aria2c,dx] [--backends sandbox,nginx] [--rounds N]
#                  [--bin PATH] [--baseline PATH] [--sandbox-bin PATH] [--sizes K=V,...]
#                  [--workdir DIR]
#
# Builds the release binary (unless --bin is given), checks the outside contenders (aria2c,
# dx) and nginx are installed (installs nginx with apt-get when root; says how to install the
# others), then runs benches/bench.py: per workload and backend (the sandbox alone; nginx
# serving the same bytes with the sandbox keeping the API) it runs dxmirror, aria2c and
# `dx download -r` in rounds of alternating order, every time with a final `sync` on the
# clock, checks every output file (size + SHA-256 against dxmirror's SHA256SUMS), measures the
# limit line (dd conv=fdatasync and curl from the backend) and prints median and range.
# With --baseline, a second dxmirror binary runs in the same rounds and the new/old speed
# ratio is printed. Loopback only. Full run: about half an hour; --quick: a few minutes.
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
if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        # The nginx backend: Debian's nginx, run by the benchmark itself (never as a service).
        echo "[bench] installing nginx (Debian package) for the nginx backend" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx >&2 \
            || { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx >&2; } \
            || echo "[bench] nginx could not be installed: the nginx backend will be skipped" >&2
    else
        echo "[bench] nginx is missing (apt-get install -y nginx): the nginx backend will be skipped" >&2
    fi
fi
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

for arg in "$@"; do
    case "$arg" in
        --bin|--bin=*) exec python3 benches/bench.py "$@" ;;
    esac
done
echo "[bench] cargo build --release" >&2
cargo build --release --quiet
target_dir=$(cargo metadata --format-version 1 --no-deps \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
exec python3 benches/bench.py --bin "$target_dir/release/dxmirror" "$@"
