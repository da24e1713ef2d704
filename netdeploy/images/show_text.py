"""`netdeploy image show NAME` as text: the catalog entry, then what preflight read and judged."""

from __future__ import annotations

from typing import Any

MARK = {"ok": "ok", "broken": "BROKEN", "claimed": "claimed", "unknown": "UNKNOWN"}


def _mib(n: int | None) -> str:
    return "" if n is None else f"{n / 2**20:,.1f} MiB"


def image_lines(image: dict[str, Any]) -> list[str]:
    facts = image.get("facts") or {}
    lines = [
        f"image {image['name']}: {image['status']}"
        + (f" ({image['status_detail']})" if image.get("status_detail") else ""),
        f"  file      {image['path']} ({image['format']}, {_mib(image['size'])})",
        f"  sha256    {image['sha256'] or '-'}",
        f"  added     {(image.get('added_at') or '-')[:19]}",
    ]
    if facts.get("raw_sha256"):
        lines.append(f"  raw       {_mib(facts.get('raw_size'))}, sha256 {facts['raw_sha256']}")
    if facts.get("clusters"):
        lines.append(f"  clusters  {', '.join(facts['clusters'])}")
    if facts.get("captured_from"):
        c = facts["captured_from"]
        lines.append(f"  captured  over the network from {c.get('mac')} ({c.get('hostname')})")
    return lines + preflight_lines(facts.get("preflight") or {})


def preflight_lines(pre: dict[str, Any]) -> list[str]:
    if not pre:
        return ["preflight: not run (added before preflight read images; add it again)"]
    facts = pre.get("facts") or {}
    lines = ["preflight (read from the image):"]
    table = facts.get("partition_table")
    sig = facts.get("disk_signature")
    lines.append(f"  disk      {table} partition table" + (f", signature {sig}" if sig else ""))
    for p in facts.get("partitions") or []:
        lines.append(f"  part {p['number']}    {p.get('type')} {p.get('fs')} {_mib(p.get('size'))}")
    win = facts.get("windows")
    if win:
        osv = win.get("os_version") or {}
        if osv:
            lines.append(
                f"  windows   {osv.get('product')} {osv.get('version')} build {osv.get('build')}"
                f" {osv.get('service_pack') or '(no service pack)'}"
            )
        lines.append(f"  computer  {win.get('computer_name') or '-'}")
        domain = win.get("domain") or {}
        if domain:
            member = {True: "domain member", False: "not a domain member", None: "membership ?"}
            lines.append(
                f"  domain    {domain.get('name') or '-'} ({member[domain.get('member')]}; "
                f"{domain.get('evidence')})"
            )
        sysprep = win.get("sysprep") or {}
        lines.append(
            f"  sysprep   {sysprep.get('state')}; Mini-Setup pending: "
            f"{sysprep.get('mini_setup_pending')}; "
            f"sysprep.inf: {sysprep.get('sysprep_inf') or 'no'}"
        )
        cluster = win.get("cluster_service") or {}
        lines.append(
            f"  ClusSvc   configured: {cluster.get('configured')}"
            + (f" ({'; '.join(cluster['evidence'])})" if cluster.get("evidence") else "")
        )
        storage = win.get("mass_storage") or {}
        if storage:
            lines.append(
                f"  storage   {storage.get('critical_devices')} critical devices; miniports: "
                f"{', '.join(storage.get('miniports') or []) or '-'}"
            )
    linux = facts.get("linux")
    if linux:
        lines.append(
            f"  linux     {linux.get('os_version') or '-'} ({linux.get('hostname') or '-'})"
        )
        lines.append(
            f"  identity  machine-id {linux.get('machine_id')}; SSH host keys: "
            f"{', '.join(linux.get('ssh_host_keys') or []) or 'none'}; "
            f"cloud-init {linux.get('cloud_init')}"
        )
    for problem in facts.get("problems") or []:
        lines.append(f"  note      {problem}")
    lines.append("verdict:")
    for f in pre.get("findings") or []:
        lines.append(f"  {MARK.get(f['status'], f['status']):8} {f['rule']}: {f['message']}")
    forced = pre.get("forced")
    if forced:
        lines.append(
            f"  FORCED by {forced.get('by')} at {str(forced.get('at'))[:19]}: "
            f"{forced.get('reason')}"
        )
    return lines
