"""The node state machine and the agent-report rules, walked exhaustively."""

from __future__ import annotations

import itertools

import pytest

from netdeploy.inventory import NodeState as S
from netdeploy.rollout.machine import (
    AGENT_STATES,
    ALLOWED_FROM,
    IllegalTransition,
    Report,
    check_transition,
    judge_report,
    to_states,
)

# The DESIGN picture, edge by edge (plus the admin's failed → registered/pxe for a retry).
DESIGN_EDGES = {
    (S.DISCOVERED, S.REGISTERED),
    (S.REGISTERED, S.PXE),
    (S.PXE, S.IMAGING),
    (S.IMAGING, S.IMAGING),  # progress
    (S.IMAGING, S.IMAGED),
    (S.IMAGED, S.HELD),
    (S.IMAGED, S.RELEASED),  # the first node: at once
    (S.HELD, S.RELEASED),
    (S.RELEASED, S.STARTING),
    (S.STARTING, S.JOINED),
    (S.RELEASED, S.JOINED),  # the first node's health report may arrive before "starting"
    (S.FAILED, S.REGISTERED),
    (S.FAILED, S.PXE),
    *((s, S.FAILED) for s in (S.PXE, S.IMAGING, S.IMAGED, S.HELD, S.RELEASED, S.STARTING)),
    # issue 16: the first node's own cluster reports itself unhealthy (gate stops at once);
    # a retry re-images it, a failure report fails it; healthy again → joined is the health
    # action's own (forced) move, never an agent's "joined"
    *((s, S.UNHEALTHY) for s in (S.RELEASED, S.STARTING, S.JOINED)),
    (S.UNHEALTHY, S.REGISTERED),
    (S.UNHEALTHY, S.FAILED),
}


@pytest.mark.parametrize("current,to", list(itertools.product(S, S)))
def test_every_pair_is_legal_exactly_when_the_design_draws_it(current: S, to: S) -> None:
    if (current, to) in DESIGN_EDGES:
        check_transition(current, to)
        assert to in to_states(current)
    else:
        with pytest.raises(IllegalTransition) as err:
            check_transition(current, to)
        assert str(current) in str(err.value) and str(to) in str(err.value)
        assert to not in to_states(current)


def test_the_happy_path_walks_from_registered_to_joined() -> None:
    path = [S.REGISTERED, S.PXE, S.IMAGING, S.IMAGED, S.HELD, S.RELEASED, S.STARTING, S.JOINED]
    for current, to in itertools.pairwise(path):
        check_transition(current, to)


def test_a_joined_node_is_a_dead_end_without_an_admin() -> None:
    # but for the first node's own cluster reporting itself unhealthy (a health report)
    assert to_states(S.JOINED) == frozenset({S.UNHEALTHY})
    with pytest.raises(IllegalTransition, match="it may go to unhealthy"):
        check_transition(S.JOINED, S.FAILED)


def test_every_state_has_an_entry() -> None:
    assert set(ALLOWED_FROM) == set(S)


# What an agent report of `reported` does for a node in `current`.
ADVANCE = {
    (S.PXE, S.IMAGING),
    (S.IMAGING, S.IMAGED),
    (S.RELEASED, S.STARTING),
    (S.STARTING, S.JOINED),
    (S.RELEASED, S.JOINED),
    *((s, S.FAILED) for s in (S.PXE, S.IMAGING, S.IMAGED, S.HELD, S.RELEASED, S.STARTING)),
    (S.UNHEALTHY, S.FAILED),
}
REPEAT = {
    (S.IMAGING, S.IMAGING),  # progress update
    (S.IMAGED, S.IMAGED),
    (S.HELD, S.IMAGED),  # a held node rebooted into its wait-mode agent
    (S.RELEASED, S.IMAGED),  # the agent retried after losing our answer
    (S.STARTING, S.STARTING),
    (S.JOINED, S.STARTING),
    (S.UNHEALTHY, S.STARTING),  # the started OS is past starting
    (S.JOINED, S.JOINED),
    (S.FAILED, S.FAILED),
}


@pytest.mark.parametrize("current,reported", list(itertools.product(S, AGENT_STATES)))
def test_agent_reports_advance_repeat_or_are_refused(current: S, reported: S) -> None:
    if (current, reported) in ADVANCE:
        assert judge_report(current, reported) == Report.ADVANCE
    elif (current, reported) in REPEAT:
        assert judge_report(current, reported) == Report.REPEAT
    else:
        with pytest.raises(IllegalTransition):
            judge_report(current, reported)


def test_a_held_node_can_never_report_itself_started() -> None:
    for reported in (S.STARTING, S.JOINED):
        with pytest.raises(IllegalTransition):
            judge_report(S.HELD, reported)


@pytest.mark.parametrize("reported", sorted(set(S) - AGENT_STATES))
def test_server_decided_states_cannot_be_reported(reported: S) -> None:
    with pytest.raises(ValueError, match="decided by the server"):
        judge_report(S.IMAGED, reported)
