#!/usr/bin/env python3
"""TFTP side by side: tftp-hpa's in.tftpd, stock fbtftp 0.5 and netdeploy, in one run.

    .venv/bin/pip install -e '.[bench]'     # fbtftp
    sudo .venv/bin/python bench/tftp.py     # in.tftpd -s needs root (chroot)
    ./dev bench tftp
    ./dev bench tftp --storms 500 --repeat 1 --skip-fbtftp   # quicker

As root it also runs netdeploy the way systemd/netdeploy.service does: as an unprivileged user
(nobody) with no capabilities at all, so no CAP_NET_ADMIN (``netdeploy-unit``, via setpriv),
and prints the socket buffer each netdeploy got (SO_RCVBUFFORCE needs CAP_NET_ADMIN; without it
the kernel caps SO_RCVBUF at net.core.rmem_max: systemd/netdeploy-sysctl.conf raises that).
Run without root, the bench measures the storms of that unprivileged netdeploy alone.

Scenarios (all on loopback, each server in its own process, the same clients for all):
  (a) one 32 MiB file with curl at blksize 512 and 1468;
  (b) boot storms: 200 and 500 concurrent lockstep fetches of a 1 MiB file (blksize 1468)
      by this file's own client (two processes of asyncio protocols), failures counted;
  (c) netdeploy with windowsize 16 against in.tftpd lockstep on one 32 MiB transfer, both
      fetched by atftp at blksize 1468 (also printed: against in.tftpd's fastest lockstep
      client, curl or atftp).
Each figure is the best of ``--repeat`` runs (the machine is shared; best-of is least noisy).
Ratios are throughput relative to in.tftpd; above 1.0 is faster than in.tftpd.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MiB = 1 << 20
REPO = Path(__file__).resolve().parent.parent


# -- servers ---------------------------------------------------------------------------------
def serve_netdeploy(root: str, port: int) -> None:
    sys.path.insert(0, str(REPO))
    from netdeploy.config import TftpConfig
    from netdeploy.tftp.engine import TftpServer, _listen_socket

    probe = _listen_socket(socket.AF_INET, "127.0.0.1", 0)  # what the engine's socket gets
    facts = {
        "uid": os.getuid(),
        "rcvbuf": probe.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
        "cap_net_admin": _has_cap_net_admin(),
    }
    probe.close()
    print(json.dumps(facts), flush=True)

    async def main() -> None:
        server = TftpServer(Path(root), TftpConfig(max_transfers=5000, max_per_client=1000))
        await server.start("127.0.0.1", port)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await server.stop()

    asyncio.run(main())


def _has_cap_net_admin() -> bool:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) & (1 << 12))  # CAP_NET_ADMIN = 12
    return False


def rmem_max() -> int:
    return int(Path("/proc/sys/net/core/rmem_max").read_text())


UNPRIVILEGED = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
NO_CAPS = ["--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all"]


def unit_python() -> tuple[str, dict[str, str]]:
    """An interpreter user nobody may run, with this checkout and its packages on the path."""
    import sysconfig

    exe = os.path.realpath(sys.executable)
    if exe.startswith("/root/") or not os.access(exe, os.X_OK):
        exe = f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"
    paths = [str(REPO), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    return exe, {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


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

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    Server("127.0.0.1", port, retries=5, timeout=1).run()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """One server under test, in its own process."""

    def __init__(self, name: str, root: Path):
        self.name, self.port = name, free_port()
        self.facts: dict[str, object] = {}
        env = None
        if name == "in.tftpd":
            argv = ["in.tftpd", "-L", "-s", "-a", f"127.0.0.1:{self.port}", str(root)]
        elif name == "netdeploy-unit":  # as systemd/netdeploy.service runs it, minus even
            python, env = unit_python()  # CAP_NET_BIND_SERVICE (a high port needs none)
            argv = [*UNPRIVILEGED, *NO_CAPS, python, __file__, "--serve-netdeploy"]
            argv += [str(root), str(self.port)]
        else:
            mode = "--serve-netdeploy" if name == "netdeploy" else "--serve-fbtftp"
            argv = [sys.executable, __file__, mode, str(root), str(self.port)]
        # fbtftp logs every lingering session to stderr; its failures are counted client-side
        quiet = subprocess.DEVNULL if name == "fbtftp" else None
        talks = name.startswith("netdeploy")
        self.proc = subprocess.Popen(
            argv,
            start_new_session=True,
            stderr=quiet,
            stdout=subprocess.PIPE if talks else None,
            env=env,
        )
        if talks and self.proc.stdout is not None:
            line = self.proc.stdout.readline()
            if line:
                self.facts = json.loads(line)
        time.sleep(1.0)
        if self.proc.poll() is not None:
            raise SystemExit(f"bench: {name} did not start (exit {self.proc.returncode})")

    def stop(self) -> None:
        # in.tftpd and fbtftp fork per transfer: end the whole process group we started.
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(10)


# -- clients ---------------------------------------------------------------------------------
def timed(argv: list[str], out: Path, expected: bytes) -> float:
    out.unlink(missing_ok=True)
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    if out.read_bytes() != expected:
        raise SystemExit(f"bench: {argv[0]} fetched different bytes: {' '.join(argv)}")
    return seconds


def curl(port: int, name: str, blksize: int, out: Path) -> list[str]:
    url = f"tftp://127.0.0.1:{port}/{name}"
    return ["curl", "-s", "--tftp-blksize", str(blksize), "-o", str(out), url]


def atftp(port: int, name: str, out: Path, *options: str) -> list[str]:
    argv = ["atftp", "-g", "-r", name, "-l", str(out)]
    for option in options:
        argv += ["--option", option]
    return [*argv, "127.0.0.1", str(port)]


class Fetch(asyncio.DatagramProtocol):
    """One lockstep read, the way a PXE ROM does it: RRQ with blksize, ACK every block."""

    def __init__(self, port: int, name: str, blksize: int, expected: bytes):
        self.rrq = b"\0\x01" + name.encode() + b"\0octet\0blksize\0" + str(blksize).encode() + b"\0"
        self.server, self.blksize, self.expected = ("127.0.0.1", port), blksize, expected
        self.data = bytearray()
        self.block = 0
        self.tid: tuple[str, int] | None = None
        self.last: bytes = self.rrq
        self.heard = time.monotonic()
        self.tries = 0
        self.done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.sendto(self.rrq, self.server)  # type: ignore[union-attr]

    def datagram_received(self, packet: bytes, addr: tuple[str, int]) -> None:
        if self.done.done() or (self.tid and addr != self.tid):
            return
        op = packet[1] if len(packet) >= 4 else 0
        if op == 6:  # OACK
            self.tid, self.last = addr, b"\0\x04\0\0"
        elif op == 3:
            self.tid = addr
            number = packet[2] << 8 | packet[3]
            if number == (self.block + 1) & 0xFFFF:
                self.block += 1
                self.data += packet[4:]
                self.last = b"\0\x04" + packet[2:4]
                if len(packet) - 4 < self.blksize:
                    self.transport.sendto(self.last, addr)  # type: ignore[union-attr]
                    self.done.set_result(bytes(self.data) == self.expected)
                    return
            else:
                return  # a duplicate: do not answer it (no Sorcerer's Apprentice)
        else:
            self.done.set_result(False)  # ERROR or junk
            return
        self.heard, self.tries = time.monotonic(), 0
        self.transport.sendto(self.last, addr)  # type: ignore[union-attr]

    def tick(self, now: float) -> None:
        """Retransmit after 1 s of silence, doubling; give up after 5 tries (like PXE)."""
        if self.done.done() or now - self.heard < (1 << self.tries):
            return
        if self.tries >= 5:
            self.done.set_result(False)
            return
        self.tries += 1
        self.heard = now
        self.transport.sendto(self.last, self.tid or self.server)  # type: ignore[union-attr]


async def storm_worker(port: int, name: str, count: int, blksize: int, expected: bytes) -> int:
    loop = asyncio.get_running_loop()
    fetches = []
    for _ in range(count):
        _, fetch = await loop.create_datagram_endpoint(
            lambda: Fetch(port, name, blksize, expected), local_addr=("127.0.0.1", 0)
        )
        fetches.append(fetch)

    async def ticker() -> None:
        while True:
            await asyncio.sleep(0.1)
            now = time.monotonic()
            for fetch in fetches:
                fetch.tick(now)

    tick = loop.create_task(ticker())
    results = await asyncio.gather(*(f.done for f in fetches))
    tick.cancel()
    for fetch in fetches:
        fetch.transport.close()  # type: ignore[union-attr]
    return sum(not ok for ok in results)


def storm_main(port: int, path: str, count: int, blksize: int, start_at: float) -> None:
    expected = Path(path).read_bytes()
    time.sleep(max(0.0, start_at - time.time()))
    failed = asyncio.run(storm_worker(port, Path(path).name, count, blksize, expected))
    print(json.dumps({"failed": failed, "end": time.time()}))


def storm(port: int, path: Path, clients: int, workers: int = 2) -> tuple[float, int]:
    """(seconds, failed fetches) for ``clients`` concurrent fetches split over processes."""
    start_at = time.time() + 1.0
    shares = [clients // workers + (i < clients % workers) for i in range(workers)]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--storm-client",
                str(port),
                str(path),
                str(n),
                "1468",
                str(start_at),
            ],
            stdout=subprocess.PIPE,
        )
        for n in shares
    ]
    results = [json.loads(p.communicate()[0]) for p in procs]
    return max(r["end"] for r in results) - start_at, sum(r["failed"] for r in results)


# -- the run ---------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="best of N per figure (default 3)")
    parser.add_argument("--storms", default="200,500", help="concurrent clients (default 200,500)")
    parser.add_argument("--big-mib", type=int, default=32, help="size of file (a) (default 32)")
    parser.add_argument("--skip-fbtftp", action="store_true", help="leave stock fbtftp out")
    args = parser.parse_args()
    root_run = os.geteuid() == 0
    missing = [tool for tool in ("in.tftpd", "curl", "atftp") if not shutil.which(tool)]
    if missing and root_run:
        raise SystemExit(
            f"bench: install {', '.join(missing)} (apt-get install tftpd-hpa curl atftp)"
        )
    if not root_run:
        # in.tftpd -s needs root to chroot; the unit's conditions are this user's own
        print("bench: not root: only netdeploy, as this unprivileged user (the unit's way)")
        unprivileged(args)
        return
    names = ["in.tftpd", "fbtftp", "netdeploy"]
    if shutil.which("setpriv"):
        names.append("netdeploy-unit")
    if args.skip_fbtftp:
        names.remove("fbtftp")
    else:
        try:
            import fbtftp  # noqa: F401
        except ImportError:
            raise SystemExit("bench: pip install -e '.[bench]' (stock fbtftp 0.5)") from None

    with tempfile.TemporaryDirectory(prefix="bench-tftp-") as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        os.chmod(tmp, 0o755)
        os.chmod(root, 0o755)  # in.tftpd drops to user nobody after its chroot
        big, small = os.urandom(args.big_mib * MiB), os.urandom(MiB)
        (root / "big.bin").write_bytes(big)
        (root / "storm.bin").write_bytes(small)
        out = Path(tmp) / "out.bin"
        results: dict[str, dict[str, float]] = {n: {} for n in names}
        failures: dict[str, dict[str, int]] = {n: {} for n in names}
        servers = {name: Server(name, root) for name in names}
        try:
            run_all(servers, args, root, out, big, results, failures)
        finally:
            for server in servers.values():
                server.stop()
        report(results, failures, args)
        buffers(servers)


def buffers(servers: dict) -> None:  # type: ignore[type-arg]
    """What each netdeploy's listening socket got, and why."""
    print(f"\nnet.core.rmem_max on this host: {rmem_max():,} bytes (kernel default 212,992)")
    for name, server in servers.items():
        f = server.facts
        if not f:
            continue
        who = "root" if f["uid"] == 0 else f"uid {f['uid']}"
        cap = "with" if f["cap_net_admin"] else "without"
        print(
            f"{name}: {who}, {cap} CAP_NET_ADMIN: listening SO_RCVBUF {f['rcvbuf']:,} bytes "
            f"(asked for 4 MiB; the kernel reports twice the usable size)"
        )


