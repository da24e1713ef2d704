"""Unknown MACs: events one by one up to a rate, the rest folded; repeats once per interval."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from netdeploy.config import DiscoveryConfig
from netdeploy.rollout.discovery import DiscoveryLimits

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_new_macs_are_logged_up_to_the_rate_then_counted_once_a_minute() -> None:
    limits = DiscoveryLimits(DiscoveryConfig(events_per_minute=3))
    seen = [limits.new_mac(f"m{i}", T0 + timedelta(seconds=i)) for i in range(10)]
    assert seen == [(True, 0)] * 3 + [(False, 0)] * 7
    assert limits.new_mac("m10", T0 + timedelta(seconds=61)) == (True, 7)  # last minute's
    assert limits.new_mac("m11", T0 + timedelta(seconds=62)) == (True, 0)
    assert not limits.boot_due("m9", T0 + timedelta(seconds=63))  # a repeat, logged or not


def test_repeats_are_logged_once_per_interval_per_mac_and_per_address() -> None:
    limits = DiscoveryLimits(DiscoveryConfig(record_interval=300))
    assert limits.boot_due("52:54:00:00:00:01", T0)
    assert not limits.boot_due("52:54:00:00:00:01", T0 + timedelta(seconds=299))
    assert limits.boot_due("52:54:00:00:00:02", T0 + timedelta(seconds=1))
    assert limits.boot_due("52:54:00:00:00:01", T0 + timedelta(seconds=300))
    assert limits.first_stage_due("10.0.0.1", T0)
    assert not limits.first_stage_due("10.0.0.1", T0 + timedelta(seconds=10))
    assert limits.first_stage_due("10.0.0.2", T0 + timedelta(seconds=10))
