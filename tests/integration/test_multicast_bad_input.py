"""Hostile and odd input to a live multicast session: forged datagrams, double joins,
a sender restart, late and silent receivers. Ignored or repaired; never a bad copy marked good."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket

import aiohttp

from netdeploy.multicast import wire
from tests.conftest import sha256_of
from tests.integration.mc_harness import IMAGE, run_receiver, running_server, wait_for


def only_session(server):
    [session] = list(server.service.sessions.values())
    return session


async def test_forged_and_malformed_datagrams_are_ignored(tmp_path):
    async with running_server(tmp_path, min_receivers=2, max_wait=0.2, max_rate=20) as server:
        outs = [tmp_path / "a.img", tmp_path / "b.img"]
        tasks = [asyncio.create_task(run_receiver(server.url, o, "--name", o.stem)) for o in outs]
        await wait_for(lambda: server.service.sessions and only_session(server).state == "running")
        s = only_session(server)
        group, port, fb = s.params.group, s.params.data_port, s.params.feedback_port
        forger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        forger.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
        good = bytes(s.params.slice_size)
        to_receivers = [
            wire.pack_data(s.id ^ 0x5A5A, 0, good),  # another session
            wire.pack_data(s.id, s.slices + 7, good),  # slice past the end
            wire.pack_data(s.id, 1, good)[:-5],  # truncated payload
            wire.pack_data(s.id, 2, good)[:12],  # truncated header
            wire.pack_data(s.id, 3, good)[:16] + b"\x01" * len(good),  # CRC does not match
            b"garbage",
            wire.pack_finish(s.id ^ 1),  # FINISH of another session
        ]
        rid = next(iter(s.receivers))
        to_sender = [
            wire.pack_status(s.id, 12345, 0, 0, 0, 0, wire.Flag.COMPLETE | wire.Flag.VERIFIED),
            wire.pack_status(s.id ^ 1, rid, 0, 0, 0, 0),
            wire.pack_status(s.id, rid, 0, s.slices + 5, s.slices + 5, 0),
            wire.pack_nak(s.id, rid, 1, (s.slices + 64) // 8 * 8, 8, b"\xff"),
            b"\x00\x01",
        ]
        try:
            while s.state in ("running", "repairing"):
                for d in to_receivers:
                    forger.sendto(d, (group, port))
                for d in to_sender:
                    forger.sendto(d, ("127.0.0.1", fb))
                await asyncio.sleep(0.01)
        finally:
            forger.close()
        results = await asyncio.gather(*tasks)
        for (status, output), out in zip(results, outs, strict=True):
            assert status == 0, output
            assert sha256_of(out) == server.sha256
            summary = json.loads(output.strip().splitlines()[-1])
            rejected = summary["sessions"][0]["rejected"]
            assert {"session", "range", "length", "crc", "malformed"} <= set(rejected), rejected
        await wait_for(lambda: server.service.finished)
        summary = server.service.finished[0]
        assert {"session", "range", "malformed"} <= set(summary["rejected"])
        assert [r["state"] for r in summary["receivers"]] == ["done", "done"]


async def test_forged_slice_with_valid_crc_is_caught_by_sha256_and_refetched(tmp_path):
    """A forger that knows the session id and computes CRCs can poison slices; the sha256
    check catches it, the copy is never reported good, and the receiver refetches by HTTP."""
    async with running_server(tmp_path, min_receivers=1, max_wait=1.0, max_rate=10) as server:
        out = tmp_path / "victim.img"
        task = asyncio.create_task(run_receiver(server.url, out, "--name", "victim"))
        await wait_for(lambda: server.service.sessions and only_session(server).receivers)
        s = only_session(server)
        forger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        forger.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
        last = s.slices - 1
        poison = b"\xee" * wire.slice_length(last, s.size, s.params.slice_size)
        while s.state in ("waiting",):  # before the sender reaches it, poison the last slice
            forger.sendto(wire.pack_data(s.id, last, poison), (s.params.group, s.params.data_port))
            await asyncio.sleep(0.02)
        forger.close()
        status, output = await task
        assert status == 0, output
        assert sha256_of(out) == server.sha256
        summary = json.loads(output.strip().splitlines()[-1])
        assert summary["sessions"][0]["result"] == "bad"
        assert summary["unicast_bytes"] == s.size
        await wait_for(lambda: server.service.finished)
        [receiver] = server.service.finished[0]["receivers"]
        assert receiver["state"] == "bad"


async def test_joining_twice_keeps_one_place(tmp_path):
    async with (
        running_server(tmp_path, min_receivers=5, max_wait=60) as server,
        aiohttp.ClientSession() as http,
    ):
        answers = []
        for _ in range(2):
            async with http.post(
                f"{server.url}/api/multicast/join",
                json={"image": IMAGE, "name": "twice"},
                headers=server.admin,
            ) as r:
                assert r.status == 200
                answers.append(await r.json())
        assert answers[0]["receiver"] == answers[1]["receiver"]
        assert answers[0]["session"] == answers[1]["session"]
        async with http.get(f"{server.url}/api/multicast/sessions") as r:
            assert r.status == 401  # receivers' names and addresses: the dashboard's read rule
        admin = {"Authorization": f"Bearer {server.ctx.admin_token}"}
        async with http.get(f"{server.url}/api/multicast/sessions", headers=admin) as r:
            [session] = (await r.json())["sessions"]
        assert session["state"] == "waiting"
        assert [x["name"] for x in session["receivers"]] == ["twice"]


async def test_join_errors_say_what_to_do(tmp_path):
    async with running_server(tmp_path) as server, aiohttp.ClientSession() as http:
        url = f"{server.url}/api/multicast/join"
        async with http.post(url, json={"image": "nope"}, headers=server.admin) as r:
            assert r.status == 404
            assert "configured images" in (await r.json())["error"]
        # no file, no sha256
        async with http.post(url, json={"image": "debian-12"}, headers=server.admin) as r:
            assert r.status == 409
            assert "netdeploy image add" in (await r.json())["error"]
        async with http.post(url, json={"image": IMAGE, "mac": "zz:zz"}, headers=server.admin) as r:
            assert r.status == 400
        async with http.post(url, json={}, headers=server.admin) as r:
            assert r.status == 400
        async with http.post(url, json={"image": IMAGE}) as r:
            assert r.status == 401  # a join needs a node's claim or the admin token
        async with http.post(f"{server.url}/api/multicast/sessions", json={"image": IMAGE}) as r:
            assert r.status == 401


async def test_a_fifo_at_the_image_path_is_refused_without_blocking_the_server(tmp_path):
    """Reading the first bytes of a FIFO blocks until someone writes: the join must refuse it
    from its stat, and the server must go on answering (the version route, at once)."""
    async with running_server(tmp_path) as server, aiohttp.ClientSession() as http:
        path = server.ctx.config.image_path(IMAGE)
        path.unlink()
        os.mkfifo(path)
        url = f"{server.url}/api/multicast/join"
        async with asyncio.timeout(10):
            async with http.post(url, json={"image": IMAGE}, headers=server.admin) as r:
                assert r.status == 409
                assert "not a regular file" in (await r.json())["error"]
            async with http.get(f"{server.url}/api/version") as r:
                assert r.status == 200


async def test_sender_restart_mid_session_is_repaired(tmp_path):
    """The server dies mid-transfer; receivers notice the silence, join the new server's
    session and keep every slice they already verified by CRC."""
    state = {"max_rate": 8, "min_receivers": 2, "max_wait": 0.2}
    async with running_server(tmp_path, **state) as first:
        url, digest, port = first.url, first.sha256, int(first.url.rsplit(":", 1)[1])
        outs = [tmp_path / "r1.img", tmp_path / "r2.img"]
        tasks = [
            asyncio.create_task(run_receiver(url, o, "--name", o.stem, "--idle-timeout", "1"))
            for o in outs
        ]
        await wait_for(lambda: first.service.sessions and only_session(first).sent_slices > 80)
    # the first server is gone now (sessions cancelled, sockets closed)
    async with running_server(tmp_path, http_port=port, sha256=digest, **state) as second:
        results = await asyncio.gather(*tasks)
        for (status, output), out in zip(results, outs, strict=True):
            assert status == 0, output
            assert sha256_of(out) == digest
            summary = json.loads(output.strip().splitlines()[-1])
            assert [s["result"] for s in summary["sessions"]] == ["idle", "verified"]
            assert summary["unicast_bytes"] == 0
        await wait_for(lambda: second.service.finished, message=lambda: second.service.status())
        assert [r["state"] for r in second.service.finished[0]["receivers"]] == ["done", "done"]


async def ghost_join(server, name="ghost"):
    """A receiver that joins and never speaks: it holds its session open until it is
    dropped as silent (slow_receiver_timeout), so a late join is really late."""
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{server.url}/api/multicast/join",
            json={"image": IMAGE, "name": name},
            headers=server.admin,
        ) as r,
    ):
        assert r.status == 200
        answer = await r.json()
    # one report, as a receiver sends once it listens; then silence
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        status = wire.pack_status(answer["session"], answer["receiver"], 0, 0, 0, 0)
        sock.sendto(status, ("127.0.0.1", answer["feedback_port"]))
    return answer


async def test_late_joiner_waits_for_the_next_session(tmp_path):
    async with running_server(
        tmp_path, max_rate=50, min_receivers=2, max_wait=0.1, slow_receiver_timeout=2
    ) as server:
        await ghost_join(server)
        early = asyncio.create_task(run_receiver(server.url, tmp_path / "early", "--name", "e"))
        await wait_for(lambda: server.service.sessions and only_session(server).sent_slices > 20)
        first = only_session(server)
        answer = await ghost_join(server, "late")  # what the receiver below will get too
        assert answer["session"] != first.id and answer["state"] == "waiting"
        assert first.state in ("running", "repairing")
        first_id = first.id
        # a short idle timeout: the waiting session's HELLOs must keep it from giving up
        late = asyncio.create_task(
            run_receiver(server.url, tmp_path / "late", "--name", "late", "--idle-timeout", "1")
        )
        status, output = await late
        assert status == 0, output
        summary = json.loads(output.strip().splitlines()[-1])
        assert [s["result"] for s in summary["sessions"]] == ["verified"]
        assert summary["sessions"][0]["id"] != first_id
        assert summary["unicast_bytes"] == 0
        assert (await early)[0] == 0
        assert sha256_of(tmp_path / "late") == server.sha256
        finished = list(server.service.finished)
        assert [s["id"] for s in finished][::-1][0] == first_id  # the first one ended first


async def test_late_joiner_falls_back_to_unicast_when_configured(tmp_path):
    async with running_server(
        tmp_path, max_rate=50, min_receivers=2, max_wait=0.1, late_joiners="unicast"
    ) as server:
        await ghost_join(server)
        early = asyncio.create_task(run_receiver(server.url, tmp_path / "early", "--name", "e"))
        await wait_for(lambda: server.service.sessions and only_session(server).sent_slices > 20)
        status, output = await run_receiver(server.url, tmp_path / "late", "--name", "late")
        assert status == 0, output
        summary = json.loads(output.strip().splitlines()[-1])
        assert summary["sessions"] == []
        assert summary["unicast_reason"] == "the multicast session already started"
        assert summary["unicast_bytes"] == os.path.getsize(tmp_path / "late")
        assert sha256_of(tmp_path / "late") == server.sha256
        assert (await early)[0] == 0


async def test_silent_receiver_is_dropped_and_finishes_by_unicast(tmp_path):
    async with running_server(
        tmp_path, max_rate=10, min_receivers=2, max_wait=0.2, slow_receiver_timeout=0.6
    ) as server:
        names = ["steady", "stalls"]
        procs = [
            asyncio.create_task(run_receiver(server.url, tmp_path / n, "--name", n)) for n in names
        ]
        await wait_for(lambda: server.service.sessions and only_session(server).sent_slices > 30)
        s = only_session(server)
        # stop the second receiver's process: it goes silent mid-session
        pid = _receiver_pid("stalls")
        os.kill(pid, signal.SIGSTOP)
        try:
            await wait_for(lambda: s.state == "finished", timeout=30)
        finally:
            os.kill(pid, signal.SIGCONT)
        results = await asyncio.gather(*procs)
        for (status, output), n in zip(results, names, strict=True):
            assert status == 0, output
            assert sha256_of(tmp_path / n) == server.sha256
        # what it misses after waking up (its socket buffer may hold the rest) comes by HTTP
        stalled = json.loads(results[1][1].strip().splitlines()[-1])
        assert stalled["sessions"][0]["result"] in ("dropped", "verified")
        states = {
            r["name"]: (r["state"], r["reason"]) for r in server.service.finished[0]["receivers"]
        }
        assert states["steady"] == ("done", "")
        assert states["stalls"][0] == "dropped" and "unicast" in states["stalls"][1]


def _receiver_pid(name: str) -> int:
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                argv = fh.read().split(b"\0")
        except OSError:
            continue
        if b"receive" in argv and name.encode() in argv and os.getppid() != int(entry):
            return int(entry)
    raise AssertionError(f"no receiver process named {name}")
