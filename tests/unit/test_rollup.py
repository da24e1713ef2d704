"""The per-cluster roll-up the dashboard shows (netdeploy/rollout/rollup.py)."""

from __future__ import annotations

from netdeploy.rollout.rollup import rollup


def test_waves_count_what_started_and_list_the_release_order():
    members = [("n1", "joined")]
    members += [(f"n{i}", "joined") for i in range(2, 4)]  # wave 1 of waves:2
    members += [("n4", "starting"), ("n5", "joined")]  # wave 2: one joined, one starting
    members += [(f"n{i}", "held") for i in range(6, 12)]
    members += [("n12", "imaging"), ("n13", "registered"), ("n14", "failed")]
    summary = rollup("waves:2", "n1", members)
    assert summary.text == (
        "first node n1: joined · wave 2 of 7: 1/2 joined, 6 held · 1 imaging · "
        "1 not booted yet · 1 failed · 4/14 joined in all"
    )
    assert summary.release_order == ("n6", "n7", "n8", "n9", "n10", "n11")


def test_before_the_first_release_and_the_manual_policy():
    members = [("a1", "imaging"), ("a2", "held"), ("a10", "held")]
    assert rollup("sequential", "a1", members).text == (
        "first node a1: imaging · 2 to release one at a time: 2 held · 0/3 joined in all"
    )
    assert rollup("sequential", "a1", members).release_order == ("a2", "a10")
    assert rollup("manual", "a1", members).text.startswith("first node a1: imaging · manual: 0/2")
