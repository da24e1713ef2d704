"""The seed's rules judged from preflight facts (pure): each rule, flags as checks and claims."""

from __future__ import annotations

from netdeploy.images.seedrules import BROKEN, CLAIMED, OK, UNKNOWN, Claims, judge

SEALED = {
    "sysprep": {
        "state": "reseal",
        "mini_setup_pending": True,
        "sysprep_inf": "sysprep/sysprep.inf",
        "setup": {"CmdLine": "setup -newsetup -mini", "SystemSetupInProgress": 1},
    },
    "cluster_service": {"configured": False, "installed": True, "evidence": []},
    "other_disks": [],
    "mass_storage": {"critical_devices": 1, "hardware_ids": {"pci#ven_1af4&dev_1001": "viostor"}},
}


def facts(**windows) -> dict:  # type: ignore[no-untyped-def]
    return {"windows": {**SEALED, **windows}, "problems": []}


def status(verdict, rule: str) -> str:  # type: ignore[no-untyped-def]
    return next(f.status for f in verdict.findings if f.rule == rule)


def test_a_sealed_clean_master_passes_every_rule() -> None:
    verdict = judge(facts(), Claims(), clusters=["c"])
    assert [status(verdict, r) for r in ("sysprep", "cluster_service", "shared_storage")] == [
        OK
    ] * 3
    assert verdict.refusals == []
    assert verdict.summary() == {
        "sysprep": "reseal",
        "cluster_service": False,
        "shared_storage": False,
    }


def test_a_configured_cluster_service_is_refused_for_a_cluster_only() -> None:
    cluster = {"configured": True, "evidence": ["ClusSvc Start=2"]}
    assert (
        status(judge(facts(cluster_service=cluster), Claims(), clusters=["c"]), "cluster_service")
        == BROKEN
    )
    assert judge(facts(cluster_service=cluster), Claims(), clusters=["c"]).refusals
    standalone = judge(facts(cluster_service=cluster), Claims(), clusters=[])
    assert not standalone.refusals and standalone.warnings  # shown, not refused
    # the old flag is a check: claiming the opposite of the image is refused on any image
    contradicted = judge(
        facts(cluster_service=cluster), Claims(without_cluster_service=True), clusters=[]
    )
    assert contradicted.refusals and "was given" in contradicted.refusals[0].message


def test_unreadable_images_need_the_flags_as_claims() -> None:
    unreadable = {"problems": ["no partition table; read as one volume"]}
    verdict = judge(unreadable, Claims(), clusters=["c"])
    assert {f.status for f in verdict.findings} == {UNKNOWN} and len(verdict.refusals) == 3
    claimed = judge(unreadable, Claims("reseal", True, True), clusters=["c"])
    assert {f.status for f in claimed.findings} == {CLAIMED} and not claimed.refusals
    assert claimed.summary() == {
        "sysprep": "reseal",
        "cluster_service": False,
        "shared_storage": False,
    }


def test_other_disks_and_wrong_sysprep_mode() -> None:
    assert (
        status(
            judge(facts(other_disks=["Q: on disk 1"]), Claims(), clusters=["c"]), "shared_storage"
        )
        == BROKEN
    )
    wrong = judge(facts(), Claims(sysprep="factory"), clusters=[])
    assert wrong.refusals and "--sysprep factory was given" in wrong.refusals[0].message
    none = {"state": "none", "setup": {"SystemSetupInProgress": 0}}
    assert status(judge(facts(sysprep=none), Claims(), clusters=["c"]), "sysprep") == BROKEN


def test_mass_storage_drivers_missing_from_the_image_are_warnings() -> None:
    profiles = {"virtio": ["PCI\\VEN_1AF4&DEV_1001"], "smartarray": ["PCI\\VEN_0E11&DEV_0046"]}
    verdict = judge(facts(), Claims(), clusters=["c"], mass_storage=profiles)
    messages = [f.message for f in verdict.findings if f.rule == "mass_storage"]
    assert "hardware smartarray: PCI\\VEN_0E11&DEV_0046 not in" in messages[0]
    assert messages[1] == "hardware virtio: all drivers present"
    assert not verdict.refusals


def test_linux_identity_rules() -> None:
    dirty = {
        "linux": {
            "machine_id": "set",
            "ssh_host_keys": ["ssh_host_rsa_key"],
            "cloud_init_state": ["var/lib/cloud/instance"],
        }
    }
    verdict = judge(dirty, Claims(), clusters=["c"])
    assert {f.rule for f in verdict.refusals} == {"machine_id", "ssh_host_keys", "cloud_init"}
    clean = {"linux": {"machine_id": "empty", "ssh_host_keys": [], "cloud_init_state": []}}
    assert not judge(clean, Claims(), clusters=["c"]).refusals
    assert judge(clean, Claims(sysprep="reseal"), clusters=[]).refusals  # Windows flag on Linux
