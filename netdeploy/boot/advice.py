"""What a machine should do next, what is likely wrong, what the admin can do: the end of
``netdeploy explain``'s answer, from the node's state and what its record holds or lacks."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from netdeploy.boot.explanation import AdminAction, ExplainSettings, Explanation
from netdeploy.inventory import NodeState, mac_hyphens
from netdeploy.rollout.gate import DEFAULT_TIMEOUTS
from netdeploy.store.models import Cluster, Event, Node


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


async def advise(
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
