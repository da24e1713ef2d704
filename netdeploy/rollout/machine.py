"""The node state machine: which transitions are legal. Pure: no I/O, no clock."""

from __future__ import annotations

from netdeploy.inventory import NodeState as S


class IllegalTransition(ValueError):
    """A transition the state machine forbids; the message names both states."""


# to-state -> the states it may be entered from. Admin actions (retry, reset) use `force`.
ALLOWED_FROM: dict[S, frozenset[S]] = {
    S.REGISTERED: frozenset({S.DISCOVERED, S.FAILED}),
    S.PXE: frozenset({S.REGISTERED, S.FAILED}),
    S.IMAGING: frozenset({S.PXE, S.IMAGING}),
    S.IMAGED: frozenset({S.IMAGING}),
    S.HELD: frozenset({S.IMAGED}),
    S.RELEASED: frozenset({S.IMAGED, S.HELD}),
    S.STARTING: frozenset({S.RELEASED}),
    S.JOINED: frozenset({S.STARTING, S.RELEASED}),
    S.FAILED: frozenset({S.PXE, S.IMAGING, S.IMAGED, S.HELD, S.RELEASED, S.STARTING}),
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
