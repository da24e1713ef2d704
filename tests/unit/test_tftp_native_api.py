"""The C data plane's build and the guards of its API (netdeploy/tftp/_native.c, decision 0021).
Its behaviour on the wire is tested on real sockets in tests/integration/test_tftp_*.py."""

from __future__ import annotations

import asyncio
import shutil
import sysconfig
from pathlib import Path

import pytest

from netdeploy.tftp import native


def test_a_build_with_a_compiler_has_the_native_plane() -> None:
    """pip builds the extension as optional: a failed build would pass every other test on the
    Python plane, so where gcc and Python's headers exist its absence is a failure."""
    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    if shutil.which("gcc") is None or not headers.is_file():
        pytest.skip("no gcc or no Python.h: the Python plane serves TFTP (by design)")
    assert native.AVAILABLE, "netdeploy.tftp._native did not build: reinstall and read pip's log"


def test_the_plane_refuses_parameters_it_cannot_serve() -> None:
    """The C side checks what the loop hands it; a wrong call is an exception, not a crash."""
    if not native.AVAILABLE:
        pytest.skip("netdeploy.tftp._native was not built")
    from netdeploy.tftp import _native  # type: ignore[attr-defined]

    with pytest.raises(ValueError, match="threads must be 1 to 64"):
        _native.Plane(0)
    core = _native.Plane(1)
    try:
        args = (-1, b"data", -1, 4, 512, 1, 1.0, 5, 10.0, None, 1)
        with pytest.raises(ValueError, match="out of range"):
            core.submit(*args)  # no socket
        with pytest.raises(ValueError, match="shorter than size"):
            core.submit(0, b"data", -1, 5, 512, 1, 1.0, 5, 10.0, None, 1)
        with pytest.raises(ValueError, match="no transfer of this plane"):
            core.cancel(3, None)  # worker 3 of a one-worker plane
        assert core.events() == []
    finally:
        core.close()
    with pytest.raises(RuntimeError, match="closed"):
        core.submit(0, b"data", -1, 4, 512, 1, 1.0, 5, 10.0, None, 1)


def test_one_thread_per_cpu_stops_at_the_planes_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 128-CPU host gets 64 workers, not a plane that refuses to start."""
    if not native.AVAILABLE:
        pytest.skip("netdeploy.tftp._native was not built")
    monkeypatch.setattr(native, "cpus", lambda: 128)
    loop = asyncio.new_event_loop()
    try:
        plane = native.open_native(loop, True, 0)
        assert plane is not None and plane.threads == native.MAX_THREADS
        plane.close()
    finally:
        loop.close()


def test_check_says_when_tftp_would_run_on_the_python_plane(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(native, "AVAILABLE", False)
    note = native.missing_note(True)
    assert note is not None and "python3-dev" in note and "native = false" in note
    assert native.missing_note(False) is None  # TFTP off, or the Python plane chosen
    monkeypatch.setattr(native, "AVAILABLE", True)
    assert native.missing_note(True) is None
