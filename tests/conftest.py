"""Fixtures shared by every test: free ports, a state dir, a real `netdeploy serve` process."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DEMO_CONFIG = REPO / "config" / "netdeploy.toml"


def sha256_of(path: Path | str) -> str:
    """The sha256 of a file, read in blocks (images and disks run to tens of MiB): the one file
    hasher of the tests (tests/unit/test_test_modules.py)."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class ServerProcess:
    """A real `netdeploy serve` subprocess on loopback."""

    proc: subprocess.Popen
    url: str
    http_port: int
    tftp_port: int
    state_dir: Path
    log: Path

    def get_json(self, path: str) -> object:
        """GET with the admin token: the data routes need read access (docs/security.md)."""
        import json

        request = urllib.request.Request(self.url + path, headers=self.admin_headers())
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)

    def admin_headers(self) -> dict[str, str]:
        token_file = self.state_dir / "admin-token"
        if not token_file.exists():
            return {}
        return {"Authorization": f"Bearer {token_file.read_text().strip()}"}

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def serve_argv(
    config: Path, state_dir: Path, *, bind: str, http_port: int, tftp_port: int, extra=()
) -> list[str]:  # type: ignore[no-untyped-def]
    """The command line of a real `netdeploy serve` for tests."""
    return [
        sys.executable, "-m", "netdeploy", "serve", "--config", str(config),
        "--state-dir", str(state_dir), "--bind", bind,
        "--http-port", str(http_port), "--tftp-port", str(tftp_port), *extra,
    ]  # fmt: skip


def wait_answering(proc: subprocess.Popen, get_json, log: Path, timeout: float = 30) -> None:  # type: ignore[no-untyped-def]
    """Return once ``get_json("/api/version")`` answers; raise with the server's log if the
    process exits or does not answer in time (killing it then)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"netdeploy serve exited {proc.returncode}:\n{log.read_text()}")
        with contextlib.suppress(OSError):
            get_json("/api/version")
            return
        time.sleep(0.1)
    proc.kill()
    proc.wait()
    raise RuntimeError(f"netdeploy serve did not answer within {timeout:.0f} s:\n{log.read_text()}")


def stop_processes(procs: list[subprocess.Popen], grace: float) -> None:  # type: ignore[type-arg]
    """SIGTERM each process still running, give them ``grace`` seconds together, then SIGKILL."""
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
    deadline = time.monotonic() + grace
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(max(0.1, deadline - time.monotonic()))
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def start_server(
    state_dir: Path,
    *,
    config: Path = DEMO_CONFIG,
    extra: tuple[str, ...] = (),
    http_port: int | None = None,
    tftp_port: int | None = None,
) -> ServerProcess:
    http_port = http_port or free_port()
    tftp_port = tftp_port or free_port(socket.SOCK_DGRAM)
    state_dir.mkdir(parents=True, exist_ok=True)
    log = state_dir / f"serve-{http_port}.log"
    cmd = serve_argv(
        config, state_dir, bind="127.0.0.1", http_port=http_port, tftp_port=tftp_port, extra=extra
    )
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    server = ServerProcess(
        proc, f"http://127.0.0.1:{http_port}", http_port, tftp_port, state_dir, log
    )
    wait_answering(proc, server.get_json, log)
    return server


def demo_variant(path: Path, replace: dict[str, str] | None = None, append: str = "") -> Path:
    """A copy of the demo config at ``path`` (its relative paths made absolute), with each
    ``replace`` key swapped for its value (the key must be there) and ``append`` added."""
    text = DEMO_CONFIG.read_text()
    for old, new in {
        'bootfiles_dir = "../bootfiles"': f'bootfiles_dir = "{REPO / "bootfiles"}"',
        'templates_dir = "templates"': f'templates_dir = "{REPO / "config" / "templates"}"',
        **(replace or {}),
    }.items():
        assert old in text, f"the demo config changed: no {old!r}"
        text = text.replace(old, new)
    path.write_text(text + append)
    return path


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    path = tmp_path / "state"
    path.mkdir()
    return path


@pytest.fixture
def server(state_dir: Path) -> Iterator[ServerProcess]:
    proc = start_server(state_dir)
    yield proc
    proc.stop()


def run_cli(
    *args: str, cwd: Path = REPO, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The `netdeploy` command as a developer runs it: ``NETDEPLOY_CONFIG`` names the demo lab
    unless ``env`` says otherwise (an installed host reads /etc/netdeploy/netdeploy.toml)."""
    return subprocess.run(
        [sys.executable, "-m", "netdeploy", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
        env={**os.environ, "NETDEPLOY_CONFIG": str(DEMO_CONFIG), **(env or {})},
    )


def build_media() -> Path:
    """Startup media in the repository's bootfiles (gitignored), built from Debian packages
    (``netdeploy media build`` caches its downloads in var/, so a second call is quick)."""
    built = run_cli("media", "build", "--state-dir", str(REPO / "var"))
    assert built.returncode == 0, built.stderr
    return REPO / "bootfiles" / "media"


def add_image(state_dir: Path, path: Path, name: str = "w2k3-ent-sp1") -> None:
    """`netdeploy image add` with the preflight facts a cluster image needs; asserts success."""
    added = run_cli(
        "image",
        "add",
        name,
        str(path),
        "--sysprep",
        "reseal",
        "--without-cluster-service",
        "--no-shared-storage",
        "-q",
        "--state-dir",
        str(state_dir),
    )
    assert added.returncode == 0, added.stderr
