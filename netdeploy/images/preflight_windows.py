"""Preflight's Windows facts, read from the system volume's registry hives (dissect.regf).

What the seed's rules need from ``%SystemRoot%\\system32\\config\\{SYSTEM,SOFTWARE,SECURITY}``:
the sysprep state, whether the Cluster service is configured, the disks the master mounted,
and the facts an admin compares (computer name, domain, OS version, mass-storage drivers).
See netdeploy.images.preflight for the volume readers and docs/images.md for each fact's source.
"""

from __future__ import annotations

import io
import struct
from typing import Any

from netdeploy.images.volumes import MAX_LISTED, Volume, line_of

# Keys and values read from SYSTEM (\\Select\\Current picks the ControlSet)
SETUP_VALUES = (
    "CmdLine",
    "SetupType",
    "SystemSetupInProgress",
    "MiniSetupInProgress",
    "FactoryPreInstallInProgress",
    "OOBEInProgress",
)


def windows_dir(vol: Volume) -> str | None:
    return vol.find("WINDOWS/system32/config") or vol.find("WINNT/system32/config")


def _hive(vol: Volume, config_dir: str, name: str, problems: list[str]) -> Any:
    from dissect.regf import RegistryHive

    spelled = vol.find(f"{config_dir}/{name}")
    if spelled is None:
        problems.append(f"no {name} hive in {config_dir}")
        return None
    data = vol.read(spelled)
    if data is None:
        problems.append(f"cannot read {spelled}")
        return None
    try:
        return RegistryHive(io.BytesIO(data))
    except Exception as exc:
        problems.append(f"{spelled} is not a registry hive ({line_of(exc)})")
        return None


def _key(hive: Any, path: str) -> Any:
    try:
        return hive.open(path)
    except Exception:
        return None


def _value(key: Any, name: str) -> Any:
    if key is None:
        return None
    try:
        value = key.value(name).value
    except Exception:
        return None
    if isinstance(value, bytes):
        return value.hex()
    return value


def _subkeys(key: Any) -> list[Any]:
    if key is None:
        return []
    try:
        return list(key.subkeys())
    except Exception:
        return []


def windows_facts(vol: Volume, entry: dict[str, Any], disk: dict[str, Any]) -> dict[str, Any]:
    problems: list[str] = disk["problems"]
    config_dir = windows_dir(vol)
    assert config_dir is not None
    facts: dict[str, Any] = {"partition": entry["number"], "system_root": config_dir.split("/")[0]}
    system = _hive(vol, config_dir, "SYSTEM", problems)
    software = _hive(vol, config_dir, "SOFTWARE", problems)
    security = _hive(vol, config_dir, "SECURITY", [])  # optional: domain SID
    sysprep_inf = vol.find("sysprep/sysprep.inf")
    facts["sysprep"] = {"state": None, "mini_setup_pending": None, "sysprep_inf": sysprep_inf}
    facts["cluster_service"] = {"configured": None, "evidence": []}
    facts["other_disks"] = None
    if software is not None:
        cv = _key(software, "Microsoft\\Windows NT\\CurrentVersion")
        facts["os_version"] = {
            "product": _value(cv, "ProductName"),
            "version": _value(cv, "CurrentVersion"),
            "build": _value(cv, "CurrentBuildNumber"),
            "service_pack": _value(cv, "CSDVersion") or "",
        }
    cluster_files = vol.find(f"{facts['system_root']}/Cluster/CLUSDB")
    if system is None:
        facts["cluster_service"]["evidence"] = [f"{cluster_files} exists"] if cluster_files else []
        if cluster_files:
            facts["cluster_service"]["configured"] = True
        return facts
    current = _value(_key(system, "Select"), "Current") or 1
    cs = f"ControlSet{int(current):03d}"
    facts["control_set"] = cs
    facts["computer_name"] = _value(
        _key(system, f"{cs}\\Control\\ComputerName\\ComputerName"), "ComputerName"
    )
    facts["sysprep"].update(_sysprep_state(_key(system, "Setup")))
    facts["cluster_service"] = _cluster_service(system, software, cs, cluster_files)
    facts["domain"] = _domain(system, software, security, cs)
    facts["other_disks"] = _other_disks(system, disk.get("disk_signature"))
    facts["mass_storage"] = _mass_storage(system, cs)
    return facts


def _sysprep_state(setup: Any) -> dict[str, Any]:
    """HKLM\\SYSTEM\\Setup after sysprep: -reseal sets SystemSetupInProgress=1 and CmdLine
    "setup -newsetup" ("-mini" for Mini-Setup); -factory sets FactoryPreInstallInProgress=1 and
    CmdLine runs factory.exe. A master in use has SystemSetupInProgress=0 and no CmdLine."""
    values = {name: _value(setup, name) for name in SETUP_VALUES}
    cmdline = str(values["CmdLine"] or "").lower()
    if values["FactoryPreInstallInProgress"] == 1 or "factory" in cmdline:
        state = "factory"
    elif values["SystemSetupInProgress"] == 1 and "-newsetup" in cmdline:
        state = "reseal"
    elif setup is None:
        state = None
    else:
        state = "none"
    mini = values["MiniSetupInProgress"] == 1 or "-mini" in cmdline
    return {"state": state, "mini_setup_pending": mini, "setup": values}


