#!/usr/bin/env python3
"""Accuracy of `bwlimit`: how close a `dxmirror sync` stays to its limit, and a timetable in action.

What it owns: for each rate, one `dxmirror sync` of a `large` sandbox dataset sized to last
about `--seconds` at that rate, with `bwlimit` set to it, while the bytes written under the
mirror (its files' allocated blocks) are sampled every 0.1 s; it prints the mean rate and the
lowest and highest rate over every 5 s window (sliding by 0.5 s, the first 3 s left out while socket buffers
fill), each as a ratio to the limit (target: within 10%). The lowest rate runs with one
connection per file and a limit below what one connection does. With `--timetable`, a
timetable whose boundary falls in the middle of a sync (the next local minute, 1 MiB/s then
4 MiB/s) prints the rate against time, second by second.

Run it as `benches/bwlimit.py [--bin PATH] [--rates 1MiB,8MiB,32MiB] [--seconds 15]
[--timetable]`; it builds nothing (default binary: target/release/dxmirror). Loopback only;
standard library only; it reuses bench.py's sandbox and config helpers.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402

KIB = 1 << 10
MIB = 1 << 20
UNITS = {"kib": KIB, "mib": MIB, "gib": 1 << 30}


def parse_rate(text):
    t = text.strip().lower()
    for unit, mult in UNITS.items():
        if t.endswith(unit):
            return int(float(t[: -len(unit)]) * mult)
    raise SystemExit(f"rate {text!r}: write it with KiB, MiB or GiB")


def written(root):
    """Bytes written under `root`: the blocks allocated to its files (staging files are
    created sparse at full size, so their blocks are the bytes written so far)."""
    total = 0
    for dirpath, _, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
            except OSError:
                pass
    return total


def sampled_sync(sb, base, extra, per_file):
    """Runs one sync with the `extra` config lines, sampling the bytes written to the mirror
    (the sandbox counts a response only once it ended, too coarse here): returns
    [(seconds since start, bytes written)] and the sync's exit status."""
    cfg = bench.write_dxmirror_config(sb, base)
    with open(cfg) as fh:
        text = fh.read()
    # Few connections: each writes in 256 KiB buffers, so the written bytes trail the bytes
    # read (which the limit counts) by up to that much per connection.
    text = text.replace("max-connections = 16\n", "max-connections = 4\n")
    text = text.replace("max-connections-per-file = 8\n", f"max-connections-per-file = {per_file}\n")
    with open(cfg, "w") as fh:
        fh.write(extra + text)
    samples = []
    mirror = os.path.join(base, "mirror")
    start = time.monotonic()
    with open(os.path.join(base, "sync.log"), "wb") as log:
        p = subprocess.Popen(
            [bench.BIN, "sync", "--config", cfg], stdout=log, stderr=log, env=bench.clean_env()
        )
        while p.poll() is None:
            samples.append((time.monotonic() - start, written(mirror)))
            time.sleep(0.1)
    samples.append((time.monotonic() - start, written(mirror)))
    return samples, p.returncode


def served_at(samples, t):
    """Bytes served at time `t`, interpolated between samples."""
    prev = samples[0]
    for s in samples:
        if s[0] >= t:
            if s[0] == prev[0]:
                return s[1]
            return prev[1] + (s[1] - prev[1]) * (t - prev[0]) / (s[0] - prev[0])
        prev = s
    return samples[-1][1]


def windows(samples, w=5.0, skip=3.0, step=0.5):
    """Rates (bytes/s) over every `w`-second window of the run, after `skip` seconds, before
    the last second (the sync's tail)."""
    end = samples[-1][0] - 1.0
    out, t = [], skip
    while t + w <= end:
        out.append((served_at(samples, t + w) - served_at(samples, t)) / w)
        t += step
    return out


