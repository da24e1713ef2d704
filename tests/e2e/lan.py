"""A private boot LAN for end-to-end tests: a network namespace with a bridge, taps for QEMU
guests, dnsmasq as the DHCP server and `netdeploy serve` on the bridge (RECIPES task 3).

``dhcp`` picks the LAN's DHCP server: ``"dnsmasq"`` (the default: addresses and the boot file
for iPXE), ``"udhcpd"`` (busybox: addresses only, as on a LAN whose DHCP server knows nothing of
PXE; netdeploy's ProxyDHCP adds the boot information), ``"dnsmasq-proxy"`` (udhcpd plus dnsmasq
as ProxyDHCP, the by-hand setup FOG users run) or ``"none"``. Every mode but ``"none"`` sends
IPv6 router advertisements (dnsmasq), without which iPXE waits ~16 s per boot.

Slirp (tests/e2e/vm.py's default) carries no multicast, so multicast imaging is tested here.
Nothing touches the host's own interfaces: every link lives in the namespace
``ndlan-<pid>`` (``ndlan-<pid><tag>`` with a tag), and the test reaches the server from a worker
thread that entered the namespace (setns(2) changes only the calling thread). ``down()`` kills
only what it started and what runs inside its own namespace, and deletes only that namespace.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import json
import os
import shutil
import signal
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import REPO, serve_argv, stop_processes, wait_answering

SUBNET = "10.89.0"
SERVER_IP = f"{SUBNET}.1"
HTTP_PORT = 8080  # the namespace has its own port space
CLONE_NEWNET = 0x40000000
DHCP_MODES = ("dnsmasq", "udhcpd", "dnsmasq-proxy", "none")


def lan_unavailable() -> str | None:
    """Why this machine cannot run the LAN tests, or None."""
    if os.geteuid() != 0:
        return "network namespaces and taps need root"
    if shutil.which("dnsmasq") is None:
        return "dnsmasq not installed (Debian: dnsmasq-base)"
    if not Path("/dev/net/tun").exists():
        return "no /dev/net/tun for QEMU taps"
    return None


def _enter(netns: str) -> None:
    """ThreadPoolExecutor initializer: move this worker thread into ``netns``."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {netns}")
    finally:
        os.close(fd)


