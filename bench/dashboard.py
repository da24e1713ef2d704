"""Dashboard cost with a big rack: page render, page weight, and SSE vs polling side by side.

    ./dev bench dashboard [--nodes 500] [--clients 20] [--events 500] [--rate 100]

Seeds N nodes into a fresh store, serves the real app on loopback and measures:
  * GET / : server time (median of 10) and bytes, plain and compressed;
  * live updates to C watching clients: publish→receive latency (p50/p99) over SSE;
  * what the alternative would cost: each client polling GET /api/nodes once a second
    (the "no SSE" design) vs the SSE bytes for the same minute of E events — printed as a ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from aiohttp import ClientSession, CookieJar

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from netdeploy.http.dashboard import STATIC
from netdeploy.store.models import Event, Node
from tests.integration.dashboard_helpers import (
    SQL_N1,
    Running,
    mixed_rack,
    move,
    running_server,
    seed_nodes,
)


async def main(nodes: int, clients: int, events: int, rate: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with running_server(Path(tmp), public_read=True) as srv, ClientSession() as http:
            if nodes == 500:  # the rack of the browser test: imaging, held, 3 failed, 4 stale
                macs = await mixed_rack(srv.ctx)
            else:
                macs = await seed_nodes(srv.ctx, nodes)
            await move(srv.ctx, SQL_N1, "imaging")
            times = []
            for _ in range(10):
                started = time.perf_counter()
                async with http.get(srv.url + "/", headers={"Accept-Encoding": "identity"}) as r:
                    plain = len(await r.read())
                times.append(time.perf_counter() - started)
            async with (
                ClientSession(auto_decompress=False) as raw,
                raw.get(srv.url + "/", headers={"Accept-Encoding": "gzip"}) as r,
            ):
                wire = len(await r.read())
                encoding = r.headers.get("Content-Encoding", "none")
            async with http.get(srv.url + "/api/nodes") as r:
                poll_bytes = len(await r.read())
            static = sum(p.stat().st_size for p in STATIC.glob("dashboard.*"))
            print(
                f"GET / with {nodes + 4} nodes: median {statistics.median(times) * 1000:.1f} ms, "
                f"{plain / 1024:.0f} KiB HTML ({wire / 1024:.0f} KiB {encoding} on the wire)"
            )
            async with ClientSession(cookie_jar=CookieJar(unsafe=True)) as admin:
                await srv.login(admin)  # action buttons on every row that has one
                async with admin.get(srv.url + "/", headers={"Accept-Encoding": "identity"}) as r:
                    logged_in = len(await r.read())
            print(
                f"page weight with {nodes + 4} nodes: {(plain + static) / 1024:.0f} KiB "
                f"(HTML + dashboard.js + dashboard.css, uncompressed; budget 300 KiB); "
                f"logged in as admin: {(logged_in + static) / 1024:.0f} KiB"
            )

            received: list[list[float]] = [[] for _ in range(clients)]
            sent_at: dict[int, float] = {}
            sse_bytes = [0] * clients
            ready = asyncio.Event()
            connected = 0

            async def watch(i: int) -> None:
                nonlocal connected
                async with http.get(srv.url + "/api/events") as resp:
                    connected += 1
                    if connected == clients:
                        ready.set()
                    async for line in resp.content:
                        sse_bytes[i] += len(line)
                        if line.startswith(b"id: "):
                            event_id = int(line[4:])
                            received[i].append(time.perf_counter() - sent_at[event_id])
                            if len(received[i]) == events:
                                return

            watchers = [asyncio.create_task(watch(i)) for i in range(clients)]
            await asyncio.wait_for(ready.wait(), 30)
            while srv.ctx.bus.listeners < clients:
                await asyncio.sleep(0.01)
            started = time.perf_counter()
            for n in range(events):
                await report_timed(srv, macs[n % len(macs)], n, sent_at)
                if rate:  # paced like a real rack; 0 = as fast as the store takes them
                    await asyncio.sleep(max(0.0, started + (n + 1) / rate - time.perf_counter()))
            await asyncio.wait_for(asyncio.gather(*watchers), 60)
            elapsed = time.perf_counter() - started
            latencies = sorted(x for per in received for x in per)
            p50 = latencies[len(latencies) // 2] * 1000
            p99 = latencies[int(len(latencies) * 0.99)] * 1000
            print(
                f"SSE: {events} events to {clients} clients in {elapsed:.2f} s "
                f"({events / elapsed:.0f} events/s written to the store and fanned out"
                f"{'' if rate else ', unpaced'}); "
                f"publish→receive p50 {p50:.1f} ms, p99 {p99:.1f} ms"
            )
            per_minute_sse = statistics.mean(sse_bytes) / max(elapsed, 1e-9) * 60
            per_minute_poll = poll_bytes * 60
            print(
                f"per client per minute at this event rate: SSE {per_minute_sse / 1e6:.2f} MB, "
                f"polling /api/nodes each second {per_minute_poll / 1e6:.2f} MB "
                f"(ratio polling/SSE {per_minute_poll / max(per_minute_sse, 1):.1f}x); "
                f"an idle rack costs SSE only a keep-alive line per 15 s"
            )


async def report_timed(srv: Running, mac: str, n: int, sent_at: dict[int, float]) -> None:
    """Write one progress event (commit, then publish) and note when it went to the bus."""
    async with srv.ctx.sessions() as session:
        node = await session.get(Node, mac)
        event = Event(kind="progress", mac=mac, cluster=node.cluster, detail={"progress": n % 100})
        session.add(event)
        await session.commit()
    sent_at[event.id] = time.perf_counter()
    srv.ctx.bus.publish(event)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=500)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--events", type=int, default=500)
    parser.add_argument(
        "--rate", type=float, default=100, help="events/s (500 nodes reporting every 5 s: 100)"
    )
    args = parser.parse_args()
    asyncio.run(main(args.nodes, args.clients, args.events, args.rate))
