"""Rollout core under load: 1,000 simulated nodes against a real `netdeploy serve`.

One asyncio client process drives every node through the whole state machine over HTTP:

1. reports: each node sends imaging 0/25/50/75/100 % and imaged (6 reports each), all at once,
   on a bare keep-alive connection of its own (request bytes: the client must not cost as
   much as the server, docs/decisions/0018); events/s sustained and p50/p99 latency;
2. gate: every held node parks on ``GET /api/nodes/{mac}/gate``; the first node reports
   healthy; time until *every* long-poll has returned released (policy ``waves:N``, N = all);
3. join: every released node reports starting and joined.

There is no external peer for this, so the run compares netdeploy's two designs side by side:
``naive`` (one transaction and commit per report) and ``group`` (the single writer batching
concurrent reports into one transaction; docs/decisions/0004). ``--stores sqlite,postgresql``
runs each mode on both stores (PostgreSQL: a private throwaway server from tests/pgserver.py;
docs/decisions/0008). ``--reps N`` repeats every run and prints the min and the median of
the repetitions (never the best alone).

``--release-held 10000`` adds the release bar of issue 20: that many nodes prepared straight
into ``held``, each parked on the gate, the first node's healthy report releases them all in
one wave (docs/decisions/0014); printed: health → every long-poll answered, and the writer's
own time for that batch. Bars: >= 5,000 reports/s at 1,000 nodes on a quiet machine; the
release of 10,000 held nodes in < 1 s.

    ./dev bench rollout [--nodes 1000] [--modes naive,group] [--stores sqlite,postgresql]
                        [--reps 3] [--release-held 10000] [--skip-reports]
                        [--dashboards 100]   (live SSE streams open the whole run; issue 15)
                        [--pin]   (server on CPU 0; this client and PostgreSQL on the others)
                        [--loops asyncio,uvloop]   (the server's event loop, the runs
                                                    alternating; docs/decisions/0020)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import re
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from sqlalchemy import update

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from netdeploy.config import load_config
from netdeploy.store import open_store
from netdeploy.store.models import Cluster, Node, utcnow
from tests import pgserver
from tests.integration.credentials import phase_for
from tests.integration.rollout_support import (
    ADMIN,
    Agent,
    ServerProcess,
    lab_config,
    mac_of,
    prepare_nodes,
    start_server_process,
)


class Timed:
    """Latency of every request of one phase."""

    def __init__(self) -> None:
        self.latencies: list[float] = []

    async def __call__(self, coro):  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        status, body = await coro
        self.latencies.append(time.perf_counter() - started)
        if status != 200:
            raise RuntimeError(f"HTTP {status}: {body}")
        return body

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def cpu_seconds(pid: int) -> float:
    """User+system CPU of a process so far (/proc/PID/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int | None) -> float:
    """CPU of a PostgreSQL postmaster and its backends (SQLite's work is inside the server)."""
    if pid is None:
        return 0.0
    total = cpu_seconds(pid)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                total += cpu_seconds(int(stat.parent.name))
    return total


SERVER_CPUS: set[int] | None = None  # --pin: the server's CPUs (the client keeps the others)


def pinned(server: ServerProcess) -> ServerProcess:
    """With --pin, move the server onto its own CPU: the agents of a real rollout are other
    machines, so the client here should not take the server's core."""
    if SERVER_CPUS is not None:
        os.sched_setaffinity(server.proc.pid, SERVER_CPUS)
    return server


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# an agent's report bodies, encoded once
BODIES = {
    (state, pct): json.dumps(
        {"state": state, **({} if pct is None else {"progress": pct})}
    ).encode()
    for state, pct in [*(("imaging", p) for p in (0, 25, 50, 75, 100)), ("imaged", None)]
}


