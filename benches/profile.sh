#!/usr/bin/env bash
# Profiles one `dxmirror sync` of the large workload with perf (cpu-clock sampling, whole
# system, so the sandbox's and the kernel's share show too) and prints the top symbols per
# process and per DSO. Usage: benches/profile.sh [SIZE]   (default 2GiB; loopback only)
# Needs `perf` (linux-perf); for counts (syscalls, fdatasync, /proc/PID/io) and kernel call
# graphs of one contender against either backend, see benches/probe.py. Where perf cannot sample, use
#   valgrind --tool=callgrind target/release/dxmirror sync --config ...   on a smaller SIZE.
set -euo pipefail
cd "$(dirname "$0")/.."
size="${1:-2GiB}"
work="${DXMIRROR_BENCH_DIR:-target/bench}/profile"
rm -rf "$work" && mkdir -p "$work"
cargo build --release --quiet
target_dir=$(cargo metadata --format-version 1 --no-deps \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
bin="$target_dir/release/dxmirror"
"$bin" sandbox --dataset "large:$size" > "$work/sandbox.json" 2> "$work/sandbox.log" &
sb=$!
trap 'kill $sb 2>/dev/null || true' EXIT
for _ in $(seq 1 600); do [ -s "$work/sandbox.json" ] && break; sleep 0.1; done
api=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["api_url"])' "$work/sandbox.json")
pid=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["projects"][0])' "$work/sandbox.json")
python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["token"], end="")' "$work/sandbox.json" > "$work/token"
chmod 600 "$work/token"
cat > "$work/config.toml" <<TOML
api-url = "$api"
token-file = "$PWD/$work/token"
mirror-root = "$PWD/$work/mirror"
state-dir = "$PWD/$work/state"
max-connections = 16
max-connections-per-file = 8
[[project]]
id = "$pid"
TOML
# Two recordings: the sandbox (attached to its pid) and the sync (with its threads).
perf record -q -e cpu-clock -F 999 -p "$sb" -o "$work/perf-sandbox.data" &
perf_sb=$!
sleep 1
perf record -q -e cpu-clock -F 999 -o "$work/perf-dxmirror.data" -- \
    /usr/bin/time -f "%e s wall, %U s user, %S s sys, %M KiB peak RSS" -o "$work/time.txt" \
    "$bin" sync --config "$work/config.toml" > "$work/sync.log" 2>&1
kill -INT $perf_sb
wait $perf_sb || true
echo "== dxmirror sync: $(cat "$work/time.txt")"
tail -1 "$work/sync.log"
report() { perf report --stdio --no-children "$@" 2>/dev/null | grep -v '^#' | grep -v '^$' | cut -c1-140; }
echo "== samples: dxmirror $(report -i "$work/perf-dxmirror.data" --sort comm -n | awk '{s+=$2} END {print s}'), sandbox $(report -i "$work/perf-sandbox.data" --sort comm -n | awk '{s+=$2} END {print s}') (1 ms each)"
echo "== dxmirror by thread"
report -i "$work/perf-dxmirror.data" --sort comm | head -8
echo "== dxmirror top symbols"
report -i "$work/perf-dxmirror.data" --sort comm,dso,symbol | head -30
echo "== sandbox top symbols"
report -i "$work/perf-sandbox.data" --sort dso,symbol | head -12
