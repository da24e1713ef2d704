"""Option negotiation (RFC 2347) for blksize (2348), timeout and tsize (2349), windowsize (7440).

Pure: takes the client's options, the file size and our limits, returns what this transfer
uses and the OACK to send. A value the client may not send (non-numeric, below the RFC's
minimum) is refused with error 8; a value above our limit is lowered, which RFC 2348 and
RFC 7440 allow the server to do. Unknown options are ignored (RFC 2347 §3).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from netdeploy.tftp.packets import BadPacket, ErrorCode

DEFAULT_BLKSIZE = 512  # RFC 1350
MIN_BLKSIZE, MAX_BLKSIZE = 8, 65464  # RFC 2348
MIN_TIMEOUT, MAX_TIMEOUT = 1, 255  # RFC 2349, seconds
MIN_WINDOWSIZE, MAX_WINDOWSIZE = 1, 65535  # RFC 7440


@dataclass(frozen=True)
class Negotiated:
    blksize: int = DEFAULT_BLKSIZE
    windowsize: int = 1
    timeout: float = 1.0
    reply: dict[str, str] = field(default_factory=dict)  # the OACK; empty means send no OACK


def _number(name: str, value: str, low: int) -> int:
    if not value.isascii() or not value.isdigit():
        raise BadPacket(ErrorCode.BAD_OPTIONS, f"option {name} {value!r} is not a number")
    number = int(value)
    if number < low:
        raise BadPacket(ErrorCode.BAD_OPTIONS, f"option {name} {number} is below {low}")
    return number


def negotiate(
    options: dict[str, str],
    size: int,
    *,
    max_blksize: int = MAX_BLKSIZE,
    max_windowsize: int = 64,
    timeout: float = 1.0,
    max_timeout: int = MAX_TIMEOUT,
) -> Negotiated:
    """Decide blksize/windowsize/timeout for one read transfer of ``size`` bytes."""
    reply: dict[str, str] = {}
    blksize, windowsize = DEFAULT_BLKSIZE, 1
    if "blksize" in options:
        asked = _number("blksize", options["blksize"], MIN_BLKSIZE)
        blksize = min(asked, max_blksize, MAX_BLKSIZE)  # RFC 2348: may answer smaller
        reply["blksize"] = str(blksize)
    if "timeout" in options:
        seconds = _number("timeout", options["timeout"], MIN_TIMEOUT)
        if seconds > MAX_TIMEOUT:
            raise BadPacket(
                ErrorCode.BAD_OPTIONS, f"option timeout {seconds} is above {MAX_TIMEOUT}"
            )
        if seconds <= max_timeout:
            timeout = float(seconds)
            reply["timeout"] = str(seconds)  # RFC 2349: the server must echo it unchanged
        # else left out of the OACK (RFC 2347 §3: the server may decline an option): a
        # client asking for 255 s must not hold a slot for minutes after it went silent
    if "tsize" in options:
        _number("tsize", options["tsize"], 0)  # a read request sends 0; any number is fine
        reply["tsize"] = str(size)
    if "windowsize" in options:
        asked = _number("windowsize", options["windowsize"], MIN_WINDOWSIZE)
        windowsize = min(asked, max_windowsize, MAX_WINDOWSIZE)
        reply["windowsize"] = str(windowsize)
    return Negotiated(blksize, windowsize, timeout, reply)