def unprivileged(args: argparse.Namespace) -> None:
    """The storms against netdeploy run by this (unprivileged) user, absolute figures only."""
    with tempfile.TemporaryDirectory(prefix="bench-tftp-") as tmp:
        root = Path(tmp)
        (root / "storm.bin").write_bytes(os.urandom(MiB))
        server = Server("netdeploy", root)
        try:
            for clients in map(int, args.storms.split(",")):
                runs = [storm(server.port, root / "storm.bin", clients) for _ in range(args.repeat)]
                best = min(seconds for seconds, _ in runs)
                failed = sum(bad for _, bad in runs)
                print(
                    f"  b) storm {clients:<5} netdeploy (unprivileged) best {best:.3f} s, "
                    f"{failed} failed fetches"
                )
        finally:
            server.stop()
        buffers({"netdeploy": server})


def run_all(servers, args, root, out, big, results, failures):  # type: ignore[no-untyped-def]
    """Each figure round-robin over the servers, ``repeat`` times, so noise hits all alike."""

    def measure(key: str, jobs: dict) -> None:  # type: ignore[type-arg]
        times: dict[str, list[float]] = {name: [] for name in jobs}
        failed: dict[str, int] = dict.fromkeys(jobs, 0)
        for _ in range(args.repeat):
            for name, job in jobs.items():
                seconds, bad = job()
                times[name].append(seconds)
                failed[name] += bad
        for name in jobs:
            results[name][key] = min(times[name])
            failures[name][key] = failed[name]
            note = f", {failed[name]} failed fetches" if key.startswith("b)") else ""
            each = ", ".join(f"{t:.2f}" for t in times[name])
            best = min(times[name])
            print(f"  {key:26} {name:10} best {best:7.3f} s (of {each}){note}", flush=True)

    def fetch(argv: list[str]):  # type: ignore[no-untyped-def]
        return lambda: (timed(argv, out, big), 0)

    for blksize in (512, 1468):
        measure(
            f"a) {args.big_mib}MiB blksize {blksize}",
            {n: fetch(curl(s.port, "big.bin", blksize, out)) for n, s in servers.items()},
        )
    for clients in map(int, args.storms.split(",")):
        measure(
            f"b) storm {clients}",
            {
                n: (lambda p=s.port, c=clients: storm(p, root / "storm.bin", c))
                for n, s in servers.items()
            },
        )
    hpa, nd = servers["in.tftpd"].port, servers["netdeploy"].port
    # (c) compares the engines; the unit's conditions matter for storms (the listening buffer)
    measure(
        "c) one transfer",
        {
            "in.tftpd": fetch(atftp(hpa, "big.bin", out, "blksize 1468")),
            "netdeploy": fetch(atftp(nd, "big.bin", out, "blksize 1468", "windowsize 16")),
        },
    )


