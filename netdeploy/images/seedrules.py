"""Judge an image's preflight facts against the seed's rules. Pure: facts in, findings out.

The seed's rules for a cluster's master (Microsoft, "Image-based Installations of Server
Clusters"): sealed with ``sysprep -reseal`` or ``-factory``; captured *without* the cluster
service ("you cannot clone a cluster node with cluster service installed"); *not* attached to the
shared storage. For a Linux master the same idea (one machine's identity must not be cloned):
``/etc/machine-id`` empty, no SSH host keys, no cloud-init instance state.

The admin's old flags (``--sysprep``, ``--without-cluster-service``, ``--no-shared-storage``)
are checks: a flag the image contradicts is refused (for any image); where the image cannot tell
(not a Windows volume we can read), a flag stands as a *claim*, recorded as such. A cluster's
image is refused while any rule is broken or unestablished; ``--force REASON`` overrides and
the override is recorded with who and why.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

OK, BROKEN, CLAIMED, UNKNOWN, WARNING = "ok", "broken", "claimed", "unknown", "warning"
WINDOWS_RULES = ("sysprep", "cluster_service", "shared_storage")
LINUX_RULES = ("machine_id", "ssh_host_keys", "cloud_init")
FLAG_OF = {
    "sysprep": "--sysprep reseal|factory",
    "cluster_service": "--without-cluster-service",
    "shared_storage": "--no-shared-storage",
}


@dataclass(frozen=True)
class Claims:
    """What the admin typed; each is checked against the image."""

    sysprep: str | None = None
    without_cluster_service: bool = False
    no_shared_storage: bool = False

    def claims(self, rule: str) -> bool:
        return {
            "sysprep": self.sysprep is not None,
            "cluster_service": self.without_cluster_service,
            "shared_storage": self.no_shared_storage,
        }.get(rule, False)


@dataclass(frozen=True)
class Finding:
    rule: str
    status: str  # ok | broken | claimed | unknown | warning
    message: str
    contradicts_claim: bool = False


@dataclass
class Verdict:
    findings: list[Finding] = field(default_factory=list)
    for_clusters: list[str] = field(default_factory=list)

    @property
    def refusals(self) -> list[Finding]:
        """What stops the image: a contradicted flag always; for a cluster's image also every
        rule that is broken or that neither the image nor a flag establishes."""
        stops = [f for f in self.findings if f.contradicts_claim]
        if self.for_clusters:
            stops += [
                f
                for f in self.findings
                if f.status in (BROKEN, UNKNOWN) and not f.contradicts_claim
            ]
        return stops

    @property
    def warnings(self) -> list[Finding]:
        stops = self.refusals
        return [f for f in self.findings if f.status in (WARNING, BROKEN) and f not in stops]

    def summary(self) -> dict[str, Any]:
        """The top-level catalog facts (kept from before preflight read images): established
        answers only, None where neither the image nor a flag says."""
        by_rule = {f.rule: f for f in self.findings}

        def established(rule: str) -> bool:
            f = by_rule.get(rule)
            return f is not None and f.status in (OK, CLAIMED)

        return {
            "sysprep": by_rule["sysprep"].message.split(":", 1)[0]
            if established("sysprep")
            else None,
            "cluster_service": False if established("cluster_service") else None,
            "shared_storage": False if established("shared_storage") else None,
        }

    def as_json(self) -> list[dict[str, Any]]:
        return [asdict(f) for f in self.findings]


def judge(
    facts: dict[str, Any],
    claims: Claims,
    *,
    clusters: list[str],
    mass_storage: dict[str, list[str]] | None = None,
) -> Verdict:
    """Findings for every rule; ``mass_storage``: hardware profile -> its [SysprepMassStorage]
    hardware IDs, compared with the image's CriticalDeviceDatabase (a warning when missing)."""
    verdict = Verdict(for_clusters=list(clusters))
    add = verdict.findings.append
    windows = facts.get("windows")
    linux = facts.get("linux")
    why_unknown = "; ".join(facts.get("problems") or []) or "not readable"
    if windows is not None:
        add(_sysprep(windows, claims, why_unknown))
        add(_cluster_service(windows, claims, why_unknown))
        add(_shared_storage(windows, claims, why_unknown))
        for finding in _mass_storage(windows, mass_storage or {}):
            add(finding)
    elif linux is not None:
        for finding in _linux(linux):
            add(finding)
        for rule in WINDOWS_RULES:  # a flag about Windows on a Linux image is a mistake
            if claims.claims(rule):
                add(
                    Finding(
                        rule,
                        BROKEN,
                        f"{FLAG_OF[rule]} was given but the image holds Linux, not Windows",
                        True,
                    )
                )
    else:
        for rule in WINDOWS_RULES:
            add(_unreadable(rule, claims, why_unknown))
    return verdict


def _unreadable(rule: str, claims: Claims, why: str) -> Finding:
    if claims.claims(rule):
        flag = FLAG_OF[rule] if rule != "sysprep" else f"--sysprep {claims.sysprep}"
        prefix = claims.sysprep if rule == "sysprep" else "claimed"
        return Finding(rule, CLAIMED, f"{prefix}: claimed by {flag}; the image cannot tell: {why}")
    return Finding(rule, UNKNOWN, f"not verifiable from the image: {why}")


