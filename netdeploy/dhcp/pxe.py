"""ProxyDHCP decisions (PXE 2.1, RFC 4578): who is asking, which boot program it can run, and
the reply that tells it so. Pure: takes the request, our address and the MAC's boot plan.

The LAN's own DHCP server hands out addresses; we only add boot information (``yiaddr`` stays
0.0.0.0, PXE 2.1 §2.2.1). Which program goes into the reply is not decided here: it is the
boot decision's (:mod:`netdeploy.boot.programs`), from the same plan as HTTP and TFTP answers.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from netdeploy.boot.plan import BootPlan
from netdeploy.boot.programs import (
    ARCH_NAMES,
    BIOS_ARCHES,
    HTTP_ARCHES,
    BootChoice,
    Firmware,
    FirmwareClient,
    boot_program,
)
from netdeploy.dhcp import packet as p
from netdeploy.dhcp.packet import DhcpPacket

PXE_CLASS = "PXEClient"  # PXE 2.1 §2.2.3: option 60 of a PXE client, and of our replies
HTTP_CLASS = "HTTPClient"  # UEFI 2.5 §24.7: a UEFI HTTP-boot client

# PXE 2.1 §2.4.2, vendor options in option 43: tag 6 PXE_DISCOVERY_CONTROL, bit 3 (value 8)
# "if a boot file name is present in the ProxyDHCP offer, download it: no prompt, menu or
# boot server discovery"; tag 71 PXE_BOOT_ITEM (type, layer) is echoed to a 4011 request.
PXE_DISCOVERY_CONTROL = 6
DISCOVERY_USE_BOOTFILE = 8
PXE_BOOT_ITEM = 71


@dataclass(frozen=True)
class PxeClient:
    """What a PXE client told us about itself, in an admin's words."""

    mac: str
    message: int
    arch: int
    arch_from: str  # "option 93", "vendor class" or "default" (sent neither)
    vendor_class: str
    user_class: str
    ipxe: bool
    guid: bytes | None
    ciaddr: str

    @property
    def arch_name(self) -> str:
        return ARCH_NAMES.get(self.arch, f"architecture {self.arch}")

    @property
    def firmware(self) -> Firmware:
        if self.ipxe:
            return Firmware.IPXE
        if self.vendor_class.startswith(HTTP_CLASS) or self.arch in HTTP_ARCHES:
            return Firmware.UEFI_HTTP
        return Firmware.BIOS if self.arch in BIOS_ARCHES else Firmware.UEFI

    @property
    def firmware_client(self) -> FirmwareClient:
        return FirmwareClient(self.mac, self.firmware, self.arch, self.arch_name, self.arch_from)


def client_of(request: DhcpPacket) -> PxeClient | None:
    """The PXE client behind ``request``, or None when it is not one (we stay silent)."""
    vendor = request.option_text(p.OPT_VENDOR_CLASS)
    mac = request.mac
    message = request.message_type
    if request.op != p.BOOTREQUEST or mac is None or message is None:
        return None
    if not (vendor.startswith(PXE_CLASS) or vendor.startswith(HTTP_CLASS)):
        return None
    arch, arch_from = 0, "default"
    raw_arch = request.options.get(p.OPT_CLIENT_ARCH, b"")
    if len(raw_arch) >= 2:  # RFC 4578 §2.1: a list of 16-bit types; the first is the native one
        arch, arch_from = int.from_bytes(raw_arch[:2], "big"), "option 93"
    else:  # "PXEClient:Arch:00007:UNDI:003016" (PXE 2.1 §2.2.3)
        parts = vendor.split(":")
        if len(parts) >= 3 and parts[1] == "Arch" and parts[2].isdigit():
            arch, arch_from = int(parts[2]), "vendor class"
    user_class = request.option_text(p.OPT_USER_CLASS)
    guid = request.options.get(p.OPT_CLIENT_GUID)
    return PxeClient(
        mac=mac,
        message=message,
        arch=arch,
        arch_from=arch_from,
        vendor_class=vendor,
        user_class=user_class,
        ipxe=p.OPT_IPXE in request.options or "iPXE" in user_class,
        guid=guid,
        ciaddr=request.ciaddr,
    )


def _vendor_options(suboptions: dict[int, bytes]) -> bytes:
    """Option 43 for a PXEClient: encapsulated options, ended by END (PXE 2.1 §2.4.2)."""
    return p.encode_options(suboptions)


def _boot_item(request: DhcpPacket) -> bytes | None:
    """The PXE_BOOT_ITEM a 4011 request carried in option 43, if any (malformed: none)."""
    raw = request.options.get(p.OPT_VENDOR_SPECIFIC)
    if not raw:
        return None
    try:
        items = dict(p.parse_options(raw, "option 43"))
    except p.MalformedPacket:
        return None
    item = items.get(PXE_BOOT_ITEM)
    return item if item is not None and len(item) == 4 else None


