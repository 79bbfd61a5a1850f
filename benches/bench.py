#!/usr/bin/env python3
"""dxmirror benchmark harness (run it through benches/run.sh, which builds the release binary).

What it owns: building sandbox datasets (`dxmirror sandbox --dataset ...` on loopback), serving
the same bytes a second way (nginx over the dataset's files materialised on disk, the sandbox
keeping the API), running each contender (dxmirror, aria2c, `dx download -r`, and optionally a
baseline dxmirror binary) against each backend in alternating order over several rounds,
checking every result against the SHA256SUMS dxmirror wrote (sizes and SHA-256 of every file),
measuring wall time with a fair clock (a `sync` before the clock starts and one before it
stops, so bytes left in the page cache are paid for), CPU (user+sys), peak RSS and blocks
written with /usr/bin/time, the limit line (dd conv=fdatasync + curl from each backend), the
100k-file scale phase, peak RSS of full syncs of many files, and printing the tables (median
and range of the rounds).

What it must not do: talk to anything but loopback, print the API token or a download header,
or leave processes behind. Standard library only (Python 3.8+).
"""

import argparse
import concurrent.futures
import hashlib
import json
import os
import pwd
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The dxmirror under test (--bin), its baseline (--baseline) and the binary whose `sandbox`
# serves the datasets (--sandbox-bin, default --bin). Set in main().
BIN = os.path.join(ROOT, "target", "release", "dxmirror")
BASELINE = None
SANDBOX_BIN = None
GIB = 1 << 30
MIB = 1 << 20

# Full and --quick sizes of each workload. `large16` is the big large workload, run with the
# page cache dropped before every contender; `memory` lists the file counts of the full syncs
# whose peak RSS is measured.
FULL = {
    "large": 4 * GIB,
    "large16": 16 * GIB,
    "small": 5000,
    "mixed": 2 * GIB,
    "many": 100_000,
    "memory": [10_000, 100_000, 300_000],
}
QUICK = {
    "large": 512 * MIB,
    "large16": 1 * GIB,
    "small": 500,
    "mixed": 256 * MIB,
    "many": 10_000,
    "memory": [1_000, 3_000, 10_000],
}
WORKLOADS = ("large", "large16", "small", "mixed")
BACKENDS = ("sandbox", "nginx")
# What each backend exercises in the engine (printed with every table).
PATHS = {
    "sandbox": (
        "sandbox: the crate's sandbox serves the bytes (generated on the fly on the same cores). "
        "Platform-hosted files (parts, single part) come straight from its download host in "
        "16 MiB chunk GETs; drive-backed files (the parts-less symlinks) take a 302 to its "
        "storage host for every range of at most 4 MiB, asked with "
        "x-ms-range-get-content-md5, and each range's Content-MD5 is checked on arrival."
    ),
    "nginx": (
        "nginx: the same bytes, materialised on disk, served by nginx (sendfile from the page "
        "cache); the sandbox keeps the API and the 302s (`--content-url`). Platform-hosted files "
        "come straight from nginx; drive-backed files still take a 302 (now to nginx) for every "
        "range of at most 4 MiB, but nginx sends no Content-MD5, so the per-range MD5 check is "
        "not exercised."
    ),
}


def log(msg):
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def human(n):
    for unit, size in (("GiB", GIB), ("MiB", MIB), ("KiB", 1024)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("DX_")}
    for k in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY"):
        env.pop(k, None)
    env["NO_PROXY"] = "*"
    env.update(extra)
    return env


