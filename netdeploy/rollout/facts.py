"""Hardware facts an agent reports (``POST /api/nodes/{mac}/facts``), validated. Pure.

The busybox agent reads them from sysfs and /proc (bootfiles/agent/init, ``collect_facts``):

.. code-block:: json

    {"smbios": {"vendor": "QEMU", "product": "Standard PC (i440FX + PIIX, 1996)",
                "serial": "", "uuid": "..."},
     "firmware": "bios",
     "cpus": 1, "cpu_model": "QEMU Virtual CPU version 2.5+", "memory_mib": 488,
     "disks": [{"name": "vda", "size_bytes": 268435456, "model": "", "bus": "virtio",
                "controller": "0000:00:04.0"}],
     "nics": [{"name": "eth0", "mac": "52:54:00:..", "driver": "virtio_net", "link": "up"}],
     "storage": [{"address": "0000:00:04.0", "vendor": "1af4", "device": "1001",
                  "subsystem_vendor": "1af4", "subsystem_device": "0002", "class": "010000",
                  "driver": "virtio-pci", "disks": ["vda"]}]}

Only these keys are kept, strings are cut to a sane length and lists to 64 entries: a
hostile body can neither grow the store nor break the dashboard.
"""

from __future__ import annotations

from typing import Any

from netdeploy.rollout.errors import BadReport

MAX_ITEMS = 64
MAX_TEXT = 200

_SMBIOS = ("vendor", "product", "serial", "uuid")
_DISK = {"name": str, "size_bytes": int, "model": str, "bus": str, "controller": str}
_NIC = {"name": str, "mac": str, "driver": str, "link": str}
_STORAGE = {
    "address": str,
    "vendor": str,
    "device": str,
    "subsystem_vendor": str,
    "subsystem_device": str,
    "class": str,
    "driver": str,
    "disks": list,
}
EXAMPLE = '{"smbios": {"product": "..."}, "firmware": "bios", "storage": [...]}'


def _text(value: Any) -> str:
    return str(value)[:MAX_TEXT] if isinstance(value, str | int | float) else ""


def _number(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def _items(body: dict[str, Any], key: str, shape: dict[str, type]) -> list[dict[str, Any]]:
    raw = body.get(key, [])
    if not isinstance(raw, list):
        raise BadReport(f"{key} must be a list of objects")
    out = []
    for item in raw[:MAX_ITEMS]:
        if not isinstance(item, dict):
            raise BadReport(f"each entry of {key} must be an object")
        kept: dict[str, Any] = {}
        for name, kind in shape.items():
            if name not in item:
                continue
            if kind is int:
                number = _number(item[name])
                if number is not None:
                    kept[name] = number
            elif kind is list:
                values = item[name] if isinstance(item[name], list) else []
                kept[name] = [_text(v) for v in values[:MAX_ITEMS] if _text(v)]
            else:
                kept[name] = _text(item[name])
        out.append(kept)
    return out


def parse_facts(body: Any) -> dict[str, Any]:
    """The facts to keep, or :class:`BadReport` saying what is wrong."""
    if not isinstance(body, dict):
        raise BadReport(f"facts must be a JSON object such as {EXAMPLE}")
    smbios = body.get("smbios", {})
    if not isinstance(smbios, dict):
        raise BadReport("smbios must be an object with vendor, product, serial, uuid")
    firmware = body.get("firmware", "")
    if firmware not in ("bios", "uefi", ""):
        raise BadReport("firmware must be bios or uefi")
    facts: dict[str, Any] = {
        "smbios": {k: _text(smbios.get(k, "")).strip() for k in _SMBIOS},
        "firmware": firmware,
        "cpus": _number(body.get("cpus")),
        "cpu_model": _text(body.get("cpu_model", "")).strip(),
        "memory_mib": _number(body.get("memory_mib")),
        "disks": _items(body, "disks", _DISK),
        "nics": _items(body, "nics", _NIC),
        "storage": _items(body, "storage", _STORAGE),
    }
    return facts


def summary(facts: dict[str, Any]) -> str:
    """One line for the event log: what the machine is and its storage controllers' IDs."""
    smbios = facts.get("smbios") or {}
    what = " ".join(p for p in (smbios.get("vendor"), smbios.get("product")) if p) or "machine"
    ids = ", ".join(
        f"{c.get('vendor', '?')}:{c.get('device', '?')}" for c in facts.get("storage", [])
    )
    parts = [
        what,
        (facts.get("firmware") or "?").upper(),
        f"{facts.get('cpus') or '?'} CPU",
        f"{facts.get('memory_mib') or '?'} MiB",
        f"{len(facts.get('disks', []))} disks",
        f"storage {ids or 'none'}",
    ]
    return "facts: " + ", ".join(parts)
