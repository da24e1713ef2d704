"""PostgreSQL stopped for 10 s under a rollout of two servers (issue 21).

Two `netdeploy serve` processes share a private PostgreSQL (tests/pgserver.py; its own server,
because this test stops it). A rollout is under way: n1 (the first node) started through A, n2
is held and long-polls its gate on B, n3 reports progress to A. Then PostgreSQL stops for 10 s
while clients hit every route of both servers, and a TFTP client asks B for a per-MAC file.

Checked: no answer is a 5xx other than 503, every 503 carries Retry-After, TFTP answers an ERROR
(never silence), the first-stage iPXE script is still served, neither log holds a traceback;
after PostgreSQL is back B listens again within 1 s, and a release decided on A reaches n2's
long-poll on B within 1 s. Before the outage: A's live progress reaches B's event stream.
"""

from __future__ import annotations

import asyncio
import re
import socket
import struct
import time
from collections import Counter
from pathlib import Path

import aiohttp
import pytest

from tests import pgserver
from tests.conftest import ServerProcess, start_server
from tests.integration.rollout_support import Agent, lab_config, mac_of, prepare_nodes
from tests.integration.test_postgres_notify import ADMIN, _parked, sse

pytestmark = pytest.mark.postgres

OUTAGE_S = 10.0


def tftp_ask(port: int, name: str, timeout: float = 5.0) -> tuple[int, bytes] | None:
    """One RRQ to 127.0.0.1:port; (opcode, rest) of the first answer, or None for silence."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(b"\x00\x01" + name.encode() + b"\x00octet\x00", ("127.0.0.1", port))
        try:
            data, _ = sock.recvfrom(2048)
        except TimeoutError:
            return None
    (op,) = struct.unpack("!H", data[:2])
    return op, data[2:]


def routes(server: ServerProcess, tokens: dict[str, str]) -> list[tuple[str, str, dict]]:
    """(method, url, headers) of every kind of route a booting machine, agent or admin uses."""
    mac = mac_of(3)
    hyphens = mac.replace(":", "-")
    node = {"Authorization": f"Bearer {tokens[mac]}"}
    base = server.url
    return [
        ("GET", f"{base}/boot.ipxe", {}),
        ("GET", f"{base}/boot/{hyphens}.ipxe", {}),
        ("GET", f"{base}/api/nodes/{mac}/plan?format=sh", node),
        ("GET", f"{base}/api/nodes/{mac}/gate?timeout=0", node),
        ("POST", f"{base}/api/nodes/{mac}/events", node),
        ("GET", f"{base}/api/nodes", ADMIN),
        ("GET", f"{base}/api/clusters", ADMIN),
        ("GET", f"{base}/api/events/log?limit=10", ADMIN),
        ("GET", f"{base}/api/admin/clusters", ADMIN),
        ("GET", f"{base}/metrics", ADMIN),
        ("GET", f"{base}/nodes/{hyphens}/files", ADMIN),
        ("GET", f"{base}/", ADMIN),
    ]


async def hammer(
    http: aiohttp.ClientSession, targets: list[tuple[str, str, dict]], stop: asyncio.Event
) -> tuple[Counter[tuple[str, int]], list[str]]:
    """Ask every route again and again until ``stop``; statuses by route, and problems."""
    seen: Counter[tuple[str, int]] = Counter()
    problems: list[str] = []
    while not stop.is_set():
        for method, url, headers in targets:
            body = {"state": "imaging", "progress": 50} if method == "POST" else None
            try:
                async with http.request(
                    method, url, headers=headers, json=body, allow_redirects=False
                ) as resp:
                    await resp.read()
                    path = url.split("/", 3)[3].split("?")[0]
                    seen[(path, resp.status)] += 1
                    if resp.status >= 500 and resp.status != 503:
                        problems.append(f"{method} {url}: {resp.status}")
                    if resp.status == 503 and "Retry-After" not in resp.headers:
                        problems.append(f"{method} {url}: 503 without Retry-After")
            except aiohttp.ClientError as exc:
                problems.append(f"{method} {url}: {exc!r}")
        await asyncio.sleep(0.2)
    return seen, problems


async def agent_at_gate(agent: Agent, log: list[tuple[float, int, dict]]) -> dict:
    """n2's agent: long-poll, and on 503 wait as long as Retry-After says; until released."""
    while True:
        async with agent.http.get(
            f"{agent.url}/api/nodes/{agent.mac}/gate",
            params={"timeout": "4"},  # re-polls during the outage: 503, Retry-After
            headers=agent.headers,
        ) as resp:
            body = await resp.json()
            log.append((time.monotonic(), resp.status, body))
            if resp.status == 200 and body["released"]:
                return body
            if resp.status == 503:
                await asyncio.sleep(float(resp.headers["Retry-After"]))


