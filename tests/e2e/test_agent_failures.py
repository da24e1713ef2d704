"""The agent on real QEMU guests when things go wrong: it reports why and never trusts the disk."""

from __future__ import annotations

import sqlite3
import time

import pytest

from tests.conftest import add_image, free_port, start_server
from tests.e2e.diskimage import blank_disk, make_image, read_file
from tests.e2e.test_cluster_rollout import IMAGE, NODES, pytestmark, wait_exit  # noqa: F401
from tests.e2e.vm import VM

UNKNOWN_MAC = "52:54:00:99:00:01"


def node_named(server, host: str) -> dict:
    return next(n for n in server.get_json("/api/nodes")["nodes"] if n["hostname"] == host)


def wait_failed(server, vm: VM, host: str, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        node = node_named(server, host)
        if node["state"] == "failed":
            return node
        assert vm.proc and vm.proc.poll() is None, f"{vm.name} exited:\n{vm.text()[-3000:]}"
        time.sleep(1)
    raise AssertionError(f"{host} did not fail: {node}\n{vm.text()[-3000:]}")


@pytest.mark.timeout(600)
def test_agent_reports_failures_and_discovery(media, tmp_path):
    state_dir = tmp_path / "state"
    master = tmp_path / "master.img"
    make_image(master, size_mib=64)
    add_image(state_dir, master)
    # the catalog says another sha256 than the bytes served: the agent must catch it
    db = sqlite3.connect(state_dir / "netdeploy.db")
    with db:
        db.execute("UPDATE images SET sha256 = ? WHERE name = ?", ("0" * 64, IMAGE))
    db.close()
    port = free_port()
    server = start_server(
        state_dir, http_port=port, extra=("--public-url", f"http://10.0.2.2:{port}")
    )
    bootfile = f"http://10.0.2.2:{port}/boot.ipxe"
    disks = {}
    for name in ("web-1", "unknown", "sql-n1"):
        disks[name] = blank_disk(tmp_path / f"{name}.img")
    vms = []

    def boot(name: str, mac: str) -> VM:
        vm = VM(name, mac, tmp_path / f"{name}.log", disk=disks[name], bootfile=bootfile)
        vms.append(vm.start())
        return vm

    try:
        # web-1's image (debian-12) was never added: failed with the reason, disk untouched
        web = boot("web-1", "52:54:00:00:20:01")
        stranger = boot("unknown", UNKNOWN_MAC)
        failed = wait_failed(server, web, "web-1")
        assert "image debian-12 is not ready to serve" in failed["message"]
        assert "netdeploy image add debian-12" in failed["message"]
        # an unknown MAC is discovered, shown, and never imaged
        deadline = time.monotonic() + 120
        while not stranger.saw("not in the inventory: discovered"):
            assert time.monotonic() < deadline, stranger.text()[-3000:]
            time.sleep(0.5)
        stranger.kill()
        web.kill()
        known = {n["mac"]: n for n in server.get_json("/api/nodes")["nodes"]}
        assert known[UNKNOWN_MAC]["state"] == "discovered"
        assert disks["unknown"].read_bytes().count(0) == 80 * 1024 * 1024
        assert disks["web-1"].read_bytes().count(0) == 80 * 1024 * 1024

        # wrong checksum: written, re-read, refused; the node is failed, not imaged
        n1 = boot("sql-n1", NODES["sql-n1"])
        failed = wait_failed(server, n1, "sql-n1")
        assert "checksum mismatch" in failed["message"]
        assert "disk not trusted" in failed["message"]
        assert n1.saw("FAILED: checksum mismatch")
        assert not n1.saw("injected")  # nothing personalised on an untrusted disk
    finally:
        for vm in vms:
            vm.kill()
        server.stop()


@pytest.mark.timeout(600)
def test_stream_cut_mid_way_resumes_with_range(media, tmp_path):
    from tests.e2e.cutproxy import CuttingProxy

    state_dir = tmp_path / "state"
    master = tmp_path / "master.img"
    built = make_image(master, size_mib=64)
    add_image(state_dir, master)
    disk = blank_disk(tmp_path / "sql-n1.img")
    port = free_port()
    # every URL the guest gets points at the proxy, which drops the first image stream
    with CuttingProxy(port, cut_after=20 * 1024 * 1024 + 12345) as proxy:
        server = start_server(
            state_dir, http_port=port, extra=("--public-url", f"http://10.0.2.2:{proxy.port}")
        )
        vm = VM(
            "sql-n1",
            NODES["sql-n1"],
            tmp_path / "sql-n1.log",
            disk=disk,
            bootfile=f"http://10.0.2.2:{proxy.port}/boot.ipxe",
        ).start()
        try:
            wait_exit(server, vm, "sql-n1", 300)  # the first node: released, the agent reboots
            assert node_named(server, "sql-n1")["state"] == "starting"  # imaged: sha256 matched
        finally:
            vm.kill()
            server.stop()
        assert proxy.cuts == 1
    assert vm.saw("stream broke at 20 MiB; resuming")
    for name, data in built["files"].items():
        assert read_file(disk, name) == data, name
