"""A machine marked for capture boots the capture agent; a finished capture boots its own disk."""

from __future__ import annotations

import pytest

from netdeploy.boot.plan import BootAction, BootUrls, NodeFacts, boot_plan
from netdeploy.inventory import NodeState

URLS = BootUrls("http://10.0.2.2:8080")
MAC = "52:54:00:00:30:01"


@pytest.mark.parametrize("state", [None, *NodeState])
def test_capture_outranks_the_rollout_and_ends_on_the_local_disk(state) -> None:  # type: ignore[no-untyped-def]
    for capture, action in (
        ("requested", BootAction.CAPTURE),
        ("capturing", BootAction.CAPTURE),
        ("done", BootAction.LOCAL),
        ("failed", BootAction.LOCAL),
        ("refused", BootAction.LOCAL),
    ):
        plan = boot_plan(NodeFacts(MAC, state, image="x", capture=(capture, "master")), URLS)
        assert plan.action == action, (state, capture)
        if action == BootAction.CAPTURE:
            line = plan.cmdline("T")
            assert "nd.mode=capture" in line and "nd.capture=master" in line
            assert "nd.image" not in line  # a capture never writes the disk
        else:
            assert "boots its own disk" in plan.why
