"""A flood of unknown MACs: every one gets the discovery answer, the store stays bounded.

2,000 unknown MACs boot over HTTP against ``[discovery] max_rows = 50`` and
``events_per_minute = 10``: at most 50 discovered rows remain (the most recently seen), the
event rows grow by a few dozen, not thousands, a second boot of a discovered MAC within
``record_interval`` adds no row, and the dashboard shows one page of 50 with a pager.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
from sqlalchemy import func, select

from netdeploy.store.models import Event, Node
from tests.conftest import demo_variant
from tests.integration.conftest_boot import boot_server

FLOOD = 2000


def unknown(i: int) -> str:
    return f"02:00:00:{(i >> 16) & 255:02x}:{(i >> 8) & 255:02x}:{i & 255:02x}"


async def counts(server) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    async with server.ctx.sessions() as session:
        nodes = await session.scalar(select(func.count()).select_from(Node))
        events = await session.scalar(select(func.count()).select_from(Event))
    return nodes or 0, events or 0


async def test_unknown_mac_flood_keeps_rows_events_and_page_bounded(tmp_path: Path) -> None:
    config = demo_variant(
        tmp_path / "lab.toml",
        replace={"[tftp]": "[discovery]\nmax_rows = 50\nevents_per_minute = 10\n\n"
                 "[dashboard]\npublic_read = true\n\n[tftp]"},
    )  # fmt: skip
    async with boot_server(tmp_path, config=config) as server:
        nodes_before, events_before = await counts(server)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=32)) as http:

            async def boot(mac: str) -> str:
                async with http.get(f"{server.url}/boot/{mac}.ipxe") as r:
                    assert r.status == 200
                    return await r.text()

            scripts = await asyncio.gather(*(boot(unknown(i)) for i in range(FLOOD)))
            assert all("nd.mode=discover" in s for s in scripts), scripts[0]
            nodes, events = await counts(server)
            assert nodes - nodes_before == 50
            assert events - events_before <= 2 * 10 + 5, events - events_before
            again = await boot(unknown(FLOOD - 1))  # still recorded: among the newest 50
            assert "nd.mode=discover" in again
            assert await counts(server) == (nodes, events)  # folded: once per interval
            async with http.get(f"{server.url}/") as r:
                page = await r.text()
        assert "page 1 of" not in page  # 50 rows: one page
        section = page.split('id="discovered"')[1].split("</section>")[0]
        assert section.count("<tr") == 1 + 50  # the header and one page
        assert len(page.encode()) < 200 * 1024
