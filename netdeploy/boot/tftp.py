"""The seam between the TFTP server and boot decisions.

The TFTP engine asks :func:`virtual_file` for every read request before it looks on disk;
per-MAC files (``pxelinux.cfg/01-aa-bb-cc-dd-ee-ff``, the iPXE first-stage script) come
from here, rendered from the node's boot plan. ``None`` means "not a virtual file".
"""

from __future__ import annotations

import re

from netdeploy.boot import scripts
from netdeploy.boot.service import BootService
from netdeploy.inventory import BadMac, normalize_mac
from netdeploy.store.outage import OUTAGE, is_outage

# pxelinux asks for pxelinux.cfg/01-<mac> first (ARP type 1 = Ethernet); we answer every MAC,
# known or not, so it never falls through to its UUID / IP-hex / "default" guesses.
PXELINUX_MAC = re.compile(r"^pxelinux\.cfg/01-([0-9a-fA-F]{2}(?:-[0-9a-fA-F]{2}){5})$")
FIRST_STAGE = "boot.ipxe"


async def virtual_file(boot: BootService, path: str, client_ip: str) -> bytes | None:
    """Bytes for a per-MAC virtual file, or None to let the engine serve from its root."""
    name = path.replace("\\", "/").lstrip("/")  # PXE ROMs send both; the root is ours anyway
    bootfiles = boot.ctx.config.server.bootfiles_dir
    if name == FIRST_STAGE:
        try:
            await boot.first_stage(via="tftp", path=name, ip=client_ip)
        except Exception as exc:  # served without the store too: its retry loop needs none
            if not is_outage(exc):
                raise
            OUTAGE.failed("tftp", "first stage (not recorded)", exc)
        return scripts.first_stage_ipxe(bootfiles, boot.urls).encode()
    match = PXELINUX_MAC.match(name)
    if match is None:
        return None
    try:
        mac = normalize_mac(match.group(1))
    except BadMac:  # the pattern admits only valid MACs; keep the seam total anyway
        return None
    answer = await boot.answer(mac, via="tftp", path=name, ip=client_ip)
    text = scripts.pxelinux_config(bootfiles, answer.plan, answer.token)
    return text.encode()
