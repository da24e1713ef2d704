"""Image streaming: nginx (sendfile on) vs netdeploy serving the same file, side by side.

    ./dev bench http_image [--size-mib 1024] [--clients 1,8,32] [--repeat 3]

Writes a file of random bytes (never sparse) in a temp dir, starts nginx (Debian nginx-light,
one worker process, sendfile on, its own temp config on a loopback high port) and
`netdeploy serve` (one process) on it, then for each client count starts that many curl
processes at once, each downloading the whole file to /dev/null. Prints the aggregate
throughput of each server, their ratio, and the server's CPU use (from /proc/PID/stat).
Each point runs --repeat times, the order alternating; printed: the median run and the min and
median of the per-repetition ratios (never a best-of). The bar (issue 20): >= 1.0x nginx at 8
clients. Everything is removed at exit.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TICK = os.sysconf("SC_CLK_TCK")

NGINX_CONF = """
daemon off;
master_process off;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    client_body_temp_path {root}/tmp-body;
    proxy_temp_path {root}/tmp-proxy;
    fastcgi_temp_path {root}/tmp-fastcgi;
    uwsgi_temp_path {root}/tmp-uwsgi;
    scgi_temp_path {root}/tmp-scgi;
    types {{ application/octet-stream img; }}
    server {{
        listen 127.0.0.1:{port};
        root {images};
    }}
}}
"""

NETDEPLOY_CONF = """
[server]
state_dir = "state"
images_dir = "images"
[tftp]
enabled = false
[http]
max_image_streams = 256
# every curl client runs on this host: one address
max_streams_per_address = 256
max_connections_per_address = 1024
[images.bench]
file = "bench.img"
description = "benchmark image"
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its reaped children (RFC-free: proc(5) fields 14-17)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / TICK


def wait_http(url: str, proc: subprocess.Popen, what: str) -> None:
    for _ in range(300):
        if proc.poll() is not None:
            sys.exit(f"bench: {what} exited at start (status {proc.returncode}); see its log")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"bench: {what} did not answer {url} within 30 s")


def write_image(path: Path, size: int) -> None:
    block = 16 * 1024 * 1024
    with open(path, "wb") as fh:
        left = size
        while left:
            n = min(block, left)
            fh.write(os.urandom(n))  # random: no sparse file, nothing for a filesystem to dedupe
            left -= n


@dataclass
class Result:
    clients: int
    seconds: float
    bytes: int
    cpu: float

    @property
    def mib_s(self) -> float:
        return self.bytes / self.seconds / 2**20

    @property
    def cpu_pct(self) -> float:
        return 100 * self.cpu / self.seconds


