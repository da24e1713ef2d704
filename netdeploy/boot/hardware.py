"""Hardware profiles matched to the facts a machine reported (issue 18). Pure: no I/O.

The seed's rule (Microsoft, "Image-based Installations of Server Clusters"): one image for
machines with different storage controllers needs a ``[SysprepMassStorage]`` driver for each
controller, or Mini-Setup cannot find the boot disk. So before a node is imaged, every
storage controller its agent reported that holds a disk must be covered by a
``mass_storage`` entry of the node's hardware profile. Controllers with no disk behind them
(the chipset's idle IDE or AHCI port on every QEMU and most servers) boot nothing and are not
required; when the agent saw no disk at all, every storage controller is.

``hardware = "auto"`` picks the first profile, in config order, whose ``match`` rules hold.
A node that has reported no facts keeps the profile it names and is not checked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from netdeploy.config import AUTO_HARDWARE, Config, HardwareMatch, NodeConfig

_WINDOWS_PART = re.compile(r"(VEN|DEV|SUBSYS|CC|REV)_([0-9A-Fa-f]+)")


@dataclass(frozen=True)
class Controller:
    """One PCI storage controller (class 01xxxx) as the agent read it from sysfs."""

    address: str  # 0000:00:04.0
    vendor: str  # four lower-case hex digits
    device: str
    subsystem_vendor: str = ""
    subsystem_device: str = ""
    class_code: str = ""  # six hex digits, e.g. 010601 (AHCI)
    driver: str = ""
    disks: tuple[str, ...] = ()

    @property
    def pci_id(self) -> str:
        return f"{self.vendor}:{self.device}"

    @property
    def windows_id(self) -> str:
        """The ID as a [SysprepMassStorage] line spells it (most specific form)."""
        text = f"PCI\\VEN_{self.vendor.upper()}&DEV_{self.device.upper()}"
        if self.subsystem_vendor and self.subsystem_device:
            text += f"&SUBSYS_{self.subsystem_device.upper()}{self.subsystem_vendor.upper()}"
        return text

    def named(self) -> str:
        return f"{self.pci_id} ({self.windows_id}) at {self.address}"


def _hex(value: Any, digits: int) -> str:
    text = str(value or "").lower().removeprefix("0x")
    return text if re.fullmatch(f"[0-9a-f]{{{digits}}}", text) else ""


def controllers(facts: dict[str, Any] | None) -> list[Controller]:
    """The storage controllers in ``facts`` (as stored by the facts report)."""
    found = []
    for item in (facts or {}).get("storage", []):
        if not isinstance(item, dict):
            continue
        vendor, device = _hex(item.get("vendor"), 4), _hex(item.get("device"), 4)
        if not (vendor and device):
            continue
        disks = item.get("disks") or []
        found.append(
            Controller(
                address=str(item.get("address", "")),
                vendor=vendor,
                device=device,
                subsystem_vendor=_hex(item.get("subsystem_vendor"), 4),
                subsystem_device=_hex(item.get("subsystem_device"), 4),
                class_code=_hex(item.get("class"), 6),
                driver=str(item.get("driver", "")),
                disks=tuple(str(d) for d in disks if isinstance(d, str)),
            )
        )
    return found


def required(found: list[Controller]) -> list[Controller]:
    """The controllers a driver is needed for: those holding a disk, else all of them."""
    with_disks = [c for c in found if c.disks]
    return with_disks or found


def covers(hardware_id: str, controller: Controller) -> bool:
    """Whether a ``[SysprepMassStorage]`` hardware ID names this controller: VEN and DEV must
    match; SUBSYS and CC (class code prefix), when the ID gives them, must match too."""
    parts = {k.upper(): v.lower() for k, v in _WINDOWS_PART.findall(hardware_id)}
    if parts.get("VEN") != controller.vendor or parts.get("DEV") != controller.device:
        return False
    subsys = parts.get("SUBSYS")
    if subsys and subsys != controller.subsystem_device + controller.subsystem_vendor:
        return False
    cc = parts.get("CC")
    return not (cc and not controller.class_code.startswith(cc))


def _rule_id(rule: str) -> str:
    """``1af4:1001`` or ``PCI\\VEN_1AF4&DEV_1001...`` → ``1af4:1001``."""
    if ":" in rule:
        return rule.lower()
    parts = {k.upper(): v.lower() for k, v in _WINDOWS_PART.findall(rule)}
    return f"{parts.get('VEN', '')}:{parts.get('DEV', '')}"


def matches(rules: HardwareMatch, facts: dict[str, Any]) -> bool:
    """Every rule given holds: the SMBIOS product is one listed; a listed PCI ID is present."""
    if not (rules.product or rules.pci):
        return False
    if rules.product:
        product = str((facts.get("smbios") or {}).get("product", "")).strip().lower()
        if product not in {p.strip().lower() for p in rules.product}:
            return False
    if rules.pci:
        present = {c.pci_id for c in controllers(facts)}
        if not present & {_rule_id(r) for r in rules.pci}:
            return False
    return True


def pick_profile(cfg: Config, facts: dict[str, Any]) -> str | None:
    """The first profile (config order) whose match rules hold for ``facts``."""
    return next(
        (name for name, p in cfg.hardware.items() if p.match and matches(p.match, facts)), None
    )


@dataclass(frozen=True)
class HardwareVerdict:
    """The node's hardware profile after matching, and why it must not be imaged (or "")."""

    profile: str | None
    refusal: str = ""
    missing: tuple[str, ...] = ()  # PCI IDs (vvvv:dddd) with no driver


