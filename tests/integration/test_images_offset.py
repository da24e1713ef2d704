"""`?offset=N&sha256=` resume (for busybox wget, which refuses a 206 into a pipe), with curl."""

from __future__ import annotations

import hashlib
import os
import subprocess

from tests.conftest import add_image, start_server

IMAGE = "w2k3-ent-sp1"


def test_offset_resume_returns_the_tail_and_refuses_another_image(state_dir, tmp_path):
    data = os.urandom(3 * 1024 * 1024 + 17)
    source = tmp_path / "master.img"
    source.write_bytes(data)
    add_image(state_dir, source)
    sha = hashlib.sha256(data).hexdigest()
    server = start_server(state_dir)
    try:
        url = f"{server.url}/images/{IMAGE}?mac=52:54:00:00:10:01"
        # the admin token (a node's agent sends its claim instead)
        auth = ("-H", "Authorization: " + server.admin_headers()["Authorization"])
        offset = 1024 * 1024
        tail = subprocess.run(
            [
                "curl",
                *auth,
                "-fsS",
                "-D",
                str(tmp_path / "h"),
                "-o",
                "-",
                f"{url}&offset={offset}&sha256={sha}",
            ],
            capture_output=True,
            check=True,
        ).stdout
        head = (tmp_path / "h").read_text()
        assert head.startswith("HTTP/1.1 200")
        assert f"X-Image-Offset: {offset}" in head
        assert tail == data[offset:]
        # a bounded range, as the multicast agent fills what its session missed
        middle = subprocess.run(
            ["curl", "-fsS", *auth, "-o", "-", f"{url}&offset=5&length=11816&sha256={sha}"],
            capture_output=True,
            check=True,
        ).stdout
        assert middle == data[5 : 5 + 11816]
        last = subprocess.run(
            [
                "curl",
                "-fsS",
                *auth,
                "-o",
                "-",
                f"{url}&offset={len(data) - 3}&length=3&sha256={sha}",
            ],
            capture_output=True,
            check=True,
        ).stdout
        assert last == data[-3:]
        for query, status in [
            (f"offset={len(data) - 3}&length=4&sha256={sha}", 416),
            (f"offset=0&length=0&sha256={sha}", 416),
            (f"offset=0&length=x&sha256={sha}", 416),
            (f"offset={offset}&sha256={'0' * 64}", 409),
            (f"offset={len(data)}&sha256={sha}", 416),
            (f"offset=-5&sha256={sha}", 416),
            (f"offset=%C2%B2&sha256={sha}", 416),  # '²': str.isdigit() yet not int()
            (f"offset=0&length=%C2%B2&sha256={sha}", 416),
        ]:
            code = subprocess.run(
                ["curl", "-sS", *auth, "-o", "/dev/null", "-w", "%{http_code}", f"{url}&{query}"],
                capture_output=True,
                text=True,
            ).stdout
            assert code == str(status), query
    finally:
        server.stop()
