"""The multicast service inside ``netdeploy serve``: sessions per image and cluster.

It answers joins (which session, which group and port, or "use unicast"), runs each
session's sender as a task, keeps sessions of one image and cluster one after another
(late joiners wait for the next one), and records what happened as events and metrics.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import prometheus_client
from sqlalchemy import select

from netdeploy import eventlog
from netdeploy.context import Context, Refusal
from netdeploy.images.hashing import sniff_format
from netdeploy.inventory import NodeState
from netdeploy.multicast.session import SenderSession, SessionParams
from netdeploy.store.models import Event, Image, Node, utcnow

log = logging.getLogger("netdeploy.multicast")

SESSIONS = prometheus_client.Counter(
    "netdeploy_multicast_sessions", "Multicast sessions ended, by result", ["result"]
)
BYTES_SENT = prometheus_client.Counter(
    "netdeploy_multicast_sent_bytes", "Image bytes sent to multicast groups (repairs included)"
)
REPAIRS = prometheus_client.Counter(
    "netdeploy_multicast_repair_slices", "Slices sent again because receivers asked for them"
)
RECEIVERS = prometheus_client.Counter(
    "netdeploy_multicast_receivers", "Receivers at the end of their session, by state", ["state"]
)
HISTORY = 20  # finished sessions kept for the status API
# node states whose next boot images the node (DESIGN: registered/pxe/imaging -> the agent)
_COMING = {NodeState.REGISTERED, NodeState.PXE, NodeState.IMAGING}


class JoinError(Refusal):
    """A join cannot be served; ``status`` is the HTTP status, the message says what to do."""


# decision 0019: a receiver writes the file's bytes at their offsets (and repairs byte ranges),
# so a zstd file sent by multicast would land on a disk compressed
NO_ZSTD = (
    "image {name!r} is stored as raw+zstd and is never sent by multicast: a receiver writes the "
    "file's bytes at their offsets, and a zstd stream has to be decompressed in order (decision "
    "0019). A node images it over HTTP: its agent asks for its plan with ?zstd=1 (GET "
    "/api/nodes/MAC/plan?zstd=1) and decompresses the stream with ndcap unzstd; the compressed "
    'file itself is GET /images/{name}. To image it by multicast, set format = "raw" in '
    "[images.{name}] and run `netdeploy image add {name} PATH` without --compress"
)


@dataclass(frozen=True)
class ImageSource:
    name: str
    path: str
    size: int
    sha256: str


class MulticastService:
    def __init__(self, ctx: Context):
        self.ctx = ctx
        self.cfg = ctx.config.multicast
        self.sessions: dict[int, SenderSession] = {}
        self.finished: deque[dict[str, Any]] = deque(maxlen=HISTORY)
        low, high = self.cfg.port_range
        self._free_ports = list(range(low, high, 2))
        self._tasks: set[asyncio.Task[Any]] = set()  # one per session
        self._writes: set[asyncio.Task[Any]] = set()  # event rows being stored
        self.stopping = False

    # ------------------------------------------------------------------ images

    async def image_source(self, name: str) -> ImageSource:
        """Path, size and sha256 of a catalogued image, or a JoinError saying what is missing
        or why it is not sent by multicast (raw+zstd, decision 0019)."""
        if name not in self.ctx.config.images:
            known = ", ".join(sorted(self.ctx.config.images)) or "none"
            raise JoinError(404, f"unknown image {name!r}; configured images: {known}")
        async with self.ctx.sessions() as session:
            row = await session.get(Image, name)
        path = row.path if row else str(self.ctx.config.image_path(name))
        sha256 = (row.sha256 if row else None) or self.ctx.config.images[name].sha256
        if "raw+zstd" in (row.format if row else None, self.ctx.config.images[name].format):
            raise JoinError(409, NO_ZSTD.format(name=name))
        if row is not None and row.status in ("bad", "missing"):
            raise JoinError(409, f"image {name!r} is {row.status}: {row.status_detail}")
        if not sha256:
            raise JoinError(
                409, f"image {name!r} has no sha256 yet; run `netdeploy image add {name} PATH`"
            )
        try:
            found = os.stat(path)
            size = found.st_size
            if not stat.S_ISREG(found.st_mode):  # a FIFO would block the loop in sniff_format
                raise JoinError(409, f"image {name!r}: {path} is not a regular file")
            # the bytes decide too, as in `image add`: a file served by its config's sha256
            # alone was never looked at
            compressed = sniff_format(Path(path)) == "raw+zstd"
        except OSError as exc:
            raise JoinError(409, f"image {name!r}: cannot read {path}: {exc.strerror}") from None
        if compressed:
            raise JoinError(409, NO_ZSTD.format(name=name))
        if row is not None and row.size is not None and row.size != size:
            raise JoinError(
                409,
                f"image {name!r} is {size} bytes but was catalogued at {row.size}; "
                f"run `netdeploy image verify {name}`",
            )
        return ImageSource(name, path, size, sha256)

    # ------------------------------------------------------------------ sessions

    async def _expected(self, image: str, cluster: str | None) -> int | None:
        """How many receivers a cluster's session waits for: the cluster's nodes that receive
        this image by multicast and are about to image (a node that is already imaged, held or
        running is not coming). None for receivers outside a cluster: min_receivers decides."""
        if cluster is None:
            return None
        cfg = self.ctx.config
        macs = [
            n.mac
            for n in cfg.cluster_nodes(cluster)
            if cfg.image_for(n) == image and cfg.distribution_for(n) == "multicast"
        ]
        if not macs:
            return None
        async with self.ctx.sessions() as session:
            rows = await session.execute(select(Node.mac, Node.state).where(Node.mac.in_(macs)))
            states = {mac: state for mac, state in rows}
        coming = sum(1 for mac in macs if states.get(mac, "registered") in _COMING)
        return coming or None

    def _params(self, interface: str | None, **overrides: Any) -> SessionParams:
        if not self._free_ports:
            raise JoinError(
                503,
                f"all {len(range(*self.cfg.port_range, 2))} multicast port pairs are in use; "
                "widen multicast.port_range",
            )
        port = self._free_ports.pop(0)
        return SessionParams(
            group=self.cfg.group,
            data_port=port,
            feedback_port=port + 1,
            bind=self.ctx.config.server.bind,
            interface=self.cfg.interface or interface,
            ttl=self.cfg.ttl,
            max_rate=self.cfg.max_rate * 1e6 / 8,
            min_receivers=overrides.get("min_receivers") or self.cfg.min_receivers,
            max_wait=overrides.get("max_wait") or self.cfg.max_wait,
            slow_receiver_loss=self.cfg.slow_receiver_loss,
            slow_receiver_timeout=self.cfg.slow_receiver_timeout,
            slice_size=self.cfg.slice_size,
        )

    def _chain(self, image: str, cluster: str | None) -> list[SenderSession]:
        return [
            s
            for s in self.sessions.values()
            if (s.image, s.cluster) == (image, cluster) and s.state not in ("finished", "failed")
        ]

    def create(
        self,
        source: ImageSource,
        cluster: str | None,
        expected: int | None,
        interface: str | None = None,
        **overrides: Any,
    ) -> SenderSession:
        """A new waiting session; it starts after every earlier one of this image and cluster."""
        params = self._params(interface, **overrides)
        earlier = self._chain(source.name, cluster)
        session = SenderSession(
            source.name,
            cluster,
            source.path,
            source.size,
            source.sha256,
            params,
            expected=expected,
            on_change=lambda kind, detail: self._record(session, kind, detail),
        )
        if earlier:
            session.after = earlier[-1].done
        self.sessions[session.id] = session
        task = asyncio.create_task(self._run(session), name=f"multicast-{session.id:08x}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return session

    async def _run(self, session: SenderSession) -> None:
        try:
            await session.run()
        finally:
            self._free_ports.append(session.params.data_port)
            self._free_ports.sort()
            # Listed as finished once its events are stored (the last ones were queued as it
            # ended), so whoever sees it finished finds its record in the event log too.
            summary = session.json()

            def listed(_: object = None) -> None:
                self.sessions.pop(session.id, None)
                self.finished.appendleft(summary)

            if self._writes:
                writing = asyncio.gather(*self._writes, return_exceptions=True)
                writing.add_done_callback(listed)
            else:
                listed()
            SESSIONS.labels(session.state).inc()
            BYTES_SENT.inc(session.bytes_sent)
            REPAIRS.inc(session.repair_slices)
            for rec in session.receivers.values():
                RECEIVERS.labels(rec.state).inc()

    async def join(
        self,
        image: str,
        *,
        mac: str | None,
        name: str,
        client_ip: str,
        local_ip: str | None,
        base_url: str,
    ) -> dict[str, Any]:
        """Where a receiver gets ``image``: a multicast session, or a unicast URL and why."""
        if self.stopping:
            raise JoinError(503, "the server is stopping; join again in a moment")
        source = await self.image_source(image)
        unicast = {
            "mode": "unicast",
            "image": image,
            "url": f"{base_url}/images/{image}",
            "size": source.size,
            "sha256": source.sha256,
        }
        if not self.cfg.enabled:
            return {**unicast, "reason": "multicast is disabled (multicast.enabled = false)"}
        node = self.ctx.config.node_by_mac(mac) if mac else None
        cluster = node.cluster if node else None
        # read the store first: from here to create() nothing awaits, so two joins arriving
        # together cannot both find no waiting session and open one each
        expected = await self._expected(image, cluster)
        chain = self._chain(image, cluster)
        for session in chain:
            for rec in session.receivers.values():
                if rec.matches(name, mac, client_ip) and rec.state != "dropped":
                    return self._answer(session, session.join(name, mac, client_ip), unicast)
        target = next((s for s in chain if s.state == "waiting"), None)
        if target is None and chain:  # late: the session for this image already runs
            if self.cfg.late_joiners == "unicast":
                return {**unicast, "reason": "the multicast session already started"}
            members = {r.mac for s in chain for r in s.receivers.values() if r.mac}
            if expected is not None:
                expected = max(expected - len(members), 1)
            # a late session starts with whoever is there once the earlier one ends and
            # max_wait passed: min_receivers must not strand one late machine for ever
            target = self.create(source, cluster, expected, local_ip, min_receivers=1)
        if target is None:
            target = self.create(source, cluster, expected, local_ip)
        return self._answer(target, target.join(name, mac, client_ip), unicast)

    def _answer(self, session: SenderSession, rec: Any, unicast: dict[str, Any]) -> dict[str, Any]:
        self._announce_join(session, rec)
        return {
            "mode": "multicast",
            "image": session.image,
            "session": session.id,
            "receiver": rec.id,
            "state": session.state,
            "group": session.params.group,
            "port": session.params.data_port,
            "feedback_port": session.params.feedback_port,
            "slice_size": session.params.slice_size,
            "slices": session.slices,
            "size": session.size,
            "sha256": session.sha256,
            "url": unicast["url"],
        }

    def status(self) -> dict[str, Any]:
        return {
            "sessions": [s.json() for s in self.sessions.values()],
            "finished": list(self.finished),
        }

    def find(self, session_id: int) -> dict[str, Any] | None:
        if session_id in self.sessions:
            return self.sessions[session_id].json()
        return next((s for s in self.finished if s["id"] == session_id), None)

    # ------------------------------------------------------------------ events

    def _record(self, session: SenderSession, kind: str, detail: dict[str, Any]) -> None:
        mac = detail.get("mac")
        event = eventlog.multicast(
            mac,
            session.cluster,
            {"what": kind, "session": f"{session.id:08x}", "image": session.image, **detail},
        )
        task = asyncio.create_task(self._store(event))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    def _announce_join(self, session: SenderSession, rec: Any) -> None:
        """Tell live listeners (the dashboard) that a session gained a receiver.

        Announced on the bus without an events row, like imaging progress: a rack joins at
        once and the session's start records who took part. No id, so it is never replayed."""
        self.ctx.bus.publish(
            eventlog.multicast(
                rec.mac,
                session.cluster,
                at=utcnow(),
                detail={
                    "what": "receiver_joined",
                    "session": f"{session.id:08x}",
                    "image": session.image,
                    "receiver": rec.name,
                },
            )
        )

    async def _store(self, event: Event) -> None:
        try:
            async with self.ctx.sessions() as db:
                db.add(event)
                await db.commit()
        except Exception:
            log.exception("could not record multicast event %s", event.detail)
            return
        self.ctx.bus.publish(event)

    async def stop(self) -> None:
        """Stop every session (receivers are told to join again), then store their events."""
        self.stopping = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*self._writes, return_exceptions=True)


async def start_multicast(service: MulticastService) -> Any:
    """Sessions are created on the first join, nothing binds before; returns the stopper."""
    if service.cfg.enabled:
        log.info(
            "multicast: group %s, ports %d-%d, max %.0f Mbit/s",
            service.cfg.group,
            *service.cfg.port_range,
            service.cfg.max_rate,
        )
    return service.stop


__all__ = ["JoinError", "MulticastService", "start_multicast"]
