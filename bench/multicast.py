"""Multicast image distribution, side by side: udpcast, uftp, N x HTTP and netdeploy.

The rig of issue 8: network namespaces on one bridge (MTU 1500), the sender's link limited
to 100 Mbit/s with tc tbf, one image sent to N receivers by each tool in turn, repeated
--reps times with the order of the tools reversed every other repetition (the first tool
of a repetition meets a colder page cache and a differently loaded host than the last).
Printed per run: wall time (receivers started -> every receiver done), bytes the sender's
interface sent / image size, sender CPU seconds, verified copies (sha256 of every output),
and for netdeploy where the time went (waiting for receivers, first pass, repair rounds,
the rate controller's lowest rate). Then, per receiver count, every repetition's ratio of
netdeploy's wall time to uftp's of the same repetition, with min / median / max, and the
issue's bar: wall <= 0.85x uftp in every repetition, sender bytes <= 1.03x the image,
sender CPU <= 2x udpcast's (when udpcast ran).

    sudo .venv/bin/python bench/multicast.py            # 256 MiB, 16 receivers, 3 reps
    sudo .venv/bin/python bench/multicast.py --receivers 1,4,8,16 \
        --tools udpcast,uftp,http,netdeploy-c,netdeploy-py
    sudo .venv/bin/python bench/multicast.py --quick    # 32 MiB, 4 receivers, 1 rep
    sudo .venv/bin/python bench/multicast.py --load 2   # with 2 busy-looping processes beside

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
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.integration.mc_harness import IMAGE, ndmc_recv_shell_argv, receive_argv  # noqa: E402
from tests.integration.mc_netns import SENDER_IP, Rig, netns_unavailable, receiver_ip, wait_line  # noqa: E402


@dataclass
class Result:
    tool: str
    receivers: int
    wall: float | None = None
    sent_ratio: float | None = None
    cpu: float | None = None
    verified: int = 0
    note: str = ""
    rep: int = 0
    phases: str = ""
    start: float = 0.0  # monotonic: receivers about to be spawned
    spawned: float = 0.0  # ... all spawned


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
        start = result.start = time.monotonic()
        sender = None
        if sender_argv:
            sender = self.net.spawn(
                self.net.sender, sender_argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
        procs = self.receivers(argv_for, outs)
        result.spawned = time.monotonic()
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
        # the demo config's image (the receivers ask for it): netdeploy serves the bench file as it
        os.link(self.image, state / "state" / "images" / f"{IMAGE}.img")
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
                f"log={self.work / 'nd.log'}",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        url = wait_line(server, b"READY ", timeout=120).split()[0]
        # receivers that are not nodes join with the admin token (docs/security.md)
        admin = (state / "state" / "admin-token").read_text().strip()

        def c_receiver(i: int, out: Path) -> list[str]:
            return ndmc_recv_shell_argv(self.ndmc_recv, url, f"r{i}", admin, out)

        def py_receiver(i: int, out: Path) -> list[str]:
            return receive_argv(url, out, "--name", f"r{i}", "--quiet", token=admin)

        tool = f"netdeploy-{receiver}"
        result = self.measure(tool, None, c_receiver if receiver == "c" else py_receiver)
        reap(server, 60)
        if os.environ.get("ND_BENCH_LOG") and (self.work / "nd.log").exists():
            print((self.work / "nd.log").read_text()[-4000:])
        if report.exists():
            summary = json.loads(report.read_text())
            result.cpu = summary["cpu_seconds"]
            if summary["finished"]:
                session = summary["finished"][0]
                clock = summary["clock"].get(f"{session['id']:08x}", {})
                result.phases = phases(session, clock, result)
        return result


def phases(session: dict, clock: dict, result: Result) -> str:
    """Where a netdeploy session's time went: its status JSON and the server's monotonic
    clock (one clock for every namespace) against the bench's."""
    p = session.get("phases", {})
    slowest = max((r["done_after"] or 0 for r in session["receivers"]), default=0)
    states = sorted({r["state"] for r in session["receivers"]})
    startup = tail = 0.0
    if clock.get("first_join_at") and clock.get("finished_at") and result.wall:
        startup = clock["first_join_at"] - result.start
        tail = result.start + result.wall - clock["finished_at"]
    return (
        f"spawn {result.spawned - result.start:.2f} first join {startup:.2f} "
        f"wait {p.get('waiting', 0):.2f} pass {p.get('pass', 0):.2f} "
        f"repair {p.get('repair', 0):.2f} ({session['round']} rounds, "
        f"{session['repair_slices']} slices) last done {slowest:.2f} "
        f"rate min {session.get('rate_min_mbit', 0):g} Mbit/s "
        f"({session.get('backoffs', 0)} backoffs) {'/'.join(states)}; "
        f"end to exit {tail:.2f}"
    )


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


def spread(values: list[float], spec: str = ".2f") -> str:
    if not values:
        return "-"
    return (
        f"min {min(values):{spec}} median {statistics.median(values):{spec}} "
        f"max {max(values):{spec}}"
    )


