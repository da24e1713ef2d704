"""Hostile load (issue 15): the Done-when figures, each against a real `netdeploy serve`.

Scenarios (``--only`` picks some; all by default), each printed with the figure main
(b6782cf) had, as measured in issue 15, beside this run's:

- ``admission``: 32 clients that stop reading take every image slot first; then 200
  simulated agents (each from its own loopback address, the agent's protocol: 503 → wait
  ``Retry-After`` → ask again; verify the sha256) against ``max_image_streams = 32``;
- ``tftp``: RSS per netascii transfer of a 16 MiB file (50 transfers held open at once);
  a legitimate client fetching during a 2,000-RRQ flood (2,000 source addresses, never
  ACKed, ``timeout=255``);
- ``fanout``: agent report throughput with 100 dashboards (SSE streams) open vs none, in
  one run;
- ``discovery``: 20,000 unknown-MAC boots: rows added to the store, dashboard page weight.

The 1,000-node rollout with 100 dashboards is ``./dev bench rollout --dashboards 100``.

    ./dev bench hostile [--only admission,tftp,fanout,discovery] [--agents 200]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import socket
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from netdeploy.config import load_config
from netdeploy.images.actions import AddRequest, add_image
from netdeploy.store import open_store
from tests.integration.rollout_support import (
    ADMIN_TOKEN,
    Agent,
    lab_config,
    mac_of,
    prepare_nodes,
    start_server_process,
)

MIB = 1024 * 1024


def configure(state: Path, nodes: int, http: str = "", extra: str = "") -> Path:
    config = lab_config(state, nodes, gate_poll_timeout=60)
    text = config.read_text().replace("[http]\n", f"[http]\n{http}\n") + extra
    config.write_text(text)
    return config


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def row(what: str, before: str, now: str) -> None:
    print(f"  {what:<62} {before:>22} {now:>22}")


def header(title: str) -> None:
    print(f"\n{title}")
    row("", "main b6782cf (issue)", "this run")


# ------------------------------------------------------------------------------- admission


async def add_bench_image(config: Path, size: int) -> str:
    await prepare_nodes(config, state="registered")  # imports the config into the store
    cfg = load_config(config)
    source = config.parent / "img-source.raw"
    data = os.urandom(size)
    source.write_bytes(data)
    _, sessions = await open_store(cfg.database_url)
    facts = {"sysprep": "reseal", "without_cluster_service": True, "no_shared_storage": True}
    await add_image(cfg, sessions, AddRequest("img", source, **facts))  # type: ignore[arg-type]
    return hashlib.sha256(data).hexdigest()


async def admission(workdir: Path, agents: int) -> None:
    state = workdir / "admission"
    http = "max_image_streams = 32\nimage_retry_after = 1\nstall_timeout = 5\nimage_queue_wait = 2"
    config = configure(state, 1, http)
    size = 4 * MIB
    sha = await add_bench_image(config, size)
    server = start_server_process(config, log=state / "serve.log")
    port = int(server.url.rsplit(":", 1)[1])
    stalled = []
    try:
        for i in range(32):  # they take every slot (one address each), then stop reading
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
            sock.bind((f"127.0.2.{1 + i}", 0))
            sock.connect(("127.0.0.1", port))
            sock.sendall(b"GET /images/img HTTP/1.1\r\nHost: x\r\n\r\n")
            stalled.append(sock)
        await asyncio.sleep(1)
        positions: list[int] = []
        outcome: dict[str, int] = {"verified": 0, "failed": 0}
        waits: list[float] = []

        async def agent(i: int) -> None:
            address = f"127.0.{10 + i // 250}.{1 + i % 250}"
            connector = aiohttp.TCPConnector(local_addr=(address, 0), force_close=True)
            timeout = aiohttp.ClientTimeout(total=600)
            started = time.monotonic()
            async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
                for _ in range(1000):
                    async with session.get(f"{server.url}/images/img") as r:
                        if r.status == 503:
                            positions.append(int(r.headers.get("X-Queue-Position", "0")))
                            await asyncio.sleep(float(r.headers.get("Retry-After", "5")))
                            continue
                        if r.status != 200:
                            outcome["failed"] += 1
                            return
                        digest = hashlib.sha256()
                        async for block in r.content.iter_chunked(256 * 1024):
                            digest.update(block)
                    ok = digest.hexdigest() == sha
                    outcome["verified" if ok else "failed"] += 1
                    waits.append(time.monotonic() - started)
                    return
            outcome["failed"] += 1

        started = time.monotonic()
        await asyncio.gather(*(agent(i) for i in range(agents)))
        elapsed = time.monotonic() - started
    finally:
        for sock in stalled:
            sock.close()
        server.kill()
    header(f"admission: 32 non-reading clients, then {agents} agents, max_image_streams = 32")
    row("agents verified", "0 (all 503 for 150 s)*", f"{outcome['verified']} of {agents}")
    row("agents failed", f"{agents} (fail after ~15 s)*", f"{outcome['failed']}")
    row("highest place in line told", "none", f"{max(positions or [0])}")
    row("503 answers (each: queued + place)", "-", f"{len(positions)}")
    row("longest wait to a verified image (s)", "-", f"{max(waits or [0]):.1f}")
    row("whole run (s)", "-", f"{elapsed:.1f}")
    print("  * issue 15: the agent failed after ~15 s of 503; 32 stalled readers held every slot")


# ------------------------------------------------------------------------------------ tftp


def rrq(name: str, mode: str, **options: object) -> bytes:
    body = name.encode() + b"\0" + mode.encode() + b"\0"
    for key, value in options.items():
        body += key.encode() + b"\0" + str(value).encode() + b"\0"
    return b"\0\x01" + body


async def fetch_octet(port: int, name: str, source: str) -> bytes:
    """A lockstep RFC 1350 read from ``source`` (no options)."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((source, 0))
    sock.setblocking(False)
    data = bytearray()
    try:
        for _ in range(5):  # the RRQ may meet a full pool: retransmit it like a PXE ROM
            await loop.sock_sendto(sock, rrq(name, "octet"), ("127.0.0.1", port))
            try:
                packet, peer = await asyncio.wait_for(loop.sock_recvfrom(sock, 70000), 1.0)
                break
            except TimeoutError:
                continue
        else:
            raise RuntimeError("no answer to 5 RRQs")
        while True:
            block = packet[2:4]
            data += packet[4:]
            await loop.sock_sendto(sock, b"\0\x04" + block, peer)
            if len(packet) - 4 < 512:
                return bytes(data)
            packet, peer = await asyncio.wait_for(loop.sock_recvfrom(sock, 70000), 5.0)
    finally:
        sock.close()