def accuracy(rates, seconds, workdir):
    rows = []
    for text in rates:
        rate = parse_rate(text)
        # One connection per file at the lowest rate (far below what one connection does on
        # loopback); four otherwise.
        per_file = 1 if rate <= 1 * MIB else 4
        size = int(rate * (seconds + 3))
        sb = bench.Sandbox(f"large:{size}", workdir)
        try:
            base = os.path.join(workdir, f"bw-{text}")
            shutil.rmtree(base, ignore_errors=True)
            samples, rc = sampled_sync(sb, base, f'bwlimit = "{text}"\n', per_file)
        finally:
            sb.stop()
        if rc != 0:
            raise SystemExit(f"sync at {text} failed (rc {rc}); see {base}/sync.log")
        ws = windows(samples)
        total_t = samples[-1][0]
        mean = samples[-1][1] / total_t
        rows.append((text, per_file, total_t, mean / rate, min(ws) / rate, max(ws) / rate, len(ws)))
        bench.log(f"{text}: {len(ws)} windows, mean {mean / rate:.3f} of the limit")
    print("\n| limit | connections per file | run (s) | mean / limit | 5 s windows: min / limit | max / limit | windows |")
    print("|---|---|---|---|---|---|---|")
    for text, per_file, t, mean, lo, hi, n in rows:
        print(f"| {text}/s | {per_file} | {t:.1f} | {mean:.3f} | {lo:.3f} | {hi:.3f} | {n} |")


def timetable(workdir):
    """A boundary in the middle of a sync: 1 MiB/s until the next local minute, 4 MiB/s after."""
    now = time.time()
    lt = time.localtime(now)
    # Start 12 s before the next minute (waiting for it if it is too close).
    to_next = 60 - lt.tm_sec - (now % 1)
    if to_next < 14:
        time.sleep(to_next + 0.5)
        now = time.time()
        lt = time.localtime(now)
        to_next = 60 - lt.tm_sec - (now % 1)
    if to_next > 13:
        time.sleep(to_next - 12)
    cur = time.localtime(time.time())
    nxt = time.localtime(time.time() + 60)
    table = f"{cur.tm_hour:02d}:{cur.tm_min:02d},1MiB {nxt.tm_hour:02d}:{nxt.tm_min:02d},4MiB"
    # 12 s at 1 MiB/s then about 12 s at 4 MiB/s.
    size = 12 * MIB + 48 * MIB
    sb = bench.Sandbox(f"large:{size}", workdir)
    try:
        base = os.path.join(workdir, "bw-timetable")
        shutil.rmtree(base, ignore_errors=True)
        # The sandbox took a moment to build: the boundary is still ahead.
        samples, rc = sampled_sync(sb, base, f'bwlimit = "{table}"\n', 4)
    finally:
        sb.stop()
    if rc != 0:
        raise SystemExit(f"timetable sync failed (rc {rc}); see {base}/sync.log")
    print(f"\nbwlimit = \"{table}\" (boundary at {nxt.tm_hour:02d}:{nxt.tm_min:02d} local time)")
    print("| second | MiB/s over that second |")
    print("|---|---|")
    t = 0.0
    while t + 1 <= samples[-1][0]:
        r = (served_at(samples, t + 1) - served_at(samples, t)) / MIB
        print(f"| {int(t)} | {r:.2f} |")
        t += 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default=bench.BIN)
    ap.add_argument("--rates", default="1MiB,8MiB,32MiB")
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--timetable", action="store_true")
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    bench.BIN = os.path.abspath(args.bin)
    bench.SANDBOX_BIN = bench.BIN
    workdir = args.workdir or tempfile.mkdtemp(prefix="dxmirror-bwlimit-")
    os.makedirs(workdir, exist_ok=True)
    print(f"machine: {bench.machine_line()}")
    accuracy([r for r in args.rates.split(",") if r], args.seconds, workdir)
    if args.timetable:
        timetable(workdir)
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    threading.current_thread().name = "bwlimit"
    main()
