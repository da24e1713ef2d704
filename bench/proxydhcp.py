#!/usr/bin/env python3
"""ProxyDHCP side by side: netdeploy's built-in ProxyDHCP against dnsmasq in proxy mode, on the
same tap LAN with busybox udhcpd handing out addresses (tests/e2e/lan.py), in one run.

    sudo .venv/bin/python bench/proxydhcp.py [--repeat 3]

Needs root, QEMU with the iPXE NIC ROMs (ipxe-qemu), dnsmasq and busybox. Both LANs (one
namespace each) are up for the whole run. A QEMU guest (SeaBIOS, QEMU's iPXE NIC ROM, TCG)
powers on; measured from QEMU start:
  dhcp  - iPXE prints "Filename: <public_url>/boot.ipxe" (DHCP and the proxy offer done)
  stage - iPXE runs /boot.ipxe from netdeploy ("netdeploy: <mac> (<ip>) asks ...")
One repetition boots the guest once on each LAN, the order alternating every repetition (the
first boot of a LAN is slower for both). Printed: every boot, the median times, and the min and
median of the per-repetition ratios dnsmasq time / netdeploy time (never a best-of; above 1.0
means netdeploy's proxy is faster), with the load average.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.conftest import demo_variant  # noqa: E402
from tests.e2e.lan import Lan, lan, lan_unavailable  # noqa: E402
from tests.e2e.vm import VM, qemu_available  # noqa: E402

MAC = "52:54:00:00:20:01"  # web-1 of the demo config
SIDES = ("netdeploy", "dnsmasq")
KEYS = (("dhcp", "DHCP + proxy offer done"), ("stage", "boot.ipxe running"))


def start_side(stack: contextlib.ExitStack, side: str, work: Path) -> Lan:
    """The side's LAN (its own namespace) with `netdeploy serve` on it: with its ProxyDHCP on
    beside udhcpd, or off with dnsmasq's proxy mode beside udhcpd."""
    proxy = side == "netdeploy"
    (work / side).mkdir()
    config = demo_variant(
        work / f"{side}.toml",
        append='\n[dhcp]\nproxy = true\ninterface = "br0"\n' if proxy else "",
    )
    dhcp = "udhcpd" if proxy else "dnsmasq-proxy"
    net = stack.enter_context(lan(work / side, taps=1, dhcp=dhcp, tag=f"-{side[:2]}"))
    net.serve(config, work / side / "state", tftp_port=69)
    return net


def one_boot(side: str, net: Lan, work: Path, rep: int) -> dict[str, float]:
    """Power the guest on once; seconds from QEMU start to the Filename line and to boot.ipxe."""
    vm = VM(f"{side}-{rep}", MAC, work / f"{side}-{rep}.log", tap="tap0", netns=net.netns)
    vm.start()
    deadline = time.monotonic() + 60
    try:
        while not vm.saw(" asks "):
            if time.monotonic() > deadline:
                raise SystemExit(f"{side}: no boot.ipxe within 60 s; see {vm.log}")
            time.sleep(0.05)
    finally:
        vm.kill()
    return {
        "dhcp": next(t for t, line in vm.lines if "Filename:" in line),
        "stage": next(t for t, line in vm.lines if " asks " in line),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    why = lan_unavailable() or qemu_available()
    if why:
        raise SystemExit(f"cannot run: {why}")
    runs: dict[str, list[dict[str, float]]] = {side: [] for side in SIDES}
    with (
        tempfile.TemporaryDirectory(prefix="bench-proxydhcp-") as tmp,
        contextlib.ExitStack() as st,
    ):
        work = Path(tmp)
        nets = {side: start_side(st, side, work) for side in SIDES}
        print(f"{args.repeat} reps, order alternating; load average {os.getloadavg()[0]:.2f}")
        for rep in range(args.repeat):
            for side in SIDES if rep % 2 == 0 else SIDES[::-1]:
                t = one_boot(side, nets[side], work, rep + 1)
                runs[side].append(t)
                print(
                    f"  rep {rep + 1} {side:9} Filename at {t['dhcp']:5.2f}s, "
                    f"boot.ipxe ran at {t['stage']:5.2f}s  load {os.getloadavg()[0]:.2f}",
                    flush=True,
                )
    print(
        f"\n{args.repeat} reps (seconds from QEMU start, median)  netdeploy   dnsmasq"
        "   ratio dnsmasq/netdeploy per rep"
    )
    for key, label in KEYS:
        ours = [r[key] for r in runs["netdeploy"]]
        theirs = [r[key] for r in runs["dnsmasq"]]
        ratios = [d / n for n, d in zip(ours, theirs, strict=True)]
        print(
            f"  {label:32} {statistics.median(ours):9.2f} {statistics.median(theirs):9.2f}"
            f"   {' '.join(f'{x:.2f}' for x in ratios)} "
            f"(min {min(ratios):.2f}x median {statistics.median(ratios):.2f}x)"
        )
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
