#!/usr/bin/env python3
"""ProxyDHCP side by side: netdeploy's built-in ProxyDHCP against dnsmasq in proxy mode, on the
same tap LAN with busybox udhcpd handing out addresses (tests/e2e/lan.py), in one run.

    sudo .venv/bin/python bench/proxydhcp.py [--repeat 3]

A QEMU guest (SeaBIOS, QEMU's iPXE NIC ROM, TCG) powers on; measured from QEMU start:
  dhcp  - iPXE prints "Filename: <public_url>/boot.ipxe" (DHCP and the proxy offer done)
  stage - iPXE runs /boot.ipxe from netdeploy ("netdeploy: <mac> (<ip>) asks ...")
Each figure is the best of ``--repeat`` boots (the machine is shared; best-of is least noisy).
Ratios are dnsmasq time / netdeploy time; above 1.0 means netdeploy's proxy is faster.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.conftest import demo_variant  # noqa: E402
from tests.e2e.lan import lan, lan_unavailable  # noqa: E402
from tests.e2e.vm import VM, qemu_available  # noqa: E402

MAC = "52:54:00:00:20:01"  # web-1 of the demo config


def one_boot(mode: str, work: Path, repeat: int) -> dict[str, float]:
    proxy = mode == "netdeploy"
    config = demo_variant(
        work / f"{mode}.toml",
        append='\n[dhcp]\nproxy = true\ninterface = "br0"\n' if proxy else "",
    )
    best = {"dhcp": float("inf"), "stage": float("inf")}
    with lan(work / mode, taps=1, dhcp="udhcpd" if proxy else "dnsmasq-proxy") as net:
        net.serve(config, work / mode / "state", tftp_port=69)
        for i in range(repeat):
            vm = VM(f"{mode}-{i}", MAC, work / f"{mode}-{i}.log", tap="tap0", netns=net.netns)
            vm.start()
            deadline = time.monotonic() + 60
            try:
                while not vm.saw(" asks "):
                    if time.monotonic() > deadline:
                        raise SystemExit(f"{mode}: no boot.ipxe within 60 s; see {vm.log}")
                    time.sleep(0.05)
            finally:
                vm.kill()
            dhcp = next(t for t, line in vm.lines if "Filename:" in line)
            stage = next(t for t, line in vm.lines if " asks " in line)
            print(
                f"  {mode:9} boot {i + 1}: Filename at {dhcp:5.2f}s, boot.ipxe ran at {stage:5.2f}s"
            )
            best = {"dhcp": min(best["dhcp"], dhcp), "stage": min(best["stage"], stage)}
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    why = lan_unavailable() or qemu_available()
    if why:
        raise SystemExit(f"cannot run: {why}")
    with tempfile.TemporaryDirectory(prefix="bench-proxydhcp-") as tmp:
        work = Path(tmp)
        (work / "netdeploy").mkdir()
        (work / "dnsmasq").mkdir()
        ours = one_boot("netdeploy", work, args.repeat)
        theirs = one_boot("dnsmasq", work, args.repeat)
    print(f"\nbest of {args.repeat} (seconds from QEMU start)   netdeploy   dnsmasq   ratio")
    for key, label in (("dhcp", "DHCP + proxy offer done"), ("stage", "boot.ipxe running")):
        ratio = theirs[key] / ours[key]
        print(f"  {label:32} {ours[key]:9.2f} {theirs[key]:9.2f} {ratio:7.2f}")


if __name__ == "__main__":
    main()
