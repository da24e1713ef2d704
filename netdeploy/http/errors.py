"""The one error middleware: whatever a client sends, it gets an answer, never a traceback.

Home Assistant's ``http/view.py`` is the model: one wrapper maps what handlers raise to status
codes, so no route can forget. Here:

- a request body is read within ``[http] body_timeout`` (bodies are small: at most
  ``client_max_size``), else ``408``; a slow body never holds a handler;
- ``HTTPException`` from a handler keeps its status; under ``/api/`` it becomes JSON
  ``{"error": ...}`` (the contract every API client relies on);
- input a handler could not parse (``ValueError`` and its kin: bad JSON, bad encodings,
  numbers out of range) is the client's mistake: ``400`` with ``{"error": ...}`` and one
  log line naming the route;
- anything else is our bug: ``500`` with ``{"error": ...}``; its traceback is logged the
  first time per route and exception type, then one line per request with a count, so a
  flood of one bad request cannot fill the disk with tracebacks.

The hostile-input test (``tests/integration/test_http_hostile.py``) drives every route and
requires no 5xx at all: a 500 here is a bug to fix in the route, not an answer.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from collections.abc import Awaitable, Callable

from aiohttp import hdrs, web
from aiohttp.http_exceptions import HttpProcessingError
from sqlalchemy.exc import OperationalError

from netdeploy import metrics
from netdeploy.http import outage
from netdeploy.http.common import CTX, json_error
from netdeploy.store.outage import is_outage
from netdeploy.store.retry import is_busy

log = logging.getLogger("netdeploy.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# what a handler raises when the request, not the server, is wrong
INPUT_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,  # includes json.JSONDecodeError and UnicodeDecodeError
    LookupError,
)

_seen: Counter[tuple[str, str]] = Counter()  # (route, exception type) -> times


class OneLine(logging.Filter):
    """aiohttp's own log of a request it could not parse (a bad request line, header or
    chunk: answered 400 before any handler runs) or of a client that vanished: one line,
    not a traceback per request."""

    QUIET = (HttpProcessingError, ConnectionError)

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, self.QUIET):
            said = " ".join(str(getattr(exc, "message", exc)).split())
            record.msg = f"{record.getMessage()}: {type(exc).__name__}: {said[:200]}"
            record.args, record.exc_info, record.exc_text = (), None, None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def quiet_protocol_errors() -> None:
    """Install :class:`OneLine` on aiohttp's server logger (once)."""
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, OneLine) for f in server_log.filters):
        server_log.addFilter(OneLine())


def _route(request: web.Request) -> str:
    info = request.match_info.route.resource
    return info.canonical if info is not None else request.path[:80]


# bodies a handler streams itself (a capture's segments, up to 32 MiB: netdeploy.images.capture
# checks their progress), never read up front
STREAMED_TYPES = ("application/zstd", "application/octet-stream")


async def _read_body(request: web.Request) -> None:
    """Read a (small) body now, within ``body_timeout``; handlers then get it from memory."""
    if not request.body_exists:
        return
    # an agent's report says exactly this: no header parsing (a few µs of every report)
    if request.headers.get(hdrs.CONTENT_TYPE) != "application/json":
        content_type = request.content_type
        if content_type.startswith("multipart/") or content_type in STREAMED_TYPES:
            return
    if request.content.is_eof():  # all of it is here already (an agent's report): no timer
        await request.read()
        return
    ctx = request.app.get(CTX)
    timeout = ctx.config.http.body_timeout if ctx is not None else 30.0
    async with asyncio.timeout(timeout):  # a timer, not a task per request as wait_for makes
        await request.read()


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Read the body, run the handler, turn what it raises into an answer (above), answer an
    unreachable store as an outage (``http/outage.py``), and count the response by route and
    status (``/metrics``): one middleware layer, not three — each layer is a coroutine and a
    call per request, ~2.5 µs of every agent report (docs/decisions/0018)."""
    try:
        try:
            await _read_body(request)
        except TimeoutError:
            route = _route(request)
            log.info("%s %s from %s: body too slow", request.method, route, request.remote)
            response = json_error(
                408, "the request body did not arrive in time ([http] body_timeout)"
            )
        else:
            try:
                response = outage.with_retry_after(await handler(request))
            except web.HTTPException:
                raise
            except Exception as exc:  # an unreachable store, before anything reads it as a bug
                if not is_outage(exc):
                    raise
                response = outage.answered(request, exc)
    except web.HTTPException as exc:
        if (
            exc.status < 400
            or exc.content_type == "application/json"
            or not request.path.startswith("/api/")
        ):
            metrics.count_response(request, exc.status)
            raise
        response = json_error(exc.status, exc.reason if exc.text is None else exc.text)
    except Exception as exc:
        response = _answer(request, exc)
    except BaseException:  # cancelled: counted, as every other response
        metrics.count_response(request, 500)
        raise
    metrics.count_response(request, response.status)
    return response


def _answer(request: web.Request, exc: Exception) -> web.Response:
    """The answer to what reading the body or a handler raised (not an HTTPException, not
    an outage)."""
    if isinstance(exc, OperationalError):
        if not is_busy(exc):
            return _bug(request, exc)
        # the store stayed busy past its timeout and our retries: "later", never a 500
        log.warning("%s %s: store busy: %s", request.method, _route(request), exc.orig or exc)
        response = json_error(503, "the server's store is busy; retry shortly", retry_after=1)
        response.headers["Retry-After"] = "1"
        return response
    if isinstance(exc, json.JSONDecodeError):
        return json_error(400, f"request body is not valid JSON: {exc}")
    if isinstance(exc, INPUT_ERRORS):
        log.info(
            "%s %s from %s: bad input: %s: %s",
            request.method,
            _route(request),
            request.remote,
            type(exc).__name__,
            str(exc)[:200],
        )
        return json_error(400, f"bad request: {str(exc)[:200] or type(exc).__name__}")
    if isinstance(exc, ConnectionError):  # the client went away: nobody reads this answer
        return json_error(400, "the connection was lost before the request was complete")
    return _bug(request, exc)


def _bug(request: web.Request, exc: Exception) -> web.Response:
    key = (_route(request), type(exc).__name__)
    _seen[key] += 1
    if _seen[key] == 1:
        log.error(
            "%s %s failed (in full once; then one line each)",
            request.method,
            key[0],
            exc_info=exc,
        )
    else:
        log.error(
            "%s %s failed again with %s (%d times)", request.method, key[0], key[1], _seen[key]
        )
    return json_error(500, "internal error; the server log has the details")
