"""Hardware profiles matched to reported facts, and the seed's driver rule (issue 18). Pure."""

from __future__ import annotations

from pathlib import Path

from netdeploy.boot.hardware import controllers, covers, pick_profile, verdict
from netdeploy.boot.plan import BootAction, BootUrls, NodeFacts, boot_plan
from netdeploy.config import load_config
from netdeploy.inventory import NodeState
from netdeploy.rollout.facts import parse_facts
from tests.conftest import DEMO_CONFIG

QEMU_PC = "Standard PC (i440FX + PIIX, 1996)"
PIIX_IDE = {"address": "0000:00:01.1", "vendor": "8086", "device": "7010", "class": "010180"}
VIRTIO_BLK = {
    "address": "0000:00:04.0",
    "vendor": "1af4",
    "device": "1001",
    "subsystem_vendor": "1af4",
    "subsystem_device": "0002",
    "class": "010000",
    "driver": "virtio-pci",
    "disks": ["vda"],
}
AHCI = {
    "address": "0000:00:05.0",
    "vendor": "8086",
    "device": "2922",
    "subsystem_vendor": "1af4",
    "subsystem_device": "1100",
    "class": "010601",
    "driver": "ahci",
    "disks": ["sda"],
}


def facts(*storage: dict, product: str = QEMU_PC) -> dict:
    return parse_facts(
        {
            "smbios": {"vendor": "QEMU", "product": product},
            "firmware": "bios",
            "storage": list(storage),
        }
    )


def demo(hardware: str = "auto"):
    cfg = load_config(DEMO_CONFIG)
    node = cfg.node_by_hostname("sql-n1").model_copy(update={"hardware": hardware})
    return cfg, node


def test_auto_picks_qemu_virtio_for_a_virtio_guest_and_the_idle_ide_port_needs_no_driver() -> None:
    cfg, node = demo()
    found = verdict(cfg, node, facts(PIIX_IDE, VIRTIO_BLK))
    assert found.profile == "qemu-virtio" and found.refusal == ""


def test_an_ahci_guest_is_refused_naming_the_pci_id_that_has_no_driver() -> None:
    cfg, node = demo()
    found = verdict(cfg, node, facts(PIIX_IDE, AHCI))
    assert found.profile == "qemu-virtio"
    assert found.missing == ("8086:2922",)
    assert "8086:2922" in found.refusal and "PCI\\VEN_8086&DEV_2922" in found.refusal
    assert "qemu-virtio" in found.refusal


def test_a_named_profile_is_checked_too_and_no_facts_keeps_todays_behaviour() -> None:
    cfg, node = demo("dl380-g4")
    assert "1af4:1001" in verdict(cfg, node, facts(VIRTIO_BLK)).refusal
    assert verdict(cfg, node, None) == verdict(cfg, node, {})
    assert verdict(cfg, node, None).profile == "dl380-g4" and not verdict(cfg, node, None).refusal
    cfg, auto = demo()
    assert verdict(cfg, auto, None).profile is None and not verdict(cfg, auto, None).refusal


def test_auto_with_no_matching_profile_is_refused_with_what_was_reported() -> None:
    cfg, node = demo()
    found = verdict(cfg, node, facts(VIRTIO_BLK, product="ProLiant DL380 G9"))
    assert found.profile is None
    assert "no hardware profile matches" in found.refusal and "1af4:1001" in found.refusal


def test_sysprep_ids_cover_controllers_by_ven_dev_and_subsys_or_class_when_given() -> None:
    (virtio,) = controllers(facts(VIRTIO_BLK))
    assert covers("PCI\\VEN_1AF4&DEV_1001&SUBSYS_00021AF4", virtio)
    assert covers("PCI\\VEN_1AF4&DEV_1001", virtio)
    assert covers("PCI\\VEN_1af4&DEV_1001&CC_0100", virtio)
    assert not covers("PCI\\VEN_1AF4&DEV_1001&SUBSYS_00031AF4", virtio)
    assert not covers("PCI\\VEN_1AF4&DEV_1001&CC_0106", virtio)
    assert not covers("PCI\\VEN_1AF4&DEV_1042", virtio)


def test_pci_rules_match_in_either_spelling(tmp_path: Path) -> None:
    cfg = load_config(DEMO_CONFIG)
    rules = cfg.hardware["qemu-virtio"].match
    assert rules is not None
    by_pci = cfg.model_copy(
        update={
            "hardware": {
                "ahci-box": cfg.hardware["dl380-g4"].model_copy(
                    update={"match": rules.model_copy(update={"product": [], "pci": ["8086:2922"]})}
                ),
                "virtio-box": cfg.hardware["qemu-virtio"].model_copy(
                    update={
                        "match": rules.model_copy(
                            update={"product": [], "pci": ["PCI\\VEN_1AF4&DEV_1001"]}
                        )
                    }
                ),
            }
        }
    )
    assert pick_profile(by_pci, facts(AHCI)) == "ahci-box"
    assert pick_profile(by_pci, facts(VIRTIO_BLK)) == "virtio-box"
    assert pick_profile(by_pci, facts(PIIX_IDE)) is None


def test_the_boot_decision_holds_a_refused_node_and_says_why() -> None:
    node = NodeFacts(
        "52:54:00:00:10:01",
        NodeState.REGISTERED,
        "sql-n1",
        "sqlclu",
        "waiting",
        "w2k3",
        hardware_refusal="storage controller 8086:2922 has no driver",
    )
    plan = boot_plan(node, BootUrls("http://s"))
    assert plan.action == BootAction.WAIT and plan.refused
    assert "8086:2922" in plan.why
    # past release the disk is written: the refusal no longer matters (issue 21: a released node
    # boots the agent once to restore its boot code, then ``starting`` boots the disk)
    started = NodeFacts("52:54:00:00:10:01", NodeState.STARTING, hardware_refusal="x")
    assert boot_plan(started, BootUrls("http://s")).action == BootAction.LOCAL
    released = NodeFacts("52:54:00:00:10:01", NodeState.RELEASED, hardware_refusal="x")
    assert not boot_plan(released, BootUrls("http://s")).refused


def test_hostile_facts_are_cut_to_size() -> None:
    kept = parse_facts(
        {
            "smbios": {"product": "x" * 10_000, "evil": "y"},
            "storage": [{"vendor": "8086", "device": "2922", "disks": ["sda"] * 500}] * 500,
            "extra": "ignored",
        }
    )
    assert len(kept["smbios"]["product"]) == 200 and "evil" not in kept["smbios"]
    assert len(kept["storage"]) == 64 and len(kept["storage"][0]["disks"]) == 64
    assert "extra" not in kept
