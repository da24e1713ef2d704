"""Inventory vocabulary shared by every layer: MAC addresses and node states.

MACs arrive as ``aa:bb:cc:dd:ee:ff``, ``AA-BB-CC-DD-EE-FF``, ``aabbccddeeff`` or (from PXE
``BOOTIF``) ``01-aa-bb-...``; inside netdeploy there is exactly one form, lower-case with colons.
"""

from __future__ import annotations

import re
from enum import StrEnum

_HEX12 = re.compile(r"[0-9a-f]{12}")
_CANONICAL = re.compile(r"[0-9a-f]{2}(?::[0-9a-f]{2}){5}")


class BadMac(ValueError):
    """A string that is not a 48-bit MAC address in any notation we accept."""


def normalize_mac(text: str) -> str:
    """Return ``text`` as a canonical MAC (``aa:bb:cc:dd:ee:ff``) or raise :class:`BadMac`.

    Separators must be consistent (all ``:``, all ``-``, all ``.`` or none), so a typo such as
    ``52:54:00-12:34:56`` is refused rather than silently accepted.
    """
    if _CANONICAL.fullmatch(text):  # the form every agent sends: nothing to change
        return text
    raw = text.strip().lower()
    if raw.startswith("01-") and len(raw) == 20:  # PXE BOOTIF: hardware type 1 (Ethernet)
        raw = raw[3:]
    seps = {c for c in raw if not c.isalnum()}
    if len(seps) > 1:
        raise BadMac(f"{text!r} mixes separators; write it as aa:bb:cc:dd:ee:ff")
    digits = raw.replace(next(iter(seps)), "") if seps else raw
    if seps:
        sep = next(iter(seps))
        groups = raw.split(sep)
        if sep == "." and [len(g) for g in groups] != [4, 4, 4]:
            raise BadMac(f"{text!r} is not a MAC address; write it as aa:bb:cc:dd:ee:ff")
        if sep != "." and [len(g) for g in groups] != [2] * 6:
            raise BadMac(f"{text!r} is not a MAC address; write it as aa:bb:cc:dd:ee:ff")
    if not _HEX12.fullmatch(digits):
        raise BadMac(f"{text!r} is not a MAC address; write it as aa:bb:cc:dd:ee:ff")
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2))


def mac_hyphens(mac: str) -> str:
    """``aa:bb:..`` → ``aa-bb-..``, the form pxelinux and iPXE's ``:hexhyp`` use."""
    return normalize_mac(mac).replace(":", "-")


class NodeState(StrEnum):
    """The node state machine of docs/DESIGN (see netdeploy.rollout for the transitions)."""

    DISCOVERED = "discovered"  # booted, MAC not in inventory: shown, never imaged
    REGISTERED = "registered"
    PXE = "pxe"
    IMAGING = "imaging"
    IMAGED = "imaged"
    HELD = "held"
    RELEASED = "released"
    STARTING = "starting"
    JOINED = "joined"
    # the first node's own cluster reports itself unhealthy: running its OS, gate stopped
    UNHEALTHY = "unhealthy"
    FAILED = "failed"
