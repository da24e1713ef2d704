"""ProxyDHCP against a real DHCP client: busybox udhcpc sending PXE options on a veth in a
private network namespace (tests/e2e/lan.py), `netdeploy serve` with ``[dhcp] proxy`` on the
bridge and no other DHCP server. udhcpc takes our offer (address 0.0.0.0), requests it from us
and hands the ACK's fields to its script, which writes them down."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import demo_variant
from tests.e2e.lan import SERVER_IP, Lan, lan, lan_unavailable

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(lan_unavailable() is not None, reason=str(lan_unavailable())),
    pytest.mark.skipif(shutil.which("busybox") is None, reason="needs busybox (busybox-static)"),
]

URL = f"http://{SERVER_IP}:8080"


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lan]:
    work = tmp_path_factory.mktemp("dhcp-lan")
    config = demo_variant(
        work / "netdeploy.toml", append='\n[dhcp]\nproxy = true\ninterface = "br0"\n'
    )
    (work / "hook.sh").write_text('#!/bin/sh\nenv > "$OUT.$1"\n')
    (work / "hook.sh").chmod(0o755)
    with lan(work, taps=0, dhcp="none", veths=1) as network:
        network.serve(config, work / "state")
        yield network


def udhcpc(net: Lan, mac: str, *args: str) -> dict[str, str] | None:
    """One DHCP exchange from ``mac``; the ACK's fields as udhcpc's script saw them, or None."""
    net.ip("link", "set", "vc0", "address", mac)
    out = net.workdir / f"env-{mac.replace(':', '')}"
    done = net.run(
        "env",
        f"OUT={out}",
        "busybox",
        "udhcpc",
        "-i",
        "vc0",
        "-f",
        "-q",
        "-n",
        "-t",
        "2",
        "-T",
        "1",
        "-s",
        str(net.workdir / "hook.sh"),
        *args,
        capture_output=True,
        text=True,
        timeout=30,
    )
    bound = Path(f"{out}.bound")
    if done.returncode != 0 or not bound.exists():
        return None
    return dict(line.split("=", 1) for line in bound.read_text().splitlines() if "=" in line)


def dhcp_events(net: Lan, mac: str, count: int) -> list[dict]:
    """The MAC's dhcp events, oldest first, once ``count`` are there (the writer batches every
    second) or after 3 s."""
    token = (net.workdir / "state" / "admin-token").read_text().strip()
    deadline = time.monotonic() + 3
    while True:
        log = net.request(f"/api/events/log?kind=dhcp&node={mac}", token=token)
        events = list(reversed(log["events"]))  # type: ignore[index]
        if len(events) >= count or time.monotonic() > deadline:
            return events
        time.sleep(0.2)


GUID = "00" + "0102030405060708090a0b0c0d0e0f10"


@pytest.mark.parametrize(
    ("mac", "vendor", "extra", "boot_file", "vendor_back", "firmware"),
    [
        (
            "52:54:00:00:10:01",  # sql-n1 of the demo cluster
            "PXEClient:Arch:00000:UNDI:002001",
            ["-x", "0x5d:0000"],
            "media/undionly.kpxe",
            "PXEClient",
            "bios",
        ),
        (
            "52:54:00:aa:00:07",  # unknown: still answered
            "PXEClient:Arch:00007:UNDI:003000",
            ["-x", "0x5d:0007"],
            "media/snponly.efi",
            "PXEClient",
            "uefi",
        ),
        (
            "52:54:00:aa:00:16",
            "HTTPClient:Arch:00016:UNDI:003001",
            ["-x", "0x5d:0010"],
            f"{URL}/bootfiles/media/ipxe.efi",
            "HTTPClient",
            "uefi-http",
        ),
        (
            "52:54:00:aa:00:af",
            "PXEClient:Arch:00000:UNDI:002001",
            ["-x", "0x5d:0000", "-x", "0x4d:69505845"],  # user class "iPXE"
            f"{URL}/boot.ipxe",
            "PXEClient",
            "ipxe",
        ),
    ],
)
def test_a_real_client_gets_the_program_for_its_firmware(
    net, mac, vendor, extra, boot_file, vendor_back, firmware
):
    got = udhcpc(net, mac, "-V", vendor, "-x", f"0x61:{GUID}", *extra)
    assert got is not None, (net.workdir / "serve.log").read_text()[-2000:]
    assert got["boot_file"] == boot_file
    assert got["siaddr"] == SERVER_IP and got["serverid"] == SERVER_IP
    assert got["ip"] == "0.0.0.0"  # a proxy never gives an address
    assert got["vendor"] == vendor_back
    assert got["opt97"] == GUID  # the client's GUID echoed (PXE 2.1)
    if firmware == "bios":
        assert got["opt43"] == "060108ff"  # PXE_DISCOVERY_CONTROL = 8: load the file at once
    else:
        assert "opt43" not in got or firmware == "ipxe"
    events = dhcp_events(net, mac, 2)
    assert [(e["detail"]["request"], e["detail"]["decision"]) for e in events] == [
        ("DHCPDISCOVER", "offer"),
        ("DHCPREQUEST", "ack"),
    ]
    assert all(e["detail"]["firmware"] == firmware for e in events)
    assert events[0]["detail"]["boot_file"] == boot_file and events[0]["detail"]["why"]
    assert events[0]["cluster"] == ("sqlclu" if mac.endswith("10:01") else None)


def test_a_client_that_is_not_pxe_gets_no_answer(net):
    assert udhcpc(net, "52:54:00:aa:00:01") is None  # vendor class "udhcp 1.35.0"
    assert dhcp_events(net, "52:54:00:aa:00:01", 1) == []
    assert udhcpc(net, "52:54:00:aa:00:02", "-V", "PXEClient:Arch:00011", "-x", "0x5d:000b") is None
    (ignored,) = dhcp_events(net, "52:54:00:aa:00:02", 1)  # ARM64: explained, not answered
    assert ignored["detail"]["decision"] == "ignored"
    assert "ARM 64-bit UEFI" in ignored["detail"]["why"]
