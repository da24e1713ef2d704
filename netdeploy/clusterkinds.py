"""Cluster kinds: how each kind of cluster is formed and joined, and what it needs. Pure.

The seed ("Image-based Installations of Server Clusters", Windows Server 2003) installs the first
node alone, creates the cluster there, then adds the other nodes one at a time. netdeploy puts
those steps into the answer files, per ``[clusters.X] kind``:

===============  ===================================================  ==========================
kind             first node / every other node (after its release)    member list (report)
===============  ===================================================  ==========================
``windows2003``  ``cluster /cluster:NAME /create ...`` /              ``cluster node``
                 ``cluster /cluster:NAME /add:NODE`` (sysprep.inf)
``windows``      ``New-Cluster`` / ``Add-ClusterNode`` (unattend.xml  ``Get-ClusterNode``
                 FirstLogonCommands, Windows Server 2008 and later)
``pacemaker``    ``pcs cluster setup`` / ``pcs cluster node add``     ``crm_mon -1``
                 (kickstart, preseed, cloud-init: a first-boot script)
===============  ===================================================  ==========================

Each kind declares the variables it needs (cluster ``vars``, overlaid by node ``vars``);
``netdeploy check`` names each one missing or empty with its file and line. Commands are built
here, not in the templates, so they are tested once and every template of a kind says the same.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["windows2003", "windows", "pacemaker"]


@dataclass(frozen=True)
class KindSpec:
    name: str
    title: str
    required: dict[str, str]  # var -> what it is (for the check's message)
    needs_service_account: bool
    members_source: str  # the tool whose output the report script sends


KINDS: dict[str, KindSpec] = {
    "windows2003": KindSpec(
        "windows2003",
        "Windows Server 2003 server cluster (cluster.exe)",
        {
            "cluster_ip": "the cluster's own IP address (cluster /create /ipaddr:)",
            "cluster_service_password": "the password of the cluster service account",
            "product_key": "the Windows product key (sysprep.inf [UserData] ProductKey)",
            "admin_password": "the local Administrator password",
        },
        needs_service_account=True,
        members_source="cluster node",
    ),
    "windows": KindSpec(
        "windows",
        "Windows Server 2008 or later failover cluster (FailoverClusters PowerShell)",
        {
            "cluster_ip": "the cluster's own IP address (New-Cluster -StaticAddress)",
            "admin_password": "the local Administrator password",
        },
        needs_service_account=False,
        members_source="Get-ClusterNode",
    ),
    "pacemaker": KindSpec(
        "pacemaker",
        "Linux Pacemaker/Corosync cluster (pcs)",
        {"cluster_password": "the password of the hacluster user (pcs host auth)"},
        needs_service_account=False,
        members_source="crm_mon",
    ),
}

# Plain tokens only: the commands end up inside quoted sysprep.inf entries (no inner quotes),
# XML text and shell lines. A value outside these patterns is refused by `check`.
_SAFE = {
    "cluster_ip": re.compile(r"^\d{1,3}(\.\d{1,3}){3}$"),
    "cluster_subnet_mask": re.compile(r"^\d{1,3}(\.\d{1,3}){3}$"),
    "cluster_network": re.compile(r"^[A-Za-z0-9_.-]{1,64}$"),
}
_NO_QUOTES = re.compile(r"^[^\"'\s]+$")  # passwords: no quotes, no blanks (one argument)


def var_problems(kind: str, values: dict[str, Any]) -> dict[str, str]:
    """Each required var of ``kind`` that ``values`` lacks, leaves empty or spells unsafely."""
    spec = KINDS[kind]
    problems = {}
    for name, what in spec.required.items():
        value = values.get(name)
        if value is None:
            problems[name] = f"cluster kind {kind} needs vars.{name}: {what}"
        elif str(value).strip() == "":
            problems[name] = f"vars.{name} is empty; cluster kind {kind} needs {what}"
    for name, pattern in {**_SAFE, "cluster_service_password": _NO_QUOTES}.items():
        value = values.get(name)
        given = name not in problems and value is not None and str(value).strip()
        if given and not pattern.match(str(value)):
            problems[name] = f"vars.{name} = {value!r} cannot go into a command line safely"
    value = values.get("cluster_password")
    quoted = value is not None and not _NO_QUOTES.match(str(value))
    if kind == "pacemaker" and "cluster_password" not in problems and quoted:
        problems["cluster_password"] = "vars.cluster_password must have no quotes or blanks"
    return problems


@dataclass(frozen=True)
class Formation:
    """What one node runs to form or join its cluster, in order, and how it lists members."""

    kind: str
    role: Literal["create", "join"]
    commands: tuple[str, ...]
    members_source: str
    members_command: str

    def json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "role": self.role,
            "commands": list(self.commands),
            "members_source": self.members_source,
            "members_command": self.members_command,
        }


def formation(
    kind: str,
    *,
    cluster: str,
    node: str,
    first_node: str,
    values: dict[str, Any],
    service_account: str | None = None,
    quorum: str | None = None,
) -> Formation:
    """The commands ``node`` runs: create on the first node, join on every other one."""
    first = node.lower() == first_node.lower()
    role: Literal["create", "join"] = "create" if first else "join"
    if kind == "windows2003":
        name = cluster.upper()
        pw = values["cluster_service_password"]
        if first:
            mask = values.get("cluster_subnet_mask", "255.255.255.0")
            network = values.get("cluster_network", "Public")
            commands = [
                f"cluster /cluster:{name} /create /ipaddr:{values['cluster_ip']},{mask},{network}"
                f" /user:{service_account} /pass:{pw} /unattend /verbose"
            ]
            if quorum:  # the quorum log on the shared disk with this drive letter
                commands.append(f"cluster /cluster:{name} /quorum /path:{quorum.upper()}:\\MSCS")
        else:
            commands = [
                f"cluster /cluster:{name} /add:{node.upper()} /pass:{pw} /unattend /verbose"
            ]
        return Formation(
            kind, role, tuple(commands), "cluster node", f"cluster /cluster:{name} node"
        )
    if kind == "windows":
        name = cluster.upper()

        def ps(script: str) -> str:  # quoted: run by cmd or not, the pipe stays PowerShell's
            return f'powershell -NoProfile -ExecutionPolicy Bypass -Command "{script}"'

        if first:
            commands = [
                ps(
                    f"Import-Module FailoverClusters; New-Cluster -Name {name} -Node {node.upper()}"
                    f" -StaticAddress {values['cluster_ip']} -NoStorage"
                ),
                ps(f"Get-ClusterAvailableDisk -Cluster {name} | Add-ClusterDisk"),
            ]
        else:
            commands = [
                ps(
                    f"Import-Module FailoverClusters; Add-ClusterNode -Cluster {name}"
                    f" -Name {node.upper()} -NoStorage"
                )
            ]
        listing = ps(
            f"Get-ClusterNode -Cluster {name} | Format-Table Name,State -AutoSize"
            " | Out-String -Width 200"
        )
        return Formation(kind, role, tuple(commands), "Get-ClusterNode", listing)
    if kind == "pacemaker":
        pw = values["cluster_password"]
        commands = [
            f"echo hacluster:{pw} | chpasswd",
            "systemctl enable --now pcsd",
        ]
        if first:
            commands += [
                f"pcs host auth {node} -u hacluster -p {pw}",
                f"pcs cluster setup {cluster} {node} --start --enable",
            ]
        else:
            # pcs adds a node from a node that has the cluster's corosync.conf: fetch it from
            # the first node (authenticated through pcsd), then add this node
            commands += [
                f"pcs host auth {first_node} {node} -u hacluster -p {pw}",
                f"pcs cluster corosync {first_node} > /etc/corosync/corosync.conf",
                f"pcs cluster node add {node} --start --enable",
            ]
        return Formation(kind, role, tuple(commands), "crm_mon", "crm_mon -1")
    raise ValueError(f"unknown cluster kind {kind!r}; kinds: {', '.join(KINDS)}")


Loc = tuple[str | int, ...]


def kind_problems(
    name: str,
    kind: str,
    *,
    cluster_vars: dict[str, Any],
    members: list[tuple[int, str, dict[str, Any]]],  # (index in [[nodes]], hostname, vars)
    service_account: str | None,
    quorum: str | None,
    shared_letters: list[str],
) -> list[tuple[Loc, str]]:
    """Every config problem of cluster ``name`` of ``kind``, with the key path it belongs to
    (the config check turns it into ``file:line``). A var missing everywhere is reported at the
    cluster's vars table; an empty one at the line that set it."""
    problems: list[tuple[Loc, str]] = []
    spec = KINDS[kind]
    reported: set[str] = set()
    for index, hostname, node_vars in members:
        merged = {**cluster_vars, **node_vars}
        for var, message in var_problems(kind, merged).items():
            if var in node_vars:
                problems.append((("nodes", index, "vars", var), f"node {hostname}: {message}"))
            elif var not in reported:
                reported.add(var)
                where: Loc = ("clusters", name, "vars", var)
                if var not in cluster_vars:
                    where = ("clusters", name, "vars") if cluster_vars else ("clusters", name)
                problems.append((where, message))
    if spec.needs_service_account and not (service_account or "").strip():
        problems.append(
            (
                ("clusters", name, "service_account"),
                f"cluster kind {kind} needs service_account (DOMAIN\\user the cluster service "
                "runs as)",
            )
        )
    if quorum is not None and quorum.upper() not in [x.upper() for x in shared_letters]:
        problems.append(
            (
                ("clusters", name, "quorum"),
                f"quorum {quorum!r} is not a drive letter of shared_disks "
                f"({', '.join(shared_letters) or 'none'})",
            )
        )
    return problems
