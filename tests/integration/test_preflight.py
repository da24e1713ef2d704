"""Preflight read from the image itself: `netdeploy image add` and `image show` on real NTFS and
ext4 masters built in the test (tests/integration/masterimages.py), one per seed rule."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest

from tests.conftest import demo_variant, run_cli
from tests.integration.masterimages import (
    LinuxMaster,
    WindowsMaster,
    can_build_ntfs,
    make_linux_master,
    make_windows_master,
)

CLUSTER_IMAGE = "w2k3-ent-sp1"  # the demo cluster sqlclu's image
needs_ntfs = pytest.mark.skipif(can_build_ntfs() is not None, reason=str(can_build_ntfs()))


@pytest.fixture
def lab(tmp_path: Path) -> Path:
    return demo_variant(
        tmp_path / "netdeploy.toml",
        {'state_dir = "../var"': f'state_dir = "{tmp_path / "state"}"'},
    )


def add(lab: Path, name: str, path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return run_cli("image", "add", name, str(path), "-q", "--config", str(lab), *extra)


def show(lab: Path, name: str) -> dict:
    done = run_cli("image", "show", name, "--json", "--config", str(lab))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def refused(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 1, done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr  # one clear line
    assert "refused by preflight" in lines[0]
    return lines[0]


@needs_ntfs
def test_a_sealed_clean_master_is_accepted_for_a_cluster_without_any_flag(lab, tmp_path):
    master = make_windows_master(tmp_path / "master.img", WindowsMaster())
    done = add(lab, CLUSTER_IMAGE, master)
    assert done.returncode == 0, done.stderr
    assert "ok       sysprep: reseal: sysprep -reseal was run, Mini-Setup pending" in done.stdout
    image = show(lab, CLUSTER_IMAGE)
    facts = image["facts"]
    assert facts["sysprep"] == "reseal" and facts["cluster_service"] is False
    assert facts["shared_storage"] is False and facts["clusters"] == ["sqlclu"]
    win = facts["preflight"]["facts"]["windows"]
    assert win["computer_name"] == "MASTER"
    assert win["os_version"] == {
        "product": "Microsoft Windows Server 2003",
        "version": "5.2",
        "build": "3790",
        "service_pack": "Service Pack 1",
    }
    assert win["domain"]["name"] == "LAB"
    assert win["sysprep"]["sysprep_inf"] == "sysprep/sysprep.inf"
    assert win["mass_storage"]["miniports"] == ["viostor"]
    statuses = {f["rule"]: f["status"] for f in facts["preflight"]["findings"]}
    assert statuses["sysprep"] == statuses["cluster_service"] == statuses["shared_storage"] == "ok"
    # the demo's dl380-g4 profile lists a Smart Array driver this master lacks: a warning
    text = run_cli("image", "show", CLUSTER_IMAGE, "--config", str(lab))
    assert text.returncode == 0, text.stderr
    assert "windows   Microsoft Windows Server 2003 5.2 build 3790 Service Pack 1" in text.stdout
    assert "computer  MASTER" in text.stdout
    assert "ClusSvc   configured: False" in text.stdout
    assert "hardware qemu-virtio: all drivers present" in text.stdout
    assert "hardware dl380-g4: PCI\\VEN_0E11&DEV_0046&SUBSYS_40910E11 not in" in text.stdout


@needs_ntfs
def test_a_master_with_the_cluster_service_configured_is_refused_then_forced(lab, tmp_path):
    master = make_windows_master(tmp_path / "node.img", WindowsMaster(cluster_service=True))
    line = refused(add(lab, CLUSTER_IMAGE, master))
    assert "image 'w2k3-ent-sp1' is the image of cluster sqlclu" in line
    assert "the Cluster service is configured on the master" in line
    assert "ClusSvc\\Parameters ClusterName=SQLCLU" in line
    assert "You cannot clone a cluster node with the cluster service installed" in line
    # the old flag is a check now: claiming it does not help
    line = refused(add(lab, CLUSTER_IMAGE, master, "--without-cluster-service"))
    assert "(--without-cluster-service was given)" in line
    assert show(lab, CLUSTER_IMAGE)["status"] == "unhashed"  # nothing was recorded
    # --force REASON overrides, and says who and why
    done = add(lab, CLUSTER_IMAGE, master, "--force", "lab test of a pre-built node")
    assert done.returncode == 0, done.stderr
    forced = show(lab, CLUSTER_IMAGE)["facts"]["preflight"]["forced"]
    assert forced["reason"] == "lab test of a pre-built node"
    assert forced["by"].endswith("@cli")
    assert "the Cluster service is configured" in forced["overrode"][0]
    db = sqlite3.connect(tmp_path / "state" / "netdeploy.db")
    rows = [json.loads(d) for (d,) in db.execute("SELECT detail FROM events WHERE kind='image'")]
    db.close()
    assert any(r.get("action") == "preflight-forced" and r["reason"] == forced["reason"]
               for r in rows)  # fmt: skip
    text = run_cli("image", "show", CLUSTER_IMAGE, "--config", str(lab)).stdout
    assert "FORCED by" in text and "lab test of a pre-built node" in text


@needs_ntfs
@pytest.mark.parametrize(
    ("master", "flags", "expected"),
    [
        (WindowsMaster(sysprep="none"), (), "the master was not sealed"),
        (WindowsMaster(shared_disks=["Q", "S"]), (), "Q: on disk 5eed0000, S: on disk 5eed0001"),
        (
            WindowsMaster(),
            ("--sysprep", "factory"),
            "--sysprep factory was given but the image was sealed with sysprep -reseal",
        ),
        (
            WindowsMaster(shared_disks=["Q"]),
            ("--no-shared-storage",),
            "(--no-shared-storage was given)",
        ),
    ],
)
def test_each_broken_seed_rule_is_refused_with_its_fact(lab, tmp_path, master, flags, expected):
    image = make_windows_master(tmp_path / "master.img", master)
    assert expected in refused(add(lab, CLUSTER_IMAGE, image, *flags))


@needs_ntfs
def test_factory_mode_is_accepted_and_a_contradicted_flag_is_refused_on_any_image(lab, tmp_path):
    image = make_windows_master(tmp_path / "factory.img", WindowsMaster(sysprep="factory"))
    assert add(lab, CLUSTER_IMAGE, image).returncode == 0
    assert show(lab, CLUSTER_IMAGE)["facts"]["sysprep"] == "factory"
    # debian-12 is no cluster's image, but a flag the image contradicts is still refused
    line = refused(add(lab, "debian-12", image, "--sysprep", "reseal"))
    assert line.startswith("netdeploy: image 'debian-12': refused by preflight: factory:")


@needs_ntfs
def test_a_zstd_master_is_read_through_its_compression(tmp_path):
    if shutil.which("zstd") is None:
        pytest.skip("needs zstd")
    lab = demo_variant(
        tmp_path / "netdeploy.toml",
        {
            'state_dir = "../var"': f'state_dir = "{tmp_path / "state"}"',
            'file = "w2k3-ent-sp1.img"\n': 'file = "w2k3-ent-sp1.img.zst"\nformat = "raw+zstd"\n',
        },
    )
    raw = make_windows_master(tmp_path / "node.img", WindowsMaster(cluster_service=True))
    subprocess.run(["zstd", "-q", "-3", str(raw), "-o", str(tmp_path / "node.zst")], check=True)
    line = refused(add(lab, CLUSTER_IMAGE, tmp_path / "node.zst"))
    assert "Cluster service is configured" in line
    clean = make_windows_master(tmp_path / "clean.img", WindowsMaster())
    done = add(lab, CLUSTER_IMAGE, clean, "--compress", "zstd")
    assert done.returncode == 0, done.stderr
    image = show(lab, CLUSTER_IMAGE)
    assert image["format"] == "raw+zstd" and image["facts"]["sysprep"] == "reseal"


def test_linux_masters_identity_facts(tmp_path):
    if shutil.which("mkfs.ext4") is None:
        pytest.skip("needs mkfs.ext4 (Debian: e2fsprogs)")
    # a Linux cluster: the same idea as sysprep, one machine's identity must not be cloned
    lab = demo_variant(
        tmp_path / "netdeploy.toml",
        {
            'state_dir = "../var"': f'state_dir = "{tmp_path / "state"}"',
            'image = "w2k3-ent-sp1"': 'image = "debian-12"',
        },
    )
    dirty = make_linux_master(
        tmp_path / "dirty.img",
        LinuxMaster(machine_id="0123456789abcdef\n", ssh_host_keys=True, cloud_init_state=True),
    )
    line = refused(add(lab, "debian-12", dirty))
    assert "/etc/machine-id is set" in line
    assert "SSH host keys left in /etc/ssh (ssh_host_ed25519_key)" in line
    assert "cloud-init state left (var/lib/cloud/instances)" in line
    clean = make_linux_master(tmp_path / "clean.img", LinuxMaster())
    done = add(lab, "debian-12", clean)
    assert done.returncode == 0, done.stderr
    linux = show(lab, "debian-12")["facts"]["preflight"]["facts"]["linux"]
    assert linux["machine_id"] == "empty" and linux["ssh_host_keys"] == []
    assert linux["cloud_init"] == "clean"
    assert linux["os_version"] == "Debian GNU/Linux 12 (bookworm)"
    # the Windows cluster's image may not be a Linux one
    line = refused(add(lab, "w2k3-ent-sp1", clean, "--sysprep", "reseal"))
    assert "--sysprep reseal|factory was given but the image holds Linux" in line


def test_a_standalone_image_with_identity_left_is_added_with_warnings(lab, tmp_path):
    if shutil.which("mkfs.ext4") is None:
        pytest.skip("needs mkfs.ext4 (Debian: e2fsprogs)")
    dirty = make_linux_master(tmp_path / "dirty.img", LinuxMaster(machine_id="abc\n"))
    done = add(lab, "debian-12", dirty)
    assert done.returncode == 0, done.stderr
    assert "BROKEN   machine_id: /etc/machine-id is set" in done.stdout


@needs_ntfs
@pytest.mark.parametrize(("member", "evidence"), [(True, "set"), (False, "empty")])
def test_domain_membership_is_read_from_the_security_hive(lab, tmp_path, member, evidence):
    image = make_windows_master(tmp_path / "m.img", WindowsMaster(domain_member=member))
    assert add(lab, "debian-12", image).returncode == 0
    domain = show(lab, "debian-12")["facts"]["preflight"]["facts"]["windows"]["domain"]
    assert domain == {
        "member": member,
        "name": "LAB",
        "evidence": f"SECURITY\\Policy\\PolPrDmS {evidence}",
    }
