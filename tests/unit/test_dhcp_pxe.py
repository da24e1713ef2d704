"""ProxyDHCP decisions: which client gets which boot program, and the shape of each reply."""

from __future__ import annotations

import pytest

from netdeploy.dhcp import packet as p
from netdeploy.dhcp import pxe
from netdeploy.dhcp.packet import DhcpPacket

SERVER = "10.89.0.1"
URL = "http://10.89.0.1:8080"
MAC = bytes.fromhex("525400001001")
GUID = b"\x00" + bytes(range(16))


def request(
    vendor: str | None,
    *,
    arch: int | None = None,
    message: int = p.DISCOVER,
    ipxe: bool = False,
    user_class: bytes | None = None,
    extra: dict[int, bytes] | None = None,
) -> DhcpPacket:
    options: dict[int, bytes] = {p.OPT_MESSAGE_TYPE: bytes([message])}
    if vendor is not None:
        options[p.OPT_VENDOR_CLASS] = vendor.encode()
    if arch is not None:
        options[p.OPT_CLIENT_ARCH] = arch.to_bytes(2, "big")
    options[p.OPT_CLIENT_GUID] = GUID
    if ipxe:
        options[p.OPT_IPXE] = b"\x13\x01\x01"
    if user_class is not None:
        options[p.OPT_USER_CLASS] = user_class
    options |= extra or {}
    # through the wire format, as the service sees it
    return p.parse(p.build(DhcpPacket(op=p.BOOTREQUEST, xid=0x1234, chaddr=MAC, options=options)))


def decide(req: DhcpPacket, *, pxe_port: bool = False) -> pxe.Answer:
    return pxe.answer(req, pxe_port=pxe_port, server_ip=SERVER, public_url=URL)


@pytest.mark.parametrize(
    ("vendor", "arch", "ipxe", "firmware", "boot_file"),
    [
        ("PXEClient:Arch:00000:UNDI:002001", 0, False, "bios", "media/undionly.kpxe"),
        ("PXEClient:Arch:00007:UNDI:003000", 7, False, "uefi", "media/snponly.efi"),
        ("PXEClient:Arch:00009:UNDI:003000", 9, False, "uefi", "media/snponly.efi"),
        (
            "HTTPClient:Arch:00016:UNDI:003001",
            16,
            False,
            "uefi-http",
            f"{URL}/bootfiles/media/ipxe.efi",
        ),
        ("PXEClient:Arch:00000:UNDI:002001", 0, True, "ipxe", f"{URL}/boot.ipxe"),
        ("PXEClient:Arch:00007:UNDI:003016", 7, True, "ipxe", f"{URL}/boot.ipxe"),
    ],
)
def test_each_firmware_gets_its_program(vendor, arch, ipxe, firmware, boot_file):
    ans = decide(request(vendor, arch=arch, ipxe=ipxe))
    assert ans.client is not None and ans.client.firmware == firmware
    assert ans.decision == "offer" and ans.reply is not None
    wire = p.parse(p.build(ans.reply))
    assert wire.file.decode() == boot_file
    assert wire.op == p.BOOTREPLY and wire.xid == 0x1234 and wire.chaddr == MAC
    assert wire.yiaddr == "0.0.0.0"  # never an address: the LAN's DHCP server gives it
    assert wire.siaddr == SERVER
    assert wire.message_type == p.OFFER
    assert wire.options[p.OPT_SERVER_ID] == bytes([10, 89, 0, 1])
    assert wire.options[p.OPT_CLIENT_GUID] == GUID
    assert wire.flags & p.BROADCAST_FLAG
    expected_class = b"HTTPClient" if firmware == "uefi-http" else b"PXEClient"
    assert wire.options[p.OPT_VENDOR_CLASS] == expected_class
    assert ans.why


def test_bios_rom_is_told_to_load_the_file_without_discovery():
    reply = decide(request("PXEClient:Arch:00000:UNDI:002001", arch=0)).reply
    assert reply is not None
    vendor = dict(p.parse_options(reply.options[p.OPT_VENDOR_SPECIFIC], "43"))
    assert vendor == {pxe.PXE_DISCOVERY_CONTROL: bytes([pxe.DISCOVERY_USE_BOOTFILE])}


def test_uefi_gets_no_vendor_options_so_edk2_asks_port_4011():
    reply = decide(request("PXEClient:Arch:00007:UNDI:003000", arch=7)).reply
    assert reply is not None and p.OPT_VENDOR_SPECIFIC not in reply.options


