"""The cluster gate and release policies: pure decisions, every policy, and the no-leak rule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netdeploy.inventory import NodeState as S
from netdeploy.rollout.gate import (
    BadPolicy,
    ClusterView,
    Gate,
    NodeView,
    Policy,
    after_imaged,
    decide,
    natural_key,
    overdue,
    parse_policy,
)
from netdeploy.rollout.machine import IN_FLIGHT, RELEASED_STATES


def cluster(policy: str = "sequential", formed: bool = True) -> ClusterView:
    return ClusterView("clu", "n1", parse_policy(policy), formed)


def nodes(*states: S, blocking: frozenset[int] | set[int] = frozenset()) -> list[NodeView]:
    """n1 (the first node) gets states[0], n2 states[1], ..."""
    return [
        NodeView(f"mac{i}", f"n{i}", s, stops_rollout=i in blocking)
        for i, s in enumerate(states, start=1)
    ]


def hostnames(decision_release: tuple[str, ...]) -> list[str]:
    return [f"n{mac.removeprefix('mac')}" for mac in decision_release]


# ---------------------------------------------------------------- policies


@pytest.mark.parametrize(
    "text,wave", [("sequential", 1), ("manual", 0), ("waves:1", 1), ("waves:1000", 1000)]
)
def test_policies_parse(text: str, wave: int) -> None:
    assert parse_policy(text) == Policy(wave)


@pytest.mark.parametrize("text", ["", "waves:0", "waves:-1", "waves", "parallel", "waves:x"])
def test_bad_policies_say_what_is_allowed(text: str) -> None:
    with pytest.raises(BadPolicy, match="sequential, waves:N or manual"):
        parse_policy(text)


def test_first_node_starts_alone_and_the_others_are_held() -> None:
    assert after_imaged(in_cluster=True, is_first=True) is S.RELEASED
    assert after_imaged(in_cluster=True, is_first=False) is S.HELD
    assert after_imaged(in_cluster=False, is_first=False) is S.RELEASED


def test_nobody_is_released_before_the_cluster_is_formed() -> None:
    d = decide(cluster(formed=False), nodes(S.STARTING, S.HELD, S.HELD))
    assert d.gate is Gate.WAITING and d.release == ()
    assert "n1" in d.detail


def test_sequential_releases_one_then_waits_for_joined() -> None:
    d = decide(cluster(), nodes(S.JOINED, S.HELD, S.HELD))
    assert hostnames(d.release) == ["n2"] and d.gate is Gate.RELEASING
    for in_flight in (S.RELEASED, S.STARTING):
        assert decide(cluster(), nodes(S.JOINED, in_flight, S.HELD)).release == ()
    d = decide(cluster(), nodes(S.JOINED, S.JOINED, S.HELD))
    assert hostnames(d.release) == ["n3"]


def test_release_order_is_the_admins_reading_order() -> None:
    states = [S.JOINED] + [S.HELD] * 10  # n2..n11
    d = decide(cluster("waves:3"), nodes(*states))
    assert hostnames(d.release) == ["n2", "n3", "n4"]
    assert sorted(["n10", "n9", "n2"], key=natural_key) == ["n2", "n9", "n10"]


def test_waves_release_n_at_a_time_and_the_next_wave_after_all_joined() -> None:
    held5 = [S.HELD] * 5
    d = decide(cluster("waves:2"), nodes(S.JOINED, *held5))
    assert hostnames(d.release) == ["n2", "n3"]
    # one of the wave joined, one still starting: the next wave waits
    d = decide(cluster("waves:2"), nodes(S.JOINED, S.JOINED, S.STARTING, *[S.HELD] * 3))
    assert d.release == ()
    d = decide(cluster("waves:2"), nodes(S.JOINED, S.JOINED, S.JOINED, *[S.HELD] * 3))
    assert hostnames(d.release) == ["n4", "n5"]
    d = decide(cluster("waves:1000"), nodes(S.JOINED, *held5))
    assert len(d.release) == 5


def test_manual_never_releases_by_itself() -> None:
    d = decide(cluster("manual"), nodes(S.JOINED, S.HELD, S.HELD))
    assert d.release == () and d.gate is Gate.FORMED
    assert "netdeploy release" in d.detail


def test_nodes_still_imaging_are_not_released_and_do_not_block() -> None:
    d = decide(cluster(), nodes(S.JOINED, S.IMAGING, S.HELD))
    assert hostnames(d.release) == ["n3"]


def test_complete_when_every_node_joined() -> None:
    assert decide(cluster(), nodes(S.JOINED, S.JOINED, S.JOINED)).gate is Gate.COMPLETE
    one = decide(cluster(), nodes(S.JOINED))
    assert one.gate is Gate.COMPLETE


def test_a_failed_first_node_stops_everything_for_good() -> None:
    for formed in (False, True):
        d = decide(cluster(formed=formed), nodes(S.FAILED, S.HELD, S.HELD))
        assert d.gate is Gate.STOPPED and d.release == ()
        assert "first node n1 failed" in d.detail and "netdeploy retry n1" in d.detail


def test_an_identity_alarm_stops_the_gate_whatever_the_states() -> None:
    """docs/security.md: two machines speak for one node: release nobody, fail safe."""
    alarmed = ClusterView("clu", "n1", parse_policy("waves:5"), True, alarm="mac1: second claim")
    for states in [(S.JOINED, S.HELD, S.HELD), (S.STARTING, S.HELD), (S.IMAGING, S.IMAGING)]:
        d = decide(alarmed, nodes(*states))
        assert d.gate is Gate.STOPPED and d.release == ()
        assert "identity alarm: mac1: second claim" in d.detail and "netdeploy retry" in d.detail
    assert decide(cluster(), nodes(S.JOINED, S.HELD)).release == ("mac2",)  # without: released


def test_a_failure_stops_automatic_releases_until_the_admin_decides() -> None:
    d = decide(cluster(), nodes(S.JOINED, S.FAILED, S.HELD, blocking={2}))
    assert d.gate is Gate.STOPPED and d.release == () and "n2 failed" in d.detail
    # the admin gave n2 up (`netdeploy fail n2`): the rollout goes on without it
    d = decide(cluster(), nodes(S.JOINED, S.FAILED, S.HELD))
    assert hostnames(d.release) == ["n3"]
    d = decide(cluster(), nodes(S.JOINED, S.FAILED, S.JOINED))
    assert d.gate is Gate.COMPLETE and "1 failed" in d.detail


def test_a_missing_first_node_is_stopped_with_a_fix() -> None:
    d = decide(ClusterView("clu", "ghost", Policy(1), True), nodes(S.HELD))
    assert d.gate is Gate.STOPPED and "ghost" in d.detail and d.release == ()


# ---------------------------------------------------------------- the gate never leaks

EVENTS = st.lists(
    st.tuples(
        st.sampled_from(["imaged", "start", "join", "fail", "ack", "health"]), st.integers(0, 7)
    ),
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(policy=st.sampled_from(["sequential", "waves:2", "waves:3", "manual"]), events=EVENTS)
def test_no_sequence_of_reports_releases_too_many(policy: str, events: list) -> None:
    """Simulate a cluster of 8 under random reports, settling the gate after each one:
    nobody but the first node runs before the cluster is formed, never more than a wave is
    in flight by the gate's own doing, and nothing is released past a failure."""
    pol = parse_policy(policy)
    state = {f"n{i}": S.IMAGING for i in range(1, 9)}
    blocking: set[str] = set()
    formed = False
    for kind, i in events:
        name = f"n{i + 1}"
        s = state[name]
        if kind == "imaged" and s is S.IMAGING:
            state[name] = after_imaged(in_cluster=True, is_first=name == "n1")
        elif kind == "start" and s is S.RELEASED:
            state[name] = S.STARTING
        elif kind == "join" and s in IN_FLIGHT and name != "n1":
            state[name] = S.JOINED
        elif kind == "health" and state["n1"] in RELEASED_STATES:
            state["n1"], formed = S.JOINED, True
        elif kind == "fail" and s not in (S.JOINED, S.FAILED):
            state[name] = S.FAILED
            blocking.add(name)
        elif kind == "ack":
            blocking.discard(name)
        views = [NodeView(n, n, st_, n in blocking) for n, st_ in state.items()]
        flying_before = sum(state[n] in IN_FLIGHT for n in state if n != "n1")
        d = decide(ClusterView("clu", "n1", pol, formed), views)
        for mac in d.release:
            assert state[mac] is S.HELD
            state[mac] = S.RELEASED
        others_running = [n for n in state if n != "n1" and state[n] in RELEASED_STATES]
        if not formed:
            assert not others_running, "a node started before the cluster was formed"
        if d.release:
            assert formed and state["n1"] is not S.FAILED and not blocking
            assert not pol.manual
            assert flying_before == 0 and len(d.release) <= pol.wave
        if state["n1"] is S.FAILED:
            assert d.gate is Gate.STOPPED