def report(results: dict, failures: dict, args: argparse.Namespace) -> None:  # type: ignore[type-arg]
    base = results["in.tftpd"]
    print("\nthroughput relative to in.tftpd (higher is better; time(in.tftpd) / time(x))")
    keys = [k for k in results["fbtftp" if "fbtftp" in results else "netdeploy"] if k in base]
    keys = [k for k in keys if not k.startswith("c)")]
    header = f"{'scenario':26}" + "".join(f"{n:>16}" for n in results)
    print(header)
    for key in keys:
        cells = "".join(f"{base[key] / results[n][key]:15.2f}x" for n in results)
        print(f"{key:26}{cells}")
    window = results["netdeploy"]["c) one transfer"]
    same = base["c) one transfer"] / window  # atftp against both: only the server differs
    fastest = min(base[f"a) {args.big_mib}MiB blksize 1468"], base["c) one transfer"])
    gain = same
    print(
        f"\nc) one {args.big_mib} MiB transfer at blksize 1468: netdeploy windowsize 16 "
        f"{window:.3f} s vs in.tftpd lockstep with the same client (atftp) "
        f"{base['c) one transfer']:.3f} s: {same:.2f}x; vs in.tftpd's fastest lockstep "
        f"client (curl or atftp, {fastest:.3f} s): {fastest / window:.2f}x"
    )
    storms = [k for k in keys if k.startswith("b)")]
    worst = min(base[k] / results["netdeploy"][k] for k in storms)
    failed = sum(failures["netdeploy"][k] for k in storms)
    ok = worst >= 1.0 and failed == 0 and gain >= 3.0
    print(
        f"bar: storms >= 1.0x in.tftpd with 0 failed (worst {worst:.2f}x, {failed} failed); "
        f"windowsize 16 >= 3x lockstep ({gain:.2f}x): {'MET' if ok else 'NOT MET'}"
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--serve-netdeploy":
        serve_netdeploy(sys.argv[2], int(sys.argv[3]))
    elif len(sys.argv) > 1 and sys.argv[1] == "--serve-fbtftp":
        serve_fbtftp(sys.argv[2], int(sys.argv[3]))
    elif len(sys.argv) > 1 and sys.argv[1] == "--storm-client":
        storm_main(
            int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
        )
    else:
        main()
