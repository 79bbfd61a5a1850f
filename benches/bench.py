#!/usr/bin/env python3
"""dxmirror benchmark harness (run it through benches/run.sh, which builds the release binary).

What it owns: building sandbox datasets (`dxmirror sandbox --dataset ...` on loopback), running
each contender (dxmirror, aria2c, `dx download -r`) against the same sandbox one after another,
checking every result against the SHA256SUMS dxmirror wrote (sizes and SHA-256 of every file),
measuring wall time, CPU (user+sys) and peak RSS with /usr/bin/time, the limit line (dd
conv=fdatasync + curl from the sandbox), the 100k-file scale phase, and printing the tables.

What it must not do: talk to anything but loopback, print the API token or a download header,
or leave processes behind. Standard library only (Python 3.8+).
"""

import argparse
import concurrent.futures
import hashlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "dxmirror")
GIB = 1 << 30
MIB = 1 << 20

# Full and --quick sizes of each workload.
FULL = {"large": 4 * GIB, "small": 5000, "mixed": 2 * GIB, "many": 100_000}
QUICK = {"large": 512 * MIB, "small": 500, "mixed": 256 * MIB, "many": 10_000}
SMALL_FILE = 64 << 10


def log(msg):
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def human(n):
    for unit, size in (("GiB", GIB), ("MiB", MIB), ("KiB", 1024)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


# --------------------------------------------------------------------------------------------
# The sandbox


class Sandbox:
    """One `dxmirror sandbox` process serving one dataset on loopback."""

    def __init__(self, dataset, workdir):
        self.dataset = dataset
        self.log_path = os.path.join(workdir, f"sandbox-{dataset.replace(':', '-')}.log")
        self.log_file = open(self.log_path, "wb")
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            [BIN, "sandbox", "--dataset", dataset],
            stdout=subprocess.PIPE,
            stderr=self.log_file,
            env=clean_env(),
        )
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"sandbox {dataset} did not start; see {self.log_path}")
        info = json.loads(line)
        self.api = info["api_url"]
        self.token = info["token"]
        self.project = info["projects"][0]
        self.start_s = time.monotonic() - t0
        self.files = self.list_files()
        self.bytes = sum(f["size"] for f in self.files)
        log(
            f"sandbox {dataset}: {len(self.files)} files, {human(self.bytes)} "
            f"(built in {self.start_s:.1f}s) at {self.api}"
        )

    def call(self, route, body):
        req = urllib.request.Request(
            self.api + route,
            data=json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=120) as r:
            return json.loads(r.read())

    def stats_bytes(self):
        req = urllib.request.Request(
            self.api + "/_sandbox/stats", headers={"Authorization": f"Bearer {self.token}"}
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())["bytes_served"]

    def list_files(self):
        out, starting = [], None
        while True:
            body = {
                "class": "file",
                "scope": {"project": self.project, "folder": "/", "recurse": True},
                "describe": {"fields": {"name": True, "folder": True, "size": True}},
                "limit": 1000,
            }
            if starting:
                body["starting"] = starting
            page = self.call("/system/findDataObjects", body)
            for r in page["results"]:
                d = r["describe"]
                out.append(
                    {"id": r["id"], "name": d["name"], "folder": d["folder"], "size": d["size"]}
                )
            starting = page.get("next")
            if not starting:
                return out

    def download_urls(self):
        """(file, url, headers) for every file, as `POST /file-xxxx/download` gives them."""

        def one(f):
            r = self.call(f"/{f['id']}/download", {"project": self.project, "duration": 86400})
            return f, r["url"], r.get("headers", {})

        with concurrent.futures.ThreadPoolExecutor(8) as ex:
            return list(ex.map(one, self.files))

    def cpu_seconds(self):
        with open(f"/proc/{self.proc.pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        tck = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / tck

    def rss_mib(self):
        with open(f"/proc/{self.proc.pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log_file.close()


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("DX_")}
    for k in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY"):
        env.pop(k, None)
    env["NO_PROXY"] = "*"
    env.update(extra)
    return env


# --------------------------------------------------------------------------------------------
# Measuring


class Measure:
    """Wall, CPU and peak RSS of one command, from /usr/bin/time."""

    def __init__(self, wall, user, sys_, rss_kib, rc):
        self.wall, self.user, self.sys, self.rss_kib, self.rc = wall, user, sys_, rss_kib, rc

    @property
    def cpu(self):
        return self.user + self.sys


def timed(cmd, workdir, name, cwd=None, env=None):
    tfile = os.path.join(workdir, f"time-{name}.txt")
    out = open(os.path.join(workdir, f"{name}.log"), "wb")
    t0 = time.monotonic()
    rc = subprocess.call(
        ["/usr/bin/time", "-f", "%e %U %S %M", "-o", tfile] + cmd,
        stdout=out,
        stderr=subprocess.STDOUT,
        cwd=cwd,
        env=env or clean_env(),
    )
    wall = time.monotonic() - t0
    out.close()
    with open(tfile) as fh:
        last = fh.read().strip().splitlines()[-1]
    _, user, sys_, rss = last.split()
    return Measure(wall, float(user), float(sys_), int(rss), rc)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            b = fh.read(4 << 20)
            if not b:
                return h.hexdigest()
            h.update(b)


def walk(root):
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != ".dxmirror"]
        for n in filenames:
            yield os.path.join(dirpath, n)