def _sysprep(win: dict[str, Any], claims: Claims, why: str) -> Finding:
    sysprep = win.get("sysprep") or {}
    state = sysprep.get("state")
    if state is None:
        return _unreadable("sysprep", claims, f"no HKLM\\SYSTEM\\Setup read ({why})")
    setup = sysprep.get("setup") or {}
    if state == "none":
        return Finding(
            "sysprep",
            BROKEN,
            "none: the master was not sealed (HKLM\\SYSTEM\\Setup SystemSetupInProgress="
            f"{setup.get('SystemSetupInProgress')}, CmdLine={setup.get('CmdLine')!r}); run "
            "sysprep -reseal (or -factory) on it, shut it down and capture it again",
            claims.sysprep is not None,
        )
    if claims.sysprep is not None and claims.sysprep != state:
        return Finding(
            "sysprep",
            BROKEN,
            f"{state}: --sysprep {claims.sysprep} was given but the image was sealed with "
            f"sysprep -{state} (CmdLine={setup.get('CmdLine')!r})",
            True,
        )
    mini = ", Mini-Setup pending" if sysprep.get("mini_setup_pending") else ""
    inf = sysprep.get("sysprep_inf")
    return Finding(
        "sysprep",
        OK,
        f"{state}: sysprep -{state} was run{mini}; "
        + (f"{inf} present" if inf else "no sysprep\\sysprep.inf on the master"),
    )


def _cluster_service(win: dict[str, Any], claims: Claims, why: str) -> Finding:
    cluster = win.get("cluster_service") or {}
    configured = cluster.get("configured")
    if configured is None:
        return _unreadable("cluster_service", claims, f"no SYSTEM hive read ({why})")
    if configured:
        said = " (--without-cluster-service was given)" if claims.without_cluster_service else ""
        return Finding(
            "cluster_service",
            BROKEN,
            "the Cluster service is configured on the master"
            f"{said}: {'; '.join(cluster.get('evidence') or [])}. You cannot clone a cluster node "
            "with the cluster service installed: capture the master before the cluster is "
            "created or joined",
            claims.without_cluster_service,
        )
    installed = ", ClusSvc present but disabled" if cluster.get("installed") else ""
    return Finding("cluster_service", OK, f"not configured{installed}")


def _shared_storage(win: dict[str, Any], claims: Claims, why: str) -> Finding:
    others = win.get("other_disks")
    if others is None:
        return _unreadable("shared_storage", claims, f"no MountedDevices read ({why})")
    if others:
        said = " (--no-shared-storage was given)" if claims.no_shared_storage else ""
        return Finding(
            "shared_storage",
            BROKEN,
            f"the master mounted volumes of other disks{said}: {', '.join(others)} "
            "(HKLM\\SYSTEM\\MountedDevices); it was attached to the shared storage: detach it, "
            "and capture the master again",
            claims.no_shared_storage,
        )
    return Finding("shared_storage", OK, "only the system disk's own volumes in MountedDevices")


def _mass_storage(win: dict[str, Any], profiles: dict[str, list[str]]) -> list[Finding]:
    found = set((win.get("mass_storage") or {}).get("hardware_ids", {}))
    if not found and not (win.get("mass_storage") or {}).get("critical_devices"):
        found = set()
    out = []
    for profile, ids in sorted(profiles.items()):
        missing = [i for i in ids if i.lower().replace("\\", "#") not in found]
        if missing:
            out.append(
                Finding(
                    "mass_storage",
                    WARNING,
                    f"hardware {profile}: {', '.join(missing)} not in the image's "
                    "CriticalDeviceDatabase; list it in [SysprepMassStorage] before sysprep "
                    "or that hardware may stop with 0x7B (INACCESSIBLE_BOOT_DEVICE)",
                )
            )
        elif ids:
            out.append(Finding("mass_storage", OK, f"hardware {profile}: all drivers present"))
    return out


def _linux(linux: dict[str, Any]) -> list[Finding]:
    mid = linux.get("machine_id")
    keys = linux.get("ssh_host_keys") or []
    cloud = linux.get("cloud_init_state") or []
    return [
        Finding("machine_id", OK, f"/etc/machine-id {mid}")
        if mid in ("empty", "absent")
        else Finding(
            "machine_id",
            BROKEN,
            "/etc/machine-id is set: every clone would share it; truncate it before capture",
        ),
        Finding("ssh_host_keys", OK, "no SSH host keys")
        if not keys
        else Finding(
            "ssh_host_keys",
            BROKEN,
            f"SSH host keys left in /etc/ssh ({', '.join(keys)}): every clone would share "
            "them; remove them before capture",
        ),
        Finding("cloud_init", OK, "cloud-init clean")
        if not cloud
        else Finding(
            "cloud_init",
            BROKEN,
            f"cloud-init state left ({', '.join(cloud)}): run cloud-init clean before capture",
        ),
    ]


def refusal_message(name: str, verdict: Verdict) -> str:
    """One line: what broke which rule, and how to go on."""
    stops = verdict.refusals
    clusters = ", ".join(verdict.for_clusters)
    unknown = [f.rule for f in stops if f.status == UNKNOWN]
    parts = [f.message for f in stops if f.status != UNKNOWN]
    if unknown:
        flags = " ".join(FLAG_OF[r] for r in unknown if r in FLAG_OF)
        reason = next(f.message for f in stops if f.status == UNKNOWN)
        parts.append(
            f"capture it from a sysprepped master without the cluster service and not attached "
            f"to the shared storage; the image cannot show it ({reason.split(': ', 1)[1]}): "
            f"confirm with {flags}"
        )
    whose = f"image {name!r} is the image of cluster {clusters}" if clusters else f"image {name!r}"
    return f"{whose}: refused by preflight: {'; '.join(parts)}; or override with --force REASON"
