"""Prometheus gauges read from the store at scrape time: nodes per state, per cluster, gates.

Counting from the store rather than from events keeps the numbers right after a restart and
when several servers share one PostgreSQL (each reports the same truth). One grouped query
per scrape is cheap next to the scrape interval. Counters of work done (bytes served per
protocol, TFTP and HTTP transfers, gate long-polls) live with the code that does the work
(``netdeploy/tftp``, ``netdeploy/images``, ``netdeploy/rollout``) on the same default registry.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Counter
from prometheus_client.core import REGISTRY, GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import async_sessionmaker

from netdeploy.inventory import NodeState
from netdeploy.store.models import Cluster, Image, Node
from netdeploy.store.outage import OUTAGE, is_outage

HTTP_RESPONSES = Counter(
    "netdeploy_http_responses",
    "HTTP responses by route pattern (e.g. /boot/{mac}.ipxe) and status code",
    ["route", "status"],
)

GATES = ("waiting", "formed", "releasing", "complete", "stopped")


@dataclass
class StoreSnapshot:
    nodes: dict[tuple[str, str], int] = field(default_factory=dict)  # (cluster or "", state)
    gates: dict[str, str] = field(default_factory=dict)  # cluster -> gate
    images: dict[str, int] = field(default_factory=dict)  # status -> count
    event_streams: int = 0
    gate_waits: int = 0


class StoreCollector(Collector):
    """Yields the last snapshot taken by :func:`refresh` (collect() itself cannot await)."""

    def __init__(self) -> None:
        self.snapshot = StoreSnapshot()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        snap = self.snapshot
        per_state = GaugeMetricFamily(
            "netdeploy_nodes", "Nodes in each state (all nodes, from the store)", labels=["state"]
        )
        for state in NodeState:  # every state, zeros included, so graphs and alerts see them
            total = sum(n for (_, s), n in snap.nodes.items() if s == state)
            per_state.add_metric([state.value], total)
        yield per_state
        per_cluster = GaugeMetricFamily(
            "netdeploy_cluster_nodes",
            "Nodes of each cluster in each state",
            labels=["cluster", "state"],
        )
        for cluster in sorted(snap.gates):
            for state in NodeState:
                per_cluster.add_metric([cluster, state.value], snap.nodes.get((cluster, state), 0))
        yield per_cluster
        gate = GaugeMetricFamily(
            "netdeploy_cluster_gate",
            "1 for the gate state each cluster is in (waiting for its first node, formed, "
            "releasing, complete, stopped on failure), 0 for the others",
            labels=["cluster", "gate"],
        )
        for cluster, current in sorted(snap.gates.items()):
            for name in GATES:
                gate.add_metric([cluster, name], 1 if name == current else 0)
        yield gate
        images = GaugeMetricFamily(
            "netdeploy_images",
            "Catalog images by status (ok, unhashed, bad, missing)",
            labels=["status"],
        )
        for status, count in sorted(snap.images.items()):
            images.add_metric([status], count)
        yield images
        yield GaugeMetricFamily(
            "netdeploy_event_stream_clients",
            "Open Server-Sent Events streams (dashboards watching)",
            value=snap.event_streams,
        )
        yield GaugeMetricFamily(
            "netdeploy_gate_waiting_requests",
            "Agents parked in the gate long-poll (GET /api/nodes/{mac}/gate) right now",
            value=snap.gate_waits,
        )


COLLECTOR = StoreCollector()
REGISTRY.register(COLLECTOR)


async def refresh(
    sessions: async_sessionmaker, event_streams: int = 0, gate_waits: int = 0
) -> None:
    """Read the store once and make the next scrape report it (plus the live counts given).

    When the store is unreachable the scrape still answers, with the last snapshot and
    ``netdeploy_store_reachable 0``: Prometheus keeps every other series through an outage.
    """
    try:
        await _read_store(sessions, event_streams, gate_waits)
    except Exception as exc:
        if not is_outage(exc):
            raise
        OUTAGE.failed("http", "GET /metrics", exc)


async def _read_store(sessions: async_sessionmaker, event_streams: int, gate_waits: int) -> None:
    async with sessions() as session:
        rows = (
            await session.execute(
                select(Node.cluster, Node.state, func.count()).group_by(Node.cluster, Node.state)
            )
        ).all()
        gates = (await session.execute(select(Cluster.name, Cluster.gate))).all()
        images = (
            await session.execute(select(Image.status, func.count()).group_by(Image.status))
        ).all()
    COLLECTOR.snapshot = StoreSnapshot(
        nodes={(cluster or "", state): count for cluster, state, count in rows},
        gates=dict(gates),
        images=dict(images),
        event_streams=event_streams,
        gate_waits=gate_waits,
    )


# (route pattern, status) -> its counter: ``labels()`` takes a lock and builds the key on every
# call, a few µs of each agent report (bench/rollout.py). Bounded like the labels themselves:
# route patterns and status codes.
_RESPONSE_COUNTERS: dict[tuple[str, int], Any] = {}


def count_response(request: Any, status: int) -> None:
    """One HTTP response; the route label is the pattern, never the raw path (bounded labels)."""
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    counter = _RESPONSE_COUNTERS.get((route, status))
    if counter is None:
        counter = _RESPONSE_COUNTERS[route, status] = HTTP_RESPONSES.labels(route, str(status))
    counter.inc()
