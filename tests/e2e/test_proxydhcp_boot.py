"""Real firmware boots through netdeploy's ProxyDHCP on a LAN whose DHCP server knows nothing of
PXE (busybox udhcpd hands out addresses only; tests/e2e/lan.py).

(a) SeaBIOS with QEMU's iPXE NIC ROM: iPXE gets its address from udhcpd and
    ``<public_url>/boot.ipxe`` from us, then the per-MAC script starts the agent.
(b) OVMF's own PXE client (the NIC's iPXE ROM removed): our offer without option 43 makes it
    ask us again on port 4011, it loads ``media/snponly.efi`` by TFTP from port 69, and that
    iPXE asks again and gets ``boot.ipxe``: one chainload, no loop.

Each guest is stopped once its agent prints the plan it got from the server.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, build_media, demo_variant
from tests.e2e.lan import SERVER_IP, SUBNET, Lan, lan, lan_unavailable
from tests.e2e.vm import VM, ovmf_available, qemu_available

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(qemu_available() is not None, reason=str(qemu_available())),
    pytest.mark.skipif(lan_unavailable() is not None, reason=str(lan_unavailable())),
]

URL = f"http://{SERVER_IP}:8080"
PLAN_LINE = "plan: mode="


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lan]:
    build_media()
    work = tmp_path_factory.mktemp("proxydhcp-lan")
    config = demo_variant(
        work / "netdeploy.toml", append='\n[dhcp]\nproxy = true\ninterface = "br0"\n'
    )
    with lan(work, taps=2, dhcp="udhcpd") as network:
        network.serve(config, work / "state", tftp_port=69)  # PXE firmware knows only port 69
        yield network


def boot_until_plan(net: Lan, vm: VM, timeout: float = 80) -> float:
    """Start ``vm``; return the seconds until its agent printed its plan, then stop it."""
    vm.start()
    try:
        deadline = time.monotonic() + timeout
        while not vm.saw(PLAN_LINE):
            if vm.proc and vm.proc.poll() is not None:
                raise AssertionError(f"{vm.name} exited early:\n{vm.text()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{vm.name}: no plan after {timeout:.0f}s\n{vm.text()[-3000:]}"
                )
            time.sleep(0.2)
        return next(t for t, line in vm.lines if PLAN_LINE in line)
    finally:
        vm.kill()


def first_stage_at(vm: VM) -> float:
    """When the guest ran /boot.ipxe (it echoes "netdeploy: <mac> (<ip>) asks ...")."""
    return next(t for t, line in vm.lines if f"netdeploy: {vm.mac}" in line and "asks" in line)


def dhcp_events(net: Lan, mac: str) -> list[dict[str, Any]]:
    token = (net.workdir / "state" / "admin-token").read_text().strip()
    log = net.request(f"/api/events/log?kind=dhcp&node={mac}", token=token)
    return list(reversed(log["events"]))  # type: ignore[index]


def answers(events: list[dict[str, Any]]) -> list[tuple[str, int, str, str]]:
    return [
        (
            e["detail"]["firmware"],
            e["detail"]["port"],
            e["detail"]["decision"],
            e["detail"].get("boot_file", ""),
        )
        for e in events
        if not e["detail"].get("repeats")
    ]


def test_bios_ipxe_rom_boots_through_the_proxy(net: Lan, tmp_path: Path) -> None:
    mac = "52:54:00:00:10:01"  # sql-n1
    vm = VM("bios-ipxe", mac, tmp_path / "bios-ipxe.log", tap="tap0", netns=net.netns)
    plan_at = boot_until_plan(net, vm)
    ran_first_stage = first_stage_at(vm)
    text = vm.text()
    assert f"{URL}/boot.ipxe" in text  # iPXE shows the file name it took from our offer
    # the address iPXE shows is one of udhcpd's (.100-.200): the proxy gave none
    assert re.search(rf"netdeploy: {mac} \({re.escape(SUBNET)}\.(1\d\d|200)\) asks", text), text
    assert "state=pxe" in text  # the per-MAC script moved the node registered -> pxe
    time.sleep(1.5)  # the event writer batches every second
    got = answers(dhcp_events(net, mac))
    assert got[0] == ("ipxe", 67, "offer", f"{URL}/boot.ipxe"), got
    assert {g[0] for g in got} == {"ipxe"}  # it never asked for a chainload: no loop
    print(f"\nBIOS iPXE ROM: boot.ipxe at {ran_first_stage:.1f}s, agent plan at {plan_at:.1f}s")


@pytest.mark.skipif(ovmf_available() is not None, reason=str(ovmf_available()))
def test_uefi_firmware_pxe_chainloads_ipxe_once(net: Lan, tmp_path: Path) -> None:
    mac = "52:54:00:00:10:02"  # sql-n2
    vm = VM(
        "uefi-pxe",
        mac,
        tmp_path / "uefi-pxe.log",
        tap="tap1",
        netns=net.netns,
        uefi=True,
        nic_rom=False,
    )
    plan_at = boot_until_plan(net, vm)
    ran_first_stage = first_stage_at(vm)
    assert "state=pxe" in vm.text()
    time.sleep(1.5)
    got = answers(dhcp_events(net, mac))
    assert got[:3] == [
        ("uefi", 67, "offer", "media/snponly.efi"),  # OVMF's DHCPDISCOVER
        ("uefi", 4011, "ack", "media/snponly.efi"),  # its BINL request to port 4011
        ("ipxe", 67, "offer", f"{URL}/boot.ipxe"),  # snponly.efi, now iPXE
    ], got
    assert [g for g in got if g[0] == "uefi" and g[1] == 67] == [got[0]]  # chainloaded once
    # `netdeploy explain`'s timeline of it, from the first DHCPDISCOVER to the agent's plan
    token = (net.workdir / "state" / "admin-token").read_text().strip()
    steps = net.request("/api/nodes/sql-n2/explain", token=token)["steps"]  # type: ignore[index]
    path = [(s["phase"], s["text"]) for s in steps]
    (REPO / "test-artifacts").mkdir(exist_ok=True)
    (REPO / "test-artifacts" / "e2e-explain-uefi-pxe.txt").write_text(
        "\n".join(f"{phase:15} {text}" for phase, text in path)
    )

    def first(phase: str, text: str = "") -> int:
        return next(i for i, (p, t) in enumerate(path) if p == phase and text in t)

    dhcp, tftp = first("ProxyDHCP"), first("TFTP", "media/snponly.efi")
    stage, script = first("first stage", "/boot.ipxe"), first("boot decision", "image")
    assert dhcp < tftp < stage < script, path
    print(f"\nOVMF PXE: boot.ipxe at {ran_first_stage:.1f}s, agent plan at {plan_at:.1f}s")