def check_outputs(expected, out_root, what):
    """Every expected (relpath -> (size, sha256)) must be present under out_root with that
    size and SHA-256. Files are matched by path relative to out_root, else by a unique
    basename (dx names its top folder its own way). Returns a list of problems."""
    found = {}
    by_base = {}
    for p in walk(out_root):
        rel = os.path.relpath(p, out_root)
        if rel == "SHA256SUMS":
            continue
        found[rel] = p
        by_base.setdefault(os.path.basename(p), []).append(p)
    jobs, problems = [], []
    for rel, (size, digest) in expected.items():
        path = found.get(rel)
        if path is None:
            cands = by_base.get(os.path.basename(rel), [])
            path = cands[0] if len(cands) == 1 else None
        if path is None:
            problems.append(f"{what}: missing {rel}")
            continue
        if os.path.getsize(path) != size:
            problems.append(f"{what}: {rel} has {os.path.getsize(path)} bytes, expected {size}")
            continue
        jobs.append((rel, path, digest))
    with concurrent.futures.ThreadPoolExecutor(2) as ex:
        for (rel, _, digest), got in zip(jobs, ex.map(lambda j: sha256_file(j[1]), jobs)):
            if got != digest:
                problems.append(f"{what}: {rel} SHA-256 differs")
    if len(found) != len(expected):
        problems.append(f"{what}: {len(found)} files on disk, {len(expected)} expected")
    return problems


# --------------------------------------------------------------------------------------------
# Contenders


def write_dxmirror_config(sb, base):
    os.makedirs(base, exist_ok=True)
    token = os.path.join(base, "token")
    with open(token, "w") as fh:
        fh.write(sb.token)
    os.chmod(token, 0o600)
    # The mirror root must exist: dxmirror never creates it.
    os.makedirs(os.path.join(base, "mirror"), exist_ok=True)
    cfg = os.path.join(base, "config.toml")
    with open(cfg, "w") as fh:
        fh.write(
            f'api-url = "{sb.api}"\n'
            f'token-file = "{token}"\n'
            f'mirror-root = "{os.path.join(base, "mirror")}"\n'
            f'state-dir = "{os.path.join(base, "state")}"\n'
            "max-connections = 16\n"
            "max-connections-per-file = 8\n"
            '[[project]]\n'
            f'id = "{sb.project}"\n'
        )
    return cfg


