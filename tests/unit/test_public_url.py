"""Where booting machines are told to reach us when server.public_url is not set."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from netdeploy import addresses as server
from netdeploy.addresses import default_public_url, loopback_url, primary_address


def test_an_explicit_bind_address_is_the_url():
    assert default_public_url("10.88.0.1", 8080) == "http://10.88.0.1:8080"
    assert default_public_url("10.88.0.1", 80) == "http://10.88.0.1"
    assert default_public_url("fd88::1", 8080) == "http://[fd88::1]:8080"


def test_a_wildcard_bind_uses_the_address_the_host_routes_from(monkeypatch):
    monkeypatch.setattr(server, "primary_address", lambda: "10.1.2.3")
    assert default_public_url("0.0.0.0", 8080) == "http://10.1.2.3:8080"
    monkeypatch.setattr(server, "primary_address", lambda: None)  # no route at all
    assert default_public_url("0.0.0.0", 8080) == "http://127.0.0.1:8080"


@pytest.mark.skipif(shutil.which("ip") is None, reason="needs iproute2")
def test_primary_address_is_the_kernels_source_address():
    route = subprocess.run(
        ["ip", "-4", "route", "get", "192.0.2.1"], capture_output=True, text=True
    )
    if route.returncode != 0:
        assert primary_address() is None
        return
    assert primary_address() == re.search(r"\bsrc (\S+)", route.stdout).group(1)


def test_loopback_urls_are_recognised():
    assert loopback_url("http://127.0.0.1:8080")
    assert loopback_url("http://127.0.1.1")  # Debian's /etc/hosts entry for the host name
    assert loopback_url("http://[::1]:8080")
    assert loopback_url("http://localhost:8080")
    assert not loopback_url("http://10.0.2.2:8080")
    assert not loopback_url("http://deploy.lab.example")