class Lan:
    def __init__(
        self,
        workdir: Path,
        taps: int,
        dhcp: str = "dnsmasq",
        veths: int = 0,
        boot_first: tuple[str, ...] = (),
        tag: str = "",
    ):
        if dhcp not in DHCP_MODES:
            raise ValueError(f"dhcp must be one of {', '.join(DHCP_MODES)}")
        # ``tag`` tells apart two LANs of one process (bench/proxydhcp.py keeps two up at once)
        self.netns = f"ndlan-{os.getpid()}{tag}"
        self.workdir = workdir
        self.taps = [f"tap{i}" for i in range(taps)]
        self.dhcp = dhcp
        # veth pairs: "vc<i>" stays in the namespace for a client program, its peer joins br0
        self.veths = [f"vc{i}" for i in range(veths)]
        # dnsmasq lines put before the generic dhcp-boot, e.g. a MAC tagged ``pxelinux`` that
        # gets pxelinux.0 instead of boot.ipxe
        self.boot_first = boot_first
        self.url = f"http://{SERVER_IP}:{HTTP_PORT}"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.owned = False
        self._http: concurrent.futures.ThreadPoolExecutor | None = None
        self.server_log = workdir / "serve.log"

    # ---------------------------------------------------------------- set-up

    def ip(self, *args: str) -> None:
        subprocess.run(["ip", "-n", self.netns, *args], check=True, capture_output=True)

    def run(self, *argv: str, **kw: object) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(["ip", "netns", "exec", self.netns, *argv], **kw)  # type: ignore[call-overload]

    def spawn(self, argv: list[str], **kw: object) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(["ip", "netns", "exec", self.netns, *argv], **kw)  # type: ignore[call-overload]
        self.procs.append(proc)
        return proc

    def up(self) -> Lan:
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        if any(line.split()[0] == self.netns for line in listed.splitlines() if line.strip()):
            raise RuntimeError(f"netns {self.netns} exists already: not ours, not touching it")
        subprocess.run(["ip", "netns", "add", self.netns], check=True, capture_output=True)
        self.owned = True
        try:
            self.ip("link", "set", "lo", "up")
            # no IGMP querier on this LAN: flood multicast to every port, as a dumb switch does
            self.ip("link", "add", "br0", "type", "bridge", "forward_delay", "0", "stp_state", "0")
            self.ip("link", "set", "br0", "type", "bridge", "mcast_snooping", "0")
            self.ip("addr", "add", f"{SERVER_IP}/24", "dev", "br0")
            # an IPv6 ULA only so dnsmasq can send router advertisements: without them iPXE
            # waits ~16 s for IPv6 autoconfiguration on every boot (RECIPES pitfall 5)
            self.ip("addr", "add", "fd89::1/64", "dev", "br0", "nodad")
            self.ip("link", "set", "br0", "up")
            for tap in self.taps:
                self.ip("tuntap", "add", "dev", tap, "mode", "tap")
                self.ip("link", "set", tap, "master", "br0")
                self.ip("link", "set", tap, "up")
            for veth in self.veths:
                self.ip("link", "add", veth, "type", "veth", "peer", "name", f"{veth}br")
                self.ip("link", "set", f"{veth}br", "master", "br0")
                self.ip("link", "set", f"{veth}br", "up")
                self.ip("link", "set", veth, "up")
            if self.dhcp in ("udhcpd", "dnsmasq-proxy"):
                self._udhcpd()
            if self.dhcp != "none":
                self._dnsmasq()
            self._http = concurrent.futures.ThreadPoolExecutor(
                1, thread_name_prefix=self.netns, initializer=_enter, initargs=(self.netns,)
            )
        except BaseException:
            self.down()
            raise
        return self

    def _udhcpd(self) -> None:
        """busybox udhcpd: addresses, a router, nothing about booting."""
        conf = self.workdir / "udhcpd.conf"
        conf.write_text(
            "\n".join(
                [
                    f"start {SUBNET}.100",
                    f"end {SUBNET}.200",
                    "interface br0",
                    f"lease_file {self.workdir / 'udhcpd.leases'}",
                    f"pidfile {self.workdir / 'udhcpd.pid'}",
                    "option subnet 255.255.255.0",
                    f"option router {SERVER_IP}",
                    "option lease 3600",
                    "",
                ]
            )
        )
        (self.workdir / "udhcpd.leases").touch()
        log = open(self.workdir / "udhcpd.log", "ab")  # noqa: SIM115 - kept by the child
        self.spawn(["busybox", "udhcpd", "-f", str(conf)], stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def _dnsmasq_lines(self) -> list[str]:
        common = ["port=0", "interface=br0", "bind-interfaces", "no-resolv", "no-hosts", "log-dhcp"]
        ra = ["enable-ra", "dhcp-range=::,constructor:br0,ra-only"]
        if self.dhcp == "udhcpd":  # router advertisements only; no DHCPv4 socket at all
            return common + ra
        if self.dhcp == "dnsmasq-proxy":
            return [
                *common,
                f"dhcp-range={SUBNET}.0,proxy,255.255.255.0",
                "dhcp-match=set:ipxe,175",
                # without one pxe-service line dnsmasq ignores PXE clients (RECIPES pitfall 7)
                'pxe-service=tag:!ipxe,x86PC,"Chainload iPXE",media/undionly',
                f"dhcp-boot=tag:ipxe,{self.url}/boot.ipxe,,{SERVER_IP}",
                *ra,
            ]
        return [
            *common,
            f"dhcp-range={SUBNET}.100,{SUBNET}.200,255.255.255.0,1h",
            f"dhcp-option=option:router,{SERVER_IP}",
            "dhcp-match=set:ipxe,175",
            *self.boot_first,
            # a MAC tagged pxelinux (boot_first) must not match here too (RECIPES pitfall 14)
            f"dhcp-boot=tag:ipxe,tag:!pxelinux,{self.url}/boot.ipxe",
            # iPXE 175.176 no-pxedhcp: do not wait 2 s for ProxyDHCP offers
            "dhcp-option=tag:ipxe,encap:175,176,1",
            *ra,
        ]

    def _dnsmasq(self) -> None:
        conf = self.workdir / "dnsmasq.conf"
        conf.write_text("\n".join([*self._dnsmasq_lines(), ""]))
        self.spawn(
            [
                "dnsmasq",
                "--keep-in-foreground",
                f"--conf-file={conf}",
                f"--log-facility={self.workdir / 'dnsmasq.log'}",
                "--user=root",
                "--group=root",
                f"--pid-file={self.workdir / 'dnsmasq.pid'}",
                f"--dhcp-leasefile={self.workdir / 'dnsmasq.leases'}",
            ]
        )

    def serve(
        self, config: Path, state_dir: Path, *, tftp_port: int = 6969, extra: tuple[str, ...] = ()
    ) -> None:
        """`netdeploy serve` on the bridge; returns once its API answers. Plain PXE firmware
        fetches from TFTP port 69 (free inside the namespace): pass ``tftp_port=69``."""
        self.state_dir = state_dir
        argv = serve_argv(
            config,
            state_dir,
            bind="0.0.0.0",
            http_port=HTTP_PORT,
            tftp_port=tftp_port,
            extra=("--public-url", self.url, *extra),
        )
        with open(self.server_log, "ab") as out:
            proc = self.spawn(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        wait_answering(proc, self.get_json, self.server_log)

    def lose(self, tap: str, per_mille: int, group: str) -> None:
        """Drop ``per_mille`` of the multicast frames the bridge sends out of ``tap`` (nftables
        bridge output hook: the server's own frames; this kernel has no tc netem)."""
        rule = (
            f"table bridge {self.netns.replace('-', '_')} {{\n chain out {{\n"
            "  type filter hook output priority 0; policy accept;\n"
            f'  oifname "{tap}" ip daddr {group} numgen random mod 1000 < {per_mille} '
            "counter drop\n }\n}\n"
        )
        self.run("nft", "-f", "-", input=rule.encode(), check=True, capture_output=True)

    # ---------------------------------------------------------------- the server's API

    def request(self, path: str, *, token: str | None = None, body: object = None) -> object:
        def call() -> object:
            request = urllib.request.Request(
                self.url + path,
                method="GET" if body is None else "POST",
                data=None if body is None else json.dumps(body).encode(),
                headers={"Content-Type": "application/json"}
                | ({"Authorization": f"Bearer {token}"} if token else {}),
            )
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.load(response)

        assert self._http, "the LAN is not up"
        return self._http.submit(call).result(timeout=60)

    def get_json(self, path: str) -> object:
        """With the admin token: the data routes need read access (docs/security.md)."""
        token_file = getattr(self, "state_dir", None) and self.state_dir / "admin-token"
        token = token_file.read_text().strip() if token_file and token_file.exists() else None
        return self.request(path, token=token)

    # ---------------------------------------------------------------- tear-down

    def down(self) -> None:
        if self._http:
            self._http.shutdown(wait=False, cancel_futures=True)
        stop_processes(self.procs, grace=10)
        if not self.owned:
            return
        pids = subprocess.run(["ip", "netns", "pids", self.netns], capture_output=True, text=True)
        for pid in pids.stdout.split():  # anything still running inside our own namespace
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        subprocess.run(["ip", "netns", "del", self.netns], capture_output=True)
        self.owned = False


@contextlib.contextmanager
def lan(
    workdir: Path,
    taps: int,
    dhcp: str = "dnsmasq",
    veths: int = 0,
    boot_first: tuple[str, ...] = (),
    tag: str = "",
) -> Iterator[Lan]:
    net = Lan(workdir, taps, dhcp, veths, boot_first, tag).up()
    try:
        yield net
    finally:
        net.down()


__all__ = ["DHCP_MODES", "HTTP_PORT", "SERVER_IP", "Lan", "lan", "lan_unavailable"]