@pytest.mark.parametrize("user_class", [b"iPXE", b"\x04iPXE"])  # bare, and RFC 3004 framed
def test_user_class_ipxe_counts_as_ipxe(user_class):
    ans = decide(request("PXEClient:Arch:00000:UNDI:002001", arch=0, user_class=user_class))
    assert ans.client is not None and ans.client.ipxe
    assert ans.reply is not None and ans.reply.file == f"{URL}/boot.ipxe".encode()


@pytest.mark.parametrize(
    "vendor", [None, "MSFT 5.0", "udhcp 1.35.0", "pxeclient", "", "XPXEClient"]
)
def test_non_pxe_clients_are_ignored(vendor):
    ans = decide(request(vendor, arch=0))
    assert ans.reply is None and ans.client is None and ans.decision == "ignored"


def test_arch_from_vendor_class_when_option_93_is_missing():
    ans = decide(request("PXEClient:Arch:00007:UNDI:003000"))
    assert ans.client is not None
    assert (ans.client.arch, ans.client.arch_from) == (7, "vendor class")
    assert ans.reply is not None and ans.reply.file == b"media/snponly.efi"
    plain = decide(request("PXEClient"))
    assert plain.client is not None and plain.client.arch_from == "default"
    assert plain.reply is not None and plain.reply.file == b"media/undionly.kpxe"


@pytest.mark.parametrize(
    ("arch", "vendor"), [(11, "PXEClient"), (6, "PXEClient"), (19, "HTTPClient")]
)
def test_architectures_without_a_program_are_not_answered_but_explained(arch, vendor):
    ans = decide(request(f"{vendor}:Arch:{arch:05d}", arch=arch))
    assert ans.reply is None and ans.decision == "ignored"
    assert f"arch {arch}" in ans.why and "next boot device" in ans.why


def test_port_4011_request_gets_an_ack_with_the_boot_item_echoed():
    item = b"\x00\x00\x00\x00"
    req = request(
        "PXEClient:Arch:00000:UNDI:002001",
        arch=0,
        message=p.REQUEST,
        extra={p.OPT_VENDOR_SPECIFIC: b"\x47\x04" + item + b"\xff"},
    )
    ans = decide(req, pxe_port=True)
    assert ans.decision == "ack" and ans.reply is not None
    assert ans.reply.message_type == p.ACK
    vendor = dict(p.parse_options(ans.reply.options[p.OPT_VENDOR_SPECIFIC], "43"))
    assert vendor[pxe.PXE_BOOT_ITEM] == item


def test_port_4011_uefi_request_gets_the_same_file():
    req = request("PXEClient:Arch:00007:UNDI:003000", arch=7, message=p.REQUEST)
    ans = decide(req, pxe_port=True)
    assert ans.reply is not None and ans.reply.file == b"media/snponly.efi"
    assert ans.reply.message_type == p.ACK


def test_requests_on_port_67_are_answered_only_when_addressed_to_us():
    theirs = request(
        "PXEClient", arch=0, message=p.REQUEST, extra={p.OPT_SERVER_ID: bytes([10, 89, 0, 2])}
    )
    assert decide(theirs).decision == "not_for_us" and decide(theirs).reply is None
    ours = request(
        "PXEClient", arch=0, message=p.REQUEST, extra={p.OPT_SERVER_ID: bytes([10, 89, 0, 1])}
    )
    assert decide(ours).decision == "ack"
    # the LAN's DHCP server on this same host (same address): a REQUEST for an address is its
    same_host = request(
        "PXEClient",
        arch=0,
        message=p.REQUEST,
        extra={p.OPT_SERVER_ID: bytes([10, 89, 0, 1]), p.OPT_REQUESTED_IP: bytes([10, 89, 0, 150])},
    )
    assert decide(same_host).decision == "not_for_us" and decide(same_host).reply is None
    assert decide(request("PXEClient", arch=0, message=p.RELEASE)).reply is None


def test_long_urls_go_into_option_67():
    long_url = "http://boot.example.org:8080/" + "x" * 120
    req = request("PXEClient:Arch:00000", arch=0, ipxe=True)
    ans = pxe.answer(req, pxe_port=False, server_ip=SERVER, public_url=long_url)
    assert ans.reply is not None and ans.reply.file == b""
    back = p.parse(p.build(ans.reply))
    assert back.options[p.OPT_BOOTFILE] == f"{long_url}/boot.ipxe".encode()
