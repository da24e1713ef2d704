"""The receiver's HTTP side: join a session, and fetch what multicast did not deliver."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from typing import Any

from netdeploy.multicast.slicemap import SliceMap

MERGE_GAP = 1 << 20  # fetch across gaps smaller than this: fewer requests, a little more data
CHUNK = 1 << 20


class ReceiveError(Exception):
    """The image could not be received or verified; the message says what to do."""


def _request(url: str, token: str | None, **kw: Any) -> urllib.request.Request:
    request = urllib.request.Request(url, **kw)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    return request


def join(
    server: str,
    image: str,
    *,
    mac: str | None,
    name: str | None,
    token: str | None,
    retry_for: float = 0.0,
) -> dict[str, Any]:
    """Ask the server for a session; keep trying for ``retry_for`` s while it is unreachable
    (a restart), but give up at once on a refusal (4xx/5xx says why)."""
    deadline = time.monotonic() + retry_for
    while True:
        try:
            return _join_once(server, image, mac=mac, name=name, token=token)
        except _Unreachable as exc:
            if time.monotonic() >= deadline:
                raise ReceiveError(str(exc)) from None
            time.sleep(1.0)


class _Unreachable(Exception):
    pass


def _join_once(
    server: str, image: str, *, mac: str | None, name: str | None, token: str | None
) -> dict[str, Any]:
    body = {"image": image, **({"mac": mac} if mac else {}), **({"name": name} if name else {})}
    request = _request(
        f"{server}/api/multicast/join",
        token,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)
    except urllib.error.HTTPError as exc:
        try:
            message = json.load(exc).get("error", exc.reason)
        except ValueError:
            message = exc.reason
        if exc.code == 503:  # stopping or busy: worth another try
            raise _Unreachable(f"{server} cannot take us now (503): {message}") from None
        raise ReceiveError(f"join refused by {server} ({exc.code}): {message}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise _Unreachable(f"cannot reach {server}: {reason}; check --server") from None


def byte_ranges(
    slices: SliceMap, slice_size: int, size: int, merge_gap: int = MERGE_GAP
) -> list[tuple[int, int]]:
    """Missing slices as ``[start, end)`` byte ranges, near ones merged."""
    ranges: list[tuple[int, int]] = []
    for first, end in slices.missing_ranges():
        start, stop = first * slice_size, min(end * slice_size, size)
        if ranges and start - ranges[-1][1] <= merge_gap:
            ranges[-1] = (ranges[-1][0], stop)
        else:
            ranges.append((start, stop))
    return ranges


def fetch_ranges(
    url: str,
    fd: int,
    slices: SliceMap,
    slice_size: int,
    size: int,
    *,
    token: str | None = None,
    progress: Any = None,
) -> int:
    """GET each missing range (RFC 9110 §14.2 Range) into ``fd``; marks slices received."""
    fetched = 0
    for start, stop in byte_ranges(slices, slice_size, size):
        request = _request(url, token, headers={"Range": f"bytes={start}-{stop - 1}"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                if response.status != 206 and start != 0:
                    raise ReceiveError(f"{url} ignored the Range request (HTTP {response.status})")
                offset = start
                while offset < stop:
                    chunk = response.read(min(CHUNK, stop - offset))
                    if not chunk:
                        raise ReceiveError(f"{url} ended at byte {offset}, expected {stop}")
                    os.pwrite(fd, chunk, offset)
                    offset += len(chunk)
                    fetched += len(chunk)
                    if progress:
                        progress.update((slices.received * slice_size) + fetched)
        except urllib.error.HTTPError as exc:
            raise ReceiveError(f"unicast fetch of {url} failed: HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise ReceiveError(f"unicast fetch of {url} failed: {exc}") from None
        for index in range(start // slice_size, -(-stop // slice_size)):
            slices.add(index)
    return fetched
