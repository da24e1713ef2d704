"""CPU per MiB of the two multicast receivers: the media's C ndmc-recv and `netdeploy receive`.

The measured reason of docs/decisions/0005: one loopback session per receiver, paced at
--rate Mbit/s, an image of --size-mib; each receiver's user+system CPU from wait4.

    .venv/bin/python bench/multicast_receiver_cpu.py [--size-mib 128] [--rate 400]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.integration.mc_harness import IMAGE, running_server, sha256_of  # noqa: E402


async def run(argv: list[str]) -> tuple[float, float, int]:
    """Start ``argv``; return (wall s, CPU s, exit status) with CPU from wait4's rusage."""
    start = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            return (
                time.monotonic() - start,
                usage.ru_utime + usage.ru_stime,
                os.waitstatus_to_exitcode(status),
            )
        await asyncio.sleep(0.02)


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=128)
    parser.add_argument("--rate", type=float, default=400.0, help="Mbit/s")
    args = parser.parse_args()
    size = args.size_mib * 2**20
    with tempfile.TemporaryDirectory(prefix="ndmc-cpu-") as tmp:
        work = Path(tmp)
        binary = work / "ndmc-recv"
        subprocess.run(
            ["gcc", "-static", "-O2", "-o", binary, REPO / "bootfiles/agent/ndmc-recv.c"],
            check=True,
        )
        subprocess.run(["strip", binary], check=True)
        binary_size = os.path.getsize(binary)
        async with running_server(
            work, size=size, min_receivers=1, max_wait=0, max_rate=args.rate
        ) as server:
            rows = []
            for name in ("c", "python"):
                out = work / f"{name}.img"
                if name == "c":
                    url = f"{server.url}/api/multicast/join?image={IMAGE}&name=c&format=args"
                    request = urllib.request.Request(url, method="POST", headers=server.admin)
                    words = await asyncio.to_thread(
                        lambda r=request: urllib.request.urlopen(r).read().decode().split()
                    )
                    argv = [str(binary), *words, "--out", str(out), "--quiet"]
                else:
                    argv = [
                        sys.executable,
                        "-m",
                        "netdeploy",
                        "receive",
                        "--server",
                        server.url,
                        "--image",
                        IMAGE,
                        "--out",
                        str(out),
                        "--name",
                        "py",
                        f"--token={server.ctx.admin_token}",  # may begin with "-"
                        "--quiet",
                    ]
                wall, cpu, status = await run(argv)
                ok = status == 0 and sha256_of(out) == server.sha256
                rows.append((name, wall, cpu, ok))
                out.unlink()
                await asyncio.sleep(0.5)  # let the session end before the next one
    mib = size / 2**20
    print(f"{'receiver':<8} {'wall s':>7} {'cpu s':>6} {'cpu ms/MiB':>10} verified")
    for name, wall, cpu, ok in rows:
        print(f"{name:<8} {wall:7.2f} {cpu:6.2f} {1000 * cpu / mib:10.2f} {ok}")
    print(f"C receiver: static, stripped: {binary_size} bytes")
    c, py = rows[0][2], rows[1][2]
    print(f"python / C CPU: {py / c:.1f}x")
    return 0 if all(r[3] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