def run_dxmirror(sb, workdir, wl):
    base = os.path.join(workdir, f"{wl}-dxmirror")
    shutil.rmtree(base, ignore_errors=True)
    cfg = write_dxmirror_config(sb, base)
    m = timed([BIN, "sync", "--config", cfg], workdir, f"{wl}-dxmirror")
    mirror = os.path.join(base, "mirror")
    projects = [d for d in os.listdir(mirror) if not d.startswith(".")] if os.path.isdir(mirror) else []
    if m.rc != 0 or len(projects) != 1:
        raise RuntimeError(f"dxmirror sync failed (rc {m.rc}); see {workdir}/{wl}-dxmirror.log")
    proj = os.path.join(mirror, projects[0])
    expected = {}
    with open(os.path.join(proj, "SHA256SUMS")) as fh:
        for line in fh:
            digest, rel = line.rstrip("\n").split("  ", 1)
            expected[rel.lstrip("./")] = digest
    sizes = {f"{f['folder'].strip('/')}/{f['name']}".lstrip("/"): f["size"] for f in sb.files}
    exp = {}
    problems = []
    for rel, size in sizes.items():
        if rel not in expected:
            problems.append(f"dxmirror: {rel} missing from SHA256SUMS")
        else:
            exp[rel] = (size, expected[rel])
    # dxmirror checked every platform checksum itself; here: sizes, and sha256sum -c.
    problems += check_outputs(exp, proj, "dxmirror")
    return m, exp, problems, base


def run_aria2c(sb, workdir, wl, exp, urls):
    base = os.path.join(workdir, f"{wl}-aria2c")
    shutil.rmtree(base, ignore_errors=True)
    os.makedirs(base)
    inp = os.path.join(workdir, f"{wl}-aria2c.input")
    with open(inp, "w") as fh:
        for f, url, headers in urls:
            rel = f"{f['folder'].strip('/')}/{f['name']}".lstrip("/")
            fh.write(f"{url}\n  dir={base}\n  out={rel}\n")
            for k, v in headers.items():
                fh.write(f"  header={k}: {v}\n")
    os.chmod(inp, 0o600)
    cmd = [
        "aria2c", "--no-conf", "-i", inp,
        "-x16", "-s16", "-j16", "-k16M", "--piece-length=16M",
        "--file-allocation=falloc", "--allow-overwrite=true", "--auto-file-renaming=false",
        "--console-log-level=warn", "--summary-interval=0", "--download-result=hide",
        "--max-tries=5", "--retry-wait=1",
    ]
    m = timed(cmd, workdir, f"{wl}-aria2c")
    problems = [] if m.rc == 0 else [f"aria2c: exit status {m.rc}"]
    problems += check_outputs(exp, base, "aria2c")
    return m, problems, base


def run_dx(sb, workdir, wl, exp):
    base = os.path.join(workdir, f"{wl}-dx")
    shutil.rmtree(base, ignore_errors=True)
    home = os.path.join(base, "home")
    out = os.path.join(base, "out")
    os.makedirs(home)
    os.makedirs(out)
    port = sb.api.rsplit(":", 1)[1]
    env = clean_env(
        HOME=home,
        DX_USER_CONF_DIR=os.path.join(home, ".dnanexus_config"),
        DX_APISERVER_PROTOCOL="http",
        DX_APISERVER_HOST="127.0.0.1",
        DX_APISERVER_PORT=port,
        DX_SECURITY_CONTEXT=json.dumps({"auth_token_type": "Bearer", "auth_token": sb.token}),
        DX_PROJECT_CONTEXT_ID=sb.project,
        DX_CLI_WD="/",
    )
    cmd = ["dx", "download", "-r", "-f", "--no-progress", f"{sb.project}:/"]
    m = timed(cmd, workdir, f"{wl}-dx", cwd=out, env=env)
    problems = [] if m.rc == 0 else [f"dx download: exit status {m.rc}"]
    problems += check_outputs(exp, out, "dx download")
    return m, problems, base


# --------------------------------------------------------------------------------------------
# The limit line


