"""When a node counts as stale (netdeploy/rollout/liveness.py): well below its phase timeout."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from netdeploy.rollout.liveness import is_stale, quiet_for, quiet_limit

NOW = datetime(2026, 12, 5, 1, 0, tzinfo=UTC)


def test_limits_follow_who_should_be_talking():
    assert quiet_limit("imaging", stale_after=90, gate_poll=60) == 90
    assert quiet_limit("pxe", stale_after=90, gate_poll=60) == 90
    assert quiet_limit("held", stale_after=90, gate_poll=60) == 150  # long-poll + margin
    assert quiet_limit("starting", stale_after=90, gate_poll=60) == 450  # 1800 s / 4
    timeouts = {"starting": 400}
    assert quiet_limit("released", stale_after=90, gate_poll=60, timeouts=timeouts) == 100
    for state in ("registered", "joined", "failed", "discovered", "nonsense"):
        assert quiet_limit(state, stale_after=90, gate_poll=60) is None


def test_quiet_counts_from_the_later_of_last_request_and_state_change():
    frozen = NOW - timedelta(seconds=600)
    assert quiet_for(frozen, frozen, NOW) == 600
    assert is_stale(quiet_for(frozen, frozen, NOW), 90)  # frozen at 12 %: 10 min, not 1 h
    assert quiet_for(NOW - timedelta(seconds=5), frozen, NOW) == 5  # reports keep it fresh
    assert quiet_for(frozen, NOW - timedelta(seconds=2), NOW) == 2  # a new state resets it
    assert not is_stale(10_000, None)
    naive = (NOW - timedelta(seconds=30)).replace(tzinfo=None)  # as SQLite hands it back
    assert quiet_for(naive, None, NOW) == 30
