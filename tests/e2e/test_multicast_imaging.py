"""A cluster imaged by one multicast stream, on real QEMU PXE clients (issue: multicast).

Three guests with the demo cluster's MACs PXE-boot on a private LAN (tests/e2e/lan.py: bridge,
taps, dnsmasq, `netdeploy serve` on the bridge). The cluster is configured with
``distribution = "multicast"``: each agent joins the cluster's session and the startup media's
C receiver writes the one stream to its disk. Frames towards the third guest are dropped at
random, so the sender drops it from the session and its agent fetches the byte ranges it
missed over HTTP. Every agent verifies its disk by sha256 before it reports, and gets its own
answer file injected; the session sent the image about once, not once per node.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import add_image, demo_variant
from tests.e2e.diskimage import blank_disk, make_image, read_file
from tests.e2e.lan import Lan, lan, lan_unavailable
from tests.e2e.vm import VM, qemu_available

NODES = {  # hostname -> MAC (config/netdeploy.toml)
    "sql-n1": "52:54:00:00:10:01",
    "sql-n2": "52:54:00:00:10:02",
    "sql-n3": "52:54:00:00:10:03",
}
LOSSY = "sql-n3"
GROUP = "239.255.78.1"
SIZE_MIB = 32

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(qemu_available() is not None, reason=str(qemu_available())),
    pytest.mark.skipif(lan_unavailable() is not None, reason=str(lan_unavailable())),
    pytest.mark.skipif(shutil.which("mtype") is None, reason="needs mtools"),
    pytest.mark.skipif(shutil.which("apt-get") is None, reason="media build needs apt-get"),
]


def multicast_config(path: Path) -> Path:
    """The demo lab with its cluster on multicast at 100 Mbit/s (the issue's rack); a receiver
    that loses more than 5 % is dropped from the session and finishes by HTTP."""
    cluster = '[clusters.sqlclu]\nimage = "w2k3-ent-sp1"\n'
    # sql-n3 is a DL380 in the demo lab; here a QEMU guest whose agent reports a virtio
    # controller, which the dl380-g4 profile has no driver for (issue 18)
    dl380 = 'hardware = "dl380-g4"\nvars = { ip = "10.88.0.13" }'
    return demo_variant(
        path,
        {
            cluster: cluster + 'distribution = "multicast"\n',
            dl380: dl380.replace("dl380-g4", "qemu-virtio"),
        },
        "\n[multicast]\nmax_rate = 100\nmax_wait = 300\nslow_receiver_loss = 0.05\n",
    )


def node(net: Lan, host: str) -> dict[str, Any]:
    nodes = net.get_json("/api/nodes")["nodes"]  # type: ignore[index]
    return next(n for n in nodes if n["hostname"] == host)


def wait_until(net: Lan, vms: dict[str, VM], done, what: str, timeout: float = 420) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not done():
        for host, vm in vms.items():
            if node(net, host)["state"] == "failed":
                raise AssertionError(f"{host} failed: {node(net, host)}\n{vm.text()[-3000:]}")
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {h}\n{vm.text()[-1500:]}" for h, vm in vms.items())
            raise AssertionError(f"not {what} after {timeout}s\n{tails}")
        time.sleep(1)


@pytest.mark.timeout(900)
def test_cluster_imaged_by_one_multicast_stream(media, tmp_path):
    state_dir = tmp_path / "state"
    master = tmp_path / "master.img"
    built = make_image(master, size_mib=SIZE_MIB)
    add_image(state_dir, master)
    config = multicast_config(tmp_path / "netdeploy.toml")
    disks = {host: blank_disk(tmp_path / f"{host}.img") for host in NODES}
    vms: dict[str, VM] = {}
    with lan(tmp_path, taps=len(NODES)) as net:
        try:
            net.serve(config, state_dir)
            admin = (state_dir / "admin-token").read_text().strip()
            net.lose(f"tap{list(NODES).index(LOSSY)}", 30, GROUP)  # 3 % of IP fragments
            for i, (host, mac) in enumerate(NODES.items()):
                vm = VM(host, mac, tmp_path / f"{host}.log", disk=disks[host])
                vm.tap, vm.netns = f"tap{i}", net.netns
                vms[host] = vm.start()

            # the first node is released at once and reboots (QEMU exits); the others are
            # held at the gate: all three were imaged, verified and personalised
            def all_imaged() -> bool:
                held = all(vms[h].saw("waiting at the gate") for h in ("sql-n2", "sql-n3"))
                return held and vms["sql-n1"].proc.poll() is not None  # type: ignore[union-attr]

            wait_until(net, vms, all_imaged, "imaged")
            states = {h: node(net, h)["state"] for h in NODES}
            assert states == {"sql-n1": "starting", "sql-n2": "held", "sql-n3": "held"}

            # one session for the cluster; the lossy node was dropped and finished by HTTP
            [session] = net.request("/api/multicast/sessions", token=admin)["finished"]  # type: ignore[index]
            receivers = {r["mac"]: r for r in session["receivers"]}
            assert session["cluster"] == "sqlclu" and session["expected"] == 3
            assert {mac: receivers[mac]["state"] for mac in NODES.values()} == {
                NODES["sql-n1"]: "done",
                NODES["sql-n2"]: "done",
                NODES[LOSSY]: "dropped",
            }, session
            # sent once with repairs, not once per node (unicast would be 3x)
            assert session["bytes_sent"] < 1.5 * built["size"], session

            log = net.request("/api/events/log?limit=1000", token=admin)
            verified = {
                e["mac"]: e["detail"]["message"]
                for e in log["events"]  # type: ignore[index]
                if "verified sha256=" in (e["detail"].get("message") or "")
            }
            for mac in NODES.values():
                assert f"verified sha256={built['sha256']} (multicast session" in verified[mac]
            assert "missing byte ranges by HTTP" in verified[NODES[LOSSY]]
            assert vms[LOSSY].saw("fetching them by HTTP")
        finally:
            for vm in vms.values():
                vm.kill()

    # every disk holds the master's files and its own answer file; a held disk keeps its EFI
    # loaders aside until release, netdeploy's hold stub in their place (issue 21)
    for host, disk in disks.items():
        for name, data in built["files"].items():
            kept = (
                read_file(disk, f"EFI/netdeploy/held/{name}") if name.startswith("EFI/") else None
            )
            got = kept if kept is not None else read_file(disk, name)
            assert got == data, f"{host}: {name} differs from the master"
        sysprep = read_file(disk, "sysprep/sysprep.inf")
        assert sysprep is not None, f"{host}: no sysprep.inf injected"
        assert f"computername={host}" in sysprep.decode("cp1252").lower(), host
