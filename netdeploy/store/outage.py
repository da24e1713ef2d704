"""Is the store down? One answer for every adapter, and one log line per outage.

When PostgreSQL restarts, or the network to it is cut, every request that touches the store
fails the same way. Those failures are not bugs: HTTP answers 503 with ``Retry-After``, TFTP an
ERROR packet, the rollout writer and the sweeper wait for the next try (issue 21). They must
not each log a traceback: :data:`OUTAGE` logs the first failure of an outage in one line and
then, while it lasts, one summary line per :data:`SUMMARY_S` seconds.

:func:`is_outage` tells an outage (the database cannot be reached or is going away) from an
error of ours (bad SQL, a constraint): only the first is answered as "retry".
"""

from __future__ import annotations

import errno
import logging
import socket
import time

import prometheus_client
from sqlalchemy import exc as sa_exc

log = logging.getLogger("netdeploy.store")

# Seconds a client should wait before it asks again (HTTP Retry-After, the agent's pause). Short:
# a request during an outage costs one refused connection, and clients come back within a
# second of the database's return (issue 21: release on another server within 1 s).
RETRY_AFTER_S = 1
SUMMARY_S = 30.0  # while an outage lasts, one line per this many seconds

# PostgreSQL SQLSTATE classes that mean "the server is not there for you now": 08 connection
# exception, 57P01-57P03 admin shutdown / crash shutdown / cannot connect now, 53 resources.
_OUTAGE_SQLSTATES = ("08", "57P01", "57P02", "57P03", "53300")

_NETWORK_ERRNOS = frozenset(
    {errno.ECONNREFUSED, errno.ECONNRESET, errno.ETIMEDOUT, errno.EHOSTUNREACH, errno.ENETUNREACH}
)

ANSWERED = prometheus_client.Counter(
    "netdeploy_store_outage_answers_total",
    "Requests answered 'retry' (HTTP 503, TFTP ERROR) because the store was unreachable",
    ["via"],
)
REACHABLE = prometheus_client.Gauge(
    "netdeploy_store_reachable", "0 while requests fail because the store is unreachable"
)
REACHABLE.set(1)


def _sqlstate(exc: BaseException) -> str:
    for name in ("sqlstate", "pgcode"):
        value = getattr(exc, name, None)
        if isinstance(value, str):
            return value
    return ""


def is_outage(exc: BaseException) -> bool:
    """True when ``exc`` (or what caused it) says the store cannot be reached right now."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, sa_exc.DBAPIError) and current.connection_invalidated:
            return True
        if isinstance(current, sa_exc.OperationalError | sa_exc.InterfaceError):
            return True
        if isinstance(current, sa_exc.TimeoutError):  # no pool connection came free in time
            return True
        if isinstance(current, ConnectionError | TimeoutError | socket.gaierror):
            return True  # refused, reset, timed out, name not resolved
        if isinstance(current, OSError) and current.errno in _NETWORK_ERRNOS:
            return True
        if _sqlstate(current).startswith(_OUTAGE_SQLSTATES):
            return True
        if type(current).__name__ in ("ConnectionDoesNotExistError", "InterfaceError"):
            return True  # asyncpg: the connection closed under a query
        orig = getattr(current, "orig", None)
        current = (
            orig if isinstance(orig, BaseException) else (current.__cause__ or current.__context__)
        )
    return False


def short(exc: BaseException) -> str:
    """The cause in one line (SQLAlchemy's messages carry a URL to its docs and SQL)."""
    orig = getattr(exc, "orig", None)
    text = str(orig if isinstance(orig, BaseException) else exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


class OutageLog:
    """Logs an outage once when it starts and once per ``SUMMARY_S`` while it lasts."""

    def __init__(self, clock=time.monotonic) -> None:  # type: ignore[no-untyped-def]
        self.clock = clock
        self.since: float | None = None  # start of the current outage
        self.last_line = 0.0
        self.last_failure = 0.0
        self.answered = 0  # requests answered "retry" since the last line

    def failed(self, via: str, where: str, exc: BaseException) -> None:
        """A request (``via`` http/tftp/rollout) could not reach the store."""
        now = self.clock()
        ANSWERED.labels(via).inc()
        REACHABLE.set(0)
        self.answered += 1
        quiet = now - self.last_failure > SUMMARY_S  # nothing failed for a while: a new outage
        self.last_failure = now
        if self.since is None or quiet:
            self.since, self.last_line, self.answered = now, now, 0
            log.warning(
                "the store is unreachable (%s, at %s %s); answering 'retry in %d s' until it is "
                "back",
                short(exc),
                via,
                where,
                RETRY_AFTER_S,
            )
        elif now - self.last_line >= SUMMARY_S:
            log.warning(
                "the store is still unreachable after %.0f s; %d requests answered 'retry' in "
                "the last %.0f s (%s)",
                now - self.since,
                self.answered,
                now - self.last_line,
                short(exc),
            )
            self.last_line, self.answered = now, 0

    def recovered(self) -> None:
        """The store answered again (a reconnect, a successful sweep): close the outage."""
        if self.since is None:
            return
        log.warning("the store is reachable again after %.1f s", self.clock() - self.since)
        self.since = None
        REACHABLE.set(1)


OUTAGE = OutageLog()
