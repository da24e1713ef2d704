"""A throw-away network of namespaces for multicast tests and the benchmark.

One bridge namespace, one sender namespace, N receiver namespaces, each joined to the bridge
by a veth pair (MTU 1500, as a real rack). Optional: a rate limit on the sender's link
(tc tbf) and loss towards chosen receivers (tc netem). Every name starts with
``ndmc-<pid>-``; ``down()`` kills only the processes it started or that live in its own
namespaces, and deletes only its own namespaces, also after a failure or Ctrl-C.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import stop_processes

SUBNET = "10.77.0"
SENDER_IP = f"{SUBNET}.1"


def receiver_ip(i: int) -> str:
    return f"{SUBNET}.{10 + i}"


def netns_unavailable() -> str | None:
    """Why this machine cannot run the netns tests, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if subprocess.run(["ip", "-V"], capture_output=True).returncode != 0:
        return "iproute2 (ip) is not installed"
    return None


class Rig:
    def __init__(
        self,
        receivers: int,
        *,
        rate_mbit: float | None = None,
        loss: dict[int, float] | None = None,
        tag: str = "",
    ):
        self.prefix = f"ndmc-{os.getpid()}-{tag}"
        self.bridge, self.sender = f"{self.prefix}b", f"{self.prefix}s"
        self.receivers = [f"{self.prefix}r{i}" for i in range(receivers)]
        self.rate_mbit, self.loss = rate_mbit, loss or {}
        self.created: list[str] = []
        self.loss_method = ""
        self.procs: list[subprocess.Popen[bytes]] = []

    # ---------------------------------------------------------------- set-up

    def _ip(self, *args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True)

    def _add_ns(self, name: str) -> None:
        existing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        if any(line.split()[0] == name for line in existing.splitlines() if line.strip()):
            raise RuntimeError(f"netns {name} exists already: not ours, not touching it")
        self._ip("netns", "add", name)
        self.created.append(name)
        self._ip("-n", name, "link", "set", "lo", "up")

    def up(self) -> Rig:
        try:
            for ns in (self.bridge, self.sender, *self.receivers):
                self._add_ns(ns)
            b = self.bridge
            self._ip("-n", b, "link", "add", "br0", "type", "bridge", "forward_delay", "0")
            # flood multicast to every port: no IGMP querier in here to feed snooping
            self._ip("-n", b, "link", "set", "br0", "type", "bridge", "mcast_snooping", "0")
            self._ip("-n", b, "link", "set", "br0", "up")
            ends = [(self.sender, "s", SENDER_IP)] + [
                (ns, f"r{i}", receiver_ip(i)) for i, ns in enumerate(self.receivers)
            ]
            for ns, port, address in ends:
                self._ip(
                    "link",
                    "add",
                    "eth0",
                    "netns",
                    ns,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    port,
                    "netns",
                    b,
                )
                self._ip("-n", b, "link", "set", port, "master", "br0", "up")
                self._ip("-n", ns, "addr", "add", f"{address}/24", "brd", "+", "dev", "eth0")
                self._ip("-n", ns, "link", "set", "eth0", "up")
                self._ip("-n", ns, "route", "add", "224.0.0.0/4", "dev", "eth0")
            if self.rate_mbit:
                self.tc(
                    self.sender,
                    "qdisc",
                    "add",
                    "dev",
                    "eth0",
                    "root",
                    "tbf",
                    "rate",
                    f"{self.rate_mbit}mbit",
                    "burst",
                    "64kb",
                    "latency",
                    "100ms",
                )
            for i, percent in self.loss.items():
                self.lose(f"r{i}", percent)
        except BaseException:
            self.down()
            raise
        return self

    def lose(self, port: str, percent: float) -> None:
        """Drop ``percent`` % of the frames the bridge sends out of ``port``: tc netem, or
        where the kernel lacks netem (CONFIG_NET_SCH_NETEM off), an nftables bridge rule
        with a random number per frame, which drops the same way."""
        try:
            self.tc(
                self.bridge, "qdisc", "add", "dev", port, "root", "netem", "loss", f"{percent}%"
            )
            self.loss_method = "tc netem"
            return
        except subprocess.CalledProcessError:
            pass
        rule = (
            "table bridge ndmc {\n chain forward {\n"
            "  type filter hook forward priority 0; policy accept;\n"
            f'  oifname "{port}" numgen random mod 10000 < {int(percent * 100)} counter drop\n'
            " }\n}\n"
        )
        subprocess.run(
            ["ip", "netns", "exec", self.bridge, "nft", "-f", "-"],
            input=rule.encode(),
            check=True,
            capture_output=True,
        )
        self.loss_method = "nftables numgen"

    def tc(self, ns: str, *args: str) -> None:
        subprocess.run(["ip", "netns", "exec", ns, "tc", *args], check=True, capture_output=True)

    # ---------------------------------------------------------------- processes

    def spawn(self, ns: str, argv: list[str], **kw: object) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(["ip", "netns", "exec", ns, *argv], **kw)  # type: ignore[call-overload]
        self.procs.append(proc)
        return proc

    def tx_bytes(self, ns: str, dev: str = "eth0") -> int:
        out = subprocess.run(
            ["ip", "netns", "exec", ns, "cat", f"/sys/class/net/{dev}/statistics/tx_bytes"],
            capture_output=True,
            text=True,
            check=True,
        )
        return int(out.stdout)

    # ---------------------------------------------------------------- tear-down

    def down(self) -> None:
        stop_processes(self.procs, grace=3)
        for ns in self.created:  # anything still running inside our own namespaces
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
            for pid in pids.stdout.split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
        for ns in reversed(self.created):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        self.created.clear()


@contextlib.contextmanager
def rig(receivers: int, **kw: object) -> Iterator[Rig]:
    r = Rig(receivers, **kw)  # type: ignore[arg-type]
    r.up()
    try:
        yield r
    finally:
        r.down()


def wait_line(proc: subprocess.Popen[bytes], prefix: bytes, timeout: float = 60) -> str:
    """Read ``proc``'s stdout until a line starting with ``prefix``; return the rest of it."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"process ended before printing {prefix!r}")
        if line.startswith(prefix):
            return line[len(prefix) :].decode().strip()
    raise TimeoutError(f"no {prefix!r} line within {timeout} s")


REPO = Path(__file__).resolve().parents[2]