def proc_cpu_seconds(pid):
    """user+sys CPU seconds of one process (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port(host):
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_port(host, port, timeout=20):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with socket.create_connection((host, port), timeout=1):
                return True
        except OSError:
            time.sleep(0.05)
    return False


# --------------------------------------------------------------------------------------------
# The backends


class Sandbox:
    """One `dxmirror sandbox` process serving one dataset on loopback (with `content_url`, the
    bytes are served by that outside server and the sandbox keeps the API and the 302s)."""

    def __init__(self, dataset, workdir, content_url=None):
        self.dataset = dataset
        tag = dataset.replace(":", "-") + ("-content" if content_url else "")
        self.log_path = os.path.join(workdir, f"sandbox-{tag}.log")
        self.log_file = open(self.log_path, "wb")
        t0 = time.monotonic()
        cmd = [SANDBOX_BIN, "sandbox", "--dataset", dataset]
        if content_url:
            cmd += ["--content-url", content_url]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.log_file, env=clean_env())
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
            f"(built in {self.start_s:.1f}s) at {self.api}" + (f", bytes from {content_url}" if content_url else "")
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
        return proc_cpu_seconds(self.proc.pid)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log_file.close()


def nginx_binary():
    for p in (shutil.which("nginx"), "/usr/sbin/nginx"):
        if p and os.access(p, os.X_OK):
            return p
    return None


class Nginx:
    """nginx in the foreground (`daemon off`) on a loopback port with a config of its own,
    serving `root` (files named by file id)."""

    def __init__(self, root, workdir, tag):
        exe = nginx_binary()
        if not exe:
            raise RuntimeError("nginx is not installed (apt-get install -y nginx)")
        self.host = "127.0.0.1"
        self.port = free_port(self.host)
        self.prefix = os.path.join(workdir, f"nginx-{tag}")
        shutil.rmtree(self.prefix, ignore_errors=True)
        os.makedirs(os.path.join(self.prefix, "logs"))
        conf = os.path.join(self.prefix, "nginx.conf")
        user = ""
        if os.geteuid() == 0:
            # As root nginx would drop its workers to `nobody`; serve as the owner of the files.
            user = f"user {pwd.getpwuid(os.getuid()).pw_name};\n"
        with open(conf, "w") as fh:
            fh.write(
                f"{user}daemon off;\nmaster_process on;\nworker_processes 2;\n"
                f"pid {self.prefix}/nginx.pid;\nerror_log {self.prefix}/logs/error.log warn;\n"
                "events { worker_connections 1024; }\n"
                "http {\n"
                "  access_log off;\n  sendfile on;\n  tcp_nopush on;\n  tcp_nodelay on;\n"
                "  keepalive_timeout 120s;\n  keepalive_requests 1000000;\n"
                "  default_type application/octet-stream;\n  types { }\n"
                f"  client_body_temp_path {self.prefix}/tmp-body;\n"
                f"  proxy_temp_path {self.prefix}/tmp-proxy;\n"
                f"  fastcgi_temp_path {self.prefix}/tmp-fastcgi;\n"
                f"  uwsgi_temp_path {self.prefix}/tmp-uwsgi;\n"
                f"  scgi_temp_path {self.prefix}/tmp-scgi;\n"
                f"  server {{\n    listen {self.host}:{self.port};\n    root {root};\n"
                "    location / { }\n  }\n}\n"
            )
        self.log_file = open(os.path.join(self.prefix, "stderr.log"), "wb")
        self.proc = subprocess.Popen(
            [exe, "-p", self.prefix, "-c", conf], stdout=self.log_file, stderr=self.log_file, env=clean_env()
        )
        if not wait_port(self.host, self.port):
            self.stop()
            raise RuntimeError(f"nginx did not start; see {self.prefix}/stderr.log and logs/error.log")
        self.url = f"http://{self.host}:{self.port}"
        log(f"nginx serving {root} at {self.url}")

    def pids(self):
        pids = [self.proc.pid]
        try:
            with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as fh:
                pids += [int(x) for x in fh.read().split()]
        except OSError:
            pass
        return pids

    def cpu_seconds(self):
        return sum(proc_cpu_seconds(p) for p in self.pids())

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful: workers finish, then exit
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log_file.close()


class Backend:
    """What the contenders talk to: `sandbox` (the sandbox alone) or `nginx` (nginx serving
    the bytes, a second sandbox with `--content-url` serving the API and the 302s)."""

    def __init__(self, kind, sb, nginx=None):
        self.kind, self.sb, self.nginx = kind, sb, nginx

    def cpu_seconds(self):
        """CPU of everything serving: the sandbox, plus nginx's master and workers."""
        return self.sb.cpu_seconds() + (self.nginx.cpu_seconds() if self.nginx else 0.0)

    def stop(self):
        self.sb.stop()
        if self.nginx:
            self.nginx.stop()


def materialise(sb, root, workdir, tag):
    """Writes every file of the sandbox's dataset to `root/<file-id>` (curl, 8 at a time),
    for nginx to serve. dxmirror then checks each platform checksum of what nginx serves
    against the sandbox's description, so a bad copy cannot pass unseen."""
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)
    cfg = os.path.join(workdir, f"{tag}-materialise.curl")
    with open(cfg, "w") as fh:
        for i, (f, url, headers) in enumerate(sb.download_urls()):
            if i:
                fh.write("next\n")
            fh.write(f'url = "{url}"\noutput = "{os.path.join(root, f["id"])}"\nlocation\nfail\n')
            for k, v in headers.items():
                fh.write(f'header = "{k}: {v}"\n')
    os.chmod(cfg, 0o600)
    t0 = time.monotonic()
    rc = subprocess.call(["curl", "-sS", "--no-progress-meter", "--fail", "-Z", "--parallel-max", "8", "-K", cfg], env=clean_env())
    os.unlink(cfg)
    if rc != 0:
        raise RuntimeError(f"materialising {tag} with curl failed (rc {rc})")
    for f in sb.files:
        p = os.path.join(root, f["id"])
        if not os.path.exists(p):
            open(p, "wb").close()  # curl writes nothing for an empty body
        if os.path.getsize(p) != f["size"]:
            raise RuntimeError(f"materialised {f['id']} has {os.path.getsize(p)} bytes, expected {f['size']}")
    log(f"materialised {len(sb.files)} files ({human(sb.bytes)}) for nginx in {time.monotonic() - t0:.1f}s")


# --------------------------------------------------------------------------------------------
# Measuring


def rmtree(path):
    """Deletes a tree, its files 16 at a time: on ext4 mounted with `discard` (as here), each
    unlink waits for its discard, so deleting 300,000 files one by one takes half an hour."""
    if os.path.isdir(path):
        subprocess.call(
            ["sh", "-c", 'find "$1" -type f -print0 | xargs -0 -r -P 16 -n 256 rm -f', "sh", path],
            stderr=subprocess.DEVNULL,
        )
    shutil.rmtree(path, ignore_errors=True)


def drop_caches():
    """Drops the page cache (after a sync). False (with nothing done) if not permitted."""
    try:
        with open("/proc/sys/vm/drop_caches", "w") as fh:
            fh.write("3\n")
        return True
    except OSError:
        return False


