"""Why did this machine (not) boot? The boot path of one MAC as a timeline, read from the record.

PEERS.md: the peers' users hurt most on *silent* boot failures (Cobbler #3970/#3101, pixiecore
#13/#77, Tinkerbell #728) because nobody can answer "why did MAC X not boot?". Everything the
answer needs is already an event row (eventlog.py): ProxyDHCP answers (``dhcp``), TFTP
transfers (``tftp``), boot decisions with their ``why`` (``boot``), image downloads
(``http``), answer files (``answer``), refusals (``auth``/``rejected``), agent reports
(``state``, ``report``, ``health``) and what admins did (``admin``). This module orders them
into one timeline, ends it with what the machine gets on its next boot and what the admin can
do, and, for a machine that was never heard from, names the likely causes.

Read only, thin over the store; ``netdeploy explain`` (through the server's API) and the
dashboard's node page both show :func:`explain`'s answer.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, select
from sqlalchemy.ext.asyncio import AsyncSession

from netdeploy.boot.plan import BootUrls, NodeFacts, boot_plan
from netdeploy.eventlog import LogFilterError, describe, severity
from netdeploy.events import event_json
from netdeploy.inventory import BadMac, NodeState, mac_hyphens, normalize_mac
from netdeploy.rollout import liveness
from netdeploy.rollout.gate import DEFAULT_TIMEOUTS, as_utc
from netdeploy.store.models import Cluster, Event, Node

# A first stage (GET /boot.ipxe, TFTP boot.ipxe) names no MAC: it is shown in a machine's
# timeline when it came from the same address at most this long before the machine's
# per-MAC request (iPXE chains within a second; DHCP retries take longer).
FIRST_STAGE_WINDOW = timedelta(seconds=60)
MAX_STEPS = 500

PHASES = {
    "dhcp": "ProxyDHCP",
    "tftp": "TFTP",
    "boot": "boot decision",
    "http": "image download",
    "answer": "answer file",
    "state": "state",
    "report": "agent",
    "progress": "agent",
    "health": "cluster service",
    "auth": "refused",
    "rejected": "refused",
    "admin": "admin",
    "gate": "cluster gate",
    "config": "config",
    "multicast": "multicast",
}


class ExplainSettings:
    """What the answer depends on besides the record: from the config, handed in."""

    def __init__(
        self,
        *,
        public_url: str,
        dhcp_proxy: bool,
        dhcp_interface: str | None = None,
        tftp_enabled: bool = True,
        stale_after: float = 90.0,
        gate_poll: float = 60.0,
    ) -> None:
        self.public_url = public_url
        self.dhcp_proxy = dhcp_proxy
        self.dhcp_interface = dhcp_interface
        self.tftp_enabled = tftp_enabled
        self.stale_after = stale_after
        self.gate_poll = gate_poll


@dataclass(frozen=True)
class Step:
    """One thing that happened on the machine's boot path."""

    id: int | None
    at: str | None
    kind: str
    phase: str
    severity: str
    text: str
    by_address: bool = False  # no MAC in the request: placed here by the client's address


@dataclass(frozen=True)
class AdminAction:
    """Something the admin can do now: a dashboard button (``action``) and its CLI command."""

    action: str  # release | retry | fail | reset | ""  (no button: a change outside netdeploy)
    label: str
    command: str


@dataclass
class Explanation:
    query: str
    mac: str
    hostname: str | None = None
    cluster: str | None = None
    state: str | None = None  # None: never heard of
    state_since: str | None = None
    last_seen: str | None = None
    last_ip: str | None = None
    quiet_for: float | None = None
    stale: bool = False
    stale_limit: float | None = None
    gate: str | None = None
    gate_detail: str | None = None
    steps: list[Step] = field(default_factory=list)
    truncated: bool = False
    next_boot: str = ""  # what the machine gets on its next boot, and why
    machine_next: str = ""  # what the machine should do next
    causes: list[str] = field(default_factory=list)  # likely causes when something is missing
    admin: list[AdminAction] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


async def _resolve(session: AsyncSession, text: str) -> tuple[str, Node | None]:
    try:
        mac = normalize_mac(text)
    except BadMac:
        node = await session.scalar(select(Node).where(Node.hostname == text.strip()))
        if node is None:
            raise LogFilterError(
                f"no node with MAC or host name {text!r}; give a MAC (any notation) to ask "
                "about a machine that is not in the config"
            ) from None
        return node.mac, node
    return mac, await session.get(Node, mac)