def build_reply(
    request: DhcpPacket,
    client: PxeClient,
    choice: BootChoice,
    server_ip: str,
    message: int,
) -> DhcpPacket:
    """The ProxyDHCP offer (port 67) or boot server ACK (port 4011) carrying ``choice``.

    PXE 2.1 §2.2.1 and §2.5: yiaddr 0 (the address comes from the LAN's DHCP server), option 60
    "PXEClient", option 54 our address, option 97 the client's GUID echoed, siaddr the TFTP
    server. A BIOS PXE ROM gets PXE_DISCOVERY_CONTROL = 8 so it loads the file at once. UEFI
    firmware gets no option 43: EDK2 then treats the offer as "BINL" and asks us again on port
    4011 (PxeBcRetryBinlOffer), a path every UEFI firmware implements, while some ignore offers
    that bypass discovery.
    """
    assert choice.boot_file is not None
    http_boot = client.firmware is Firmware.UEFI_HTTP
    options: dict[int, bytes] = {
        p.OPT_MESSAGE_TYPE: bytes([message]),
        p.OPT_SERVER_ID: ipaddress.IPv4Address(server_ip).packed,
        p.OPT_VENDOR_CLASS: (HTTP_CLASS if http_boot else PXE_CLASS).encode(),
    }
    if client.guid is not None:
        options[p.OPT_CLIENT_GUID] = client.guid
    if client.firmware in (Firmware.BIOS, Firmware.IPXE):
        vendor = {PXE_DISCOVERY_CONTROL: bytes([DISCOVERY_USE_BOOTFILE])}
        item = _boot_item(request)
        if item is not None:
            vendor[PXE_BOOT_ITEM] = item
        options[p.OPT_VENDOR_SPECIFIC] = _vendor_options(vendor)
    name = choice.boot_file.encode()
    if len(name) > 127:  # does not fit the header field: option 67 only (RFC 2132 §9.5)
        options[p.OPT_BOOTFILE] = name
        name = b""
    return DhcpPacket(
        op=p.BOOTREPLY,
        xid=request.xid,
        chaddr=request.chaddr,
        htype=request.htype,
        flags=request.flags | p.BROADCAST_FLAG,
        giaddr=request.giaddr,
        ciaddr=request.ciaddr if message == p.ACK else "0.0.0.0",
        siaddr=server_ip,  # next-server: TFTP, and iPXE needs it to trust the file name
        file=name,
        options=options,
    )


@dataclass(frozen=True)
class Answer:
    """One decision about one request: the reply to send (or None) and why, for the event."""

    client: PxeClient | None
    reply: DhcpPacket | None
    decision: str  # offer | ack | ignored (recorded) | not_for_us (only counted)
    choice: BootChoice | None
    why: str


@dataclass(frozen=True)
class Pending:
    """A request that gets a reply once the boot decision (netdeploy.boot) chose a program."""

    client: PxeClient
    reply_type: int  # OFFER or ACK


def classify(request: DhcpPacket, *, pxe_port: bool, server_ip: str) -> Answer | Pending:
    """Does this request (port 67, or 4011 when ``pxe_port``) need a boot answer at all?"""
    client = client_of(request)
    if client is None:
        return Answer(None, None, "ignored", None, "not a PXE or HTTP-boot client")
    message = client.message
    if pxe_port:
        # PXE 2.1 §2.2.1 step 5/6: the boot server request, unicast to 4011, answered by ACK
        if message not in (p.REQUEST, p.INFORM, p.DISCOVER):
            return Answer(client, None, "ignored", None, f"{_name(message)} on the PXE port")
        return Pending(client, p.ACK)
    if message == p.DISCOVER:
        return Pending(client, p.OFFER)
    if message == p.REQUEST:
        if not _requests_our_offer(request, server_ip):
            # the client takes its address from the LAN's DHCP server: not for us
            return Answer(client, None, "not_for_us", None, "DHCPREQUEST for an address")
        return Pending(client, p.ACK)
    return Answer(client, None, "ignored", None, f"{_name(message)} needs no ProxyDHCP answer")


def reply_with(request: DhcpPacket, pending: Pending, choice: BootChoice, server_ip: str) -> Answer:
    """The answer that carries the boot decision's ``choice`` (silence when it names none)."""
    if choice.boot_file is None:
        return Answer(pending.client, None, "ignored", choice, choice.why)
    reply = build_reply(request, pending.client, choice, server_ip, pending.reply_type)
    decision = "offer" if pending.reply_type == p.OFFER else "ack"
    return Answer(pending.client, reply, decision, choice, choice.why)


def answer(
    request: DhcpPacket,
    *,
    pxe_port: bool,
    server_ip: str,
    public_url: str,
    plan: BootPlan | None = None,
) -> Answer:
    """Decide about one request, given the MAC's boot ``plan`` (the service asks boot/)."""
    pending = classify(request, pxe_port=pxe_port, server_ip=server_ip)
    if isinstance(pending, Answer):
        return pending
    choice = boot_program(pending.client.firmware_client, plan, public_url)
    return reply_with(request, pending, choice, server_ip)


def _requests_our_offer(request: DhcpPacket, server_ip: str) -> bool:
    """A DHCPREQUEST on port 67 that selects our (address-less) offer: server id ours and no
    address asked for. The LAN's DHCP server may run on this very host with the same address
    (RFC 2131 §4.3.2: its REQUESTs carry option 50 or ciaddr); acking those with yiaddr 0 would
    race its real ACK, so they are never ours."""
    server_id = request.options.get(p.OPT_SERVER_ID, b"")
    if len(server_id) != 4 or str(ipaddress.IPv4Address(server_id)) != server_ip:
        return False
    wanted = request.options.get(p.OPT_REQUESTED_IP, b"")
    no_address = not wanted or wanted == bytes(4)
    return no_address and request.ciaddr == "0.0.0.0"


def _name(message: int) -> str:
    return p.MESSAGE_NAMES.get(message, f"DHCP message type {message}")
