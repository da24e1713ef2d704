"""The imaging agent's shell functions, taken from bootfiles/agent/init for tests that run them
with the host's busybox (test_agent_*_shell.py, test_images_admission.py, test_zstd_*.py), and
what those tests give them: a /bin of busybox applets, stand-ins for log/report/fail, a run."""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import Iterable
from pathlib import Path

from tests.conftest import REPO

AGENT = (REPO / "bootfiles" / "agent" / "init").read_text()
BUSYBOX = shutil.which("busybox")


def agent_function(name: str) -> str:
    """The text of one shell function of the agent (``name() {`` up to the ``}`` that closes it)."""
    match = re.search(rf"^{name}\(\) \{{\n.*?^\}}\n", AGENT, re.M | re.S)
    assert match, f"the agent has no function {name}"
    return match.group(0)


def agent_functions(*names: str, tmp: Path) -> str:
    """The agent's functions ``names``, their scratch files (/tmp/...) moved into ``tmp``."""
    return "".join(agent_function(name) for name in names).replace("/tmp/", f"{tmp}/")


# what the agent's own log, report and fail become: lines the tests read, an exit on failure
STANDINS = """set -o pipefail
log() { echo "[agent] $*"; }
report() { echo "[report] $*"; }
fail() { echo "FAILED: $*"; exit 1; }
"""


def busybox_bin(path: Path, applets: Iterable[str]) -> Path:
    """``path`` holding busybox as each of ``applets``, as the startup media's /bin has them."""
    assert BUSYBOX is not None
    path.mkdir(exist_ok=True)
    for applet in applets:
        (path / applet).symlink_to(BUSYBOX)
    return path


async def run_script(bin_dir: Path, script: str, timeout: float = 90) -> str:
    """``script`` run by busybox sh with ``bin_dir`` first on its PATH; its output, both streams."""
    assert BUSYBOX is not None
    proc = await asyncio.create_subprocess_exec(
        BUSYBOX, "sh", "-c", script,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={"PATH": f"{bin_dir}:/usr/bin:/bin"},
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    return out.decode(errors="replace")


def any_block_device() -> str:
    """A block device's name for the agent's DEV: it only reads its progress there."""
    return next(p.name for p in Path("/sys/block").iterdir())