def report_request(
    mac: str, token: str, state: str, pct: int | None = None, *, close: bool = False
) -> bytes:
    """One agent report as the bytes of an HTTP/1.1 request on a keep-alive connection, with
    the headers an aiohttp client call sent (the server parses as many as before); with
    ``close``, asking the server to close the connection after it, as busybox wget does."""
    body = BODIES[state, pct]
    head = (
        f"POST /api/nodes/{mac}/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        + ("Connection: close\r\n" if close else "")
        + f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
        "Accept: */*\r\nAccept-Encoding: gzip, deflate\r\n"
        "User-Agent: Python/3.11 aiohttp/3.14.5\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def warm_up(agents: list[Agent]) -> None:
    """Open every agent's keep-alive connection first, 100 at a time: aiohttp listens with a
    backlog of 128, and 1,000 simultaneous SYNs would measure TCP retransmits (1 s), not us.
    Each answer stays unread until all are open, so each agent has a connection of its own
    (read at once, the pool would hand the same 100 around and the run would accept the rest)."""
    gate = asyncio.Semaphore(100)

    async def one(agent: Agent) -> aiohttp.ClientResponse:
        async with gate:
            return await agent.http.get(
                f"{agent.url}/api/nodes/{agent.mac}/gate",
                params={"timeout": "0"},
                headers=agent.headers,
            )

    answers = await asyncio.gather(*(one(a) for a in agents))
    for resp in answers:
        body = await resp.read()
        if resp.status != 200:
            raise RuntimeError(f"warm-up gate check: {resp.status} {body[:200]!r}")


async def metric(http: aiohttp.ClientSession, url: str, name: str) -> float:
    async with http.get(f"{url}/metrics", headers=ADMIN) as resp:  # /metrics is not public
        text = await resp.text()
        if resp.status != 200:
            raise RuntimeError(f"/metrics: {resp.status} {text[:200]}")
    match = re.search(rf"^{name} (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


async def waiters(http: aiohttp.ClientSession, url: str) -> int:
    return int(await metric(http, url, "netdeploy_rollout_gate_waiters"))


async def open_dashboards(url: str, count: int, stop: asyncio.Event) -> list[asyncio.Task]:
    """``count`` dashboards' live streams (each from its own loopback address), read until
    ``stop``; what they received is thrown away."""

    async def one(i: int) -> None:
        local = aiohttp.TCPConnector(local_addr=(f"127.0.5.{1 + i % 250}", 0))
        headers = ADMIN
        async with (
            aiohttp.ClientSession(connector=local) as http,
            http.get(f"{url}/api/events", headers=headers) as r,
        ):
            while not stop.is_set() and await r.content.readany():
                pass

    tasks = [asyncio.create_task(one(i)) for i in range(count)]
    await asyncio.sleep(1)
    return tasks


async def run_mode(
    mode: str,
    held: int,
    workdir: Path,
    database: str | None = None,
    db_pid: int | None = None,
    dashboards: int = 0,
    fresh: bool = False,
    loop: str | None = None,
) -> dict[str, float]:
    state = workdir / mode
    config = lab_config(
        state,
        held + 1,
        release=f"waves:{held}",
        group_commit=mode == "group",
        gate_poll_timeout=120,
        sweep_interval=60,
        database=database,
    )
    # one client process plays every node, all from 127.0.0.1: lift the per-address cap
    text = config.read_text().replace("[http]\n", "[http]\nmax_connections_per_address = 8192\n")
    config.write_text(text)
    print(f"[{mode}] preparing {held + 1} nodes in {state}", file=sys.stderr)
    tokens = await prepare_nodes(config)
    server = pinned(start_server_process(config, log=state / "serve.log", **on_loop(loop)))
    result: dict[str, float] = {}
    try:
        connector = aiohttp.TCPConnector(limit=0)
        timeout = aiohttp.ClientTimeout(total=300)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
            agents = [
                Agent(http, server.url, mac_of(i), tokens[mac_of(i)]) for i in range(1, held + 2)
            ]
            first, followers = agents[0], agents[1:]

            await warm_up(agents)
            stop_dashboards = asyncio.Event()
            readers = await open_dashboards(server.url, dashboards, stop_dashboards)

            # 1. reports: everyone images at once, each agent on a keep-alive connection of its
            # own written as bytes (RawPoll): an aiohttp client call cost this process ~165 µs
            # per report, as much as the server's whole work, and the client ran in lockstep
            # with the server (docs/decisions/0018)
            raws = await open_raw(server.port, len(agents))
            timed = Timed()
            server_cpu, client_cpu = cpu_seconds(server.proc.pid), own_cpu_seconds()
            db_cpu = tree_cpu_seconds(db_pid)
            writer = await metric(http, server.url, "netdeploy_rollout_batch_seconds_sum")
            batches = await metric(http, server.url, "netdeploy_rollout_batch_actions_count")

            connecting = asyncio.Semaphore(100)  # (aiohttp's listen backlog, as open_raw)

            async def fresh_connection() -> RawPoll:
                async with connecting:
                    _, conn = await asyncio.get_running_loop().create_connection(
                        lambda: RawPoll(b""), "127.0.0.1", server.port
                    )
                return conn

            async def image(agent: Agent, raw: RawPoll) -> None:
                token = tokens[agent.mac]
                for state, pct in [
                    *(("imaging", p) for p in (0, 25, 50, 75, 100)),
                    ("imaged", None),
                ]:
                    sent = time.perf_counter()
                    if fresh:  # as the real agent: busybox wget, a connection per report
                        conn = await fresh_connection()
                        request = report_request(agent.mac, token, state, pct, close=True)
                        at, answer = await conn.ask(request)
                        conn.close()
                    else:
                        at, answer = await raw.ask(report_request(agent.mac, token, state, pct))
                    timed.latencies.append(at - sent)
                    if not answer.startswith(b"HTTP/1.1 200"):
                        raise RuntimeError(f"report answered {answer[:300]!r}")

            print(f"[{mode}] phase 1: {6 * len(agents)} reports", file=sys.stderr)
            started = time.perf_counter()
            await asyncio.gather(*(image(a, r) for a, r in zip(agents, raws, strict=True)))
            elapsed = time.perf_counter() - started
            for raw in raws:
                raw.close()
            result["events_per_s"] = len(timed.latencies) / elapsed
            result["p50_ms"], result["p99_ms"] = timed.pct(0.50), timed.pct(0.99)
            n = len(timed.latencies)
            result["server_cpu_us"] = (cpu_seconds(server.proc.pid) - server_cpu) / n * 1e6
            result["db_cpu_us"] = (tree_cpu_seconds(db_pid) - db_cpu) / n * 1e6
            # what one free core would sustain: independent of other load on the machine
            result["capacity"] = 1e6 / (result["server_cpu_us"] + result["db_cpu_us"])
            result["client_cpu_us"] = (own_cpu_seconds() - client_cpu) / n * 1e6
            writer = await metric(http, server.url, "netdeploy_rollout_batch_seconds_sum") - writer
            result["writer_us"] = writer / n * 1e6
            batches = (
                await metric(http, server.url, "netdeploy_rollout_batch_actions_count") - batches
            )
            result["batch"] = n / batches if batches else 0

            # 2. gate: every held node long-polls; the first node reports healthy
            await timed(first.event("starting"))
            polls = [asyncio.create_task(a.gate(timeout=120)) for a in followers]
            for _ in range(600):
                if await waiters(http, server.url) >= held:
                    break
                await asyncio.sleep(0.05)
            else:
                raise RuntimeError("long-polls did not all park within 30 s")
            print(f"[{mode}] phase 2: {held} long-polls parked; health", file=sys.stderr)
            returned: list[float] = []

            async def note(task: asyncio.Task) -> None:
                status, view = await task
                returned.append(time.perf_counter())
                if status != 200 or not view["released"]:
                    raise RuntimeError(f"long-poll returned {status} {view}")

            watchers = [asyncio.create_task(note(p)) for p in polls]
            health_sent = time.perf_counter()
            status, body = await first.health()
            health_done = time.perf_counter()
            if status != 200:
                raise RuntimeError(f"health report refused: {status} {body}")
            await asyncio.gather(*watchers)
            result["health_ms"] = (health_done - health_sent) * 1000
            result["release_all_ms"] = (max(returned) - health_sent) * 1000

            # 3. join
            joined = Timed()

            async def join(agent: Agent) -> None:
                await joined(agent.event("starting"))
                await joined(agent.event("joined"))

            started = time.perf_counter()
            await asyncio.gather(*(join(a) for a in followers))
            result["join_events_per_s"] = len(joined.latencies) / (time.perf_counter() - started)
            # (the first node's agent credentials ended with its join: ask as the admin)
            async with http.get(f"{server.url}/api/admin/clusters", headers=ADMIN) as resp:
                body = (await resp.json())["clusters"][0]
            if body["gate"] != "complete":
                raise RuntimeError(f"cluster not complete at the end: {body['gate']}")
            stop_dashboards.set()
            for task in readers:
                task.cancel()
            await asyncio.gather(*readers, return_exceptions=True)
    finally:
        server.kill()
    log = (state / "serve.log").read_text(errors="replace")
    result["locked"] = log.count("database is locked")
    check_loop(log, loop, state / "serve.log")
    return result


# `netdeploy serve` on a chosen event loop (--loops): asyncio.run makes its loop with the
# policy's new_event_loop, so the policy decides; the loop's class goes to the server's log.
# uvloop is not a dependency of netdeploy (decision 0020); the bench extra installs it.
LOOP_LAUNCHER = """
import asyncio, sys
name = sys.argv.pop(1)
if name == "uvloop":
    import uvloop
    base = uvloop.EventLoopPolicy
else:
    base = asyncio.DefaultEventLoopPolicy
class Policy(base):
    def new_event_loop(self):
        loop = super().new_event_loop()
        kind = type(loop)
        print(f"event loop: {name} ({kind.__module__}.{kind.__name__})", file=sys.stderr)
        return loop
asyncio.set_event_loop_policy(Policy())
from netdeploy.cli.main import main
sys.exit(main())
"""


def on_loop(loop: str | None) -> dict[str, tuple[str, ...]]:
    """start_server_process's arguments for a server on ``loop`` (None: as shipped)."""
    return {} if loop is None else {"launcher": ("-c", LOOP_LAUNCHER, loop)}


def check_loop(log: str, loop: str | None, path: Path) -> None:
    """The server ran on the loop asked for (``uvloop.Loop``, ``asyncio``'s selector loop)."""
    expected = {"uvloop": "(uvloop.", "asyncio": "(asyncio."}
    if loop is not None and f"event loop: {loop} {expected[loop]}" not in log:
        raise RuntimeError(f"the server did not run on {loop}; see {path}")


async def held_store(config: Path, database: str | None, first: str) -> None:
    """Every node held, the first node started, the cluster not formed yet: as at the moment
    before the first node's healthy report. Also resets the store between repetitions."""
    cfg = load_config(config, database=database)
    engine, sessions = await open_store(cfg.database_url)
    try:
        async with sessions() as session, session.begin():
            now = utcnow()
            await session.execute(
                update(Node).values(
                    state="held", state_since=now, release_seq=None, token_phase=phase_for("held")
                )
            )
            await session.execute(
                update(Node)
                .where(Node.hostname == first)
                .values(state="starting", release_seq=0, token_phase=phase_for("starting"))
            )
            await session.execute(
                update(Cluster).values(
                    formed_at=None, membership=None, gate="waiting", gate_detail=""
                )
            )
    finally:
        await engine.dispose()


class RawPoll(asyncio.Protocol):
    """One agent's bare keep-alive connection (a held agent's long-poll, or its reports):
    requests written as bytes, each answer timed when its last byte arrives. An aiohttp
    client call costs this process ~100-165 µs, as much as the server's own work, and it
    shares the host with the server: the bench would time its own client."""

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.answer: asyncio.Future[tuple[float, bytes]] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def ask(self, request: bytes | None = None) -> asyncio.Future[tuple[float, bytes]]:
        """Send ``request`` (default: the one this connection was made for); the future
        gives the time the answer's last byte arrived and the answer."""
        self.buffer.clear()
        self.answer = asyncio.get_running_loop().create_future()
        assert self.transport is not None
        self.transport.write(self.request if request is None else request)
        return self.answer

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        head, sep, body = bytes(self.buffer).partition(b"\r\n\r\n")
        found = re.search(rb"(?im)^content-length: *(\d+)", head)
        answer = self.answer
        if sep and found and len(body) >= int(found.group(1)) and answer and not answer.done():
            answer.set_result((time.perf_counter(), head[:12] + b" " + body))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.answer is not None and not self.answer.done():
            self.answer.set_exception(ConnectionError(f"the server closed a long-poll: {exc}"))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def open_raw(port: int, count: int) -> list[RawPoll]:
    """``count`` bare keep-alive connections, 100 connecting at a time (the listen backlog)."""
    gate = asyncio.Semaphore(100)
    loop = asyncio.get_running_loop()

    async def one() -> RawPoll:
        async with gate:
            _, conn = await loop.create_connection(lambda: RawPoll(b""), "127.0.0.1", port)
        return conn

    return list(await asyncio.gather(*(one() for _ in range(count))))


async def open_polls(port: int, nodes: list[tuple[str, str]]) -> list[RawPoll]:
    """A connection per held node, 100 connecting at a time (aiohttp's listen backlog)."""
    gate = asyncio.Semaphore(100)
    loop = asyncio.get_running_loop()

    async def one(mac: str, token: str) -> RawPoll:
        request = (
            f"GET /api/nodes/{mac}/gate?timeout=300 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {token}\r\n\r\n"
        ).encode()
        async with gate:
            _, poll = await loop.create_connection(lambda: RawPoll(request), "127.0.0.1", port)
        return poll

    return list(await asyncio.gather(*(one(mac, token) for mac, token in nodes)))


async def run_release(
    held: int, workdir: Path, reps: int, database: str | None = None, loop: str | None = None
) -> list[dict[str, float]]:
    """``held`` nodes parked on the gate, released by one healthy report, ``reps`` times."""
    state = workdir / f"release-{held}"
    config = lab_config(
        state,
        held + 1,
        release=f"waves:{held}",
        gate_poll_timeout=300,
        sweep_interval=600,
        database=database,
    )
    limit = f"[http]\nmax_connections_per_address = {held + 100}\n"
    config.write_text(config.read_text().replace("[http]\n", limit))
    print(f"[release] preparing {held + 1} nodes in {state}", file=sys.stderr)
    tokens = await prepare_nodes(config)
    await held_store(config, database, "n1")
    server = pinned(start_server_process(config, log=state / "serve.log", **on_loop(loop)))
    runs: list[dict[str, float]] = []
    try:
        timeout = aiohttp.ClientTimeout(total=600)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            first = Agent(http, server.url, mac_of(1), tokens[mac_of(1)])
            polls = await open_polls(
                server.port, [(mac_of(i), tokens[mac_of(i)]) for i in range(2, held + 2)]
            )
            for rep in range(reps):
                if rep:
                    await held_store(config, database, "n1")
                actions = "netdeploy_rollout_batch_actions_sum"
                checked = await metric(http, server.url, actions) + held
                answers = [poll.ask() for poll in polls]
                # parked, and the writer done with their gate checks (last_seen): the health
                # report must not queue behind them
                for _ in range(1200):
                    parked = await waiters(http, server.url) >= held
                    if parked and await metric(http, server.url, actions) >= checked:
                        break
                    await asyncio.sleep(0.05)
                else:
                    raise RuntimeError(f"{held} long-polls did not all park within 60 s")
                writer = await metric(http, server.url, "netdeploy_rollout_batch_seconds_sum")
                load = os.getloadavg()[0]
                sent = time.perf_counter()
                status, body = await first.health()
                answered = time.perf_counter()
                if status != 200:
                    raise RuntimeError(f"health report refused: {status} {body}")
                returned = []
                for at, answer in await asyncio.gather(*answers):
                    if not answer.startswith(b"HTTP/1.1 200") or b'"released": true' not in answer:
                        raise RuntimeError(f"long-poll answered {answer[:300]!r}")
                    returned.append(at)
                writer = (
                    await metric(http, server.url, "netdeploy_rollout_batch_seconds_sum") - writer
                )
                runs.append(
                    {
                        "release_ms": (max(returned) - sent) * 1000,
                        "health_ms": (answered - sent) * 1000,
                        "writer_ms": writer * 1000,
                        "load": load,
                    }
                )
                print(
                    f"[release] rep {rep + 1}: {held} released in {runs[-1]['release_ms']:.0f} ms"
                    f" (load {load:.1f})",
                    file=sys.stderr,
                )
            for poll in polls:
                poll.close()
    finally:
        server.kill()
    check_loop((state / "serve.log").read_text(errors="replace"), loop, state / "serve.log")
    return runs


ROWS = [
    ("events_per_s", "reports/s (imaging+imaged)", "{:,.0f}", True),
    ("p50_ms", "report latency p50 (ms)", "{:.1f}", False),
    ("p99_ms", "report latency p99 (ms)", "{:.1f}", False),
    ("server_cpu_us", "server CPU per report (µs)", "{:.0f}", False),
    ("db_cpu_us", "PostgreSQL CPU per report (µs)", "{:.0f}", False),
    ("capacity", "server+db capacity (reports per CPU-second)", "{:,.0f}", True),
    ("writer_us", "writer time per report (µs)", "{:.0f}", False),
    ("batch", "reports per transaction (mean)", "{:.0f}", True),
    ("client_cpu_us", "client CPU per report (µs)", "{:.0f}", False),
    ("health_ms", "health report answered (ms)", "{:.0f}", False),
    ("release_all_ms", "health → all long-polls released (ms)", "{:.0f}", False),
    ("join_events_per_s", "reports/s (starting+joined)", "{:,.0f}", True),
    ("locked", '"database is locked" in the server log', "{:.0f}", False),
]


RELEASE_ROWS = [
    ("release_ms", "health → all long-polls released (ms)", "{:,.0f}", False),
    ("health_ms", "health report answered (ms)", "{:,.0f}", False),
    ("writer_ms", "writer batches meanwhile (ms)", "{:,.0f}", False),
    ("load", "load average (1 min) at the start", "{:.1f}", False),
]


def spread(values: list[float], higher_better: bool) -> tuple[float, float]:
    """(worst, median) of the repetitions: the min of a rate, the max of a time."""
    worst = min(values) if higher_better else max(values)
    return worst, statistics.median(values)


def print_table(title: str, results: dict[str, list[dict[str, float]]], rows: list) -> None:
    names = list(results)
    width = max(len(r[1]) for r in rows)
    print(f"\n{title}")
    head = "  ".join(f"{n + ' worst':>14}  {n + ' median':>14}" for n in names)
    print(f"{'':{width}}  {head}" + ("      ratio (medians)" if len(names) == 2 else ""))
    for key, label, fmt, higher_better in rows:
        cells, medians = [], []
        for name in names:
            worst, median = spread([r[key] for r in results[name]], higher_better)
            cells.append(f"{fmt.format(worst):>14}  {fmt.format(median):>14}")
            medians.append(median)
        ratio = ""
        if len(names) == 2 and medians[0] and medians[1]:
            a, b = medians
            ratio = f"{(b / a if higher_better else a / b):8.2f}x"
        print(f"{label:{width}}  {'  '.join(cells)}  {ratio}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000, help="held nodes (plus a first node)")
    parser.add_argument("--modes", default="naive,group", help="naive, group or both")
    parser.add_argument("--stores", default="sqlite", help="sqlite, postgresql or both")
    parser.add_argument("--reps", type=int, default=3, help="repetitions of every run")
    parser.add_argument(
        "--release-held",
        type=int,
        default=0,
        help="also release this many held nodes in one wave (issue 20: 10000), per store",
    )
    parser.add_argument("--skip-reports", action="store_true", help="only the --release-held runs")
    parser.add_argument(
        "--fresh-connections",
        action="store_true",
        help="phase 1: every report on a new connection closed after it, as the real agent's "
        "busybox wget sends it (default: one keep-alive connection per agent)",
    )
    parser.add_argument(
        "--loops",
        default="",
        help="the server's event loop: asyncio, uvloop or both, the runs alternating and the "
        "ratio printed (default: as shipped, asyncio's; uvloop comes with the bench extra)",
    )
    parser.add_argument(
        "--pg-durable",
        action="store_true",
        help="PostgreSQL with fsync and synchronous_commit on (default: off, like a test server)",
    )
    parser.add_argument(
        "--dashboards", type=int, default=0, help="live dashboard streams open during the run"
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="server on CPU 0, this client (and PostgreSQL) on the other CPUs (as agents and "
        "the database on other machines)",
    )
    args = parser.parse_args()
    if args.pin:
        global SERVER_CPUS
        cpus = os.sched_getaffinity(0)
        if len(cpus) < 2:
            parser.error("--pin needs at least 2 CPUs")
        SERVER_CPUS = {min(cpus)}
        os.sched_setaffinity(0, cpus - SERVER_CPUS)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # each process (this client, the server it starts) holds a socket per node
    need = max(2 * args.nodes, args.release_held) + 500  # reports: aiohttp + raw per agent
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, need), hard))
    stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    loops: list[str | None] = [x.strip() for x in args.loops.split(",") if x.strip()] or [None]
    if unknown := set(loops) - {None, "asyncio", "uvloop"}:
        parser.error(f"--loops: asyncio or uvloop, not {', '.join(map(str, unknown))}")
    if "uvloop" in loops and importlib.util.find_spec("uvloop") is None:
        parser.error("--loops uvloop: uvloop is not installed (pip install -e '.[bench]')")
    results: dict[str, list[dict[str, float]]] = {}
    releases: dict[str, list[dict[str, float]]] = {}
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="nd-bench-rollout-")))
        pg = None
        if "postgresql" in stores:
            durable = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}
            pg = pgserver.start(**(durable if args.pg_durable else {}))
            stack.callback(pg.stop)
            if SERVER_CPUS is not None and pg.proc is not None:
                # --pin: the database off the server's CPU too, as on a machine of its own
                # (its backends, forked later, inherit this)
                os.sched_setaffinity(pg.proc.pid, os.sched_getaffinity(0))
        for store in stores if not args.skip_reports else []:
            for rep in range(args.reps):
                # alternating: load that comes and goes hits every mode and loop
                for mode, loop in ((m, x) for m in modes for x in loops):
                    name = mode if len(stores) == 1 else f"{mode}/{store[:2]}"
                    name += f"/{loop}" if len(loops) > 1 else ""
                    database = (
                        asyncio.run(pg.create_database()) if pg and store != "sqlite" else None
                    )
                    print(f"[{name}] rep {rep + 1}: {database or 'SQLite'}", file=sys.stderr)
                    db_pid = pg.proc.pid if pg and pg.proc and database else None
                    work = tmp / store / f"{rep}" / (loop or "default")
                    results.setdefault(name, []).append(
                        asyncio.run(
                            run_mode(
                                mode,
                                args.nodes,
                                work,
                                database,
                                db_pid,
                                args.dashboards,
                                fresh=args.fresh_connections,
                                loop=loop,
                            )
                        )
                    )
        for store in stores if args.release_held else []:
            for loop in loops:
                database = asyncio.run(pg.create_database()) if pg and store != "sqlite" else None
                name = "SQLite" if store == "sqlite" else "PostgreSQL"
                name += f"/{loop}" if len(loops) > 1 else ""
                releases[name] = asyncio.run(
                    run_release(
                        args.release_held,
                        tmp / f"{store}-release-{loop}",
                        args.reps,
                        database,
                        loop,
                    )
                )
    load = os.getloadavg()[0]
    what = " and ".join("SQLite" if s == "sqlite" else "PostgreSQL" for s in stores)
    host = f"{os.cpu_count()} CPUs, load average {load:.1f} at the end"
    if args.fresh_connections:
        what += ", every report on a new connection (as busybox wget)"
    if loops != [None]:
        what += f", server event loop {' vs '.join(str(x) for x in loops)}"
    if results:
        print_table(
            f"rollout bench: {args.nodes} held nodes + 1 first node, {what}, one client process, "
            f"{args.dashboards} dashboards open, {args.reps} repetitions ({host})",
            results,
            ROWS,
        )
        for name in (m for m in results if m.startswith("group")):
            rate = spread([r["events_per_s"] for r in results[name]], True)[1]
            ok = rate >= 5000
            print(
                f"bar (>= 5,000 reports/s at {args.nodes} nodes, median): "
                f"{'met' if ok else 'NOT met'} by {name} ({rate:,.0f}/s)"
            )
            capacity = spread([r["capacity"] for r in results[name]], True)[1]
            if not ok and capacity >= 5000:
                print(
                    "note: the server's CPU cost allows the bar; the wall rate was limited by "
                    "CPU left over on this machine (the client shares it)"
                )
    if releases:
        print_table(
            f"release bench: {args.release_held:,} held nodes parked on the gate, one wave "
            f"(policy waves:{args.release_held}), {args.reps} repetitions ({host})",
            releases,
            RELEASE_ROWS,
        )
        for name, runs in releases.items():
            worst = max(r["release_ms"] for r in runs)
            print(
                f"bar (release of {args.release_held:,} held nodes < 1,000 ms, every "
                f"repetition): {'met' if worst < 1000 else 'NOT met'} on {name} "
                f"(worst {worst:,.0f} ms)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