class Measure:
    """One command's figures: wall with the fair clock (`sync` before it starts and after it
    ends, both timed), wall without the final sync, CPU and peak RSS and blocks from
    /usr/bin/time."""

    def __init__(self, wall, wall_nosync, user, sys_, rss_kib, in_blocks, out_blocks, rc):
        self.wall, self.wall_nosync = wall, wall_nosync
        self.user, self.sys, self.rss_kib, self.rc = user, sys_, rss_kib, rc
        self.read_bytes, self.written_bytes = in_blocks * 512, out_blocks * 512

    @property
    def cpu(self):
        return self.user + self.sys


def timed(cmd, workdir, name, cwd=None, env=None, fair=True, drop=False):
    """Runs `cmd` under /usr/bin/time. With `fair`, the clock includes a final `sync` (and a
    `sync` runs before it starts, so earlier dirty pages are not billed to this command); with
    `drop`, the page cache is dropped after that first sync."""
    tfile = os.path.join(workdir, f"time-{name}.txt")
    out = open(os.path.join(workdir, f"{name}.log"), "wb")
    if fair:
        subprocess.call(["sync"])
    if drop:
        drop_caches()
    t0 = time.monotonic()
    rc = subprocess.call(
        ["/usr/bin/time", "-f", "%e %U %S %M %I %O", "-o", tfile] + cmd,
        stdout=out,
        stderr=subprocess.STDOUT,
        cwd=cwd,
        env=env or clean_env(),
    )
    t1 = time.monotonic()
    if fair:
        subprocess.call(["sync"])
    t2 = time.monotonic()
    out.close()
    with open(tfile) as fh:
        last = fh.read().strip().splitlines()[-1]
    _, user, sys_, rss, inb, outb = last.split()
    return Measure(t2 - t0, t1 - t0, float(user), float(sys_), int(rss), int(inb), int(outb), rc)


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


def run_dxmirror(binary, who, sb, workdir, tag, expected, drop):
    """One `dxmirror sync` of the whole project. Returns (measure, expected, problems, base):
    `expected` (relpath -> (size, sha256)) comes from this run's SHA256SUMS when none was
    known yet (dxmirror checked every platform checksum first), else this run is checked
    against it."""
    base = os.path.join(workdir, f"{tag}-{who}")
    shutil.rmtree(base, ignore_errors=True)
    cfg = write_dxmirror_config(sb, base)
    m = timed([binary, "sync", "--config", cfg], workdir, f"{tag}-{who}", drop=drop)
    mirror = os.path.join(base, "mirror")
    projects = [d for d in os.listdir(mirror) if not d.startswith(".")] if os.path.isdir(mirror) else []
    if m.rc != 0 or len(projects) != 1:
        raise RuntimeError(f"{who} sync failed (rc {m.rc}); see {workdir}/{tag}-{who}.log")
    proj = os.path.join(mirror, projects[0])
    sums = {}
    with open(os.path.join(proj, "SHA256SUMS")) as fh:
        for line in fh:
            digest, rel = line.rstrip("\n").split("  ", 1)
            sums[rel.lstrip("./")] = digest
    sizes = {f"{f['folder'].strip('/')}/{f['name']}".lstrip("/"): f["size"] for f in sb.files}
    exp, problems = {}, []
    for rel, size in sizes.items():
        if rel not in sums:
            problems.append(f"{who}: {rel} missing from SHA256SUMS")
        else:
            exp[rel] = (size, sums[rel])
    if expected is not None and exp != expected:
        problems.append(f"{who}: SHA256SUMS differs from the first run's")
    expected = expected if expected is not None else exp
    # dxmirror checked every platform checksum itself; here: sizes, and SHA-256 of every file.
    problems += check_outputs(expected, proj, who)
    return m, expected, problems, base


def run_aria2c(sb, workdir, tag, exp, urls, drop):
    base = os.path.join(workdir, f"{tag}-aria2c")
    shutil.rmtree(base, ignore_errors=True)
    os.makedirs(base)
    inp = os.path.join(workdir, f"{tag}-aria2c.input")
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
    m = timed(cmd, workdir, f"{tag}-aria2c", drop=drop)
    problems = [] if m.rc == 0 else [f"aria2c: exit status {m.rc}"]
    problems += check_outputs(exp, base, "aria2c")
    return m, problems, base


def run_dx(sb, workdir, tag, exp, drop):
    base = os.path.join(workdir, f"{tag}-dx")
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
    m = timed(cmd, workdir, f"{tag}-dx", cwd=out, env=env, drop=drop)
    problems = [] if m.rc == 0 else [f"dx download: exit status {m.rc}"]
    problems += check_outputs(exp, out, "dx download")
    return m, problems, base


# --------------------------------------------------------------------------------------------
# The limit line


