"""The dashboard's Multicast section over real HTTP: a real session with `netdeploy receive`
processes and a receiver that goes silent; read access as for the rest of the dashboard."""

from __future__ import annotations

import asyncio
import socket
from html.parser import HTMLParser

from aiohttp import ClientSession, CookieJar

from netdeploy.http.multicast_view import TIMES
from netdeploy.multicast import wire
from tests.integration.mc_harness import IMAGE, run_receiver, running_server, wait_for

SQL = {"sql-n1": "52:54:00:00:10:01", "sql-n2": "52:54:00:00:10:02", "sql-n3": "52:54:00:00:10:03"}


class Section(HTMLParser):
    """What an admin reads in ``section#multicast``: per session article, its state, its head
    line and facts, and the cells of each receiver row, whitespace collapsed."""

    def __init__(self) -> None:
        super().__init__()
        self.sessions: list[dict] = []
        self.empty_hidden = True
        self.empty_text = ""
        self._in_section = self._in_empty = False
        self._depth = 0
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section" and a.get("id") == "multicast":
            self._in_section = True
        if not self._in_section:
            return
        if tag == "section":
            self._depth += 1
        if a.get("id") == "mc-empty":
            self._in_empty, self.empty_hidden = True, "hidden" in a
        if tag == "article":
            self.sessions.append({"state": a["data-state"], "text": [], "receivers": []})
        if tag == "tr" and self.sessions:
            self._row = []
        if tag in ("th", "td") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag):
        if not self._in_section:
            return
        if tag == "section":
            self._in_section = False
        if tag == "p":
            self._in_empty = False
        if tag in ("th", "td") and self._cell is not None and self._row is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        if tag == "tr" and self._row is not None:
            if self._row and self._row[0] != "Receiver":  # skip the header row
                self.sessions[-1]["receivers"].append(self._row)
            self._row = None

    def handle_data(self, data):
        if not self._in_section:
            return
        if self._in_empty:
            self.empty_text += data
        if self._cell is not None:
            self._cell.append(data)
        elif self.sessions:
            self.sessions[-1]["text"].append(data)


def section_of(page: str) -> Section:
    parser = Section()
    parser.feed(page)
    for s in parser.sessions:
        s["text"] = " ".join(" ".join(s["text"]).split())
    return parser


async def silent_join(url: str, mac: str, headers: dict[str, str]) -> dict:
    """A node that joins, listens once (one STATUS) and then says nothing: it is dropped."""
    async with (
        ClientSession() as http,
        http.post(
            f"{url}/api/multicast/join", json={"image": IMAGE, "mac": mac}, headers=headers
        ) as r,
    ):
        assert r.status == 200, await r.text()
        answer = await r.json()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        status = wire.pack_status(answer["session"], answer["receiver"], 0, 0, 0, 0)
        sock.sendto(status, ("127.0.0.1", answer["feedback_port"]))
    return answer


async def test_section_shows_the_session_its_receivers_and_the_dropped_one(tmp_path):
    async with (
        running_server(tmp_path, slow_receiver_timeout=0.6) as server,
        ClientSession(cookie_jar=CookieJar(unsafe=True)) as client,
    ):
        # receivers' names, MACs and addresses: not without the dashboard's read access
        async with client.get(server.url + "/api/multicast/sessions") as r:
            assert r.status == 401
            assert "Authorization: Bearer" in (await r.json())["error"]
        async with client.get(server.url + "/") as r:
            assert "multicast" not in (await r.text()).lower()  # the login page only
        async with client.post(server.url + "/login", data={"token": server.ctx.admin_token}):
            pass
        async with client.get(server.url + "/") as r:
            idle = await r.text()
        assert '<a href="#multicast">Multicast</a>' in idle
        idle_section = section_of(idle)
        assert idle_section.sessions == [] and not idle_section.empty_hidden
        assert "No multicast sessions yet" in idle_section.empty_text
        assert '"multicast": {"available": true, "active": false}' in idle  # no polling

        # the cluster's session waits for its three nodes: two real receivers and one that
        # goes silent after joining. Each join is announced to live pages (not recorded).
        listener = server.ctx.bus.subscribe()
        copies = [
            asyncio.create_task(run_receiver(server.url, tmp_path / h, "--mac", SQL[h]))
            for h in ("sql-n1", "sql-n2")
        ]
        await wait_for(lambda: server.service.sessions)
        async with client.get(server.url + "/") as r:
            waiting = await r.text()
        [session] = section_of(waiting).sessions
        assert session["state"] == "waiting", session
        assert "w2k3-ent-sp1 → sqlclu" in session["text"]
        assert '"active": true' in waiting  # the page's script polls while it waits
        joined = [listener.queue.get_nowait() for _ in range(listener.queue.qsize())]
        joined = [e for e in joined if e["detail"].get("what") == "receiver_joined"]
        assert joined and all(e["id"] is None and e["kind"] == "multicast" for e in joined)
        assert {e["mac"] for e in joined} <= {SQL["sql-n1"], SQL["sql-n2"]}
        await silent_join(server.url, SQL["sql-n3"], server.admin)
        for status, output in await asyncio.gather(*copies):
            assert status == 0, output
        await wait_for(lambda: server.service.finished, message=server.service.status)

        async with client.get(server.url + "/") as r:
            page = await r.text()
        section = section_of(page)
        [done] = section.sessions
        assert done["state"] == "finished" and section.empty_hidden
        [data] = server.service.finished
        group_port = f"{data['group']}:{data['port']}"
        assert group_port in done["text"] and f"session {data['id']:08x}" in done["text"]
        ratio = data["bytes_sent"] / data["size"]
        assert ratio >= 1.0 and f"{ratio:.2f}{TIMES} the image (3.0 MiB)" in done["text"]
        assert "Mbit/s average" in done["text"]
        rows = {cells[0].split()[0]: cells for cells in done["receivers"]}
        assert list(rows) == ["sql-n1", "sql-n2", "sql-n3"]  # MACs shown as host names, sorted
        for host in ("sql-n1", "sql-n2"):
            name, ip, state, progress, loss, note = rows[host]
            assert name == f"{host} {SQL[host]}" and ip == "127.0.0.1"
            assert (state, progress, loss) == ("done", "100%", "0.0%")
            assert note.startswith("verified after ")
        _, _, state, progress, _, note = rows["sql-n3"]
        assert state == "dropped finishing by HTTP" and progress == "0%"
        # why, in the sender's words ("no report" or "still incomplete after the repairs")
        [silent] = [r for r in data["receivers"] if r["mac"] == SQL["sql-n3"]]
        assert note and silent["reason"] == f"{note}; finishes by unicast"
        assert "receivers: 2 done, 1 dropped" in done["text"]
        async with client.get(
            server.url + "/api/multicast/sessions",
            headers={"Authorization": f"Bearer {server.ctx.admin_token}"},
        ) as r:
            assert r.status == 200 and (await r.json())["sessions"] == []


async def test_without_the_multicast_service_the_section_says_so(tmp_path):
    from tests.integration.dashboard_helpers import running_server as dashboard_server

    async with (
        dashboard_server(tmp_path, public_read=True) as srv,
        ClientSession() as client,
        client.get(srv.url + "/") as r,
    ):
        page = await r.text()
    section = section_of(page)
    assert section.sessions == [] and "not running in this server" in section.empty_text
    assert '"multicast": {"available": false, "active": false}' in page