def run_clients(url: str, clients: int, size: int, pid: int) -> Result:
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    procs = [
        subprocess.Popen(
            ["curl", "-sS", "-o", "/dev/null", "-w", "%{size_download}", url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(clients)
    ]
    total = 0
    for p in procs:
        out, err = p.communicate(timeout=600)
        if p.returncode != 0 or int(out or 0) != size:
            sys.exit(f"bench: a download from {url} failed ({p.returncode}): {err.strip()}")
        total += int(out)
    seconds = time.monotonic() - t0
    return Result(clients, seconds, total, cpu_seconds(pid) - cpu0)


def start_nginx(root: Path, images: Path) -> tuple[subprocess.Popen, str]:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        sys.exit("bench: nginx not found; apt-get install nginx-light")
    port = free_port()
    conf = root / "nginx.conf"
    conf.write_text(NGINX_CONF.format(root=root, port=port, images=images))
    log = open(root / "nginx.out", "w")  # noqa: SIM115 (lives as long as the server)
    proc = subprocess.Popen([nginx, "-c", str(conf), "-p", str(root)], stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}/bench.img"
    wait_http(url, proc, "nginx")
    return proc, url


def start_netdeploy(root: Path) -> tuple[subprocess.Popen, str]:
    conf = root / "netdeploy.toml"
    conf.write_text(NETDEPLOY_CONF)
    python = sys.executable
    print("netdeploy image add (hashing the image once) ...", file=sys.stderr)
    subprocess.run(
        [python, "-m", "netdeploy", "image", "add", "bench", str(root / "images" / "bench.img"),
         "--config", str(conf), "-q"],
        check=True, cwd=REPO, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    port = free_port()
    log = open(root / "netdeploy.out", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [python, "-m", "netdeploy", "serve", "--config", str(conf), "--bind", "127.0.0.1",
         "--http-port", str(port), "--tftp-port", str(free_port())],
        stdout=log, stderr=log, cwd=REPO,
    )  # fmt: skip
    wait_http(f"http://127.0.0.1:{port}/api/version", proc, "netdeploy serve")
    # /images/{name} is declared `node` (a node whose plan has the image, or the admin)
    token = (root / "state" / "admin-token").read_text().strip()
    return proc, f"http://127.0.0.1:{port}/images/bench?token={token}"


FILERESPONSE_APP = """
import sys
from aiohttp import web
path = sys.argv[2]
async def image(request):
    return web.FileResponse(path)
app = web.Application()
app.router.add_get("/image", image)
app.router.add_get("/ready", lambda r: web.Response(text="ok"))
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""


def start_fileresponse(root: Path) -> tuple[subprocess.Popen, str]:
    """Plain aiohttp FileResponse: what netdeploy would be without its own sender."""
    port = free_port()
    log = open(root / "fileresponse.out", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-c", FILERESPONSE_APP, str(port), str(root / "images" / "bench.img")],
        stdout=log, stderr=log,
    )  # fmt: skip
    wait_http(f"http://127.0.0.1:{port}/ready", proc, "aiohttp FileResponse")
    return proc, f"http://127.0.0.1:{port}/image"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="image size (default 1 GiB)")
    parser.add_argument("--clients", default="1,8,32", help="comma-separated client counts")
    parser.add_argument("--repeat", type=int, default=3, help="runs per point (default 3)")
    parser.add_argument(
        "--fileresponse", action="store_true", help="also measure plain aiohttp FileResponse"
    )
    args = parser.parse_args()
    if shutil.which("curl") is None:
        sys.exit("bench: curl not found; apt-get install curl")
    size = args.size_mib * 2**20
    counts = [int(c) for c in args.clients.split(",")]
    root = Path(tempfile.mkdtemp(prefix="netdeploy-bench-"))
    servers: list[subprocess.Popen] = []
    try:
        (root / "images").mkdir()
        print(f"writing a {args.size_mib} MiB image of random bytes ...", file=sys.stderr)
        write_image(root / "images" / "bench.img", size)
        targets: list[tuple[str, subprocess.Popen, str]] = []
        for name, start in (
            ("nginx", lambda: start_nginx(root, root / "images")),
            ("netdeploy", lambda: start_netdeploy(root)),
            ("aiohttp", lambda: start_fileresponse(root)),
        ):
            if name == "aiohttp" and not args.fileresponse:
                continue
            proc, url = start()
            servers.append(proc)
            targets.append((name, proc, url))
        for _name, proc, url in targets:  # warm page cache and first-request paths
            run_clients(url, 1, size, proc.pid)
        rows: list[tuple[int, dict[str, Result]]] = []
        ratios: dict[int, dict[str, list[float]]] = {}
        for n in counts:
            runs: dict[str, list[Result]] = {name: [] for name, _, _ in targets}
            for rep in range(args.repeat):  # the order alternates, so noise hits both alike
                for name, proc, url in targets if rep % 2 == 0 else targets[::-1]:
                    runs[name].append(run_clients(url, n, size, proc.pid))
            ratios[n] = {
                name: [r.mib_s / b.mib_s for r, b in zip(rs, runs["nginx"], strict=True)]
                for name, rs in runs.items()
                if name != "nginx"
            }
            rows.append((n, {name: median_run(rs) for name, rs in runs.items()}))
            print(f"  {n} clients done", file=sys.stderr)
    finally:
        for proc in servers:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(root, ignore_errors=True)

    names = [name for name, _, _ in targets]
    print(f"\nimage {args.size_mib} MiB over loopback; curl clients; median of {args.repeat}")
    print("MiB/s aggregate, ratio to nginx, server CPU % of one core, server CPU s per GiB sent")
    header = f"{'clients':>7}"
    for name in names:
        header += f"  {name + ' MiB/s':>15}" + (f"  {'ratio':>5}" if name != "nginx" else "")
    for name in names:
        header += f"  {name + ' CPU':>13}  {'s/GiB':>5}"
    print(header)
    for n, best in rows:
        line = f"{n:>7}"
        for name in names:
            r = best[name]
            line += f"  {r.mib_s:>15,.0f}"
            if name != "nginx":
                line += f"  {r.mib_s / best['nginx'].mib_s:>5.2f}"
        for name in names:
            r = best[name]
            line += f"  {r.cpu_pct:>12.0f}%  {r.cpu / (r.bytes / 2**30):>5.2f}"
        print(line)
    for n, by_name in ratios.items():
        for name, rs in by_name.items():
            each = " ".join(f"{r:.2f}" for r in rs)
            print(
                f"{n:>7} clients: {name}/nginx per repetition {each}: "
                f"min {min(rs):.2f}x median {statistics.median(rs):.2f}x"
            )
    if 8 in ratios:
        at8 = statistics.median(ratios[8]["netdeploy"])
        verdict = "PASS" if at8 >= 1.0 else "FAIL"
        print(f"bar (issue 20): netdeploy >= 1.0x nginx at 8 clients, median: {at8:.2f}x {verdict}")
        return 0 if at8 >= 1.0 else 1
    return 0


def median_run(runs: list[Result]) -> Result:
    return sorted(runs, key=lambda r: r.mib_s)[len(runs) // 2]


if __name__ == "__main__":
    sys.exit(main())