def dd_rate(workdir, tag, total, drop):
    """dd conv=fdatasync of `total` bytes (in 16 MiB blocks) to the work directory's filesystem."""
    ddfile = os.path.join(workdir, f"{tag}-dd.bin")
    count = max(1, -(-total // (16 * MIB)))
    dd = timed(
        ["dd", "if=/dev/zero", f"of={ddfile}", "bs=16M", f"count={count}", "conv=fdatasync"],
        workdir, f"{tag}-dd", drop=drop,
    )
    os.unlink(ddfile)
    return count * 16 * MIB / dd.wall


def curl_rate(be, workdir, tag, urls, drop):
    """16 parallel curls of every file from the backend to /dev/null (large files in 16 MiB
    ranges): the backend's own serving rate, and the CPU it spent serving."""
    cfg = os.path.join(workdir, f"{tag}-curl.config")
    with open(cfg, "w") as fh:
        for f, url, headers in urls:
            step = 16 * MIB
            for s in range(0, max(f["size"], 1), step):
                # Headers are not per-URL in curl: `next` starts a fresh set of options.
                if fh.tell() > 0:
                    fh.write("next\n")
                fh.write(f'url = "{url}"\noutput = "/dev/null"\nlocation\nfail\n')
                if f["size"] > step:
                    fh.write(f'range = "{s}-{min(s + step, f["size"]) - 1}"\n')
                for k, v in headers.items():
                    fh.write(f'header = "{k}: {v}"\n')
    os.chmod(cfg, 0o600)
    cpu0 = be.cpu_seconds()
    curl = timed(["curl", "-sS", "--no-progress-meter", "--fail", "-Z", "--parallel-max", "16", "-K", cfg], workdir, f"{tag}-curl", drop=drop)
    server_cpu = be.cpu_seconds() - cpu0
    if curl.rc != 0:
        raise RuntimeError(f"curl from the {be.kind} backend failed (rc {curl.rc})")
    total = sum(f["size"] for f, _, _ in urls)
    return total / curl.wall, server_cpu


# --------------------------------------------------------------------------------------------
# Verify (large workload)


VERIFY_ROUNDS = 2
VERIFY = True


def run_verify(workdir, tag, base, exp):
    """`dxmirror verify` against `md5sum` then `sha256sum` over the same page-cached files.

    Runs both sides VERIFY_ROUNDS times, alternating (the machine is shared and noisy), and
    keeps each side's fastest round; with --baseline, that binary's `verify` is timed in the
    same rounds."""
    mirror = os.path.join(base, "mirror")
    proj = os.path.join(mirror, [d for d in os.listdir(mirror) if not d.startswith(".")][0])
    files = [os.path.join(proj, rel) for rel in sorted(exp)]
    config = os.path.join(base, "config.toml")
    # Warm the page cache for both sides alike.
    subprocess.call(["cat"] + files, stdout=subprocess.DEVNULL)
    rounds = []
    for r in range(VERIFY_ROUNDS):
        dxm = timed([BIN, "-q", "verify", "--config", config], workdir, f"{tag}-verify-{r}", fair=False)
        if dxm.rc != 0:
            raise RuntimeError(f"dxmirror verify failed (rc {dxm.rc}); see {workdir}/{tag}-verify-{r}.log")
        md5 = timed(["md5sum"] + files, workdir, f"{tag}-md5sum-{r}", fair=False)
        sha = timed(["sha256sum"] + files, workdir, f"{tag}-sha256sum-{r}", fair=False)
        row = {"dxmirror_s": dxm.wall, "dxmirror_cpu": dxm.cpu, "coreutils_s": md5.wall + sha.wall}
        if BASELINE:
            b = timed([BASELINE, "-q", "verify", "--config", config], workdir, f"{tag}-verify-baseline-{r}", fair=False)
            if b.rc != 0:
                raise RuntimeError(f"baseline verify failed (rc {b.rc})")
            row["baseline_s"] = b.wall
            row["baseline_cpu"] = b.cpu
        log(
            f"verify round {r + 1}: dxmirror {row['dxmirror_s']:.2f} s (CPU {row['dxmirror_cpu']:.2f} s), "
            f"md5sum+sha256sum {row['coreutils_s']:.2f} s, {row['coreutils_s'] / row['dxmirror_s']:.2f}x"
            + (f"; baseline {row['baseline_s']:.2f} s (CPU {row['baseline_cpu']:.2f} s)" if BASELINE else "")
        )
        rounds.append(row)
    best = min(rounds, key=lambda x: x["dxmirror_s"])
    out = {
        "dxmirror_s": best["dxmirror_s"],
        "dxmirror_cpu": best["dxmirror_cpu"],
        "coreutils_s": min(x["coreutils_s"] for x in rounds),
        "rounds": rounds,
    }
    if BASELINE:
        out["baseline_s"] = min(x["baseline_s"] for x in rounds)
    return out


# --------------------------------------------------------------------------------------------
# Workloads

LABEL = {"dxmirror": "dxmirror", "baseline": "dxmirror baseline", "aria2c": "aria2c", "dx": "dx download"}


def run_workload(wl, dataset, workdir, backends, contenders, rounds, results, drop=False):
    """Every contender against every backend, `rounds` rounds each, the order rotating by one
    contender per round (round 0 starts with dxmirror, whose checked output is the reference
    every other output is compared with)."""
    plain = Sandbox(dataset, workdir)
    res = {
        "dataset": dataset,
        "files": len(plain.files),
        "bytes": plain.bytes,
        "rounds": rounds,
        "backends": {},
        "problems": [],
        "drop": drop,
    }
    results[wl] = res
    expected = None
    # Many small files: outputs are deleted only once the workload is over. On ext4, creating
    # files shortly after thousands were deleted costs much more kernel time (`recently_deleted`
    # skips their inodes), so deleting one contender's files right before the next one runs
    # would handicap the next one.
    later = []
    live = [plain]

    def cleanup(base):
        if wl == "small":
            later.append(base)
        else:
            shutil.rmtree(base, ignore_errors=True)

    try:
        res["dd_MBps"] = dd_rate(workdir, wl, plain.bytes, drop) / 1e6
        for kind in backends:
            content = None
            if kind == "sandbox":
                be = Backend("sandbox", plain)
            else:
                content = os.path.join(workdir, f"{wl}-content")
                materialise(plain, content, workdir, wl)
                ng = Nginx(content, workdir, wl)
                live.append(ng)
                sb2 = Sandbox(dataset, workdir, content_url=ng.url)
                live.append(sb2)
                be = Backend("nginx", sb2, ng)
            t0 = time.monotonic()
            urls = be.sb.download_urls()
            url_s = time.monotonic() - t0
            runs = {c: [] for c in contenders}
            keep = None
            for r in range(rounds):
                k = r % len(contenders)
                order = contenders[k:] + contenders[:k]
                log(f"{wl} on {kind}, round {r + 1}/{rounds}: {', '.join(LABEL[c] for c in order)}")
                for pos, c in enumerate(order):
                    tag = f"{wl}-{kind}-r{r}"
                    cpu0 = be.cpu_seconds()
                    if c in ("dxmirror", "baseline"):
                        binary = BIN if c == "dxmirror" else BASELINE
                        m, expected, probs, base = run_dxmirror(binary, c, be.sb, workdir, tag, expected, drop)
                    elif c == "aria2c":
                        m, probs, base = run_aria2c(be.sb, workdir, tag, expected, urls, drop)
                    else:
                        m, probs, base = run_dx(be.sb, workdir, tag, expected, drop)
                    server = be.cpu_seconds() - cpu0
                    res["problems"] += [f"{kind} round {r + 1}: {p}" for p in probs]
                    runs[c].append(
                        {
                            "round": r,
                            "position": pos,
                            "wall": m.wall,
                            "wall_nosync": m.wall_nosync,
                            "user": m.user,
                            "sys": m.sys,
                            "rss_mib": m.rss_kib / 1024,
                            "read_bytes": m.read_bytes,
                            "written_bytes": m.written_bytes,
                            "server_cpu": server,
                        }
                    )
                    log(
                        f"  {LABEL[c]}: {m.wall:.2f} s ({m.wall_nosync:.2f} s before the final sync), "
                        f"user {m.user:.2f} s, sys {m.sys:.2f} s, {m.rss_kib / 1024:.0f} MiB, server CPU {server:.2f} s"
                    )
                    if wl == "large" and kind == "sandbox" and c == "dxmirror" and keep is None and VERIFY:
                        keep = base
                    else:
                        cleanup(base)
            rate, server_cpu = curl_rate(be, workdir, f"{wl}-{kind}", urls, drop)
            res["backends"][kind] = {
                "runs": runs,
                "url_s": url_s,
                "curl_MBps": rate / 1e6,
                "curl_server_cpu": server_cpu,
            }
            if keep:
                res["verify"] = run_verify(workdir, wl, keep, expected)
                shutil.rmtree(keep, ignore_errors=True)
            if kind == "nginx":
                be.stop()
                live.remove(be.sb)
                live.remove(be.nginx)
                shutil.rmtree(content, ignore_errors=True)
    finally:
        for x in live:
            x.stop()
        for base in later:
            rmtree(base)
    for p in res["problems"]:
        log(f"CHECK FAILED: {wl}: {p}")


def run_memory(counts, workdir, results):
    """Peak RSS (and time) of a full `dxmirror sync` of `many:N` for each N (16-byte files),
    and of the baseline's when there is one."""
    out = []
    for n in counts:
        sb = Sandbox(f"many:{n}", workdir)
        try:
            row = {"files": n}
            for who, binary in (("dxmirror", BIN), ("baseline", BASELINE)):
                if not binary:
                    continue
                base = os.path.join(workdir, f"memory-{n}-{who}")
                shutil.rmtree(base, ignore_errors=True)
                cfg = write_dxmirror_config(sb, base)
                m = timed([binary, "sync", "--config", cfg], workdir, f"memory-{n}-{who}")
                if m.rc != 0:
                    raise RuntimeError(f"{who} sync of many:{n} failed (rc {m.rc}); see {workdir}/memory-{n}-{who}.log")
                row[who] = {"rss_mib": m.rss_kib / 1024, "wall": m.wall, "cpu": m.cpu}
                log(f"memory, many:{n}: {LABEL[who]} peak RSS {m.rss_kib / 1024:.0f} MiB, {m.wall:.1f} s")
                rmtree(base)
            out.append(row)
        finally:
            sb.stop()
    results["memory"] = out


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
        rmtree(base)
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


def med(runs, key):
    return statistics.median(x[key] for x in runs)


def spread(runs, key, fmt="{:.2f}"):
    v = [x[key] for x in runs]
    return f"{fmt.format(statistics.median(v))} ({fmt.format(min(v))}–{fmt.format(max(v))})"


def wl_title(wl, r):
    t = f"{wl} ({r['files']} files, {human(r['bytes'])})"
    if r.get("drop"):
        t += ", page cache dropped"
    return t


def report(results, machine, notes):
    lines = [f"dxmirror benchmark, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", f"machine: {machine}"]
    lines += notes
    lines.append(f"binary under test: {BIN}" + (f"; baseline: {BASELINE}" if BASELINE else ""))
    lines.append("")
    lines.append(
        "Fair clock: every wall time includes a `sync` after the contender exits (one also runs before "
        "the clock starts). Each cell is the median of the rounds, with the range (min–max)."
    )
    lines.append("")
    lines.append(
        "| workload | backend | contender | wall s, median (range) | MB/s | files/s | user s | sys s | "
        "CPU s/GiB | sys s/GiB | peak RSS MiB | written GiB | server CPU s | dxmirror speed-up |"
    )
    lines.append("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for wl in WORKLOADS:
        r = results.get(wl)
        if not r:
            continue
        gib = r["bytes"] / GIB
        for kind, b in r["backends"].items():
            dxm = med(b["runs"]["dxmirror"], "wall")
            for c, runs in b["runs"].items():
                w = med(runs, "wall")
                lines.append(
                    f"| {wl_title(wl, r)} | {kind} | {LABEL[c]} | {spread(runs, 'wall')} | {r['bytes'] / w / 1e6:.0f} | "
                    f"{r['files'] / w:.0f} | {med(runs, 'user'):.2f} | {med(runs, 'sys'):.2f} | "
                    f"{(med(runs, 'user') + med(runs, 'sys')) / gib:.2f} | {med(runs, 'sys') / gib:.2f} | "
                    f"{max(x['rss_mib'] for x in runs):.0f} | {med(runs, 'written_bytes') / GIB:.2f} | "
                    f"{med(runs, 'server_cpu'):.2f} | {w / dxm:.2f}× |"
                )
            lim = min(r["dd_MBps"], b["curl_MBps"])
            lines.append(
                f"| {wl} | {kind} | limit line: min(dd {r['dd_MBps']:.0f} MB/s, curl {b['curl_MBps']:.0f} MB/s) | | "
                f"{lim:.0f} | | | | | | | | {b['curl_server_cpu']:.2f} | dxmirror at {100 * r['bytes'] / dxm / 1e6 / lim:.0f}% |"
            )
    lines.append("")
    lines.append(
        "dxmirror speed-up = the contender's median wall / dxmirror's (above 1: dxmirror was faster). "
        "Peak RSS is the highest of the rounds; written GiB is /usr/bin/time's blocks written (%O × 512, "
        "what reached the block layer while the process lived). Server CPU = the sandbox's (plus nginx's "
        "master and workers on the nginx backend) during that run. The limit line is the lower of dd "
        "conv=fdatasync of the same byte count and 16 parallel curls from that backend to /dev/null."
    )
    lines.append("")
    lines.append("What each backend exercises in dxmirror:")
    for kind in BACKENDS:
        if any(kind in results.get(wl, {}).get("backends", {}) for wl in WORKLOADS):
            lines.append(f"- {PATHS[kind]}")
    # The fair clock against the old one, from the same runs.
    lines.append("")
    lines.append("The fair clock against the old one (the same runs; the old clock stopped when the process exited):")
    lines.append("")
    lines.append("| workload | backend | contender | MB/s without the final sync | MB/s with it (fair) | final sync s |")
    lines.append("|---|---|---|---:|---:|---:|")
    for wl in WORKLOADS:
        r = results.get(wl)
        if not r:
            continue
        for kind, b in r["backends"].items():
            for c, runs in b["runs"].items():
                ns, w = med(runs, "wall_nosync"), med(runs, "wall")
                lines.append(
                    f"| {wl} | {kind} | {LABEL[c]} | {r['bytes'] / ns / 1e6:.0f} | {r['bytes'] / w / 1e6:.0f} | "
                    f"{statistics.median(x['wall'] - x['wall_nosync'] for x in runs):.2f} |"
                )
    for wl in WORKLOADS:
        r = results.get(wl)
        if not r:
            continue
        for kind, b in r["backends"].items():
            lines.append(
                f"{wl} on {kind}: aria2c's {r['files']} download URLs were fetched beforehand in "
                f"{b['url_s']:.2f}s, outside its timing; dxmirror's timing includes its listing and URL requests."
            )
        for p in r["problems"]:
            lines.append(f"{wl}: CHECK FAILED: {p}")
        if not r["problems"]:
            lines.append(f"{wl}: every contender's output checked in every round (sizes + SHA-256 of every file).")
    lines += ab_report(results)
    lines += targets(results)
    mem = results.get("memory")
    if mem:
        lines.append("")
        lines.append("Memory: peak RSS of a full `dxmirror sync` of many:N (16-byte files):")
        lines.append("")
        head = "| files | dxmirror peak RSS MiB | wall s | files/s |"
        sep = "|---:|---:|---:|---:|"
        if BASELINE:
            head += " baseline peak RSS MiB | baseline wall s |"
            sep += "---:|---:|"
        lines += [head, sep]
        for row in mem:
            d = row["dxmirror"]
            line = f"| {row['files']} | {d['rss_mib']:.0f} | {d['wall']:.1f} | {row['files'] / d['wall']:.0f} |"
            if "baseline" in row:
                line += f" {row['baseline']['rss_mib']:.0f} | {row['baseline']['wall']:.1f} |"
            lines.append(line)
    m = results.get("many")
    if m:
        lines.append("")
        lines.append(f"scale, many:{m['files']} (16-byte files):")
        lines.append(
            f"- listed+planned+journaled: list_ms={m['list_ms']} plan_ms={m['plan_ms']} "
            f"(total {(m['list_ms'] + m['plan_ms']) / 1000:.2f} s)"
        )
        lines.append(f"- dxmirror status: {m['status_ms']:.0f} ms median of 5")
        lines.append(
            f"- restart to first byte: {m['restart_first_byte_s']:.2f} s; restart's "
            f"list_ms={m['restart_list_ms']} plan_ms={m['restart_plan_ms']}"
        )
        lines.append(f"- journal size: {human(m['journal_bytes'])}")
    return "\n".join(lines)


def ab_report(results):
    """Baseline against the binary under test: per round, baseline wall / new wall (the new
    binary's speed relative to the old; the rounds alternate their order)."""
    out = []
    for wl in WORKLOADS:
        r = results.get(wl)
        for kind, b in (r or {}).get("backends", {}).items():
            if "baseline" not in b["runs"]:
                continue
            if not out:
                out += ["", "A/B, new binary against the baseline (speed = baseline wall / new wall, per round; target median >= 0.95):", ""]
                out += ["| workload | backend | new s, median (range) | baseline s, median (range) | speed new/old, median (range) | verdict |", "|---|---|---:|---:|---:|---|"]
            by_round = {x["round"]: x for x in b["runs"]["baseline"]}
            q = [by_round[x["round"]]["wall"] / x["wall"] for x in b["runs"]["dxmirror"] if x["round"] in by_round]
            mq = statistics.median(q)
            out.append(
                f"| {wl} | {kind} | {spread(b['runs']['dxmirror'], 'wall')} | {spread(b['runs']['baseline'], 'wall')} | "
                f"{mq:.3f} ({min(q):.3f}–{max(q):.3f}) | {'met' if mq >= 0.95 else 'NOT met'} |"
            )
    v = results.get("large", {}).get("verify")
    if v and "baseline_s" in v:
        out.append(f"verify on large: new {v['dxmirror_s']:.2f} s, baseline {v['baseline_s']:.2f} s (fastest of {VERIFY_ROUNDS})")
    return out


def targets(results):
    """Issue 12's targets, met or not, from this run's medians (sandbox backend; the nginx
    backend's figures beside)."""
    out = ["", "targets (issue 12), this run, on medians:"]

    def verdict(name, ok, detail):
        out.append(f"- [{'met' if ok else 'NOT met'}] {name}: {detail}")

    def runs(wl, kind, c):
        return results.get(wl, {}).get("backends", {}).get(kind, {}).get("runs", {}).get(c)

    for wl in ("large", "large16"):
        r = results.get(wl)
        if not r:
            continue
        gib = r["bytes"] / GIB
        for kind in r["backends"]:
            d, a, x = runs(wl, kind, "dxmirror"), runs(wl, kind, "aria2c"), runs(wl, kind, "dx")
            dw = med(d, "wall")
            lim = min(r["dd_MBps"], r["backends"][kind]["curl_MBps"])
            frac = r["bytes"] / dw / 1e6 / lim
            p = f"{wl} on {kind}"
            verdict(f"{p} >= 85% of the limit line", frac >= 0.85, f"{100 * frac:.0f}% ({r['bytes'] / dw / 1e6:.0f} of {lim:.0f} MB/s)")
            if a:
                q = med(a, "wall") / dw
                verdict(f"{p} >= 1.0x aria2c", q >= 1.0, f"{q:.2f}x")
                ks, ka = med(d, "sys") / gib, med(a, "sys") / gib
                verdict(f"{p} kernel time/GiB <= 1.5x aria2c's", ks <= 1.5 * ka, f"{ks:.2f} vs {ka:.2f} s/GiB ({ks / max(ka, 1e-9):.2f}x)")
                wd = (max(y["wall"] for y in d) - min(y["wall"] for y in d)) / dw
                wa = (max(y["wall"] for y in a) - min(y["wall"] for y in a)) / med(a, "wall")
                verdict(f"{p} dxmirror's range no wider than aria2c's", wd <= wa, f"{100 * wd:.0f}% vs {100 * wa:.0f}% of the median")
            if x:
                q = med(x, "wall") / dw
                verdict(f"{p} >= 2x dx download", q >= 2.0, f"{q:.2f}x")
            cpu = (med(d, "user") + med(d, "sys")) / gib
            verdict(f"{p} CPU <= 2.5 s/GiB", cpu <= 2.5, f"{cpu:.2f} s/GiB")
            if wl == "large":
                rss = max(y["rss_mib"] for y in d)
                verdict(f"{p} peak RSS <= 48 MiB", rss <= 48, f"{rss:.0f} MiB")
    for wl, target, unit in (("mixed", 1.0, "wall"), ("small", 1.5, "files/s")):
        r = results.get(wl)
        for kind in (r or {}).get("backends", {}):
            d, a = runs(wl, kind, "dxmirror"), runs(wl, kind, "aria2c")
            if d and a:
                q = med(a, "wall") / med(d, "wall")
                verdict(f"{wl} on {kind} >= {target}x aria2c ({unit})", q >= target, f"{q:.2f}x")
    mem = {row["files"]: row["dxmirror"]["rss_mib"] for row in results.get("memory", [])}
    if 100_000 in mem:
        verdict("peak RSS <= 64 MiB at 100,000 files", mem[100_000] <= 64, f"{mem[100_000]:.0f} MiB")
    if len(mem) >= 2:
        lo, hi = min(mem), max(mem)
        g = mem[hi] - mem[lo]
        verdict(f"growth {lo} -> {hi} files <= 16 MiB", g <= 16, f"{g:.0f} MiB ({mem[lo]:.0f} -> {mem[hi]:.0f})")
    m = results.get("many")
    if m:
        t = (m["list_ms"] + m["plan_ms"]) / 1000
        verdict(f"{m['files']} files listed+planned+journaled <= 3 s", t <= 3, f"{t:.2f} s")
        verdict("restart to first byte <= 0.5 s", m["restart_first_byte_s"] <= 0.5, f"{m['restart_first_byte_s']:.2f} s")
        verdict("dxmirror status <= 100 ms", m["status_ms"] <= 100, f"{m['status_ms']:.0f} ms")
    v = results.get("large", {}).get("verify")
    if v:
        q = v["coreutils_s"] / v["dxmirror_s"]
        out.append(f"- dxmirror verify, page-cached large files: {q:.2f}x md5sum+sha256sum ({v['dxmirror_s']:.2f} s vs {v['coreutils_s']:.2f} s)")
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
    global BIN, BASELINE, SANDBOX_BIN, VERIFY
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small datasets (a smoke run of every phase)")
    ap.add_argument("--workdir", default=os.environ.get("DXMIRROR_BENCH_DIR", os.path.join(ROOT, "target", "bench")))
    ap.add_argument("--only", default="large,large16,small,mixed,many,memory", help="comma-separated workloads")
    ap.add_argument("--contenders", default="dxmirror,aria2c,dx", help="dxmirror,aria2c,dx (dxmirror always runs)")
    ap.add_argument("--backends", default="sandbox,nginx", help="sandbox,nginx")
    ap.add_argument("--rounds", type=int, default=3, help="rounds per workload and backend (at least 3 for figures that count)")
    ap.add_argument("--bin", default=os.environ.get("DXMIRROR_BIN", BIN), help="the dxmirror binary under test")
    ap.add_argument("--baseline", help="a second dxmirror binary, run in the same alternating rounds (A/B)")
    ap.add_argument("--sandbox-bin", help="the binary whose `sandbox` serves the datasets (default: --bin)")
    ap.add_argument("--no-verify", action="store_true", help="skip the `dxmirror verify` timing on large")
    ap.add_argument("--sizes", help="override sizes, e.g. large=2GiB,large16=8GiB,small=2000,memory=10000+100000")
    args = ap.parse_args()
    BIN = os.path.abspath(args.bin)
    VERIFY = not args.no_verify
    BASELINE = os.path.abspath(args.baseline) if args.baseline else None
    SANDBOX_BIN = os.path.abspath(args.sandbox_bin) if args.sandbox_bin else BIN
    for b in (BIN, BASELINE, SANDBOX_BIN):
        if b and not os.access(b, os.X_OK):
            log(f"not an executable: {b}")
            return 2
    sizes = dict(QUICK if args.quick else FULL)
    for kv in (args.sizes or "").split(","):
        if kv:
            k, v = kv.split("=", 1)
            if k == "memory":
                sizes[k] = [int(x) for x in v.split("+")]
            elif k in ("small", "many"):
                sizes[k] = int(v)
            else:
                m = re.fullmatch(r"(\d+)(MiB|GiB)", v)
                if not m:
                    raise SystemExit(f"bad size {v!r} (use MiB or GiB)")
                sizes[k] = int(m.group(1)) * (MIB if m.group(2) == "MiB" else GIB)
    if args.rounds < 1:
        raise SystemExit("--rounds must be at least 1")
    contenders = [c for c in args.contenders.split(",") if c and c != "dxmirror"]
    bad = [c for c in contenders if c not in ("aria2c", "dx")]
    if bad:
        raise SystemExit(f"unknown contenders {bad}")
    contenders = ["dxmirror"] + (["baseline"] if BASELINE else []) + contenders
    backends = [b for b in BACKENDS if b in args.backends.split(",")]
    only = set(args.only.split(","))
    notes = []
    if args.rounds < 3:
        notes.append(f"NOTE: {args.rounds} round(s) per workload: figures for smoke testing only (targets need >= 3).")
    if "nginx" in backends and not nginx_binary():
        note = "NOTE: nginx is not installed (apt-get install -y nginx): the nginx backend is skipped."
        log(note)
        notes.append(note)
        backends.remove("nginx")
    # Absolute: contenders run in their own output folders (dx download writes to its cwd).
    args.workdir = os.path.abspath(args.workdir)
    os.makedirs(args.workdir, exist_ok=True)
    # Disk: the materialised copy for nginx plus one contender's output (deleted after it is
    # checked) or the dd file, plus a reserve.
    free = shutil.disk_usage(args.workdir).free
    big = [k for k in ("large", "large16", "mixed") if k in only]
    if big:
        # The nginx backend needs a materialised copy beside each contender's output.
        per = 2.2 if "nginx" in backends else 1.1
        need = int(max(sizes[k] for k in big) * per) + GIB
        if free < need:
            factor = max(64 * MIB, int((free - GIB) / per)) / max(sizes[k] for k in big)
            for k in big:
                sizes[k] = max(64 * MIB, int(sizes[k] * factor) // MIB * MIB)
            note = (
                f"NOTE: only {human(free)} free in {args.workdir}; datasets scaled down to "
                + ", ".join(f"{k} {human(sizes[k])}" for k in big)
            )
            log(note)
            notes.append(note)
        else:
            log(f"{human(free)} free in {args.workdir}: full-size datasets fit")
    results = {}
    machine = machine_line()
    t0 = time.monotonic()
    for wl in WORKLOADS:
        if wl not in only:
            continue
        drop = False
        if wl == "large16":
            subprocess.call(["sync"])
            drop = drop_caches()
            if not drop:
                note = "NOTE: large16: the page cache could not be dropped (needs root); it ran with a warm cache."
                log(note)
                notes.append(note)
        dataset = f"large:{sizes[wl]}" if wl == "large16" else f"{wl}:{sizes[wl]}"
        run_workload(wl, dataset, args.workdir, backends, contenders, args.rounds, results, drop)
    if "many" in only:
        run_scale(sizes["many"], args.workdir, results)
    if "memory" in only:
        run_memory(sizes["memory"], args.workdir, results)
    notes.append("load average %.2f %.2f %.2f at the end" % os.getloadavg())
    text = report(results, machine, notes)
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
