"""Multicast image distribution, side by side: udpcast, uftp, N x HTTP and netdeploy.

The rig of issue 8: network namespaces on one bridge (MTU 1500), the sender's link limited
to 100 Mbit/s with tc tbf, one image sent to 1/4/8/16 receivers by each tool in turn.
Printed per run: wall time (receivers started -> every receiver done), bytes the sender's
interface sent / image size, sender CPU seconds, verified copies (sha256 of every output),
and netdeploy's ratios against uftp and udpcast with the issue's bar:
wall <= 1.0x uftp, sender bytes <= 1.03x image, sender CPU <= 2x udpcast.

    sudo .venv/bin/python bench/multicast.py            # 256 MiB, 1/4/8/16 receivers
    sudo .venv/bin/python bench/multicast.py --quick    # 32 MiB, 1 and 4 receivers

Needs root, iproute2, udpcast, uftp, curl and gcc (for the media's C receiver). Every
namespace and process it creates is removed on exit, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.integration.mc_netns import SENDER_IP, Rig, netns_unavailable, receiver_ip, wait_line  # noqa: E402

IMAGE_NAME = "w2k3-ent-sp1"  # the demo config's image; netdeploy serves the bench file as it


@dataclass
class Result:
    tool: str
    receivers: int
    wall: float | None = None
    sent_ratio: float | None = None
    cpu: float | None = None
    verified: int = 0
    note: str = ""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(4 << 20):
            h.update(chunk)
    return h.hexdigest()


def reap(proc: subprocess.Popen[bytes], timeout: float) -> float:
    """Wait for ``proc``; return its CPU seconds (user + system) from wait4's rusage."""
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return usage.ru_utime + usage.ru_stime
        if time.monotonic() > deadline:
            proc.kill()
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = -9
            return usage.ru_utime + usage.ru_stime
        time.sleep(0.02)


