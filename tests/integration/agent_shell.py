"""The imaging agent's shell functions, taken from bootfiles/agent/init for tests that run them
with the host's busybox (test_agent_ntfs_shell.py, test_agent_multicast_shell.py)."""

from __future__ import annotations

import re
import shutil

from tests.conftest import REPO

AGENT = (REPO / "bootfiles" / "agent" / "init").read_text()
BUSYBOX = shutil.which("busybox")


def agent_function(name: str) -> str:
    """The text of one shell function of the agent (``name() {`` up to the ``}`` that closes it)."""
    match = re.search(rf"^{name}\(\) \{{\n.*?^\}}\n", AGENT, re.M | re.S)
    assert match, f"the agent has no function {name}"
    return match.group(0)
