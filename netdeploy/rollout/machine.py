"""The node state machine: which transitions are legal. Pure: no I/O, no clock."""

from __future__ import annotations

from netdeploy.inventory import NodeState as S


class IllegalTransition(ValueError):
    """A transition the state machine forbids; the message names both states."""


# to-state -> the states it may be entered from. Admin actions (retry, reset) use `force`.
ALLOWED_FROM: dict[S, frozenset[S]] = {
    S.REGISTERED: frozenset({S.DISCOVERED, S.FAILED, S.UNHEALTHY}),
    S.PXE: frozenset({S.REGISTERED, S.FAILED}),
    S.IMAGING: frozenset({S.PXE, S.IMAGING}),
    S.IMAGED: frozenset({S.IMAGING}),
    S.HELD: frozenset({S.IMAGED}),
    S.RELEASED: frozenset({S.IMAGED, S.HELD}),
    S.STARTING: frozenset({S.RELEASED}),
    # (unhealthy → joined only by the first node's healthy report: rollout.actions.health)
    S.JOINED: frozenset({S.STARTING, S.RELEASED}),
    # only the first node reports its cluster's health; unhealthy stops the gate at once
    S.UNHEALTHY: frozenset({S.RELEASED, S.STARTING, S.JOINED}),
    S.FAILED: frozenset({S.PXE, S.IMAGING, S.IMAGED, S.HELD, S.RELEASED, S.STARTING, S.UNHEALTHY}),
    S.DISCOVERED: frozenset(),
}


def check_transition(current: S | str, to: S | str) -> None:
    """Raise :class:`IllegalTransition` unless ``current → to`` is allowed."""
    current, to = S(current), S(to)
    if current not in ALLOWED_FROM[to]:
        nexts = ", ".join(sorted(to_states(current))) or "nothing (admin action needed)"
        raise IllegalTransition(
            f"a node in state {current} cannot go to {to}; it may go to {nexts}"
        )


def to_states(current: S | str) -> frozenset[S]:
    """Every state reachable from ``current`` in one step."""
    current = S(current)
    return frozenset(to for to, sources in ALLOWED_FROM.items() if current in sources)


# ---------------------------------------------------------------- what agents may report

# The states an imaging agent (or the started OS) reports itself; everything else is decided
# by the server: pxe by the boot helper, held/released by the gate, registered by the admin.
AGENT_STATES: frozenset[S] = frozenset({S.IMAGING, S.IMAGED, S.STARTING, S.JOINED, S.FAILED})

# A report of the left state is a harmless repeat when the node is already in one of these:
# the agent retries after a lost response, or a held node reboots into its wait-mode agent and
# says "imaged" again. Repeats change nothing (never advance twice).
ALREADY_PAST: dict[S, frozenset[S]] = {
    S.IMAGING: frozenset({S.IMAGING}),  # a progress update
    S.IMAGED: frozenset({S.IMAGED, S.HELD, S.RELEASED}),
    S.STARTING: frozenset({S.STARTING, S.JOINED, S.UNHEALTHY}),
    S.JOINED: frozenset({S.JOINED}),
    S.FAILED: frozenset({S.FAILED}),
}

# Released nodes and everything after: the node may boot its own disk. An unhealthy first node
# runs its OS (its cluster service is what is wrong), so it keeps booting its disk.
RELEASED_STATES: frozenset[S] = frozenset({S.RELEASED, S.STARTING, S.JOINED, S.UNHEALTHY})
# Released but not yet joined: a wave is still in flight.
IN_FLIGHT: frozenset[S] = frozenset({S.RELEASED, S.STARTING})


class Report:
    """What to do with an agent's state report: ``advance``, ``repeat`` (no-op) or refuse."""

    ADVANCE = "advance"
    REPEAT = "repeat"


def judge_report(current: S | str, reported: S | str) -> str:
    """Classify an agent report of ``reported`` for a node in ``current``.

    Returns :attr:`Report.ADVANCE` or :attr:`Report.REPEAT`; raises :class:`IllegalTransition`
    (the caller answers 409 and records the refusal) for anything else, and ``ValueError`` for
    a state agents never report.
    """
    current, reported = S(current), S(reported)
    if reported not in AGENT_STATES:
        raise ValueError(
            f"agents report one of {', '.join(sorted(AGENT_STATES))}; {reported} is decided "
            "by the server"
        )
    if current in ALREADY_PAST[reported]:
        return Report.REPEAT  # imaging→imaging is a progress update: no transition, no event row
    check_transition(current, reported)
    return Report.ADVANCE
