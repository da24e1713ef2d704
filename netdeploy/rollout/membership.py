"""The cluster's own member list: parsed from what its tools print, compared with the config. Pure.

The seed's last step is "verify that all of the nodes have successfully joined the cluster":
the admin looks at Cluster Administrator, i.e. at the cluster's view, not at each node's claim.
The report scripts (config/templates/report.vbs, the Linux answer files) send the raw output of
the cluster's own tool with their report, and it is parsed here, once, where it is tested:

- ``cluster node`` (Windows Server 2003 cluster.exe): a table ``Node  Node ID  Status``;
- ``Get-ClusterNode`` (Windows Server 2008 and later, FailoverClusters module): ``Name  State``
  (``Name  ID  State`` on newer releases);
- ``crm_mon -1`` (Pacemaker): ``Online: [ n1 n2 ]`` / ``OFFLINE: [ n3 ]`` lines (``* Online:``
  with Pacemaker 2).

A member counts when the cluster lists it **up** (``Up``, ``Online``); a listed node that is
down or paused is shown with that state but does not count.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

SOURCES = ("cluster node", "Get-ClusterNode", "crm_mon")
UP_STATES = frozenset({"up", "online"})
MAX_MEMBERS = 1024
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_RULE = re.compile(r"^[\s-]+$")  # the dashes under a table header
_CRM = re.compile(
    r"^\s*\*?\s*(Online|OFFLINE|Offline|Standby|Pending|UNCLEAN)\b[^:\[]*:\s*\[(.*)\]"
)


class BadMembers(ValueError):
    """A member list (or tool output) that cannot be understood; the message says why."""


@dataclass(frozen=True)
class Member:
    name: str  # as the cluster spells it (upper case on Windows)
    state: str  # as the cluster says it: Up, Down, Paused, Online, OFFLINE, ...

    @property
    def up(self) -> bool:
        return self.state.lower() in UP_STATES

    def json(self) -> dict[str, Any]:
        return {"name": self.name, "state": self.state, "up": self.up}


def _member(name: str, state: str) -> Member:
    name = name.strip()
    if not _NAME.match(name):
        raise BadMembers(f"{name!r} is not a node name")
    return Member(name, state.strip() or "unknown")


def parse_table(text: str) -> list[Member]:
    """``cluster node`` or ``Get-ClusterNode`` output: after the dashes, ``NAME ... STATE``."""
    lines = text.replace("\r", "").split("\n")
    start = next((i for i, line in enumerate(lines) if line.strip() and _RULE.match(line)), None)
    if start is None:
        raise BadMembers("no table in the output (expected a header underlined with dashes)")
    members = []
    for line in lines[start + 1 :]:
        words = line.split()
        if not words:
            continue
        if len(words) < 2:
            raise BadMembers(f"cannot read the row {line.strip()!r}: expected NAME ... STATE")
        members.append(_member(words[0], words[-1]))
    return members


def parse_crm_mon(text: str) -> list[Member]:
    """``crm_mon -1``: every node in an ``Online: [ ... ]``-style line, with that line's word."""
    members = []
    for line in text.replace("\r", "").split("\n"):
        match = _CRM.match(line)
        if match:
            state = match.group(1)
            members += [_member(name, state) for name in match.group(2).split()]
    if not members:
        raise BadMembers("no 'Online: [ ... ]' or 'OFFLINE: [ ... ]' line in the crm_mon output")
    return members


def parse_output(source: str, text: str) -> list[Member]:
    """The member list from the output of ``source`` (one of :data:`SOURCES`)."""
    if source == "crm_mon":
        members = parse_crm_mon(text)
    elif source in ("cluster node", "Get-ClusterNode"):
        members = parse_table(text)
    else:
        raise BadMembers(f"source must be one of {', '.join(SOURCES)} (got {source!r})")
    return _checked(members)


def parse_members(value: Any) -> list[Member]:
    """A member list sent as JSON: ``[{"name": "sql-n1", "state": "Up"}, ...]``."""
    if not isinstance(value, list):
        raise BadMembers('members must be a list such as [{"name": "n1", "state": "Up"}]')
    members = []
    for item in value:
        if not isinstance(item, dict) or set(item) - {"name", "state", "up"}:
            raise BadMembers('each member must be an object {"name": ..., "state": ...}')
        name, state = item.get("name"), item.get("state", "Up")
        if not isinstance(name, str) or not isinstance(state, str):
            raise BadMembers("a member's name and state must be strings")
        members.append(_member(name, state))
    return _checked(members)