async def listening(http: aiohttp.ClientSession, url: str) -> bool:
    async with http.get(f"{url}/metrics", headers=ADMIN) as resp:  # [metrics] public = false
        text = await resp.text()
    return bool(re.search(r"^netdeploy_peer_listener_connected 1\.0$", text, re.M))


@pytest.mark.timeout(240)
async def test_a_10s_database_outage_is_answered_as_an_outage_and_recovered_at_once(
    tmp_path: Path,
) -> None:
    try:
        private = pgserver.start()
    except pgserver.NoPostgres as exc:
        pytest.skip(str(exc))
    servers: list[ServerProcess] = []
    try:
        url = await private.create_database()
        config = lab_config(tmp_path / "lab", 3, sweep_interval=5)
        tokens = await prepare_nodes(config, database=url)
        servers = [
            await asyncio.to_thread(
                start_server, tmp_path / f"s{i}", config=config, extra=("--db", url)
            )
            for i in "ab"
        ]
        a, b = servers
        async with aiohttp.ClientSession() as http:
            n1 = Agent(http, a.url, mac_of(1), tokens[mac_of(1)])
            n2 = Agent(http, b.url, mac_of(2), tokens[mac_of(2)])
            n3 = Agent(http, a.url, mac_of(3), tokens[mac_of(3)])
            await n1.image(steps=1)
            assert (await n1.event("starting"))[0] == 200
            await n2.image(steps=1)

            # live progress reported to A reaches B's dashboards
            async with sse(http, b.url) as stream:
                assert (await n3.event("imaging", 10))[0] == 200
                assert (await n3.event("imaging", 42.5, "writing"))[0] == 200
                deadline = time.monotonic() + 5
                while not any(
                    e["kind"] == "progress" and e["detail"].get("progress") == 42.5
                    for e in stream.events
                ):
                    assert time.monotonic() < deadline, f"no progress on B: {stream.events}"
                    await asyncio.sleep(0.05)

            gate_log: list[tuple[float, int, dict]] = []
            waiting = asyncio.create_task(agent_at_gate(n2, gate_log))
            await _parked(http, b.url, 1)

            stop = asyncio.Event()
            hammers = [asyncio.create_task(hammer(http, routes(s, tokens), stop)) for s in servers]
            await asyncio.sleep(0.5)
            private.shutdown()
            down = time.monotonic()
            await asyncio.sleep(2)
            tftp_config = await asyncio.to_thread(
                tftp_ask, b.tftp_port, f"pxelinux.cfg/01-{mac_of(3).replace(':', '-')}"
            )
            tftp_first = await asyncio.to_thread(tftp_ask, b.tftp_port, "boot.ipxe")
            async with http.get(f"{b.url}/boot.ipxe") as resp:
                first_stage = (resp.status, await resp.text())
            await asyncio.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down)))
            await asyncio.to_thread(private.launch)
            up = time.monotonic()

            while not await listening(http, b.url):
                assert time.monotonic() - up < 10, "B does not listen again"
                await asyncio.sleep(0.02)
            relisten = time.monotonic() - up
            # n2's agent parks again on B (it waited Retry-After), then A releases it
            await _parked(http, b.url, 1)
            t0 = time.monotonic()
            status, body = await n1.health()
            assert status == 200 and body["gate"] == "releasing", body
            released = await asyncio.wait_for(waiting, 10)
            release_s = time.monotonic() - t0
            stop.set()
            results = await asyncio.gather(*hammers)
    finally:
        for server in servers:
            server.stop()
        private.stop()

    print(
        f"outage {OUTAGE_S:.0f} s: B listening again {relisten * 1000:.0f} ms after PostgreSQL "
        f"was ready; release on A reached B's long-poll in {release_s * 1000:.0f} ms"
    )
    assert released["state"] == "released"
    assert relisten < 1.0, f"B listened again only after {relisten:.2f} s"
    assert release_s < 1.0, f"the release reached B after {release_s:.2f} s"
    for seen, problems in results:
        assert not problems, problems[:20]
        assert any(status == 503 for _, status in seen), seen  # the outage was seen
    assert any(status == 503 for _, status, _ in gate_log), gate_log
    # TFTP: an ERROR (opcode 5) for the per-MAC file; the first stage is still served
    assert tftp_config is not None, "TFTP stayed silent during the outage"
    assert tftp_config[0] == 5 and b"database" in tftp_config[1], tftp_config
    assert tftp_first is not None and tftp_first[0] in (3, 6), tftp_first  # DATA or OACK
    assert first_stage[0] == 200 and "goto ask" in first_stage[1], first_stage
    for server in servers:
        log = server.log.read_text()
        assert "Traceback" not in log, log[-4000:]
        outage_lines = [line for line in log.splitlines() if "store is unreachable" in line]
        assert 1 <= len(outage_lines) <= 3, outage_lines
