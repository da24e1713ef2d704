"""The event log, in one place: how each kind of event row is built, how an admin reads it,
and how the record is queried.

Every module that records what happened builds its :class:`~netdeploy.store.models.Event`
with a function here, so the kinds, their fields and their wording stay one vocabulary for the
dashboard, the JSON API, the CLI and the tests (STYLE: "every state change is an event row").
The rollout writer, the boot decisions and the protocol adapters add the rows to their own
transaction (or batch); nothing here opens a session except :func:`query_events`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Select, Text, and_, cast, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import ColumnElement

from netdeploy.events import event_json
from netdeploy.inventory import BadMac, normalize_mac
from netdeploy.store.models import Cluster, Event, Node

# ---------------------------------------------------------------------------- building rows


def state_change(
    mac: str,
    cluster: str | None,
    from_state: str | None,
    to_state: str,
    reason: str,
    **detail: Any,
) -> Event:
    """A node moved from one rollout state to another (the rollout writer's ``set_state``)."""
    return Event(
        kind="state",
        mac=mac,
        cluster=cluster,
        from_state=from_state,
        to_state=to_state,
        detail={"reason": reason, **detail},
    )


# a wave row names this many host names for the log line; its ``macs`` name every node
WAVE_NAMES = 8


def wave(
    cluster: str, nodes: list[tuple[str, str | None]], *, seq: int, reason: str, **detail: Any
) -> Event:
    """Held nodes of ``cluster`` released together by its policy (``nodes``: (MAC, host name)
    in release order): one row for the whole wave (docs/decisions/0014), ``mac`` empty,
    ``detail.macs`` every MAC. Each node's timeline finds it through :func:`of_node`, the
    dashboards through :func:`macs_of`."""
    names = [host or mac for mac, host in nodes[:WAVE_NAMES]]
    return Event(
        kind="state",
        mac=None,
        cluster=cluster,
        from_state="held",
        to_state="released",
        detail={
            "reason": reason,
            "release_seq": seq,
            "count": len(nodes),
            "names": names,
            "macs": [mac for mac, _ in nodes],
            **detail,
        },
    )


def macs_of(ev: Event | dict[str, Any]) -> list[str]:
    """The nodes an event row is about: its MAC, or every MAC of a release wave."""
    mac = ev.get("mac") if isinstance(ev, dict) else ev.mac
    if mac:
        return [mac]
    detail = (ev.get("detail") if isinstance(ev, dict) else ev.detail) or {}
    macs = detail.get("macs") if isinstance(detail, dict) else None
    return [m for m in macs if isinstance(m, str)] if isinstance(macs, list) else []


def gate_change(
    cluster: str, from_gate: str | None, to_gate: str, reason: str, **extra: Any
) -> Event:
    return Event(
        kind="gate",
        cluster=cluster,
        from_state=from_gate,
        to_state=to_gate,
        detail={"reason": reason, **extra},
    )


def boot_request(
    mac: str | None, cluster: str | None, *, via: str, path: str, ip: str, decision: str, why: str
) -> Event:
    """What a booting machine asked (``via``, ``path``, ``ip``) and what the boot plan decided."""
    detail = {"via": via, "path": path, "ip": ip, "decision": decision, "why": why}
    return Event(kind="boot", mac=mac, cluster=cluster, detail=detail)


def discovery_folded(unlogged: int, *, max_rows: int) -> Event:
    """Unknown MACs that booted in the last minute beyond ``[discovery] events_per_minute``:
    recorded as discovered (up to ``max_rows``), counted here instead of logged one by one."""
    return Event(kind="discovery", detail={"unlogged": unlogged, "max_rows": max_rows})


def refusal(
    *,
    forbidden: bool,
    mac: str | None,
    cluster: str | None,
    from_state: str | None = None,
    **detail: Any,
) -> Event:
    """A request refused: ``auth`` when credentials were wrong, ``rejected`` otherwise."""
    return Event(
        kind="auth" if forbidden else "rejected",
        mac=mac,
        cluster=cluster,
        from_state=from_state,
        detail=detail,
    )


def alarm(
    mac: str | None, cluster: str | None, state: str | None, why: str, **detail: Any
) -> Event:
    """Evidence that someone other than a node's own agent holds or uses its credentials (a
    second claim, a stolen token in use): shown on the dashboard, in ``/api/clusters`` and
    ``netdeploy clusters``; it stops the cluster's gate (docs/security.md)."""
    return Event(
        kind="alarm",
        mac=mac,
        cluster=cluster,
        from_state=state,
        to_state=state,
        detail={"reason": f"ALARM: {why}", **detail},
    )


def answer_file(mac: str, cluster: str | None, **detail: Any) -> Event:
    """An answer file served (``secret`` when it held secrets) or refused as broken."""
    return Event(kind="answer", mac=mac, cluster=cluster, detail=detail)


def agent_report(mac: str, cluster: str | None, state: str, **detail: Any) -> Event:
    """A milestone the agent put into words without changing state (kept in the log)."""
    return Event(kind="report", mac=mac, cluster=cluster, to_state=state, detail=detail)


def health(mac: str, cluster: str | None, **detail: Any) -> Event:
    return Event(kind="health", mac=mac, cluster=cluster, detail=detail)


def membership(mac: str, cluster: str, record: dict[str, Any]) -> Event:
    """The member list the cluster itself reported (through its first node's health report)."""
    return Event(kind="members", mac=mac, cluster=cluster, detail=record)


def admin_action(
    mac: str, cluster: str | None, state: str, action: str, actor: str, **detail: Any
) -> Event:
    """release / retry / fail / reset, by whom."""
    return Event(
        kind="admin",
        mac=mac,
        cluster=cluster,
        from_state=state,
        to_state=state,
        detail={"action": action, "actor": actor, **detail},
    )


def image_change(image: str, **detail: Any) -> Event:
    """The catalog changed: an image added, verified, removed or found damaged."""
    return Event(kind="image", detail={"image": image, **detail})


def capture(mac: str, image: str, state: str, message: str, **detail: Any) -> Event:
    """A machine's network capture moved on (requested, capturing, done, failed, refused)."""
    return Event(
        kind="capture",
        mac=mac,
        detail={"image": image, "state": state, "message": message, **detail},
    )


def transfer(kind: str, mac: str | None, cluster: str | None, **detail: Any) -> Event:
    """One finished transfer: ``tftp`` (a file) or ``http`` (an image stream)."""
    return Event(kind=kind, mac=mac, cluster=cluster, detail=detail)


def dhcp_answer(mac: str, cluster: str | None, detail: dict[str, Any]) -> Event:
    """What the ProxyDHCP saw and answered (identical repeats folded into one)."""
    return Event(kind="dhcp", mac=mac, cluster=cluster, detail=detail)


def multicast(
    mac: str | None, cluster: str | None, detail: dict[str, Any], at: datetime | None = None
) -> Event:
    return Event(kind="multicast", mac=mac, cluster=cluster, detail=detail, at=at)


def config_change(
    detail: dict[str, Any],
    *,
    mac: str | None = None,
    cluster: str | None = None,
    from_state: str | None = None,
) -> Event:
    """The config was imported (what it added, updated, removed), or one node left it."""
    return Event(kind="config", mac=mac, cluster=cluster, from_state=from_state, detail=detail)


def facts_report(mac: str, cluster: str | None, summary: str, **detail: Any) -> Event:
    """The agent reported what it found on the machine (``summary`` in the admin's words)."""
    return Event(kind="facts", mac=mac, cluster=cluster, detail={"message": summary, **detail})


def reload(detail: dict[str, Any]) -> Event:
    """The running server re-read its config (reload, SIGHUP, adopt): applied or refused."""
    return Event(kind="config", detail=detail)


# ---------------------------------------------------------------------------- reading rows


def _multicast_text(d: dict[str, Any]) -> str:
    """A multicast session's events (netdeploy/multicast/session.py) in the admin's words."""
    what, session, image = d["what"], d.get("session", "?"), d.get("image", "?")
    if what == "receiver_done":
        return f"received {image} from multicast session {session}, sha256 verified"
    if what == "receiver_bad":
        return f"multicast copy of {image} failed its sha256 (session {session}): not used"
    if what == "receiver_dropped":
        return f"dropped from multicast session {session}: {d.get('why', '')}; finishing by HTTP"
    head = f"multicast session {session} of {image} {what.removeprefix('session_')}"
    if what == "session_started":
        head += f": {d['reason']}" if d.get("reason") else ""
    counts = ", ".join(
        f"{v} {k.removeprefix('receivers_')}" for k, v in d.items() if k.startswith("receivers_")
    )
    parts = [head, f"{d.get('receivers', 0)} receivers" + (f" ({counts})" if counts else "")]
    if what != "session_started":
        parts.append(
            f"sent {d.get('bytes_sent', 0) / 2**20:.1f} MiB, "
            f"{d.get('repair_slices', 0)} slices repaired"
        )
    if d.get("detail"):
        parts.append(str(d["detail"]))
    return "; ".join(parts)


def _mib(n: Any) -> str:
    return f"{n / 2**20:.1f} MiB" if isinstance(n, int | float) else "?"


def _image_text(d: dict[str, Any]) -> str:
    """One image download (http/image_routes.py), in the admin's words."""
    part = f" from byte {d['offset']:,}" if d.get("offset") else ""
    done = "complete" if d.get("complete") else f"incomplete: {_mib(d.get('sent'))} of the range"
    size, seconds = _mib(d.get("length")), d.get("seconds", "?")
    text = f"image {d.get('image', '?')}: {size}{part} in {seconds} s, {done}"
    return text + (f" ({d['aborted']})" if d.get("aborted") else "")


def _tftp_text(d: dict[str, Any]) -> str:
    """One TFTP transfer (tftp/transfer.py TransferStats.detail), in the admin's words."""
    text = (
        f"{d['file']} to {d.get('client', '?')}: {d['outcome']}, {d.get('bytes', 0):,} bytes in "
        f"{d.get('seconds', '?')} s (blksize {d.get('blksize', '?')}, windowsize "
        f"{d.get('windowsize', '?')}"
    )
    text += f", {d['retransmits']} retransmitted)" if d.get("retransmits") else ")"
    return text + (f": {d['message']}" if d.get("message") else "")


def _wave_names(detail: dict[str, Any]) -> str:
    names = [str(n) for n in detail.get("names") or []]
    count = detail.get("count")
    more = count - len(names) if isinstance(count, int) else 0
    head = ", ".join(names)
    return f"{head} and {more:,} more" if more > 0 else head


class LogFilterError(ValueError):
    """A filter names a node or cluster that does not exist; the message says which."""


def describe(ev: dict[str, Any]) -> str:
    """One line an admin reads in the event log (the page and the JSON API share it)."""
    detail = dict(ev.get("detail") or {})
    message = str(detail.pop("message", "") or "")
    reason = str(detail.pop("reason", "") or "")
    if ev.get("kind") in ("state", "gate") and ev.get("to"):
        text = f"{ev['from']} → {ev['to']}" if ev.get("from") else f"new → {ev['to']}"
        text = f"gate {text}" if ev["kind"] == "gate" else text
        extra = reason or message
        if isinstance(detail.get("macs"), list):  # a release wave: who, in the admin's words
            extra += f" (wave {detail.get('release_seq')}: {_wave_names(detail)})"
        return f"{text}: {extra}" if extra else text
    if ev.get("kind") == "discovery" and "unlogged" in detail:
        return (
            f"{detail['unlogged']} more unknown MACs booted in a minute: recorded as discovered "
            f"(the newest {detail.get('max_rows')} are kept), not logged one by one"
        )
    if ev.get("kind") == "multicast" and detail.get("what"):
        return _multicast_text(dict(ev["detail"]))
    if ev.get("kind") == "http" and detail.get("what") == "image" and "sent" in detail:
        return _image_text(detail)
    if ev.get("kind") == "tftp" and "file" in detail and "outcome" in detail:
        return _tftp_text(detail)
    if ev.get("kind") == "dhcp" and message:
        # the ProxyDHCP worded it already (dhcp/pxe.py); the reason and any warning follow
        parts = [message, str(detail.get("why") or ""), str(detail.get("warning") or "")]
        return "; ".join(part for part in parts if part)
    error = str(detail.pop("error", "") or "")
    if ev.get("kind") == "admin" and detail.get("action"):  # release/retry/fail/reset by whom
        head = f"{detail.pop('action')} by {detail.pop('actor', 'an admin')}"
        parts = [f"{head}: {reason}" if reason else head]
    else:
        parts = [f"refused: {error}" if error else message or reason]
    progress, done, total = detail.pop("progress", None), detail.pop("bytes", None), None
    if isinstance(progress, int | float):
        parts.append(f"{progress:.0f}%")
    if isinstance(done, int) and isinstance(total := detail.pop("total", None), int):
        parts.append(f"{done / 1e9:.1f} of {total / 1e9:.1f} GB")
    elif done is not None:
        detail["bytes"] = done
    parts.append(
        ", ".join(f"{k}={v}" for k, v in detail.items() if isinstance(v, str | int | float | bool))
    )
    return "; ".join(part for part in parts if part) or str(ev.get("kind"))


# How loudly a row speaks in the log: an admin scanning 100 routine lines must see the failure.
ERROR, WARNING, INFO = "error", "warning", "info"


def severity(ev: dict[str, Any]) -> str:
    """``error`` (something failed or was refused for its credentials), ``warning`` (something
    went wrong that may heal: a refused request, a timed-out transfer) or ``info``."""
    kind, detail = ev.get("kind"), ev.get("detail") or {}
    if kind == "state":
        return ERROR if ev.get("to") == "failed" else INFO
    if kind == "gate":
        return ERROR if ev.get("to") == "stopped" else INFO
    if kind in ("auth", "alarm"):
        return ERROR
    if kind == "rejected":
        return WARNING
    if kind == "answer" and detail.get("refused"):
        return ERROR
    if kind == "tftp" and detail.get("outcome") not in (None, "ok"):
        return WARNING
    if kind == "http" and detail.get("complete") is False:
        return WARNING
    if kind == "image" and detail.get("status") in ("bad", "missing"):
        return ERROR
    if kind == "multicast" and detail.get("what") == "receiver_bad":
        return ERROR
    if kind == "multicast" and detail.get("what") == "receiver_dropped":
        return WARNING
    if kind == "dhcp" and detail.get("warning"):
        return WARNING
    if kind == "health" and detail.get("healthy") is False:
        return WARNING
    if kind == "admin" and detail.get("action") == "fail":
        return WARNING
    return INFO


def with_text(ev: dict[str, Any]) -> dict[str, Any]:
    return {**ev, "text": describe(ev), "severity": severity(ev)}


async def resolve_node(session: AsyncSession, text: str) -> str:
    """A node filter accepts a MAC in any notation or a host name; returns the canonical MAC."""
    try:
        return normalize_mac(text)
    except BadMac:
        pass
    mac = await session.scalar(select(Node.mac).where(Node.hostname == text.strip()))
    if mac is None:
        raise LogFilterError(f"no node with MAC or host name {text!r}")
    return mac


def in_wave(mac: str, cluster: str) -> ColumnElement[bool]:
    """Release-wave rows of ``cluster`` that list ``mac`` (a wave row has no MAC of its own;
    a cluster has few of them, so the text match stays cheap)."""
    return and_(
        Event.cluster == cluster,
        Event.mac.is_(None),
        Event.kind == "state",
        cast(Event.detail, Text).contains(f'"{mac}"', autoescape=True),
    )


async def of_node(
    session: AsyncSession, query: Select[tuple[Event]], mac: str, cluster: str | None, limit: int
) -> list[Event]:
    """The newest ``limit`` rows of ``query`` about one node: its own and the release waves
    of its cluster that name it. Two queries merged, not one OR: each uses its own index."""
    query = query.order_by(Event.id.desc()).limit(limit)
    rows = list((await session.scalars(query.where(Event.mac == mac))).all())
    if cluster:
        rows += (await session.scalars(query.where(in_wave(mac, cluster)))).all()
        rows.sort(key=lambda ev: ev.id, reverse=True)
    return rows[:limit]


async def query_events(
    session: AsyncSession,
    *,
    node: str | None = None,
    cluster: str | None = None,
    kind: str | None = None,
    before: int | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Events newest first, each with its ``text``; raises :class:`LogFilterError`."""
    query = select(Event)
    if cluster:
        if await session.get(Cluster, cluster) is None:
            names = (await session.scalars(select(Cluster.name).order_by(Cluster.name))).all()
            raise LogFilterError(
                f"no cluster named {cluster!r}; clusters: {', '.join(names) or 'none'}"
            )
        # a cluster's log is its own events plus those of its nodes (a gate event has no MAC)
        members = select(Node.mac).where(Node.cluster == cluster)
        query = query.where(or_(Event.cluster == cluster, Event.mac.in_(members)))
    if kind:
        query = query.where(Event.kind == kind)
    if before is not None:
        query = query.where(Event.id < before)
    if node:
        mac = await resolve_node(session, node)
        home = await session.scalar(select(Node.cluster).where(Node.mac == mac))
        rows = await of_node(session, query, mac, home, limit)
    else:
        rows = list((await session.scalars(query.order_by(Event.id.desc()).limit(limit))).all())
    return [with_text(event_json(ev)) for ev in rows]
