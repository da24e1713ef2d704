#!/usr/bin/env python3
"""TFTP side by side with real clients: tftp-hpa's in.tftpd and a real `netdeploy serve`.

    sudo ./dev bench tftp                                   # everything, 3 repetitions
    sudo ./dev bench tftp --only shared --storms 500        # one part (lockstep, window,
                                                            #   shared, blockcpu, pinned)
    sudo ./dev bench tftp --fbtftp                          # stock fbtftp 0.5 as a third peer
    sudo ./dev bench tftp --baseline /work/main             # another checkout beside
    sudo ./dev bench tftp --python-plane                    # also netdeploy with native = false

What users run: netdeploy is `netdeploy serve` with its own temp config, state dir and root and
the [tftp] limits as shipped (max_per_client 16, max_unacked 1,024, ...), started the way
systemd/netdeploy.service starts it (the unit's Nice= and CPUSchedulingPolicy= are read from
the unit file and applied; `--no-unit` leaves them out). in.tftpd runs as `in.tftpd -L -s`
(it forks a child per transfer). Each server starts in its own session, as a service would.

The clients are real: curl and atftp processes, one per booting machine, each from its own
loopback address (127.1.x.y; curl --interface, atftp through a tiny bind() shim compiled here
and LD_PRELOADed), so per-client limits count machines the way they would on a LAN.

Scenarios (all over loopback, blksize 1468 as PXE ROMs ask):
  lockstep  one 32 MiB transfer with curl, and with atftp;
  window    netdeploy windowsize 16 against in.tftpd lockstep, atftp on both sides;
  blockcpu  one 32 MiB transfer with every server on the first CPU and curl on the same CPU,
            then on another: time, and the server's CPU per block from `perf stat` (the
            figure the wake-ups' placement moves least; needs perf, from linux-perf);
  storm     N clients x 1 MiB started together (held at a pipe, then released at once) —
            "shared": clients and servers on every core; "pinned": the server on CPU 0 and
            the clients on the other cores (taskset). Time = release to the last exit.
Every repetition runs each server once, the order alternating between repetitions, and its
ratio is time(in.tftpd) / time(netdeploy): above 1.0 netdeploy is faster. Printed: the min and
the median of the per-repetition ratios (never a best-of), the load average, the CPUs the
netdeploy process tree used during each storm, and (from its /metrics) what became of any
fetch that failed.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

MiB = 1 << 20
BLKSIZE = 1468
REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "systemd" / "netdeploy.service"
CPUS = sorted(os.sched_getaffinity(0))

# Each client binds its own 127.1.x.y: atftp has no option for that, so this shim binds every
# fresh IPv4 datagram socket to $ND_BENCH_SRC before the program uses it.
BIND_SHIM = r"""
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
int socket(int domain, int type, int protocol) {
    static int (*real)(int, int, int);
    if (!real) real = dlsym(RTLD_NEXT, "socket");
    int fd = real(domain, type, protocol);
    const char *src = getenv("ND_BENCH_SRC");
    if (fd >= 0 && src && domain == AF_INET && (type & 0xf) == SOCK_DGRAM) {
        struct sockaddr_in a;
        memset(&a, 0, sizeof a);
        a.sin_family = AF_INET;
        inet_pton(AF_INET, src, &a.sin_addr);
        bind(fd, (struct sockaddr *)&a, sizeof a);
    }
    return fd;
}
"""

NETDEPLOY_CONF = """
[server]
bind = "127.0.0.1"
state_dir = "{state}"
bootfiles_dir = "{root}"
images_dir = "{state}/images"
[metrics]
public = true
"""


def tree_cpu(pid: int) -> float:
    """CPU seconds of ``pid`` and its live descendants (a netdeploy and its workers)."""
    tick = os.sysconf("SC_CLK_TCK")
    stats = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            stats[int(entry.name)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
    family, total, grown = {pid}, 0, True
    while grown:
        grown = False
        for child, (parent, _) in stats.items():
            if parent in family and child not in family:
                family.add(child)
                grown = True
    total = sum(stats[p][1] for p in family if p in stats)
    return total / tick


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def unit_settings() -> dict[str, str]:
    """Nice=, CPUSchedulingPolicy= (and whatever else we apply) from systemd/netdeploy.service."""
    found = {}
    for line in UNIT.read_text().splitlines():
        m = re.match(r"^(Nice|CPUSchedulingPolicy)=(\S+)", line)
        if m:
            found[m.group(1)] = m.group(2)
    return found


def autogroup_nice(weight: int) -> int:
    """The autogroup nice level whose weight is CPUWeight=``weight`` against the default 100
    (each nice step is a factor 1.25 in the kernel's weight table)."""
    return -round(math.log(weight / 100) / math.log(1.25))


def unit_wrapper(settings: dict[str, str]) -> list[str]:
    argv: list[str] = []
    if "CPUSchedulingPolicy" in settings:
        policy = {"batch": "--batch", "other": "--other", "idle": "--idle"}
        argv += ["chrt", policy[settings["CPUSchedulingPolicy"]], "0"]
    if "Nice" in settings:
        argv += ["nice", "-n", settings["Nice"]]
    return argv


# -- servers ---------------------------------------------------------------------------------
class Server:
    def __init__(
        self,
        name: str,
        root: Path,
        tmp: Path,
        *,
        cpus: list[int],
        unit: list[str],
        checkout: str | None = None,
        weight: int | None = None,
    ):
        self.name, self.port, self.http = name, free_port(), 0
        pin = ["taskset", "-c", ",".join(map(str, cpus))] if cpus != CPUS else []
        if name == "in.tftpd":
            argv = ["in.tftpd", "-L", "-s", "-a", f"127.0.0.1:{self.port}", str(root)]
        elif name == "fbtftp":
            argv = [sys.executable, __file__, "--serve-fbtftp", str(root), str(self.port)]
        else:
            state = tmp / "state"
            config = tmp / "netdeploy.toml"
            config.write_text(NETDEPLOY_CONF.format(state=state, root=root))
            if name == "python-plane":  # the same checkout on its pure-Python data plane
                config.write_text(config.read_text() + "[tftp]\nnative = false\n")
            self.http = free_port(socket.SOCK_STREAM)
            argv = [*unit, sys.executable, "-m", "netdeploy", "serve", "--config", str(config)]
            argv += ["--state-dir", str(state), "--tftp-port", str(self.port)]
            argv += ["--http-port", str(self.http)]
        self.log = open(tmp / f"{name}.log", "w")  # noqa: SIM115 - closed in stop()
        env = {**os.environ, "PYTHONPATH": checkout} if checkout else None
        self.proc = subprocess.Popen(
            [*pin, *argv],
            start_new_session=True,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        self.wait_ready(root)
        if weight is not None:  # --cpu-weight: this session's (autogroup's) share of the CPU
            Path(f"/proc/{self.proc.pid}/autogroup").write_text(str(autogroup_nice(weight)))

    def outcomes(self) -> dict[str, float]:
        """netdeploy's finished transfers by outcome so far (its /metrics)."""
        if not self.http:
            return {}
        url = f"http://127.0.0.1:{self.http}/metrics"
        with urllib.request.urlopen(url, timeout=10) as reply:
            text = reply.read().decode()
        found = re.findall(r'^netdeploy_tftp_transfers_total\{outcome="(\w+)"\} (\S+)', text, re.M)
        return {outcome: float(count) for outcome, count in found}

    def wait_ready(self, root: Path) -> None:
        probe = ["curl", "-s", "-o", "/dev/null", f"tftp://127.0.0.1:{self.port}/probe.bin"]
        for _ in range(200):
            if self.proc.poll() is not None:
                raise SystemExit(f"bench: {self.name} exited at start; see {self.log.name}")
            if subprocess.run(probe, timeout=30).returncode == 0:
                return
            time.sleep(0.1)
        raise SystemExit(f"bench: {self.name} does not answer on port {self.port}")

    def stop(self) -> None:
        # in.tftpd and fbtftp fork per transfer: end the whole session's process group
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.log.close()


def serve_fbtftp(root: str, port: int) -> None:
    from fbtftp.base_handler import BaseHandler, ResponseData
    from fbtftp.base_server import BaseServer

    class FileData(ResponseData):
        def __init__(self, path: str):
            self._file = open(path, "rb")  # noqa: SIM115 - fbtftp closes it via close()
            self._size = os.fstat(self._file.fileno()).st_size

        def read(self, n: int) -> bytes:
            return self._file.read(n)

        def size(self) -> int:
            return self._size

        def close(self) -> None:
            self._file.close()

    class Handler(BaseHandler):
        def get_response_data(self) -> FileData:
            return FileData(os.path.join(root, self._path))

    class Server(BaseServer):
        def get_handler(self, server_addr, peer, path, options):  # type: ignore[no-untyped-def]
            return Handler(server_addr, peer, path, options, lambda _stats: None)

    Server("127.0.0.1", port, retries=5, timeout=5).run()


# -- clients ---------------------------------------------------------------------------------
def source(i: int) -> str:
    return f"127.1.{i // 250}.{i % 250 + 1}"


def curl(port: int, name: str, src: str, out: str, *, blksize: int = BLKSIZE) -> list[str]:
    url = f"tftp://127.0.0.1:{port}/{name}"
    argv = ["curl", "-sS", "--interface", src, "--tftp-blksize", str(blksize), "-o", out, url]
    return [*argv, "--max-time", "120"]  # a fetch that stalls counts as failed, not a hang


def atftp(port: int, name: str, out: str, *options: str) -> list[str]:
    argv = ["atftp", "-g", "-r", name, "-l", out]
    for option in options:
        argv += ["--option", option]
    return [*argv, "127.0.0.1", str(port)]


class Clients:
    """Client argv builders and their environment (the bind shim)."""

    def __init__(self, tmp: Path):
        self.shim = tmp / "bindshim.so"
        c = tmp / "bindshim.c"
        c.write_text(BIND_SHIM)
        subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-o", self.shim, c, "-ldl"], check=True)

    def argv(self, kind: str, port: int, name: str, i: int, out: str) -> tuple[list[str], dict]:  # type: ignore[type-arg]
        if kind == "curl":
            return curl(port, name, source(i), out), {}
        env = {"LD_PRELOAD": str(self.shim), "ND_BENCH_SRC": source(i)}
        return atftp(port, name, out, f"blksize {BLKSIZE}"), env


def one(argv: list[str], env: dict[str, str], out: Path, expected: bytes) -> float:
    out.unlink(missing_ok=True)
    start = time.perf_counter()
    subprocess.run(
        argv,
        check=True,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    seconds = time.perf_counter() - start
    if out.read_bytes() != expected:
        raise SystemExit(f"bench: {argv[0]} fetched different bytes: {' '.join(argv)}")
    return seconds


def storm(
    clients: Clients, kind: str, port: int, count: int, cpus: list[int], size: int
) -> tuple[float, int]:
    """(seconds, failed fetches): ``count`` clients held at a pipe, then released at once."""
    hold, release = os.pipe()
    pin = ["taskset", "-c", ",".join(map(str, cpus))] if cpus != CPUS else []
    procs = []
    for i in range(count):
        argv, env = clients.argv(kind, port, "storm.bin", i, "/dev/null")
        if kind == "curl":
            argv = [*argv, "-w", "%{size_download}"]
        procs.append(
            subprocess.Popen(
                [*pin, "sh", "-c", f'read _ <&{hold}; exec "$@"', "client", *argv],
                pass_fds=(hold,),
                env={**os.environ, **env},
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
        )
    os.close(hold)
    time.sleep(0.5)  # every shell sits in read(2)
    start = time.perf_counter()
    os.close(release)  # EOF for all at once
    failed = 0
    for p in procs:
        try:
            out, _ = p.communicate(timeout=max(10.0, 180 - (time.perf_counter() - start)))
        except subprocess.TimeoutExpired:  # (atftp gives up by itself; this is a backstop)
            p.kill()
            out, _ = p.communicate()
        if p.returncode != 0 or (kind == "curl" and out.strip() != str(size)):
            failed += 1
    return time.perf_counter() - start, failed


# -- the run ---------------------------------------------------------------------------------
class Run:
    def __init__(self, args: argparse.Namespace, tmp: Path):
        self.args, self.tmp = args, tmp
        self.root = tmp / "root"
        self.root.mkdir()
        os.chmod(tmp, 0o755)
        os.chmod(self.root, 0o755)  # in.tftpd drops to user nobody after its chroot
        self.big = os.urandom(args.big_mib * MiB)
        (self.root / "big.bin").write_bytes(self.big)
        (self.root / "storm.bin").write_bytes(os.urandom(MiB))
        (self.root / "probe.bin").write_bytes(b"probe")
        self.clients = Clients(tmp)
        self.unit = [] if args.no_unit else unit_wrapper(unit_settings())
        self.names = ["in.tftpd", "netdeploy"] + (["fbtftp"] if args.fbtftp else [])
        self.names += ["python-plane"] if args.python_plane else []
        # other checkouts beside: baseline, baseline2, ... in the order given
        self.checkouts = {
            f"baseline{i + 1 if i else ''}": path for i, path in enumerate(args.baseline or [])
        }
        self.names += list(self.checkouts)
        self.lines: list[str] = []
        self.cpu: dict[str, list[float]] = {}  # server CPU / wall time per storm
        self.block_cpu: dict[str, list[float]] = {}  # server CPU µs per block, lockstep

    def servers(self, cpus: list[int]) -> dict[str, Server]:
        started: dict[str, Server] = {}
        try:
            for name in self.names:
                where = self.tmp / f"{name}-{len(cpus)}"
                where.mkdir(exist_ok=True)
                checkout = self.checkouts.get(name)
                ours = name in ("netdeploy", "python-plane") or checkout
                weight = self.args.cpu_weight if ours else None
                started[name] = Server(
                    name,
                    self.root,
                    where,
                    cpus=cpus,
                    unit=self.unit,
                    checkout=checkout,
                    weight=weight,
                )
        except BaseException:
            for server in started.values():
                server.stop()
            raise
        return started

    def measure(self, key: str, jobs: dict[str, Callable[[], tuple[float, int]]]) -> None:
        """``repeat`` repetitions, order alternating; ratios per repetition against in.tftpd."""
        times: dict[str, list[float]] = {n: [] for n in jobs}
        failed = dict.fromkeys(jobs, 0)
        order = list(jobs)
        for rep in range(self.args.repeat):
            for name in order if rep % 2 == 0 else order[::-1]:
                seconds, bad = jobs[name]()
                times[name].append(seconds)
                failed[name] += bad
        load = os.getloadavg()[0]
        for name in jobs:
            each = " ".join(f"{t:.2f}" for t in times[name])
            note = f", {failed[name]} failed" if failed[name] else ""
            line = f"  {key:34} {name:10} {each} s{note}"
            if name != "in.tftpd" and "in.tftpd" in times:
                ratios = [b / t for b, t in zip(times["in.tftpd"], times[name], strict=True)]
                line += f"   ratio min {min(ratios):.2f}x median {statistics.median(ratios):.2f}x"
            print(line, flush=True)
            self.lines.append(line)
        busy = "; ".join(
            [f"{n} used {statistics.median(c):.2f} CPUs" for n, c in self.cpu.items() if c]
            + [
                f"{n} used {statistics.median(c):.1f} µs CPU per block"
                for n, c in self.block_cpu.items()
                if c
            ]
        )
        self.cpu.clear()
        self.block_cpu.clear()
        print(f"  {'':34} (load average {load:.2f}{'; ' + busy if busy else ''})", flush=True)

    def fetch(
        self,
        argv: list[str],
        env: dict | None = None,  # type: ignore[type-arg]
        server: Server | None = None,
    ) -> Callable[[], tuple[float, int]]:
        """One whole-file fetch; with ``server`` (a netdeploy) its CPU per block is noted too."""
        out = self.tmp / "out.bin"

        def job() -> tuple[float, int]:
            before = tree_cpu(server.proc.pid) if server else 0.0
            seconds = one(argv, env or {}, out, self.big)
            if server is not None:
                blocks = len(self.big) // BLKSIZE + 1
                used = tree_cpu(server.proc.pid) - before
                self.block_cpu.setdefault(server.name, []).append(used / blocks * 1e6)
            return seconds, 0

        return job

    def lockstep(self, servers: dict[str, Server]) -> None:
        out = str(self.tmp / "out.bin")
        mib = self.args.big_mib
        self.measure(
            f"lockstep {mib} MiB, curl",
            {
                n: self.fetch(curl(s.port, "big.bin", "127.0.0.1", out), server=self.ours(s))
                for n, s in servers.items()
            },
        )
        self.measure(
            f"lockstep {mib} MiB, atftp",
            {
                n: self.fetch(
                    atftp(s.port, "big.bin", out, f"blksize {BLKSIZE}"), server=self.ours(s)
                )
                for n, s in servers.items()
            },
        )

    def lockstep_pinned(self, servers: dict[str, Server]) -> None:
        """One lockstep transfer with every server on the first CPU and curl on the same CPU,
        then on another: the time, and the server's CPU per block from ``perf stat``
        (task-clock of the server's threads and of the children it forks after the counter
        starts) - the figure the placement of the wake-ups moves least."""
        perf = shutil.which("perf")
        if perf is None:
            print("  (perf not found: apt-get install linux-perf; the block-CPU rows are skipped)")
            return
        for cpu in (CPUS[0], CPUS[1]):
            self.measure(
                f"lockstep {self.args.big_mib} MiB, curl CPU {cpu}",
                {n: functools.partial(self.counted, perf, s, cpu) for n, s in servers.items()},
            )

    def counted(self, perf: str, server: Server, cpu: int) -> tuple[float, int]:
        """One curl fetch on ``cpu`` while ``perf stat`` counts ``server``'s CPU per block."""
        out, stat = self.tmp / "out.bin", self.tmp / "perf.csv"
        pid = str(server.proc.pid)
        argv = [perf, "stat", "-x,", "-e", "task-clock", "-p", pid, "-o", str(stat)]
        counter = subprocess.Popen(argv, stderr=subprocess.DEVNULL)
        time.sleep(0.3)  # (attached before the transfer starts)
        fetch = curl(server.port, "big.bin", "127.0.0.1", str(out))
        seconds = one(["taskset", "-c", str(cpu), *fetch], {}, out, self.big)
        counter.send_signal(signal.SIGINT)
        counter.wait()
        msec = next(
            float(line.split(",")[0])
            for line in stat.read_text().splitlines()
            if "task-clock" in line
        )
        blocks = len(self.big) // BLKSIZE + 1
        self.block_cpu.setdefault(server.name, []).append(msec * 1000 / blocks)
        return seconds, 0

    @staticmethod
    def ours(server: Server) -> Server | None:
        """``server`` when it is a netdeploy (its CPU is its process tree's), else None."""
        return server if server.http else None

    def window(self, servers: dict[str, Server]) -> None:
        out = str(self.tmp / "out.bin")
        hpa = servers["in.tftpd"].port
        jobs = {"in.tftpd": self.fetch(atftp(hpa, "big.bin", out, f"blksize {BLKSIZE}"))}
        for name, server in servers.items():
            if self.ours(server):  # every netdeploy: this checkout, its Python plane, baselines
                argv = atftp(server.port, "big.bin", out, f"blksize {BLKSIZE}", "windowsize 16")
                jobs[name] = self.fetch(argv)
        self.measure(f"{self.args.big_mib} MiB, netdeploy windowsize 16", jobs)

    def storm_of(self, server: Server, kind: str, count: int, cpus: list[int]) -> tuple[float, int]:
        before, outcomes = tree_cpu(server.proc.pid), server.outcomes()
        seconds, failed = storm(self.clients, kind, server.port, count, cpus, MiB)
        if failed and server.http:  # what the server says became of them
            after = server.outcomes()
            said = {k: v - outcomes.get(k, 0) for k, v in after.items() if k != "ok"}
            print(f"  ({server.name}: {failed} failed; its outcomes other than ok: {said})")
        if server.name != "in.tftpd":  # (its children are gone, and not waited for)
            used = tree_cpu(server.proc.pid) - before
            self.cpu.setdefault(server.name, []).append(used / seconds)
        return seconds, failed

    def storms(self, servers: dict[str, Server], cpus: list[int], where: str) -> None:
        for kind in self.args.storm_clients.split(","):
            for count in map(int, self.args.storms.split(",")):
                self.measure(
                    f"storm {count} x 1 MiB, {kind}, {where}",
                    {
                        n: functools.partial(self.storm_of, s, kind, count, cpus)
                        for n, s in servers.items()
                    },
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="repetitions (default 3)")
    parser.add_argument("--storms", default="200,500", help="clients per storm (200,500)")
    parser.add_argument("--storm-clients", default="curl,atftp", help="curl,atftp")
    parser.add_argument("--big-mib", type=int, default=32, help="lockstep file size (32)")
    parser.add_argument(
        "--only",
        default="lockstep,window,shared,blockcpu,pinned",
        help="lockstep,window,shared,blockcpu,pinned",
    )
    parser.add_argument("--fbtftp", action="store_true", help="stock fbtftp 0.5 as a peer too")
    parser.add_argument(
        "--python-plane",
        action="store_true",
        help="also this checkout with [tftp] native = false (the pure-Python data plane)",
    )
    parser.add_argument(
        "--baseline",
        action="append",
        help="another netdeploy checkout to run beside (e.g. /work/main); may be repeated",
    )
    parser.add_argument(
        "--cpu-weight",
        type=int,
        help="give netdeploy's session the CPU share a CPUWeight=N unit would get against the "
        "default 100 (autogroup nice); an experiment, not what the unit ships",
    )
    parser.add_argument("--no-unit", action="store_true", help="ignore the unit's Nice= etc.")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench: run as root (in.tftpd -s chroots; clients bind 127.1.x.y)")
    missing = [t for t in ("in.tftpd", "curl", "atftp", "gcc", "taskset") if not shutil.which(t)]
    if missing:
        raise SystemExit(f"bench: install {', '.join(missing)} (tftpd-hpa curl atftp gcc)")
    if args.fbtftp:
        try:
            import fbtftp  # noqa: F401
        except ImportError:
            raise SystemExit("bench: pip install -e '.[bench]' (stock fbtftp 0.5)") from None
    parts = args.only.split(",")
    with tempfile.TemporaryDirectory(prefix="bench-tftp-") as name:
        run = Run(args, Path(name))
        print(
            f"bench: {len(CPUS)} CPUs, load {os.getloadavg()[0]:.2f}, netdeploy started with "
            f"{' '.join(run.unit) or 'no unit settings'}"
            + (f", CPU weight {args.cpu_weight} (autogroup)" if args.cpu_weight else "")
            + "; ratio = time(in.tftpd) / time(x)",
            flush=True,
        )
        if {"lockstep", "window", "shared"} & set(parts):
            servers = run.servers(CPUS)
            try:
                if "lockstep" in parts:
                    run.lockstep(servers)
                if "window" in parts:
                    run.window(servers)
                if "shared" in parts:
                    run.storms(servers, CPUS, "shared cores")
            finally:
                for server in servers.values():
                    server.stop()
        if {"pinned", "blockcpu"} & set(parts) and len(CPUS) > 1:
            servers = run.servers(CPUS[:1])
            try:
                if "blockcpu" in parts:
                    run.lockstep_pinned(servers)
                if "pinned" in parts:
                    run.storms(servers, CPUS[1:], f"server CPU {CPUS[0]}, clients apart")
            finally:
                for server in servers.values():
                    server.stop()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--serve-fbtftp":
        serve_fbtftp(sys.argv[2], int(sys.argv[3]))
    else:
        main()