# ---------------------------------------------------------------- timeouts

T0 = datetime(2026, 1, 1, tzinfo=UTC)
TIMEOUTS = {"imaging": 100, "starting": 20, "joining": 30}


@pytest.mark.parametrize(
    "state,phase,limit",
    [
        (S.PXE, "imaging", 100),
        (S.IMAGING, "imaging", 100),
        (S.RELEASED, "starting", 20),
        (S.STARTING, "joining", 30),
    ],
)
def test_each_phase_times_out_after_its_own_limit(state: S, phase: str, limit: int) -> None:
    assert overdue(state, T0, TIMEOUTS, T0 + timedelta(seconds=limit)) is None
    assert overdue(state, T0, TIMEOUTS, T0 + timedelta(seconds=limit + 0.5)) == phase


@pytest.mark.parametrize("state", [S.REGISTERED, S.IMAGED, S.HELD, S.JOINED, S.FAILED])
def test_waiting_states_never_time_out(state: S) -> None:
    assert overdue(state, T0, TIMEOUTS, T0 + timedelta(days=365)) is None


def test_timeouts_accept_sqlite_naive_times_and_fall_back_to_defaults() -> None:
    naive = T0.replace(tzinfo=None)
    assert overdue(S.STARTING, naive, None, T0 + timedelta(seconds=1801)) == "joining"
    assert overdue(S.STARTING, naive, {}, T0 + timedelta(seconds=1799)) is None
