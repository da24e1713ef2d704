"""A cluster's rollout at a glance: "wave 2 of 4: 2/4 joined, 10 held", and the release order.

Pure: the same reading of the policy as gate.decide (held nodes are released in natural host
name order, ``wave`` at a time; the first node alone before anyone)."""

from __future__ import annotations

from dataclasses import dataclass

from netdeploy.inventory import NodeState as S
from netdeploy.rollout.gate import BadPolicy, natural_key, parse_policy

IMAGING = frozenset({S.PXE, S.IMAGING, S.IMAGED})
IN_FLIGHT = frozenset({S.RELEASED, S.STARTING})


@dataclass(frozen=True)
class Rollup:
    text: str  # one line for the dashboard
    release_order: tuple[str, ...]  # held nodes, in the order the gate releases them


def rollup(
    policy_text: str, first_node: str, members: list[tuple[str, str]], *, order_shown: int = 8
) -> Rollup:
    """``members``: (host name, state) of every node of the cluster, first node included."""
    try:
        policy = parse_policy(policy_text)
    except BadPolicy:
        return Rollup(f"policy {policy_text!r} unknown", ())
    first = next((state for host, state in members if host == first_node), None)
    others = [(h, S(s)) for h, s in members if h != first_node]
    joined = sum(s is S.JOINED for _, s in others)
    flying = sum(s in IN_FLIGHT for _, s in others)
    failed = sum(s is S.FAILED for _, s in others)
    imaging = sum(s in IMAGING for _, s in others)
    waiting = sum(s is S.REGISTERED for _, s in others)
    held = sorted((h for h, s in others if s is S.HELD), key=natural_key)
    parts = [f"first node {first_node}: {first or 'missing'}"]
    if others:
        if policy.manual:
            parts.append(f"manual: {joined}/{len(others)} joined, {len(held)} held")
        else:
            waves = -(-len(others) // policy.wave)
            started = joined + flying  # a failed node may never have been released
            wave = min(waves, -(-started // policy.wave) if started else 0)
            this_wave = started - (wave - 1) * policy.wave if wave else 0
            done_here = max(0, this_wave - flying) if wave else 0
            if wave:
                head = f"wave {wave} of {waves}"
            elif policy.wave == 1:
                head = f"{waves} to release one at a time"
            else:
                head = f"{waves} waves of {policy.wave}"
            parts.append(
                f"{head}: {done_here}/{this_wave} joined, {len(held)} held"
                if wave
                else f"{head}: {len(held)} held"
            )
        if imaging:
            parts.append(f"{imaging} imaging")
        if waiting:
            parts.append(f"{waiting} not booted yet")
        if failed:
            parts.append(f"{failed} failed")
        parts.append(f"{joined + (first == S.JOINED)}/{len(members)} joined in all")
    return Rollup(" · ".join(parts), tuple(held[:order_shown]))