class Bench:
    def __init__(self, image: Path, sha256: str, work: Path, net: Rig, n: int, timeout: float):
        self.image, self.sha256, self.work, self.net, self.n = image, sha256, work, net, n
        self.timeout = timeout
        self.ndmc_recv = work / "ndmc-recv"

    def outputs(self, tool: str) -> list[Path]:
        d = self.work / f"out-{tool}"
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir()
        return [d / f"r{i}" / "image.img" for i in range(self.n)]

    def verify(self, outs: list[Path]) -> int:
        good = sum(1 for o in outs if o.exists() and sha256_file(o) == self.sha256)
        shutil.rmtree(outs[0].parent.parent, ignore_errors=True)  # 16 x 256 MiB add up
        return good

    def receivers(self, argv_for: object, outs: list[Path]) -> list[subprocess.Popen[bytes]]:
        procs = []
        for i, ns in enumerate(self.net.receivers):
            outs[i].parent.mkdir(parents=True, exist_ok=True)
            argv = argv_for(i, outs[i])  # type: ignore[operator]
            log = open(outs[i].parent / "log", "wb")  # noqa: SIM115
            procs.append(self.net.spawn(ns, argv, stdout=log, stderr=subprocess.STDOUT))
        return procs

    def measure(self, tool: str, sender_argv: list[str] | None, argv_for: object) -> Result:
        result = Result(tool, self.n)
        outs = self.outputs(tool)
        tx0 = self.net.tx_bytes(self.net.sender)
        start = time.monotonic()
        sender = None
        if sender_argv:
            sender = self.net.spawn(
                self.net.sender, sender_argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
        procs = self.receivers(argv_for, outs)
        cpu = None
        if sender is not None and tool == "uftp":
            # uftpd is a daemon that never exits: the sender exits once every client has
            # confirmed its file, and that is the end of the transfer
            cpu = reap(sender, self.timeout)
            result.wall = time.monotonic() - start
            for p in procs:
                p.terminate()
        for p in procs:
            reap(p, max(1.0, self.timeout - (time.monotonic() - start)))
        if sender is not None and cpu is None:
            cpu = reap(sender, max(1.0, self.timeout - (time.monotonic() - start)))
        result.wall = result.wall or time.monotonic() - start
        result.cpu = cpu
        result.sent_ratio = (self.net.tx_bytes(self.net.sender) - tx0) / self.image.stat().st_size
        result.verified = self.verify(outs)
        return result

    # ---------------------------------------------------------------- tools

    def udpcast(self) -> Result:
        sender = [
            "udp-sender",
            "--file",
            str(self.image),
            "--interface",
            "eth0",
            "--min-receivers",
            str(self.n),
            "--nokbd",
            "--no-progress",
        ]
        return self.measure(
            "udpcast",
            sender,
            lambda i, out: [
                "udp-receiver",
                "--file",
                str(out),
                "--interface",
                "eth0",
                "--nokbd",
                "--no-progress",
            ],
        )

    def uftp(self) -> Result:
        hosts = ",".join(receiver_ip(i) for i in range(self.n))
        sender = [
            "uftp",
            "-I",
            "eth0",
            "-R",
            "100000",
            "-Y",
            "none",
            "-x",
            "0",
            "-H",
            hosts,
            str(self.image),
        ]
        result = self.measure(
            "uftp",
            sender,
            lambda i, out: ["uftpd", "-d", "-I", "eth0", "-x", "0", "-D", str(out.parent)],
        )
        return result

    def http(self) -> Result:
        server = self.net.spawn(
            self.net.sender,
            [
                sys.executable,
                "-m",
                "http.server",
                "8081",
                "--bind",
                SENDER_IP,
                "--directory",
                str(self.image.parent),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(1.0)
        url = f"http://{SENDER_IP}:8081/{self.image.name}"
        result = self.measure("http", None, lambda i, out: ["curl", "-sf", "-o", str(out), url])
        server.send_signal(signal.SIGTERM)
        result.cpu = reap(server, 10)
        return result

    def netdeploy_c(self) -> Result:
        return self.netdeploy("c")

    def netdeploy_py(self) -> Result:
        return self.netdeploy("py")

    def netdeploy(self, receiver: str) -> Result:
        state = self.work / "nd-state"
        shutil.rmtree(state, ignore_errors=True)
        (state / "state" / "images").mkdir(parents=True)  # the server's state_dir/images
        os.link(self.image, state / "state" / "images" / f"{IMAGE_NAME}.img")
        report = self.work / "nd.json"
        server = self.net.spawn(
            self.net.sender,
            [
                sys.executable,
                str(REPO / "tests/integration/mc_netns_server.py"),
                str(state),
                SENDER_IP,
                "8080",
                "1",
                str(report),
                "interface=eth0",
                f"min_receivers={self.n}",
                "max_wait=0",
                "max_rate=1000",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        url = wait_line(server, b"READY ", timeout=120).split()[0]
        join = f"{url}/api/multicast/join?image={IMAGE_NAME}&format=args"

        def c_receiver(i: int, out: Path) -> list[str]:
            return [
                "sh",
                "-c",
                f'exec {self.ndmc_recv} $(curl -sf -X POST "{join}&name=r{i}") --out {out} --quiet',
            ]

        def py_receiver(i: int, out: Path) -> list[str]:
            return [
                sys.executable,
                "-m",
                "netdeploy",
                "receive",
                "--server",
                url,
                "--image",
                IMAGE_NAME,
                "--out",
                str(out),
                "--name",
                f"r{i}",
                "--quiet",
            ]

        tool = f"netdeploy-{receiver}"
        result = self.measure(tool, None, c_receiver if receiver == "c" else py_receiver)
        reap(server, 60)
        if report.exists():
            result.cpu = json.loads(report.read_text())["cpu_seconds"]
        return result


def make_image(path: Path, size: int) -> str:
    h = hashlib.sha256()
    with open(path, "wb") as fh:
        left = size
        while left:
            chunk = os.urandom(min(left, 4 << 20))
            fh.write(chunk)
            h.update(chunk)
            left -= len(chunk)
    return h.hexdigest()


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def report(results: list[Result]) -> bool:
    print(
        f"\n{'receivers':>9} {'tool':<14} {'wall s':>8} {'sent/img':>9} {'cpu s':>7} "
        f"{'verified':>8}  vs uftp wall / vs udpcast cpu"
    )
    ok = True
    for r in results:
        peers = {p.tool: p for p in results if p.receivers == r.receivers}
        line = (
            f"{r.receivers:>9} {r.tool:<14} {fmt(r.wall, '8.2f')} {fmt(r.sent_ratio, '9.3f')} "
            f"{fmt(r.cpu, '7.2f')} {r.verified:>5}/{r.receivers:<2}"
        )
        if r.tool.startswith("netdeploy") and r.wall is not None:
            uftp, udpcast = peers.get("uftp"), peers.get("udpcast")
            wall_x = r.wall / uftp.wall if uftp and uftp.wall else None
            cpu_x = r.cpu / udpcast.cpu if udpcast and udpcast.cpu and r.cpu is not None else None
            bar = (
                r.verified == r.receivers
                and (r.sent_ratio or 9) <= 1.03
                and (wall_x is None or wall_x <= 1.0)
                and (cpu_x is None or cpu_x <= 2.0)
            )
            line += f"  {fmt(wall_x, '.2f')}x / {fmt(cpu_x, '.2f')}x  {'PASS' if bar else 'MISS'}"
            ok = ok and (bar or r.tool != "netdeploy-c")
        print(line + (f"  ({r.note})" if r.note else ""))
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="32 MiB, 1 and 4 receivers")
    parser.add_argument("--size-mib", type=int, default=None)
    parser.add_argument("--receivers", default=None, help="comma list, default 1,4,8,16")
    parser.add_argument("--rate", type=float, default=100.0, help="sender link, Mbit/s")
    parser.add_argument(
        "--tools",
        default="udpcast,uftp,http,netdeploy-c,netdeploy-py",
        help="which tools to run, comma separated",
    )
    parser.add_argument(
        "--http-max",
        type=int,
        default=4,
        help="run N x HTTP only up to this many receivers (16 x 256 MiB takes 6 minutes)",
    )
    parser.add_argument("--py-max", type=int, default=4, help="Python receivers up to N")
    args = parser.parse_args()
    why = netns_unavailable()
    if why:
        print(f"bench/multicast.py: {why}; run it as root", file=sys.stderr)
        return 2
    size = (args.size_mib or (32 if args.quick else 256)) * 2**20
    counts = [int(x) for x in (args.receivers or ("1,4" if args.quick else "1,4,8,16")).split(",")]
    tools = args.tools.split(",")
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="ndmc-bench-") as tmp:
        work = Path(tmp)
        os.chmod(work, 0o755)
        image = work / "image.img"
        print(
            f"image: {size >> 20} MiB; sender link {args.rate:g} Mbit/s (tbf); "
            f"receivers {counts}; tools {tools}",
            flush=True,
        )
        sha256 = make_image(image, size)
        subprocess.run(
            [
                "gcc",
                "-static",
                "-O2",
                "-o",
                work / "ndmc-recv",
                REPO / "bootfiles/agent/ndmc-recv.c",
            ],
            check=True,
        )
        timeout = max(60.0, size * 8 / (args.rate * 1e6) * 6)
        try:
            for n in counts:
                net = Rig(n, rate_mbit=args.rate, tag="x").up()
                try:
                    bench = Bench(image, sha256, work, net, n, timeout)
                    for tool in tools:
                        if tool == "http" and n > args.http_max:
                            continue
                        if tool == "netdeploy-py" and n > args.py_max:
                            continue
                        run = {
                            "udpcast": bench.udpcast,
                            "uftp": bench.uftp,
                            "http": bench.http,
                            "netdeploy-c": bench.netdeploy_c,
                            "netdeploy-py": bench.netdeploy_py,
                        }[tool]
                        r = run()
                        results.append(r)
                        print(
                            f"  {n:>2} receivers  {tool:<13} wall {fmt(r.wall, '.2f')} s  "
                            f"sent {fmt(r.sent_ratio, '.3f')}x  cpu {fmt(r.cpu, '.2f')} s  "
                            f"verified {r.verified}/{n}",
                            flush=True,
                        )
                finally:
                    net.down()
        except KeyboardInterrupt:
            print("\ninterrupted: namespaces and processes removed", file=sys.stderr)
            report(results)
            return 130
    return 0 if report(results) else 1


if __name__ == "__main__":
    sys.exit(main())