def _checked(members: list[Member]) -> list[Member]:
    if len(members) > MAX_MEMBERS:
        raise BadMembers(f"{len(members)} members; at most {MAX_MEMBERS}")
    seen: set[str] = set()
    for m in members:
        if m.name.lower() in seen:
            raise BadMembers(f"{m.name} is listed twice")
        seen.add(m.name.lower())
    return members


# ---------------------------------------------------------------- the cluster's view vs the config


@dataclass(frozen=True)
class Comparison:
    """What the cluster's member list says about the configured nodes."""

    up: frozenset[str]  # configured host names (lower case) the cluster lists up
    listed: dict[str, str]  # configured host name (lower case) -> the cluster's state word
    missing: tuple[str, ...]  # configured, expected, but not up in the cluster's list
    strangers: tuple[str, ...]  # listed by the cluster but not configured in it

    @property
    def exact(self) -> bool:
        return not self.missing and not self.strangers


def compare(
    members: list[dict[str, Any]], configured: list[str], expected: list[str]
) -> Comparison:
    """Compare the stored member list with the config. ``configured``: every host name of the
    cluster; ``expected``: those that must be up (the admin may give a node up)."""
    by_name = {str(m["name"]).lower(): str(m.get("state", "")) for m in members}
    up = {str(m["name"]).lower() for m in members if str(m.get("state", "")).lower() in UP_STATES}
    names = {h.lower() for h in configured}
    return Comparison(
        up=frozenset(up & names),
        listed={h: by_name[h] for h in names if h in by_name},
        missing=tuple(h for h in expected if h.lower() not in up),
        strangers=tuple(sorted(str(m["name"]) for m in members if m["name"].lower() not in names)),
    )


def membership_record(
    members: list[Member], *, reporter: str, cluster_state: str, at: str
) -> dict[str, Any]:
    """What ``Cluster.membership`` keeps: the latest member list and who reported it when."""
    return {
        "members": [m.json() for m in members],
        "reported_by": reporter,
        "cluster_state": cluster_state,
        "at": at,
    }


# ---------------------------------------------------------------- what admins see


def in_cluster_label(
    hostname: str, node_state: str, kind: str | None, membership: dict[str, Any] | None
) -> str:
    """One node's membership as the cluster sees it, in the admin's words, beside its state:
    ``up``, the cluster's own word (``Down``, ``Paused``, ``OFFLINE``), ``not listed``, or
    ``joined, but not in the cluster's list``; "" when nothing can be said (no kind, or no
    list reported yet and the node does not claim to be joined)."""
    if not kind:
        return ""
    if membership is None:
        return "no member list reported yet" if node_state == "joined" else ""
    listed = {str(m["name"]).lower(): m for m in membership.get("members", [])}
    entry = listed.get(hostname.lower())
    if entry is None:
        return "joined, but not in the cluster's list" if node_state == "joined" else "not listed"
    if str(entry.get("state", "")).lower() in UP_STATES:
        return "up"
    word = str(entry.get("state", "?"))
    return f"joined, but the cluster says {word}" if node_state == "joined" else word


def membership_json(
    kind: str | None, membership: dict[str, Any] | None, nodes: list[tuple[str, str]]
) -> dict[str, Any]:
    """The cluster's view next to the config, for /api/clusters, the dashboard and the CLI.
    ``nodes``: (hostname, state) of every configured node of the cluster."""
    configured = {h.lower() for h, _ in nodes}
    return {
        "kind": kind,
        "verified": bool(kind),  # complete needs the cluster's own list
        "reported_by": membership.get("reported_by") if membership else None,
        "reported_at": membership.get("at") if membership else None,
        "members": [
            {**m, "configured": str(m["name"]).lower() in configured}
            for m in (membership or {}).get("members", [])
        ],
        "nodes": {h: in_cluster_label(h, s, kind, membership) for h, s in nodes},
    }
