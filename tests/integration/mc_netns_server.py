"""Run a netdeploy server (HTTP + multicast) inside a namespace for the netns tests/bench.

    python tests/integration/mc_netns_server.py STATE_DIR BIND PORT SESSIONS OUT.json \
        [--size BYTES] [key=value ...multicast settings]

Prints ``READY <url> <sha256>``, serves until SESSIONS sessions have ended (or SIGTERM),
then writes their status JSON (with the process's CPU seconds) to OUT.json.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.integration.mc_harness import running_server


def _value(text: str) -> object:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


async def main() -> None:
    state, bind, port, sessions, out = sys.argv[1:6]
    extra = sys.argv[6:]
    size = 3 * 2**20
    settings: dict[str, object] = {}
    for item in extra:
        key, _, value = item.lstrip("-").partition("=")
        if key == "size":
            size = int(value)
        elif key == "log":  # the multicast sender's debug log (per-round timings)
            logging.basicConfig(
                filename=value, format="%(relativeCreated)8.0f ms %(message)s", level=logging.INFO
            )
            logging.getLogger("netdeploy.multicast").setLevel(logging.DEBUG)
        elif key == "port_range":
            low, high = value.split("-")
            settings[key] = (int(low), int(high))
        else:
            settings[key] = _value(value)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with running_server(
        Path(state), size=size, bind=bind, http_port=int(port), **settings
    ) as server:
        print(f"READY {server.url} {server.sha256}", flush=True)
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        seen = {}  # the session objects, for their monotonic timestamps (benches line them up)
        while len(server.service.finished) < int(sessions) and not stop.is_set():
            seen.update(server.service.sessions)
            await asyncio.sleep(0.05)
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        stamps = ("first_join_at", "started_at", "pass_ended_at", "finished_at")
        result = {
            "clock": {f"{k:08x}": {a: getattr(s, a) for a in stamps} for k, s in seen.items()},
            "finished": list(server.service.finished),
            "cpu_seconds": round(
                (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime), 3
            ),
        }
        Path(out).write_text(json.dumps(result))


if __name__ == "__main__":
    asyncio.run(main())
