"""The agent treats an outage as "wait", never as failure (issue 21), run by busybox sh.

Its ``report``, ``wait_for_plan`` and ``outage`` functions talk to a loopback HTTP server that
answers 503 (or is not there at all) a few times and then 200: a state report and the plan wait
for it, a progress report gives up after three tries, and a refusal (403) fails at once.
"""

from __future__ import annotations

import http.server
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.agent_shell import AGENT, BUSYBOX, agent_function

pytestmark = pytest.mark.skipif(BUSYBOX is None, reason="needs busybox (Debian: busybox-static)")

PLAN = "ND_MODE='wait'\nND_STATE='held'\nND_WHY='test'\nND_RETRY_AFTER='0'\n"


class Flaky(http.server.BaseHTTPRequestHandler):
    """Answers ``script``'s statuses in turn (then 200); records every request."""

    script: list[int] = []
    seen: list[str] = []

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.seen.append(f"{self.command} {self.path}")
        status = self.script.pop(0) if self.script else 200
        body = (PLAN if "plan" in self.path else "{}").encode() if status == 200 else b"down\n"
        self.send_response(status)
        if status == 503:
            self.send_header("Retry-After", "1")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[str, type[Flaky]]]:
    handler = type("Handler", (Flaky,), {"script": [], "seen": []})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", handler
    finally:
        httpd.shutdown()
        httpd.server_close()


def run(script: str, api: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    one_liners = [
        line for line in AGENT.splitlines() if line.startswith(("log()", "json_escape()"))
    ]
    functions = "\n".join(one_liners) + "\n"
    functions += "".join(
        agent_function(name) for name in ("outage", "report", "fetch_plan", "wait_for_plan")
    )
    prelude = f'API="{api}"; AUTH="Authorization: Bearer t"; ND_RETRY_AFTER=0\n'
    text = (prelude + functions + script).replace("/tmp/", f"{tmp}/")
    return subprocess.run(
        [BUSYBOX or "busybox", "sh", "-c", text], capture_output=True, text=True, timeout=60
    )


def test_a_state_report_waits_through_503s_and_a_dead_server(server, tmp_path) -> None:
    url, handler = server
    handler.script[:] = [503, 503, 503, 503, 502]
    done = run('report imaged "" "image written" && echo REPORTED', url + "/api/nodes/m", tmp_path)
    assert "REPORTED" in done.stdout, done.stdout + done.stderr
    assert len(handler.seen) == 6
    # nobody listening at all: a state report keeps waiting; progress gives up after 3 tries
    dead = "http://127.0.0.1:9/api/nodes/m"
    done = run("report imaging 50 && echo SENT || echo GAVE-UP", dead, tmp_path)
    assert "GAVE-UP" in done.stdout, done.stdout + done.stderr
    waits = "(report imaged) & P=$!; sleep 3; kill -0 $P && echo STILL-WAITING; kill $P"
    done = run(waits, dead, tmp_path)
    assert "STILL-WAITING" in done.stdout, done.stdout + done.stderr


def test_the_plan_waits_for_the_server_and_a_refusal_fails(server, tmp_path) -> None:
    url, handler = server
    handler.script[:] = [503] * 4
    done = run("wait_for_plan && echo MODE=$ND_MODE", url + "/api/nodes/m", tmp_path)
    assert "MODE=wait" in done.stdout, done.stdout + done.stderr
    assert len(handler.seen) == 5
    handler.script[:] = [403]
    done = run("wait_for_plan || echo REFUSED", url + "/api/nodes/m", tmp_path)
    assert "REFUSED" in done.stdout and "plan fetch failed" in done.stdout


def test_outage_tells_an_outage_from_a_refusal(tmp_path) -> None:
    cases = {
        "wget: server returned error: HTTP/1.1 503 Service Unavailable": True,
        "wget: server returned error: HTTP/1.1 502 Bad Gateway": True,
        "wget: can't connect to remote host (10.0.2.2): Connection refused": True,
        "wget: download timed out": True,
        "": True,  # killed by timeout: no word at all
        "wget: server returned error: HTTP/1.1 403 Forbidden": False,
        "wget: server returned error: HTTP/1.1 404 Not Found": False,
        "wget: server returned error: HTTP/1.1 500 Internal Server Error": False,
    }
    for text, expected in cases.items():
        err = tmp_path / "err"
        err.write_text(text + ("\n" if text else ""))
        done = run("outage /tmp/err && echo OUTAGE || echo REFUSAL", "http://x", tmp_path)
        assert ("OUTAGE" if expected else "REFUSAL") in done.stdout, (text, done.stdout)