async def tftp(workdir: Path) -> None:
    state = workdir / "tftp"
    boot = state / "bootfiles"
    boot.mkdir(parents=True)
    line = b"netdeploy netascii line, CR LF on the wire\n"
    (boot / "big.txt").write_bytes(line * (16 * MIB // len(line)))
    (boot / "small.bin").write_bytes(os.urandom(3000))
    config = configure(state, 1)
    text = config.read_text().replace(f'bootfiles_dir = "{Path(__file__).resolve().parents[1]}'
                                      f'/bootfiles"', f'bootfiles_dir = "{boot}"')  # fmt: skip
    config.write_text(text)
    server = start_server_process(config, log=state / "serve.log")
    tftp_port = int(server.proc.args[-1])
    loop = asyncio.get_running_loop()
    try:
        await asyncio.sleep(1)
        holders = []
        base = 0
        for i in range(51):  # 50 netascii transfers, each ACKing block 1 then holding
            if i == 1:  # after the first: the file is in the (shared) cache
                await asyncio.sleep(0.5)
                base = rss_kib(server.proc.pid)
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((f"127.0.3.{1 + i}", 0))
            sock.setblocking(False)
            await loop.sock_sendto(sock, rrq("big.txt", "netascii"), ("127.0.0.1", tftp_port))
            packet, peer = await asyncio.wait_for(loop.sock_recvfrom(sock, 70000), 10)
            await loop.sock_sendto(sock, b"\0\x04" + packet[2:4], peer)
            holders.append(sock)
        await asyncio.sleep(0.5)
        per_transfer = (rss_kib(server.proc.pid) - base) / 50
        for sock in holders:
            sock.close()
        # the flood: 2,000 addresses, RRQ with timeout=255, never an ACK
        flood = []
        for i in range(2000):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((f"127.1.{i // 250}.{1 + i % 250}", 0))
            sock.setblocking(False)
            flood.append(sock)
        started = time.monotonic()
        for sock in flood:
            await loop.sock_sendto(
                sock, rrq("small.bin", "octet", timeout=255, blksize=1468), ("127.0.0.1", tftp_port)
            )
        sent = time.monotonic()
        got = await fetch_octet(tftp_port, "small.bin", "127.0.9.9")
        served = time.monotonic() - sent
        assert got == (boot / "small.bin").read_bytes()
        for sock in flood:
            sock.close()
    finally:
        server.kill()
    header("tftp")
    row("RSS per netascii transfer of a 16 MiB file", "16.4 MiB", f"{per_transfer / 1024:.2f} MiB")
    row("flood of 2,000 unACKed RRQs, timeout=255: sent in (s)", "-", f"{sent - started:.2f}")
    row("a legitimate client served during it within (s)", "locked out 25.5 min", f"{served:.2f}")


# ---------------------------------------------------------------------------------- fanout


async def fanout(
    workdir: Path, nodes: int = 200, dashboards: int = 100, seconds: float = 8
) -> None:
    state = workdir / "fanout"
    config = configure(state, nodes)
    tokens = await prepare_nodes(config, state="pxe")
    server = start_server_process(config, log=state / "serve.log")
    rates = {}
    try:
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as http:
            agents = [
                Agent(http, server.url, mac_of(i), tokens[mac_of(i)]) for i in range(1, nodes + 1)
            ]

            async def reports(duration: float) -> float:
                count = 0
                deadline = time.monotonic() + duration

                async def one(agent: Agent) -> None:
                    nonlocal count
                    step = 0
                    while time.monotonic() < deadline:
                        status, body = await agent.event("imaging", progress=step % 100)
                        if status != 200:
                            raise RuntimeError(f"report refused: {status} {body}")
                        count += 1
                        step += 1

                started = time.monotonic()
                await asyncio.gather(*(one(a) for a in agents))
                return count / (time.monotonic() - started)

            await reports(2)  # warm up: every node imaging
            cpu = cpu_seconds(server.proc.pid), time.process_time()
            rates["none"] = await reports(seconds)
            cpu_none = cpu_seconds(server.proc.pid) - cpu[0], time.process_time() - cpu[1]
            received = [0] * dashboards
            stop = asyncio.Event()

            async def dashboard(i: int) -> None:
                headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
                local = aiohttp.TCPConnector(local_addr=(f"127.0.4.{1 + i}", 0))  # a browser each
                async with (
                    aiohttp.ClientSession(connector=local) as own,
                    own.get(f"{server.url}/api/events", headers=headers) as r,
                ):
                    while not stop.is_set():
                        chunk = await r.content.readany()
                        if not chunk:
                            return
                        received[i] += chunk.count(b"\ndata: ") + chunk.startswith(b"data: ")

            readers = [asyncio.create_task(dashboard(i)) for i in range(dashboards)]
            await asyncio.sleep(1)
            cpu = cpu_seconds(server.proc.pid), time.process_time()
            rates["with"] = await reports(seconds)
            cpu_with = cpu_seconds(server.proc.pid) - cpu[0], time.process_time() - cpu[1]
            stop.set()
            for task in readers:
                task.cancel()
            await asyncio.gather(*readers, return_exceptions=True)
    finally:
        server.kill()
    header(f"fan-out: {nodes} agents reporting, {dashboards} dashboards open vs none (one run)")
    row("agent reports/s, no dashboard", "791", f"{rates['none']:.0f}")
    row(f"agent reports/s, {dashboards} dashboards", "93", f"{rates['with']:.0f}")
    row("ratio (bar: >= 0.7)", "0.12", f"{rates['with'] / rates['none']:.2f}")
    row("events delivered per dashboard (mean)", "-", f"{sum(received) / dashboards:.0f}")
    n_none, n_with = rates["none"] * seconds, rates["with"] * seconds
    row("server CPU per report, none / with (µs)", "-",
        f"{cpu_none[0] / n_none * 1e6:.0f} / {cpu_with[0] / n_with * 1e6:.0f}")  # fmt: skip
    row("bench client CPU per report, none / with (µs)", "-",
        f"{cpu_none[1] / n_none * 1e6:.0f} / {cpu_with[1] / n_with * 1e6:.0f}")  # fmt: skip


# ------------------------------------------------------------------------------- discovery


async def discovery(workdir: Path, macs: int = 20_000) -> None:
    state = workdir / "discovery"
    config = configure(state, 3, extra="[dashboard]\npublic_read = true\n")
    server = start_server_process(config, log=state / "serve.log")
    db = state / "netdeploy.db"

    def rows() -> tuple[int, int]:
        with sqlite3.connect(db) as conn:
            nodes = conn.execute("SELECT count(*) FROM nodes").fetchone()[0]
            events = conn.execute("SELECT count(*) FROM events").fetchone()[0]
        return nodes, events

    try:
        before = rows()
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as http:
            failed = 0

            async def boot(i: int) -> None:
                nonlocal failed
                mac = f"02:00:00:{(i >> 16) & 255:02x}:{(i >> 8) & 255:02x}:{i & 255:02x}"
                async with http.get(f"{server.url}/boot.ipxe") as r:
                    failed += r.status != 200
                async with http.get(f"{server.url}/boot/{mac}.ipxe") as r:
                    failed += r.status != 200
                    await r.read()

            started = time.monotonic()
            for start in range(0, macs, 500):
                await asyncio.gather(*(boot(i) for i in range(start, min(macs, start + 500))))
            elapsed = time.monotonic() - started
            after = rows()
            t0 = time.monotonic()
            async with http.get(f"{server.url}/") as r:
                page = await r.read()
            page_s = time.monotonic() - t0
    finally:
        server.kill()
    header(f"discovery: {macs:,} unknown MACs boot (each /boot.ipxe, then its own script)")
    row("node rows added", "21,986", f"{after[0] - before[0]:,}")
    row("event rows added", "45,972", f"{after[1] - before[1]:,}")
    row("requests failed", "-", f"{failed}")
    row("boots per second", "-", f"{macs / elapsed:.0f}")
    row("dashboard page", "14.8 MB / 2.1 s", f"{len(page) / 1024:.0f} KiB / {page_s:.2f} s")


async def main(only: list[str], agents: int) -> None:
    with tempfile.TemporaryDirectory(prefix="nd-hostile-") as tmp:
        workdir = Path(tmp)
        if "admission" in only:
            await admission(workdir, agents)
        if "tftp" in only:
            await tftp(workdir)
        if "fanout" in only:
            await fanout(workdir)
        if "discovery" in only:
            await discovery(workdir)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="admission,tftp,fanout,discovery")
    parser.add_argument("--agents", type=int, default=200)
    args = parser.parse_args()
    asyncio.run(main(args.only.split(","), args.agents))
