"""A private, throwaway PostgreSQL server for the tests (and the rollout bench).

One server per test session, started on first use: ``initdb`` into a fresh temp dir, then
``postgres`` on a free loopback port (and a unix socket in the same dir), with durability
turned off because nothing in it needs to outlive the session. Every test gets its own
database (``pg_url``), so tests never see each other's rows.

PostgreSQL refuses to run as root, so as root the server runs as the ``postgres`` system
user when there is one, else ``nobody``. The binaries come from PATH or from Debian's
``/usr/lib/postgresql/<major>/bin`` (package ``postgresql-15``, listed in
tests/debian-packages.txt; ``./dev test`` installs it without creating or starting Debian's
own ``main`` cluster).

Import the fixtures into a test module::

    from tests.pgserver import pg_server, pg_url  # noqa: F401
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

SUPERUSER = "netdeploy"
# Durability off and nothing in the background: a test server lives for one session and is
# thrown away, so a crash may lose it all. Fast start, fast commit, little CPU.
FAST_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "autovacuum": "off",
    "max_connections": "200",  # several `netdeploy serve` processes, each with a pool
    "shared_buffers": "32MB",
    "log_min_messages": "warning",
    "log_min_duration_statement": "-1",
    "timezone": "Europe/Berlin",  # not UTC: timestamps must not come back in local time
}


class NoPostgres(Exception):
    """No PostgreSQL server binaries on this machine; the message says how to get them."""


def find_binaries() -> Path:
    """The directory holding ``initdb`` and ``postgres``: PATH first, then Debian's layout."""
    found = shutil.which("initdb")
    if found and shutil.which("postgres"):
        return Path(found).resolve().parent
    debian = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if debian:
        return debian[-1].parent
    raise NoPostgres(
        "PostgreSQL server binaries not found (initdb/postgres on PATH or under "
        "/usr/lib/postgresql/*/bin); install Debian package postgresql-15 "
        "(tests/debian-packages.txt lists it; `./dev test` installs it as root)"
    )


def _run_as() -> pwd.struct_passwd | None:
    """The unprivileged user to run PostgreSQL as; None when we are not root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise NoPostgres("running as root and neither a 'postgres' nor a 'nobody' user exists")


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """If pytest itself is killed, take the server down too (SIGQUIT: immediate shutdown).

    Set after the user switch because changing the uid clears it (prctl(2))."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGQUIT)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class PgServer:
    """A running throwaway server: ``url(db)`` gives a netdeploy database URL."""

    bindir: Path
    root: Path
    port: int
    user: pwd.struct_passwd | None
    settings: dict[str, str] = field(default_factory=lambda: dict(FAST_SETTINGS))
    proc: subprocess.Popen[bytes] | None = None

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "postgres.log"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    @property
    def version(self) -> str:
        return (self.datadir / "PG_VERSION").read_text().strip()

    def _as_user(self) -> dict[str, Any]:
        if self.user is None:
            return {}
        return {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}

    def _env(self) -> dict[str, str]:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "TZ": "UTC"}
        if self.user is not None:
            env["HOME"] = str(self.root)
        return env

    def initdb(self, timeout: float) -> None:
        done = subprocess.run(
            [
                str(self.bindir / "initdb"),
                "--pgdata",
                str(self.datadir),
                "--username",
                SUPERUSER,
                "--auth",
                "trust",  # loopback and a private socket dir: only this machine's tests
                "--encoding",
                "UTF8",
                "--no-sync",
                "--no-instructions",
            ],
            cwd=self.root,
            env=self._env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            **self._as_user(),
        )
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed ({done.returncode}):\n{done.stderr}")

    def launch(self, timeout: float = 60.0) -> None:
        """Start ``postgres`` on the data dir and wait until it accepts connections."""
        settings = [f"--{k.replace('_', '-')}={v}" for k, v in self.settings.items()]
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [
                    str(self.bindir / "postgres"),
                    "-D",
                    str(self.datadir),
                    "-p",
                    str(self.port),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    f"unix_socket_directories={self.root}",
                    *settings,
                ],
                cwd=self.root,
                env=self._env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,  # runs after the uid switch: see its docstring
                **self._as_user(),
            )
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        """Ready when postmaster.pid's status line says so (PostgreSQL >= 10)."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        pidfile = self.datadir / "postmaster.pid"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"postgres exited with {self.proc.returncode}:\n{self.log.read_text()}"
                )
            with contextlib.suppress(OSError):
                lines = pidfile.read_text().splitlines()
                if len(lines) >= 8 and lines[7].strip() == "ready":
                    return
            time.sleep(0.05)
        raise RuntimeError(f"postgres not ready within {timeout:g} s:\n{self.log.read_text()}")

    def shutdown(self) -> None:
        """Fast shutdown (SIGINT: roll back, disconnect clients, exit); the data stays."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def stop(self) -> None:
        """Shut down and delete everything."""
        self.shutdown()
        shutil.rmtree(self.root, ignore_errors=True)

    async def create_database(self, name: str | None = None) -> str:
        """A new empty database; returns its URL."""
        import asyncpg

        name = name or f"t_{uuid.uuid4().hex[:12]}"
        conn = await asyncpg.connect(self.url("postgres"))
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        return self.url(name)

    async def drop_database(self, url: str) -> None:
        import asyncpg

        name = url.rsplit("/", 1)[1]
        conn = await asyncpg.connect(self.url("postgres"))
        try:  # WITH (FORCE): a test that failed may have left a connection open (PG 13+)
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


def start(timeout: float = 60.0, **settings: str) -> PgServer:
    """initdb and start a private server; raises :class:`NoPostgres` when there is none.

    ``settings`` override :data:`FAST_SETTINGS` (the rollout bench measures durable commits
    with ``fsync="on", synchronous_commit="on", full_page_writes="on"``)."""
    bindir = find_binaries()
    user = _run_as()
    root = Path(tempfile.mkdtemp(prefix="nd-pg-"))
    server = PgServer(bindir, root, _free_port(), user, {**FAST_SETTINGS, **settings})
    try:
        if user is not None:
            os.chown(root, user.pw_uid, user.pw_gid)
        server.initdb(timeout)
        server.launch(timeout)
        return server
    except BaseException:
        server.stop()
        raise


# ---------------------------------------------------------------- pytest fixtures

_SERVER: PgServer | None = None


def _stop_shared() -> None:
    global _SERVER
    if _SERVER is not None:
        _SERVER.stop()
        _SERVER = None


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """The session's server. One per session even when several modules import this fixture
    (each import is its own session fixture; they share the server and its shutdown)."""
    global _SERVER
    if _SERVER is None:
        try:
            _SERVER = start()
        except NoPostgres as exc:
            pytest.skip(str(exc))
        atexit.register(_stop_shared)  # in case the session ends without finalizers
    yield _SERVER
    _stop_shared()


@pytest.fixture
async def pg_url(pg_server: PgServer) -> AsyncIterator[str]:
    """A fresh, empty database on the session's server, dropped after the test."""
    url = await pg_server.create_database()
    yield url
    await pg_server.drop_database(url)
