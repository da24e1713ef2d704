"""Where we listen and where booting machines reach us: ports and the public URL.

Facts about this host, not services: the server, the CLI and ``check`` all use them.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path
from urllib.parse import urlsplit

from netdeploy.config import Config
from netdeploy.context import Ports

UNPRIVILEGED_HTTP_PORT = 8080
UNPRIVILEGED_TFTP_PORT = 6969


def may_bind_privileged_ports() -> bool:
    """True when we may bind ports below 1024: root, CAP_NET_BIND_SERVICE, or a lowered sysctl."""
    if os.geteuid() == 0:
        return True
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:") and int(line.split()[1], 16) & (1 << 10):
                return True
        start = int(Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text())
        return start <= 69
    except (OSError, ValueError):
        return False


def choose_ports(cfg: Config) -> Ports:
    privileged = may_bind_privileged_ports()
    http = cfg.server.http_port or (80 if privileged else UNPRIVILEGED_HTTP_PORT)
    tftp = cfg.server.tftp_port or (69 if privileged else UNPRIVILEGED_TFTP_PORT)
    note = ""
    if not privileged and (cfg.server.http_port is None or cfg.server.tftp_port is None):
        note = (
            f"not root: using HTTP port {http} and TFTP port {tftp} "
            "(80 and 69 need root or CAP_NET_BIND_SERVICE)"
        )
    return Ports(http, tftp, note)


def primary_address() -> str | None:
    """The IPv4 address this host sends from by default (the source address of its route to
    TEST-NET-1, RFC 5737; connecting a UDP socket sends nothing), or None without a route."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))
            return str(probe.getsockname()[0])
        except OSError:
            return None


def default_public_url(bind: str, port: int) -> str:
    """Where booting machines reach us when ``server.public_url`` is not set: the bind address,
    or for a wildcard bind the host's primary address (not its host name, which Debian maps
    to 127.0.1.1 in /etc/hosts)."""
    host = bind
    if bind in ("0.0.0.0", "::", ""):
        host = primary_address() or "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}" if port != 80 else f"http://{host}"


def loopback_url(url: str) -> bool:
    host = (urlsplit(url).hostname or "").strip("[]")
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


# the server writes where it listens into state_dir/admin-url; the admin CLI reads it
ADMIN_URL_FILE = "admin-url"


def local_url(bind: str, port: int) -> str:
    """How a command on this host reaches a server bound to ``bind``:``port``."""
    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "[::1]"}.get(bind, bind)
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"