def _cluster_service(system: Any, software: Any, cs: str, clusdb: str | None) -> dict[str, Any]:
    """Configured (the seed's "cluster service installed"): any of ClusSvc's service key with a
    start type other than disabled, its Parameters naming a cluster, ClusterInstallationState=2
    (configured) or the cluster database CLUSDB on the volume. Windows Server 2003 Enterprise
    ships the binaries and a disabled ClusSvc: that alone is not configured."""
    evidence = []
    svc = _key(system, f"{cs}\\Services\\ClusSvc")
    start = _value(svc, "Start")
    if svc is not None and start is not None and start != 4:
        evidence.append(f"HKLM\\SYSTEM\\{cs}\\Services\\ClusSvc Start={start} (not disabled)")
    params = _key(system, f"{cs}\\Services\\ClusSvc\\Parameters")
    for name in ("ClusterName", "NodeName"):
        if _value(params, name):
            evidence.append(f"ClusSvc\\Parameters {name}={_value(params, name)}")
    if software is not None:
        state = _value(
            _key(software, "Microsoft\\Windows NT\\CurrentVersion\\Cluster Server"),
            "ClusterInstallationState",
        )
        if state == 2:
            evidence.append("Cluster Server\\ClusterInstallationState=2 (configured)")
    if clusdb:
        evidence.append(f"cluster database {clusdb} exists")
    return {
        "configured": bool(evidence),
        "installed": svc is not None,
        "start": start,
        "evidence": evidence,
    }


def _domain(system: Any, software: Any, security: Any, cs: str) -> dict[str, Any]:
    """Member of a domain when LSA's primary-domain SID (SECURITY\\Policy\\PolPrDmS) is set;
    without a SECURITY hive, the names Winlogon and Tcpip keep are the best evidence."""
    winlogon = None
    if software is not None:
        winlogon = _key(software, "Microsoft\\Windows NT\\CurrentVersion\\Winlogon")
    tcpip = _key(system, f"{cs}\\Services\\Tcpip\\Parameters")
    name = (
        _value(winlogon, "CachePrimaryDomain")
        or _value(winlogon, "DefaultDomainName")
        or _value(tcpip, "Domain")
        or None
    )
    member: bool | None = None
    evidence = "no SECURITY hive: from Winlogon/Tcpip names"
    if security is not None:
        sid = _key(security, "Policy\\PolPrDmS")
        raw = _value(sid, "(Default)") if sid is not None else None  # dissect's default name
        member = bool(raw)
        evidence = "SECURITY\\Policy\\PolPrDmS " + ("set" if member else "empty")
    return {"member": member, "name": name, "evidence": evidence}


def _other_disks(system: Any, signature: str | None) -> list[str] | None:
    """Drive letters the master mounted from disks other than its own: MountedDevices values of
    12 bytes are an MBR disk signature and a partition offset. Another signature means another
    disk was attached (the shared storage, before capture)."""
    mounted = _key(system, "MountedDevices")
    if mounted is None or signature is None:
        return None
    others = []
    try:
        values = list(mounted.values())
    except Exception:
        return None
    for value in values:
        data = value.value
        name = value.name or ""
        if not name.startswith("\\DosDevices\\") or not isinstance(data, bytes) or len(data) != 12:
            continue
        seen = f"{struct.unpack_from('<I', data, 0)[0]:08x}"
        if seen != signature:
            others.append(f"{name.removeprefix(chr(92) + 'DosDevices' + chr(92))} on disk {seen}")
    return sorted(others)


def _mass_storage(system: Any, cs: str) -> dict[str, Any]:
    """Boot-critical storage drivers: CriticalDeviceDatabase entries (hardware ID → service),
    which [SysprepMassStorage] fills at reseal, and services in group "SCSI miniport"."""
    cdd = _key(system, f"{cs}\\Control\\CriticalDeviceDatabase")
    ids = {}
    for sub in _subkeys(cdd):
        name = sub.name.lower()
        if name.startswith(("pci#", "pcmcia#", "scsi#")):
            ids[name] = _value(sub, "Service")
    miniports = []
    for sub in _subkeys(_key(system, f"{cs}\\Services")):
        if str(_value(sub, "Group") or "").lower() == "scsi miniport":
            miniports.append(sub.name)
    return {
        "critical_devices": len(ids),
        "hardware_ids": dict(sorted(ids.items())[: MAX_LISTED * 4]),
        "miniports": sorted(miniports)[:MAX_LISTED],
    }