def report(results: list[Result], bar: float) -> bool:
    """Every run, then per receiver count and tool: wall spread and per-repetition ratios."""
    print(
        f"\n{'receivers':>9} {'rep':>3} {'tool':<14} {'wall s':>8} {'sent/img':>9} "
        f"{'cpu s':>7} {'verified':>8}"
    )
    for r in results:
        print(
            f"{r.receivers:>9} {r.rep:>3} {r.tool:<14} {fmt(r.wall, '8.2f')} "
            f"{fmt(r.sent_ratio, '9.3f')} {fmt(r.cpu, '7.2f')} {r.verified:>5}/{r.receivers:<2}"
            + (f"  {r.phases}" if r.phases else "")
            + (f"  ({r.note})" if r.note else "")
        )
    ok = True
    print()
    for n in sorted({r.receivers for r in results}):
        runs = [r for r in results if r.receivers == n]
        for tool in dict.fromkeys(r.tool for r in runs):
            mine = [r for r in runs if r.tool == tool]
            walls = [r.wall for r in mine if r.wall is not None]
            line = f"{n:>2} receivers {tool:<13} wall {spread(walls)} s"
            if tool.startswith("netdeploy"):
                ratios, cpu_x = [], []
                for r in mine:
                    same = {p.tool: p for p in runs if p.rep == r.rep}
                    uftp, udpcast = same.get("uftp"), same.get("udpcast")
                    if uftp and uftp.wall and r.wall:
                        ratios.append(r.wall / uftp.wall)
                    if udpcast and udpcast.cpu and r.cpu is not None:
                        cpu_x.append(r.cpu / udpcast.cpu)
                good = all(r.verified == r.receivers and (r.sent_ratio or 9) <= 1.03 for r in mine)
                bar_ok = good and all(x <= bar for x in ratios) and all(x <= 2.0 for x in cpu_x)
                line += (
                    f"; vs uftp {' '.join(f'{x:.2f}x' for x in ratios) or '-'}"
                    f" ({spread(ratios)})"
                    + (f"; cpu vs udpcast {spread(cpu_x)}" if cpu_x else "")
                    + (
                        f"  {'PASS' if bar_ok else 'MISS'} (bar {bar:.2f}x in every rep)"
                        if ratios
                        else f"  {'ok' if good else 'MISS'} (no uftp run: no wall bar)"
                    )
                )
                ok = ok and (bar_ok or tool != "netdeploy-c" or not ratios) and good
            print(line)
    return ok


def start_load(n: int) -> list[subprocess.Popen[bytes]]:
    """``n`` busy-looping processes: the other engineers' jobs on a shared host."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="32 MiB, 4 receivers, 1 rep")
    parser.add_argument("--size-mib", type=int, default=None)
    parser.add_argument("--receivers", default=None, help="comma list, default 16")
    parser.add_argument("--reps", type=int, default=None, help="repetitions (default 3)")
    parser.add_argument("--rate", type=float, default=100.0, help="sender link, Mbit/s")
    parser.add_argument("--bar", type=float, default=0.85, help="netdeploy/uftp wall bar")
    parser.add_argument("--load", type=int, default=0, help="busy-looping processes beside")
    parser.add_argument(
        "--tools",
        default="uftp,netdeploy-c",
        help="comma list of udpcast,uftp,http,netdeploy-c,netdeploy-py (default uftp,netdeploy-c)",
    )
    parser.add_argument(
        "--http-max",
        type=int,
        default=4,
        help="run N x HTTP only up to this many receivers (16 x 256 MiB takes 6 minutes)",
    )
    parser.add_argument("--py-max", type=int, default=16, help="Python receivers up to N")
    args = parser.parse_args()
    why = netns_unavailable()
    if why:
        print(f"bench/multicast.py: {why}; run it as root", file=sys.stderr)
        return 2
    missing = [t for t in ("uftp", "uftpd", "udp-sender", "curl", "gcc") if not shutil.which(t)]
    if missing:
        print(f"bench/multicast.py: install {' '.join(missing)} first", file=sys.stderr)
        return 2
    size = (args.size_mib or (32 if args.quick else 256)) * 2**20
    counts = [int(x) for x in (args.receivers or ("4" if args.quick else "16")).split(",")]
    reps = args.reps or (1 if args.quick else 3)
    tools = args.tools.split(",")
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    results: list[Result] = []
    load = start_load(args.load)
    with tempfile.TemporaryDirectory(prefix="ndmc-bench-") as tmp:
        work = Path(tmp)
        os.chmod(work, 0o755)
        image = work / "image.img"
        print(
            f"image: {size >> 20} MiB; sender link {args.rate:g} Mbit/s (tbf); "
            f"receivers {counts}; tools {tools}; {reps} reps, order reversed every other; "
            f"{args.load} busy processes beside; load average {os.getloadavg()[0]:.2f}",
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
                    for rep in range(reps):
                        for tool in tools if rep % 2 == 0 else tools[::-1]:
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
                            r.rep = rep + 1
                            results.append(r)
                            print(
                                f"  {n:>2} receivers rep {rep + 1} {tool:<13} "
                                f"wall {fmt(r.wall, '.2f')} s  sent {fmt(r.sent_ratio, '.3f')}x  "
                                f"cpu {fmt(r.cpu, '.2f')} s  verified {r.verified}/{n}  "
                                f"load {os.getloadavg()[0]:.2f}"
                                + (f"\n      {r.phases}" if r.phases else ""),
                                flush=True,
                            )
                finally:
                    net.down()
        except KeyboardInterrupt:
            print("\ninterrupted: namespaces and processes removed", file=sys.stderr)
            report(results, args.bar)
            return 130
        finally:
            for proc in load:
                proc.kill()
                proc.wait()
    return 0 if report(results, args.bar) else 1


if __name__ == "__main__":
    sys.exit(main())