def _step(ev: dict[str, Any], *, by_address: bool = False) -> Step:
    kind = str(ev.get("kind"))
    detail = ev.get("detail") or {}
    if kind == "boot":
        via = str(detail.get("via", "?")).upper()
        text = (
            f"{via} {detail.get('path', '?')} from {detail.get('ip', '?')}: "
            f"{detail.get('decision', '?')} ({detail.get('why', '')})"
        )
        phase = "first stage" if ev.get("mac") is None else "boot decision"
    else:
        text, phase = describe(ev), PHASES.get(kind, kind)
    if by_address:
        text += " (no MAC in this request: from the same address shortly before)"
    return Step(ev.get("id"), ev.get("at"), kind, phase, severity(ev), text, by_address)


async def _first_stages(session: AsyncSession, own: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """First-stage requests (no MAC) from the address of one of this machine's per-MAC boot
    requests, shortly before it."""
    anchors = [
        (as_utc(datetime.fromisoformat(e["at"])), e["detail"].get("ip"))
        for e in own
        if e["kind"] == "boot" and e.get("at") and (e.get("detail") or {}).get("ip")
    ]
    if not anchors:
        return []
    start = min(t for t, _ in anchors) - FIRST_STAGE_WINDOW
    end = max(t for t, _ in anchors)
    rows = (
        await session.scalars(
            select(Event)
            .where(
                and_(
                    Event.mac.is_(None),
                    Event.kind.in_(("boot", "tftp")),
                    Event.at >= start,
                    Event.at <= end,
                )
            )
            .order_by(Event.id)
            .limit(2000)
        )
    ).all()
    # for each per-MAC request, the latest first stage from its address before it: several
    # machines behind one address (NAT, QEMU slirp) must not all be drawn into one timeline
    found: dict[int, Event] = {}
    for t, a_ip in anchors:
        best = None
        for row in rows:
            ip = (row.detail or {}).get("ip") or (row.detail or {}).get("client")
            if ip == a_ip and timedelta(0) <= t - as_utc(row.at) <= FIRST_STAGE_WINDOW:
                best = row  # rows are in id order: the last match is the latest
        if best is not None:
            found[best.id] = best
    return [event_json(row) for row in found.values()]


async def _unknown_first_stages(session: AsyncSession, now: datetime) -> int:
    """First-stage requests of the last hour from addresses where no known node was seen."""
    rows = (
        await session.scalars(
            select(Event)
            .where(Event.mac.is_(None), Event.kind == "boot", Event.at >= now - timedelta(hours=1))
            .limit(2000)
        )
    ).all()
    ips = {(r.detail or {}).get("ip") for r in rows} - {None}
    if not ips:
        return 0
    known = set((await session.scalars(select(Node.last_ip).where(Node.last_ip.in_(ips)))).all())
    return sum((r.detail or {}).get("ip") not in known for r in rows)


async def explain(
    session: AsyncSession, query: str, settings: ExplainSettings, now: datetime
) -> Explanation:
    """The boot path of the machine named by ``query`` (MAC in any notation, or host name).

    Raises :class:`~netdeploy.eventlog.LogFilterError` for a host name nobody has; a MAC
    nobody has is a machine never heard from, and gets the likely causes."""
    mac, node = await _resolve(session, query)
    rows = (
        await session.scalars(
            select(Event).where(Event.mac == mac).order_by(Event.id.desc()).limit(MAX_STEPS)
        )
    ).all()
    own = [event_json(r) for r in reversed(rows)]
    cluster = await session.get(Cluster, node.cluster) if node and node.cluster else None
    gate_rows: list[dict[str, Any]] = []
    if cluster is not None and own:
        gates = await session.scalars(
            select(Event)
            .where(Event.kind == "gate", Event.cluster == cluster.name, Event.id >= own[0]["id"])
            .order_by(Event.id)
            .limit(100)
        )
        gate_rows = [event_json(r) for r in gates]
    guessed = await _first_stages(session, own)
    timeline = sorted(
        [(e, False) for e in own + gate_rows] + [(e, True) for e in guessed],
        key=lambda pair: pair[0]["id"],
    )
    facts_of_node: dict[str, Any] = {}
    if node is not None:
        timeouts = (cluster.settings or {}).get("timeouts") if cluster else None
        quiet = round(liveness.quiet_for(node.last_seen, node.state_since, now), 1)
        limit = liveness.quiet_limit(
            node.state,
            stale_after=settings.stale_after,
            gate_poll=settings.gate_poll,
            timeouts=timeouts,
        )
        facts_of_node = {
            "hostname": node.hostname,
            "cluster": node.cluster,
            "state": node.state,
            "state_since": node.state_since.isoformat() if node.state_since else None,
            "last_seen": node.last_seen.isoformat() if node.last_seen else None,
            "last_ip": node.last_ip,
            "quiet_for": quiet,
            "stale_limit": limit,
            "stale": liveness.is_stale(quiet, limit),
        }
        if cluster is not None:
            facts_of_node |= {"gate": cluster.gate, "gate_detail": cluster.gate_detail}
    # built in one go (no attribute writes: test_layering watches `.state =` outside rollout/)
    answer = Explanation(
        query=query,
        mac=mac,
        truncated=len(rows) == MAX_STEPS,
        steps=[_step(e, by_address=guess) for e, guess in timeline],
        **facts_of_node,
    )
    facts = NodeFacts(
        mac,
        NodeState(node.state) if node else None,
        node.hostname if node else None,
        node.cluster if node else None,
        cluster.gate if cluster else None,
        (node.image or (cluster.image if cluster else None)) if node else None,
    )
    plan = boot_plan(facts, BootUrls(settings.public_url))
    answer.next_boot = f"{plan.action}: {plan.why}"
    await _advise(session, answer, own, settings, now, cluster)
    return answer


def _kinds(events: list[dict[str, Any]]) -> set[str]:
    return {str(e["kind"]) for e in events}


def _last(events: list[dict[str, Any]], kind: str, to: str | None = None) -> dict[str, Any] | None:
    for e in reversed(events):
        if e["kind"] == kind and (to is None or e.get("to") == to):
            return e
    return None


def _never_booted_causes(
    answer: Explanation, own: list[dict[str, Any]], settings: ExplainSettings, unknown: int
) -> list[str]:
    kinds = _kinds(own)
    causes = []
    script = f"{settings.public_url}/boot/{mac_hyphens(answer.mac)}.ipxe"
    if "dhcp" not in kinds:
        if settings.dhcp_proxy:
            causes.append(
                "no DHCP request from this MAC reached netdeploy's ProxyDHCP"
                + (f" on {settings.dhcp_interface}" if settings.dhcp_interface else "")
                + ": the machine did not network-boot (boot order, PXE disabled in the "
                "firmware or the NIC's option ROM), it is on another broadcast domain (a DHCP "
                "relay forwards to the LAN's DHCP server only), or the MAC in the config is "
                "not the one of the port it boots from"
            )
        else:
            causes.append(
                "netdeploy's ProxyDHCP is off ([dhcp] proxy = false), so DHCP is not visible "
                "here: the LAN's DHCP server must hand out next-server (this server) and a "
                "boot file (boot.ipxe for iPXE, media/undionly.kpxe for BIOS PXE, "
                "media/snponly.efi for UEFI), or turn on [dhcp] proxy"
            )
    elif not kinds & {"tftp", "boot"}:
        causes.append(
            "the ProxyDHCP answered but the machine never fetched its boot file: TFTP "
            "(UDP 69) blocked by a firewall, a wrong next-server, or the boot program missing "
            "from the media (`netdeploy media build`); see the DHCP steps above for the file"
        )
    if "boot" not in kinds:
        if unknown:
            causes.append(
                f"{unknown} first-stage request(s) (boot.ipxe) in the last hour came from "
                f"addresses no known node uses: if one was this machine, its iPXE could not "
                f"chain to {script}; check [server] public_url ({settings.public_url}) is "
                "reachable from the boot network"
            )
        else:
            causes.append(
                f"no request for its per-MAC boot script ({script}) ever arrived: nothing "
                "reached netdeploy's HTTP or TFTP from this machine"
            )
        causes.append(
            "the machine's console (or its serial log) shows where it stopped: "
            "'No configuration methods succeeded' = no DHCP answer; 'PXE-E32 TFTP open "
            "timeout' = TFTP unreachable; iPXE 'Connection timed out' = public_url unreachable"
        )
    return causes


async def _advise(
    session: AsyncSession,
    answer: Explanation,
    own: list[dict[str, Any]],
    settings: ExplainSettings,
    now: datetime,
    cluster: Cluster | None,
) -> None:
    name = answer.hostname or answer.mac
    state = answer.state
    kinds = _kinds(own)
    quiet = f"{answer.quiet_for:.0f} s" if answer.quiet_for is not None else "?"

    def act(action: str, label: str, command: str) -> None:
        answer.admin.append(AdminAction(action, label, command))

    if state is None:
        answer.machine_next = (
            "nothing yet: netdeploy has never heard from this MAC. When it network-boots it is "
            "recorded as discovered and gets the discovery agent (never imaged)"
        )
        answer.causes = _never_booted_causes(
            answer, own, settings, await _unknown_first_stages(session, now)
        )
        act("", "add it to the config as a [[nodes]] entry to have it imaged", "netdeploy check")
        return
    if state == NodeState.DISCOVERED:
        answer.machine_next = (
            "runs the discovery agent on every network boot and waits; it is never imaged"
        )
        act("", "add this MAC to the config as a [[nodes]] entry, then reload", "netdeploy check")
        return
    if state == NodeState.REGISTERED:
        if "boot" in kinds:
            answer.machine_next = "fetch the imaging agent on its next network boot"
        else:
            answer.machine_next = (
                "network-boot: it has not asked for its boot script in this rollout yet"
            )
            answer.causes = _never_booted_causes(
                answer, own, settings, await _unknown_first_stages(session, now)
            )
        act("", "power it on (or power-cycle it) with network boot first", "")
        return
    if state in (NodeState.PXE, NodeState.IMAGING):
        if state == NodeState.PXE:
            answer.machine_next = "boot the agent kernel and report from the imaging agent"
        else:
            answer.machine_next = "finish writing its image, verify it and report imaged"
        if answer.stale:
            timeout = DEFAULT_TIMEOUTS["imaging"]
            if cluster is not None:
                timeout = float(
                    ((cluster.settings or {}).get("timeouts") or {}).get("imaging", timeout)
                )
            answer.causes.append(
                f"nothing heard from it for {quiet} (stale after "
                f"{answer.stale_limit:.0f} s); the imaging timeout fails it "
                f"{timeout:.0f} s after it entered {state}"
            )
            if state == NodeState.PXE and not kinds & {"report", "progress", "http"}:
                answer.causes.append(
                    "the agent never reported: the kernel or initrd fetch failed (is the "
                    "startup media built? `netdeploy media build`), the agent cannot reach "
                    f"{settings.public_url} ([server] public_url), or it crashed (serial console)"
                )
            else:
                answer.causes.append(
                    "the machine hung or lost its network while imaging; its console shows why"
                )
        act("fail", f"Fail {name} (give it up)", f"netdeploy fail {name}")
        return
    if state in (NodeState.IMAGED, NodeState.HELD):
        gate = f" (gate {answer.gate}: {answer.gate_detail})" if answer.gate else ""
        answer.machine_next = f"wait at the gate in the agent until it is released{gate}"
        if answer.gate in ("formed", "releasing", "stopped") or cluster is None:
            act("release", f"Release {name} now", f"netdeploy release {name}")
        act("fail", f"Fail {name} (go on without it)", f"netdeploy fail {name}")
        return
    if state == NodeState.FAILED:
        failed = _last(own, "state", "failed")
        why = (failed or {}).get("detail", {}).get("reason") if failed else None
        answer.machine_next = (
            "its agent reports and waits for the admin; it is never re-imaged by itself"
        )
        if why:
            answer.causes.append(f"failed: {why}")
        act("retry", f"Retry {name} (re-image on next boot)", f"netdeploy retry {name}")
        act("fail", f"Fail {name} (go on without it)", f"netdeploy fail {name}")
        return
    if state in (NodeState.RELEASED, NodeState.STARTING):
        answer.machine_next = (
            "boot its local disk and report starting, then joined, from its own OS "
            "(the report command in its answer files runs at first logon)"
        )
        if answer.stale:
            answer.causes.append(
                f"nothing heard from it for {quiet}: its OS has not reported; look at its "
                "console (mini-setup, first logon)"
            )
        act("fail", f"Fail {name} (go on without it)", f"netdeploy fail {name}")
        return
    if state == NodeState.JOINED:
        answer.machine_next = "nothing: it joined; every network boot goes to its local disk"
        if answer.cluster:
            act("reset", f"Reset cluster {answer.cluster}", f"netdeploy reset {answer.cluster}")
