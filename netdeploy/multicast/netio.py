"""Socket set-up for both ends: multicast interface, TTL, membership, buffer sizes."""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import struct

IP_MULTICAST_ALL = 49  # linux/in.h; not exported by Python's socket module
SO_RCVBUFFORCE = 33
SO_SNDBUFFORCE = 32


class InterfaceError(OSError):
    """The configured interface does not exist or has no usable address."""


def ip_mreqn(group: str, interface: str | None) -> bytes:
    """``struct ip_mreqn`` for ``interface`` given as a name (``eth0``), an IPv4 address, or
    None (the kernel picks by route)."""
    address, index = "0.0.0.0", 0
    if interface:
        try:
            ipaddress.IPv4Address(interface)
            address = interface
        except ValueError:
            try:
                index = socket.if_nametoindex(interface)
            except OSError:
                raise InterfaceError(
                    f"no network interface {interface!r}; give a name from `ip link` "
                    "or one of this host's IPv4 addresses"
                ) from None
    return struct.pack("4s4si", socket.inet_aton(group), socket.inet_aton(address), index)


def local_address_towards(host: str) -> str:
    """This host's IPv4 address on the route to ``host`` (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((host, 9))
        return probe.getsockname()[0]


def _bigger_buffer(sock: socket.socket, option: int, force: int, size: int) -> None:
    # The *FORCE variants pass net.core.[rw]mem_max when we are root (CAP_NET_ADMIN).
    try:
        sock.setsockopt(socket.SOL_SOCKET, force, size)
    except OSError:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, option, size)


def sender_socket(
    bind: str, port: int, group: str, interface: str | None, ttl: int, sndbuf: int = 256 * 1024
) -> socket.socket:
    """One non-blocking socket per session: sends to the group, receives feedback on ``port``.

    A modest send buffer on purpose: when the local link is the bottleneck the socket
    blocks (EAGAIN) before the qdisc overflows, so the link paces us without loss.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_IP, IP_MULTICAST_ALL, 0)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, ip_mreqn(group, interface))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        _bigger_buffer(sock, socket.SO_RCVBUF, SO_RCVBUFFORCE, 1 << 20)
        sock.bind((bind, port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def receiver_socket(
    group: str, port: int, interface: str | None, rcvbuf: int = 8 << 20
) -> socket.socket:
    """Bound to the group itself (not the wildcard) and joined on ``interface`` (IGMP)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_IP, IP_MULTICAST_ALL, 0)
        _bigger_buffer(sock, socket.SO_RCVBUF, SO_RCVBUFFORCE, rcvbuf)
        sock.bind((group, port))
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, ip_mreqn(group, interface))
    except BaseException:
        sock.close()
        raise
    return sock