def limit_line(sb, workdir, wl, urls):
    """dd conv=fdatasync of the same byte count to the same filesystem, and curl of the same
    files from the sandbox to /dev/null (16 at once, large files in 16 MiB ranges)."""
    total = sb.bytes
    ddfile = os.path.join(workdir, f"{wl}-dd.bin")
    count = max(1, -(-total // (16 * MIB)))
    dd = timed(
        ["dd", "if=/dev/zero", f"of={ddfile}", "bs=16M", f"count={count}", "conv=fdatasync"],
        workdir, f"{wl}-dd",
    )
    os.unlink(ddfile)
    dd_rate = count * 16 * MIB / dd.wall
    cfg = os.path.join(workdir, f"{wl}-curl.config")
    with open(cfg, "w") as fh:
        for f, url, headers in urls:
            step = 16 * MIB
            starts = range(0, max(f["size"], 1), step)
            for s in starts:
                # Headers are not per-URL in curl: `next` starts a fresh set of options.
                if fh.tell() > 0:
                    fh.write("next\n")
                fh.write(f'url = "{url}"\noutput = "/dev/null"\nlocation\nfail\n')
                if f["size"] > step:
                    fh.write(f'range = "{s}-{min(s + step, f["size"]) - 1}"\n')
                for k, v in headers.items():
                    fh.write(f'header = "{k}: {v}"\n')
    os.chmod(cfg, 0o600)
    cpu0 = sb.cpu_seconds()
    curl = timed(
        ["curl", "-sS", "--fail", "-Z", "--parallel-max", "16", "-K", cfg],
        workdir, f"{wl}-curl",
    )
    sb_cpu = sb.cpu_seconds() - cpu0
    if curl.rc != 0:
        raise RuntimeError(f"curl from the sandbox failed (rc {curl.rc})")
    curl_rate = total / curl.wall
    return {
        "dd_MBps": dd_rate / 1e6,
        "dd_wall": dd.wall,
        "curl_MBps": curl_rate / 1e6,
        "curl_wall": curl.wall,
        "curl_cpu": curl.cpu,
        "sandbox_cpu": sb_cpu,
        "limit_MBps": min(dd_rate, curl_rate) / 1e6,
    }


# --------------------------------------------------------------------------------------------
# Workloads


VERIFY_ROUNDS = 2


def run_verify(workdir, wl, base, exp):
    """`dxmirror verify` against `md5sum` then `sha256sum` over the same page-cached files.

    Runs both sides VERIFY_ROUNDS times, alternating (the machine is shared and noisy), and
    keeps each side's fastest round. With DXMIRROR_BENCH_VERIFY_BASELINE=/path/to/dxmirror, that
    binary's `verify` is timed in the same rounds (before/after comparisons)."""
    mirror = os.path.join(base, "mirror")
    proj = os.path.join(mirror, [d for d in os.listdir(mirror) if not d.startswith(".")][0])
    files = [os.path.join(proj, rel) for rel in sorted(exp)]
    config = os.path.join(base, "config.toml")
    baseline = os.environ.get("DXMIRROR_BENCH_VERIFY_BASELINE")
    # Warm the page cache for both sides alike.
    subprocess.call(["cat"] + files, stdout=subprocess.DEVNULL)
    rounds = []
    for r in range(VERIFY_ROUNDS):
        dxm = timed([BIN, "-q", "verify", "--config", config], workdir, f"{wl}-verify-{r}")
        if dxm.rc != 0:
            raise RuntimeError(f"dxmirror verify failed (rc {dxm.rc}); see {workdir}/{wl}-verify-{r}.log")
        md5 = timed(["md5sum"] + files, workdir, f"{wl}-md5sum-{r}")
        sha = timed(["sha256sum"] + files, workdir, f"{wl}-sha256sum-{r}")
        row = {"dxmirror_s": dxm.wall, "dxmirror_cpu": dxm.cpu, "coreutils_s": md5.wall + sha.wall}
        if baseline:
            b = timed([baseline, "-q", "verify", "--config", config], workdir, f"{wl}-verify-baseline-{r}")
            if b.rc != 0:
                raise RuntimeError(f"baseline verify failed (rc {b.rc})")
            row["baseline_s"] = b.wall
            row["baseline_cpu"] = b.cpu
        log(
            f"verify round {r + 1}: dxmirror {row['dxmirror_s']:.2f} s (CPU {row['dxmirror_cpu']:.2f} s), "
            f"md5sum+sha256sum {row['coreutils_s']:.2f} s, {row['coreutils_s'] / row['dxmirror_s']:.2f}x"
            + (f"; baseline {row['baseline_s']:.2f} s (CPU {row['baseline_cpu']:.2f} s)" if baseline else "")
        )
        rounds.append(row)
    best = min(rounds, key=lambda x: x["dxmirror_s"])
    return {
        "dxmirror_s": best["dxmirror_s"],
        "dxmirror_cpu": best["dxmirror_cpu"],
        "coreutils_s": min(x["coreutils_s"] for x in rounds),
        "rounds": rounds,
    }


def run_workload(wl, dataset, workdir, contenders, results):
    sb = Sandbox(dataset, workdir)
    rows = []
    problems = []
    # Many small files: each contender's output is deleted only once every contender ran.
    # On ext4 without a journal, creating files shortly (minutes) after thousands were deleted
    # costs much more kernel time (`recently_deleted` skips their inodes), so deleting one
    # contender's 5000 files right before the next one runs would handicap the next one.
    later = []

    def cleanup(base):
        if wl == "small":
            later.append(base)
        else:
            shutil.rmtree(base, ignore_errors=True)

    try:
        cpu0 = sb.cpu_seconds()
        m, exp, probs, base = run_dxmirror(sb, workdir, wl)
        rows.append(("dxmirror", m, sb.cpu_seconds() - cpu0))
        problems += probs
        verify = run_verify(workdir, wl, base, exp) if wl == "large" else None
        cleanup(base)
        t0 = time.monotonic()
        urls = sb.download_urls()
        url_s = time.monotonic() - t0
        if "aria2c" in contenders:
            cpu0 = sb.cpu_seconds()
            m, probs, base = run_aria2c(sb, workdir, wl, exp, urls)
            rows.append(("aria2c", m, sb.cpu_seconds() - cpu0))
            problems += probs
            cleanup(base)
        if "dx" in contenders:
            cpu0 = sb.cpu_seconds()
            m, probs, base = run_dx(sb, workdir, wl, exp)
            rows.append(("dx download", m, sb.cpu_seconds() - cpu0))
            problems += probs
            cleanup(base)
        limit = limit_line(sb, workdir, wl, urls)
    finally:
        sb.stop()
        for base in later:
            shutil.rmtree(base, ignore_errors=True)
    results[wl] = {
        "dataset": dataset,
        "files": len(sb.files),
        "bytes": sb.bytes,
        "url_s": url_s,
        "rows": [
            {
                "name": name,
                "wall": m.wall,
                "cpu": m.cpu,
                "user": m.user,
                "sys": m.sys,
                "rss_mib": m.rss_kib / 1024,
                "sandbox_cpu": sbc,
            }
            for name, m, sbc in rows
        ],
        "limit": limit,
        "verify": verify,
        "problems": problems,
    }
    for p in problems:
        log(f"CHECK FAILED: {p}")


def parse_phase_times(path):
    """list_ms/plan_ms of `project listed and journaled` lines of a dxmirror log."""
    out = []
    with open(path, errors="replace") as fh:
        for line in fh:
            if "project listed and journaled" in line:
                clean = re.sub(r"\x1b\[[0-9;]*m", "", line)
                lm = re.search(r"list_ms=(\d+)", clean)
                pm = re.search(r"plan_ms=(\d+)", clean)
                if lm and pm:
                    out.append((int(lm.group(1)), int(pm.group(1))))
    return out


def poll(cond, timeout, step=0.02):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = cond()
        if v:
            return v
        time.sleep(step)
    return None


def run_scale(n, workdir, results):
    """many:N — listing+planning+journaling time, `dxmirror status` time, restart to first
    byte, journal size."""
    sb = Sandbox(f"many:{n}", workdir)
    base = os.path.join(workdir, "many-dxmirror")
    shutil.rmtree(base, ignore_errors=True)
    try:
        cfg = write_dxmirror_config(sb, base)
        log1 = os.path.join(workdir, "many-first.log")
        with open(log1, "wb") as fh:
            t0 = time.monotonic()
            p = subprocess.Popen([BIN, "sync", "--config", cfg], stdout=fh, stderr=subprocess.STDOUT, env=clean_env())
            # Let it list, journal and fetch about a tenth of the files, then kill -9.
            target = max(1, sb.bytes // 10)
            ok = poll(lambda: p.poll() is not None or sb.stats_bytes() >= target, 600, 0.1)
            first_elapsed = time.monotonic() - t0
            p.kill()
            p.wait()
        first = parse_phase_times(log1)
        if not ok or not first:
            raise RuntimeError(f"first many:{n} sync did not list and fetch; see {log1}")
        served_at_kill = sb.stats_bytes()
        # dxmirror status on that journal (read-only), median of 5.
        st = []
        for _ in range(5):
            t = time.monotonic()
            rc = subprocess.call([BIN, "status", "--config", cfg], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=clean_env())
            st.append(time.monotonic() - t)
            if rc != 0:
                raise RuntimeError("dxmirror status failed")
        journal = sum(
            os.path.getsize(os.path.join(base, "state", f)) for f in os.listdir(os.path.join(base, "state"))
        )
        # Restart to first byte: from spawning `dxmirror sync` again until the sandbox's
        # served-byte counter moves past its value at the kill (polled every 20 ms).
        log2 = os.path.join(workdir, "many-restart.log")
        with open(log2, "wb") as fh:
            t0 = time.monotonic()
            p = subprocess.Popen([BIN, "sync", "--config", cfg], stdout=fh, stderr=subprocess.STDOUT, env=clean_env())
            moved = poll(lambda: sb.stats_bytes() > served_at_kill or p.poll() is not None, 120, 0.02)
            restart_s = time.monotonic() - t0
            p.kill()
            p.wait()
        second = parse_phase_times(log2)
        if not moved:
            raise RuntimeError("restart fetched nothing within 120 s")
    finally:
        sb.stop()
        shutil.rmtree(base, ignore_errors=True)
    results["many"] = {
        "files": n,
        "list_ms": first[0][0],
        "plan_ms": first[0][1],
        "restart_list_ms": second[0][0] if second else None,
        "restart_plan_ms": second[0][1] if second else None,
        "first_run_killed_after_s": first_elapsed,
        "status_ms": statistics.median(st) * 1000,
        "restart_first_byte_s": restart_s,
        "journal_bytes": journal,
    }


# --------------------------------------------------------------------------------------------
# Report


def report(results, machine, scaled_note):
    lines = []
    lines.append(f"dxmirror benchmark, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    lines.append(f"machine: {machine}")
    if scaled_note:
        lines.append(scaled_note)
    lines.append("")
    lines.append(
        "| workload | contender | wall s | MB/s | files/s | CPU s | CPU s/GiB | peak RSS MiB | sandbox CPU s | dxmirror speed-up |"
    )
    lines.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for wl in ("large", "small", "mixed"):
        r = results.get(wl)
        if not r:
            continue
        dxm = r["rows"][0]["wall"]
        for row in r["rows"]:
            mbps = r["bytes"] / row["wall"] / 1e6
            fps = r["files"] / row["wall"]
            cpu_gib = row["cpu"] / (r["bytes"] / GIB)
            ratio = row["wall"] / dxm
            lines.append(
                f"| {wl} ({r['files']} files, {human(r['bytes'])}) | {row['name']} | {row['wall']:.2f} | {mbps:.0f} | {fps:.0f} | "
                f"{row['cpu']:.2f} | {cpu_gib:.2f} | {row['rss_mib']:.0f} | {row['sandbox_cpu']:.2f} | {ratio:.2f}× |"
            )
        lim = r["limit"]
        dxm_mbps = r["bytes"] / dxm / 1e6
        lines.append(
            f"| {wl} | limit line: min(dd {lim['dd_MBps']:.0f} MB/s, curl {lim['curl_MBps']:.0f} MB/s) | "
            f"| {lim['limit_MBps']:.0f} | | | | | {lim['sandbox_cpu']:.2f} | dxmirror at {100 * dxm_mbps / lim['limit_MBps']:.0f}% |"
        )
    lines.append("")
    lines.append(
        "dxmirror speed-up = contender wall / dxmirror wall (above 1 means dxmirror was faster). "
        "Sandbox serving rate = the curl figure (16 parallel curls to /dev/null, large files in 16 MiB ranges)."
    )
    for wl in ("large", "small", "mixed"):
        r = results.get(wl)
        if r:
            lines.append(
                f"{wl}: aria2c's {r['files']} download URLs were fetched beforehand in {r['url_s']:.2f}s, "
                "outside its timing; dxmirror's timing includes its listing and URL requests."
            )
            for p in r["problems"]:
                lines.append(f"{wl}: CHECK FAILED: {p}")
            if not r["problems"]:
                lines.append(f"{wl}: every contender's output checked (sizes + SHA-256 of every file).")
    lines += targets(results)
    m = results.get("many")
    if m:
        lines.append("")
        lines.append(f"scale, many:{m['files']} (16-byte files):")
        lines.append(
            f"- listed+planned+journaled: list_ms={m['list_ms']} plan_ms={m['plan_ms']} "
            f"(total {(m['list_ms'] + m['plan_ms']) / 1000:.2f} s; target <= 5 s)"
        )
        lines.append(f"- dxmirror status: {m['status_ms']:.0f} ms median of 5 (target <= 200 ms)")
        lines.append(
            f"- restart to first byte: {m['restart_first_byte_s']:.2f} s (target <= 2 s); restart's "
            f"list_ms={m['restart_list_ms']} plan_ms={m['restart_plan_ms']}"
        )
        lines.append(f"- journal size: {human(m['journal_bytes'])}")
    return "\n".join(lines)


def targets(results):
    """Issue 6's targets, met or not, from this run's figures."""
    out = ["", "targets (issue 6), this run:"]

    def verdict(name, ok, detail):
        out.append(f"- [{'met' if ok else 'NOT met'}] {name}: {detail}")

    def row(wl, name):
        r = results.get(wl)
        if not r:
            return None, None
        for x in r["rows"]:
            if x["name"] == name:
                return r, x
        return r, None

    r, dxm = row("large", "dxmirror")
    if dxm:
        _, ar = row("large", "aria2c")
        _, dx = row("large", "dx download")
        if ar:
            q = ar["wall"] / dxm["wall"]
            verdict("large files >= 1.0x aria2c", q >= 1.0, f"{q:.2f}x")
        if dx:
            q = dx["wall"] / dxm["wall"]
            verdict("large files >= 3x dx download", q >= 3.0, f"{q:.2f}x")
        mbps = r["bytes"] / dxm["wall"] / 1e6
        frac = mbps / r["limit"]["limit_MBps"]
        verdict("large files >= 85% of the limit line", frac >= 0.85, f"{100 * frac:.0f}% ({mbps:.0f} of {r['limit']['limit_MBps']:.0f} MB/s)")
        gib = r["bytes"] / GIB
        cpu = f"dxmirror {dxm['cpu'] / gib:.2f}"
        if ar:
            cpu += f", aria2c {ar['cpu'] / gib:.2f}"
        out.append(f"- CPU s/GiB on large files: {cpu}")
    r, dxm = row("small", "dxmirror")
    _, ar = row("small", "aria2c")
    if dxm and ar:
        q = ar["wall"] / dxm["wall"]
        verdict("small files files/s >= 1.0x aria2c", q >= 1.0, f"{r['files'] / dxm['wall']:.0f} vs {r['files'] / ar['wall']:.0f} files/s ({q:.2f}x)")
    # The target is the large-file workload's; the other workloads' peaks are shown beside it.
    rss = {wl: results[wl]["rows"][0]["rss_mib"] for wl in ("large", "small", "mixed") if results.get(wl)}
    if "large" in rss:
        others = ", ".join(f"{wl} {v:.0f}" for wl, v in rss.items() if wl != "large")
        verdict("peak RSS <= 64 MiB on large files at 16 connections", rss["large"] <= 64,
                f"{rss['large']:.0f} MiB" + (f" (other workloads: {others} MiB)" if others else ""))
    m = results.get("many")
    if m:
        t = (m["list_ms"] + m["plan_ms"]) / 1000
        verdict(f"{m['files']}-file project listed+planned+journaled <= 5 s", t <= 5, f"{t:.2f} s")
        verdict("dxmirror status <= 200 ms", m["status_ms"] <= 200, f"{m['status_ms']:.0f} ms")
        verdict("restart to first byte <= 2 s", m["restart_first_byte_s"] <= 2, f"{m['restart_first_byte_s']:.2f} s")
    v = results.get("large", {}).get("verify")
    if v:
        q = v["coreutils_s"] / v["dxmirror_s"]
        verdict(
            "dxmirror verify >= 3x md5sum+sha256sum (page-cached large files)",
            q >= 3.0,
            f"{q:.2f}x ({v['dxmirror_s']:.2f} s vs {v['coreutils_s']:.2f} s)",
        )
    return out


def machine_line():
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as fh:
            kib = int(fh.readline().split()[1])
            mem = f", {kib / (1 << 20):.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    load = "load average %.2f %.2f %.2f at start" % os.getloadavg()
    return f"{os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), {cpu}{mem}, kernel {os.uname().release}; {load}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small datasets (a minute or two)")
    ap.add_argument("--workdir", default=os.environ.get("DXMIRROR_BENCH_DIR", os.path.join(ROOT, "target", "bench")))
    ap.add_argument("--only", default="large,small,mixed,many", help="comma-separated workloads")
    ap.add_argument("--contenders", default="dxmirror,aria2c,dx")
    args = ap.parse_args()
    sizes = dict(QUICK if args.quick else FULL)
    # Absolute: contenders run in their own output folders (dx download writes to its cwd).
    args.workdir = os.path.abspath(args.workdir)
    os.makedirs(args.workdir, exist_ok=True)
    # Disk: one contender's output (deleted after it is checked) or the dd file at a time.
    free = shutil.disk_usage(args.workdir).free
    need = int(max(sizes["large"], sizes["mixed"]) * 1.1) + GIB
    note = ""
    if free < need:
        usable = max(64 * MIB, int((free - GIB) / 1.1))
        factor = usable / max(sizes["large"], sizes["mixed"])
        sizes["large"] = int(sizes["large"] * factor) // MIB * MIB
        sizes["mixed"] = int(sizes["mixed"] * factor) // MIB * MIB
        note = (
            f"NOTE: only {human(free)} free in {args.workdir}; datasets scaled down to "
            f"large {human(sizes['large'])}, mixed {human(sizes['mixed'])}"
        )
        log(note)
    else:
        log(f"{human(free)} free in {args.workdir}: full-size datasets fit")
    only = set(args.only.split(","))
    contenders = set(args.contenders.split(","))
    results = {}
    machine = machine_line()
    t0 = time.monotonic()
    if "large" in only:
        run_workload("large", f"large:{sizes['large']}", args.workdir, contenders, results)
    if "small" in only:
        run_workload("small", f"small:{sizes['small']}", args.workdir, contenders, results)
    if "mixed" in only:
        run_workload("mixed", f"mixed:{sizes['mixed']}", args.workdir, contenders, results)
    if "many" in only:
        run_scale(sizes["many"], args.workdir, results)
    text = report(results, machine, note)
    print(text)
    with open(os.path.join(args.workdir, "results.json"), "w") as fh:
        json.dump(results, fh, indent=1)
    with open(os.path.join(args.workdir, "results.md"), "w") as fh:
        fh.write(text + "\n")
    log(f"done in {time.monotonic() - t0:.0f}s; results in {args.workdir}/results.md and results.json")
    failed = any(r.get("problems") for r in results.values() if isinstance(r, dict))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