def _summary(facts: dict[str, Any]) -> str:
    product = (facts.get("smbios") or {}).get("product") or "unknown product"
    ids = ", ".join(c.pci_id for c in controllers(facts)) or "none"
    return f"SMBIOS product {product!r}, storage controllers {ids}"


def verdict(cfg: Config, node: NodeConfig | None, facts: dict[str, Any] | None) -> HardwareVerdict:
    """The node's profile and whether its reported storage controllers all have a driver.

    No facts: the profile the config names (``auto``: none yet), never refused.
    """
    named = node.hardware if node is not None else None
    if not facts:
        return HardwareVerdict(None if named == AUTO_HARDWARE else named)
    profile = pick_profile(cfg, facts) if named == AUTO_HARDWARE else named
    if named == AUTO_HARDWARE and profile is None:
        return HardwareVerdict(
            None,
            f'hardware = "auto": no hardware profile matches this machine ({_summary(facts)}); '
            "add a profile with [hardware.NAME.match] rules and its mass_storage drivers",
            tuple(c.pci_id for c in required(controllers(facts))),
        )
    if profile is None or profile not in cfg.hardware:
        return HardwareVerdict(profile)  # no profile named: nothing to check against (today)
    drivers = [d.hardware_id for d in cfg.hardware[profile].mass_storage]
    missing = [c for c in required(controllers(facts)) if not any(covers(d, c) for d in drivers)]
    if not missing:
        return HardwareVerdict(profile)
    names = "; ".join(c.named() for c in missing)
    return HardwareVerdict(
        profile,
        f"storage controller {names} has no [SysprepMassStorage] driver in hardware profile "
        f"{profile}: add a [[hardware.{profile}.mass_storage]] entry with "
        f'hardware_id = "{missing[0].windows_id}" (one image for several controllers needs a '
        "driver for each)",
        tuple(c.pci_id for c in missing),
    )


def check_facts(cfg: Config, facts_by_mac: dict[str, dict[str, Any]]) -> list[str]:
    """`netdeploy check`'s lines: config nodes whose reported hardware would be refused."""
    problems = []
    for node in cfg.nodes:
        found = verdict(cfg, node, facts_by_mac.get(node.mac))
        if found.refusal:
            problems.append(f"node {node.hostname} ({node.mac}): {found.refusal}")
    return problems
