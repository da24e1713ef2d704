"""The two multicast receivers side by side: the media's C ndmc-recv and `netdeploy receive`.

N receivers of one kind take one loopback session together (paced at --rate Mbit/s, an
image of --size-mib), then N of the other kind the next session; the order alternates
every repetition. Printed per run: wall time (receivers started -> the last one exited,
sha256 verified), their CPU seconds together (wait4's rusage), ms of CPU per MiB each;
then per repetition the Python / C ratios and their min / median / max. The bar of issue
20: the Python receiver's wall time within 2x the C receiver's.

    .venv/bin/python bench/multicast_receiver_cpu.py [--receivers 4] [--size-mib 32] \
        [--rate 100] [--reps 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.conftest import sha256_of  # noqa: E402
from tests.integration.mc_harness import (  # noqa: E402
    Server,
    join_url,
    ndmc_recv_argv,
    receive_argv,
    running_server,
)


async def run(argv: list[str]) -> tuple[float, float, int]:
    """Start ``argv``; return (exit time, CPU s, exit status) with CPU from wait4's rusage."""
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            return (
                time.monotonic(),
                usage.ru_utime + usage.ru_stime,
                os.waitstatus_to_exitcode(status),
            )
        await asyncio.sleep(0.01)


async def c_argv(server: Server, binary: Path, name: str, out: Path) -> list[str]:
    """What the agent does: join for command-line words (its shell's wget), then ndmc-recv."""
    request = urllib.request.Request(
        join_url(server.url, name), method="POST", headers=server.admin
    )
    words = await asyncio.to_thread(lambda: urllib.request.urlopen(request).read().decode())
    return ndmc_recv_argv(binary, words.split(), out)


def py_argv(server: Server, name: str, out: Path) -> list[str]:
    return receive_argv(server.url, out, "--name", name, "--quiet", token=server.ctx.admin_token)


async def one_kind(
    server: Server, kind: str, n: int, binary: Path, work: Path
) -> tuple[float, float, bool]:
    """``n`` receivers of ``kind`` take one session; (wall, CPU together, all verified)."""
    outs = [work / f"{kind}-{i}.img" for i in range(n)]
    start = time.monotonic()
    if kind == "c":  # the join is part of the receiver's time, as the agent's wget is
        argvs = await asyncio.gather(
            *(c_argv(server, binary, f"c{i}", out) for i, out in enumerate(outs))
        )
    else:
        argvs = [py_argv(server, f"py{i}", out) for i, out in enumerate(outs)]
    ends = await asyncio.gather(*(run(argv) for argv in argvs))
    wall = max(end for end, _, _ in ends) - start
    cpu = sum(c for _, c, _ in ends)
    ok = all(status == 0 for _, _, status in ends) and all(
        sha256_of(out) == server.sha256 for out in outs
    )
    for out in outs:
        out.unlink(missing_ok=True)
    return wall, cpu, ok


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--receivers", type=int, default=4)
    parser.add_argument("--size-mib", type=int, default=32)
    parser.add_argument("--rate", type=float, default=100.0, help="Mbit/s")
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    size = args.size_mib * 2**20
    rows: list[tuple[int, str, float, float, bool]] = []
    with tempfile.TemporaryDirectory(prefix="ndmc-cpu-") as tmp:
        work = Path(tmp)
        binary = work / "ndmc-recv"
        subprocess.run(
            ["gcc", "-static", "-O2", "-o", binary, REPO / "bootfiles/agent/ndmc-recv.c"],
            check=True,
        )
        async with running_server(
            work,
            size=size,
            min_receivers=args.receivers,
            max_wait=0,
            max_rate=args.rate,
        ) as server:
            print(
                f"{args.receivers} receivers of each kind, {args.size_mib} MiB at "
                f"{args.rate:g} Mbit/s on loopback, {args.reps} reps; "
                f"load average {os.getloadavg()[0]:.2f}",
                flush=True,
            )
            for rep in range(args.reps):
                for kind in ("c", "python") if rep % 2 == 0 else ("python", "c"):
                    await asyncio.sleep(0.5)  # the previous session ends first
                    wall, cpu, ok = await one_kind(server, kind, args.receivers, binary, work)
                    rows.append((rep + 1, kind, wall, cpu, ok))
                    print(
                        f"  rep {rep + 1} {kind:<6} wall {wall:6.2f} s  cpu {cpu:6.2f} s  "
                        f"{1000 * cpu / args.receivers / args.size_mib:6.2f} ms/MiB each  "
                        f"verified {ok}  load {os.getloadavg()[0]:.2f}",
                        flush=True,
                    )
    walls, cpus = [], []
    for rep in range(1, args.reps + 1):
        by = {kind: (wall, cpu) for r, kind, wall, cpu, _ in rows if r == rep}
        walls.append(by["python"][0] / by["c"][0])
        cpus.append(by["python"][1] / by["c"][1])

    def spread(xs: list[float]) -> str:
        return f"min {min(xs):.2f} median {statistics.median(xs):.2f} max {max(xs):.2f}"

    ok = all(r[4] for r in rows)
    passed = ok and max(walls) <= 2.0
    print(f"python / C wall: {' '.join(f'{x:.2f}x' for x in walls)} ({spread(walls)})")
    print(f"python / C CPU:  {' '.join(f'{x:.2f}x' for x in cpus)} ({spread(cpus)})")
    print(f"{'PASS' if passed else 'MISS'} (bar: wall <= 2.0x in every rep, every copy verified)")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
