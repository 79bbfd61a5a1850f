#!/usr/bin/env python3
"""Runs one contender once against one backend under a wrapper command, for counting and
profiling (the benchmark's own timing is benches/bench.py's).

    benches/probe.py --dataset large:4GiB --backend sandbox|nginx \
        --contender dxmirror|aria2c|dx [--bin PATH] [--runs N] \
        [--wrap 'perf stat -e syscalls:sys_enter_fdatasync -o OUT --'] [--drop]

`--wrap` is split with shlex and put in front of the contender's command (perf stat,
strace -c -f -o FILE, perf record -g, valgrind ...); the string `{run}` in it becomes the run
number. The sandbox's pid is printed, for `perf record -p` of the server side.
Every run is checked like a benchmark run (sizes and SHA-256 of every file) and its
/proc/PID/io totals (rchar, wchar, syscr, syscw, read_bytes, write_bytes), sampled until it
exits, are printed. Loopback only; standard library only; uses bench.py's backends.
"""

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
import urllib.request

sys.dont_write_bytecode = True  # no __pycache__ in the work tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402


def io_sampler(pid, out, stop, wrapped):
    """Keeps the last /proc/PID/io of `pid` and its descendants (summed) in `out`."""

    def tree(p):
        kids = []
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{t}/children") as fh:
                    kids += [int(x) for x in fh.read().split()]
        except OSError:
            pass
        return [p] + [d for k in kids for d in tree(k)]

    last = {}
    while not stop.is_set():
        for p in tree(pid):
            try:
                with open(f"/proc/{p}/io") as fh:
                    last[p] = {k: int(v) for k, v in (line.split(": ") for line in fh)}
            except OSError:
                pass
        tot = {}
        # A wrapper (perf, strace) adds its reaped child's totals to its own: count only the
        # processes below it then.
        for p, v in last.items():
            if wrapped and p == pid:
                continue
            for k, n in v.items():
                tot[k] = tot.get(k, 0) + n
        out.clear()
        out.update(tot)
        time.sleep(0.05)


def routes(sb):
    """The sandbox's requests per route so far."""
    req = urllib.request.Request(sb.api + "/_sandbox/stats", headers={"Authorization": f"Bearer {sb.token}"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())["requests_by_route"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="large:4GiB")
    ap.add_argument("--backend", default="sandbox", choices=("sandbox", "nginx"))
    ap.add_argument("--contender", default="dxmirror", choices=("dxmirror", "aria2c", "dx"))
    ap.add_argument("--bin", default=bench.BIN)
    ap.add_argument("--sandbox-bin")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--wrap", default="")
    ap.add_argument("--workdir", default=os.path.join(bench.ROOT, "target", "bench", "probe"))
    ap.add_argument("--drop", action="store_true", help="drop the page cache before each run")
    args = ap.parse_args()
    bench.BIN = os.path.abspath(args.bin)
    bench.SANDBOX_BIN = os.path.abspath(args.sandbox_bin or args.bin)
    work = os.path.abspath(args.workdir)
    os.makedirs(work, exist_ok=True)
    live = []
    try:
        plain = bench.Sandbox(args.dataset, work)
        live.append(plain)
        sb = plain
        print(f"sandbox pid {plain.proc.pid}", flush=True)
        if args.backend == "nginx":
            content = os.path.join(work, "content")
            bench.materialise(plain, content, work, "probe")
            ng = bench.Nginx(content, work, "probe")
            live.append(ng)
            sb = bench.Sandbox(args.dataset, work, content_url=ng.url)
            live.append(sb)
        # The reference: one plain dxmirror run (checks every platform checksum).
        _, expected, probs, base = bench.run_dxmirror(bench.BIN, "reference", sb, work, "probe", None, False)
        shutil.rmtree(base, ignore_errors=True)
        if probs:
            raise SystemExit(f"reference run: {probs}")
        urls = sb.download_urls()
        for run in range(args.runs):
            base = os.path.join(work, f"run-{args.contender}")
            shutil.rmtree(base, ignore_errors=True)
            os.makedirs(base)
            if args.contender == "dxmirror":
                cfg = bench.write_dxmirror_config(sb, base)
                cmd, cwd = [bench.BIN, "sync", "--config", cfg], None
                env = bench.clean_env()
            elif args.contender == "aria2c":
                inp = os.path.join(work, "aria2c.input")
                with open(inp, "w") as fh:
                    for f, url, headers in urls:
                        rel = f"{f['folder'].strip('/')}/{f['name']}".lstrip("/")
                        fh.write(f"{url}\n  dir={base}\n  out={rel}\n")
                        for k, v in headers.items():
                            fh.write(f"  header={k}: {v}\n")
                cmd = ["aria2c", "--no-conf", "-i", inp, "-x16", "-s16", "-j16", "-k16M", "--piece-length=16M",
                       "--file-allocation=falloc", "--allow-overwrite=true", "--auto-file-renaming=false",
                       "--console-log-level=warn", "--summary-interval=0", "--download-result=hide"]
                cwd, env = None, bench.clean_env()
            else:
                raise SystemExit("dx: use bench.py")
            wrap = shlex.split(args.wrap.replace("{run}", str(run)))
            subprocess.call(["sync"])
            if args.drop:
                bench.drop_caches()
            req0 = routes(sb)
            cpu0 = sb.cpu_seconds() + (ng.cpu_seconds() if args.backend == "nginx" else 0)
            t0 = time.monotonic()
            p = subprocess.Popen(wrap + cmd, cwd=cwd, env=env, stdout=open(os.path.join(work, f"run-{run}.log"), "wb"), stderr=subprocess.STDOUT)
            io, stop = {}, threading.Event()
            th = threading.Thread(target=io_sampler, args=(p.pid, io, stop, bool(wrap)), daemon=True)
            th.start()
            rc = p.wait()
            t1 = time.monotonic()
            subprocess.call(["sync"])
            t2 = time.monotonic()
            stop.set()
            th.join()
            cpu1 = sb.cpu_seconds() + (ng.cpu_seconds() if args.backend == "nginx" else 0)
            out = base
            if args.contender == "dxmirror":
                mirror = os.path.join(base, "mirror")
                out = os.path.join(mirror, ([d for d in os.listdir(mirror) if not d.startswith(".")] or [""])[0])
            req1 = routes(sb)
            problems = bench.check_outputs(expected, out, args.contender)
            print(
                f"run {run}: rc {rc}, {t1 - t0:.2f} s + final sync {t2 - t1:.2f} s, server CPU {cpu1 - cpu0:.2f} s, "
                + ", ".join(f"{k} {v}" for k, v in sorted(io.items()))
                + "; sandbox requests: " + ", ".join(f"{k} {req1[k] - req0.get(k, 0)}" for k in sorted(req1) if req1[k] != req0.get(k, 0))
                + (f"; CHECK FAILED: {problems}" if problems else "; output checked"),
                flush=True,
            )
            shutil.rmtree(base, ignore_errors=True)
    finally:
        for x in live:
            x.stop()


if __name__ == "__main__":
    main()
