"""A released node's next PXE boots reach its own disk on every firmware (issue 16).

The node is put in ``released`` in the store; each guest then PXE-boots twice from a real
``netdeploy serve`` and must run the image's own boot code both times (the image's MBR code
prints ``NETDEPLOY-LOCAL-DISK-BOOT`` under SeaBIOS, its ``EFI/BOOT/BOOTX64.EFI`` prints
``NETDEPLOY-LOCAL-DISK-BOOT-EFI`` under OVMF), never the agent and never a PXE loop:

- SeaBIOS + QEMU's iPXE ROM: ``sanboot --drive 0x80``;
- OVMF + QEMU's iPXE EFI ROM: sanboot fails (no BIOS drives), the per-MAC script exits with an
  error, the first stage hands it back to the firmware, which boots the disk's EFI loader;
- the same two over a LAN whose DHCP server knows nothing of PXE, through our ProxyDHCP, the
  UEFI guest with OVMF's own PXE client (``media/snponly.efi`` chainloaded by TFTP).
"""

from __future__ import annotations

import asyncio
import importlib.util
import shutil
from pathlib import Path

import pytest
from sqlalchemy import select

from netdeploy.config import load_config
from netdeploy.rollout.inventory import import_config
from netdeploy.rollout.state import set_state
from netdeploy.store import open_store
from netdeploy.store.models import Node
from tests.conftest import build_media, demo_variant, free_port, start_server
from tests.e2e.diskimage import EFI_BOOT_MARKER, LOCAL_BOOT_MARKER, make_image
from tests.e2e.lan import lan, lan_unavailable
from tests.e2e.vm import VM, ovmf_available, qemu_available

SQL_N1 = "52:54:00:00:10:01"
SQL_N2 = "52:54:00:00:10:02"

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(qemu_available() is not None, reason=str(qemu_available())),
    pytest.mark.skipif(shutil.which("mcopy") is None, reason="needs mtools"),
    pytest.mark.skipif(shutil.which("mkfs.vfat") is None, reason="needs dosfstools"),
]
needs_ovmf = pytest.mark.skipif(ovmf_available() is not None, reason=str(ovmf_available()))


def release_in_store(config: Path, state_dir: Path, macs: tuple[str, ...]) -> None:
    """Import the config and put ``macs`` in ``starting``: released, with the disk's own boot code
    put back by the agent (issue 21: a ``released`` node boots the agent once for that)."""

    async def run() -> None:
        cfg = load_config(config, state_dir=state_dir)
        engine, sessions = await open_store(cfg.database_url)
        try:
            await import_config(sessions, cfg)
            async with sessions() as session, session.begin():
                for node in await session.scalars(select(Node).where(Node.mac.in_(macs))):
                    set_state(session, node, "starting", reason="test: released", force=True)
                    node.release_seq = 0
        finally:
            await engine.dispose()

    state_dir.mkdir(parents=True, exist_ok=True)
    asyncio.run(run())


def boot_twice(make_vm, marker: str, wait: float = 300) -> list[str]:  # type: ignore[no-untyped-def]
    """Power the guest on twice; each time it must reach its disk's boot code within ``wait`` s."""
    texts = []
    for round_ in (1, 2):
        vm = make_vm(round_).start()
        try:
            code = vm.wait(wait)  # OVMF tries every NIC boot entry first: ~25-190 s under TCG
        finally:
            vm.kill()
        text = vm.text()
        assert code == 3 and marker in text, f"{vm.name}: exit {code}\n{text[-3000:]}"
        assert "nd.mode" not in text and "rebooting in" not in text, text[-3000:]
        texts.append(text)
    return texts


@pytest.fixture(scope="module")
def disk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("local-boot") / "released.img"
    make_image(path, size_mib=16)
    return path


@pytest.fixture(scope="module")
def slirp_server(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    work = tmp_path_factory.mktemp("local-boot-slirp")
    config = demo_variant(work / "netdeploy.toml")
    release_in_store(config, work / "state", (SQL_N1,))
    port = free_port()
    server = start_server(
        work / "state",
        config=config,
        http_port=port,
        extra=("--public-url", f"http://10.0.2.2:{port}"),
    )
    yield server
    server.stop()


def test_seabios_boots_the_released_disk_twice(slirp_server, disk: Path, tmp_path: Path) -> None:
    bootfile = f"{slirp_server.url.replace('127.0.0.1', '10.0.2.2')}/boot.ipxe"
    texts = boot_twice(
        lambda n: VM(f"bios-{n}", SQL_N1, tmp_path / f"bios-{n}.log", disk=disk, bootfile=bootfile),
        LOCAL_BOOT_MARKER,
    )
    assert all("local: starting: past release" in t for t in texts)


@needs_ovmf
def test_ovmf_boots_the_released_disk_twice(slirp_server, disk: Path, tmp_path: Path) -> None:
    bootfile = f"{slirp_server.url.replace('127.0.0.1', '10.0.2.2')}/boot.ipxe"
    texts = boot_twice(
        lambda n: VM(
            f"uefi-{n}", SQL_N1, tmp_path / f"uefi-{n}.log", disk=disk, bootfile=bootfile, uefi=True
        ),
        EFI_BOOT_MARKER,
    )
    for text in texts:
        assert "returning to the firmware" in text and "back to the firmware" in text


@pytest.fixture(scope="module")
def proxy_lan(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    reason = lan_unavailable()
    if reason:
        pytest.skip(reason)
    build_media()
    work = tmp_path_factory.mktemp("local-boot-lan")
    config = demo_variant(
        work / "netdeploy.toml", append='\n[dhcp]\nproxy = true\ninterface = "br0"\n'
    )
    release_in_store(config, work / "state", (SQL_N1, SQL_N2))
    with lan(work, taps=2, dhcp="udhcpd") as network:
        network.serve(config, work / "state", tftp_port=69)
        yield network


def test_seabios_through_proxydhcp_boots_the_released_disk_twice(
    proxy_lan, disk: Path, tmp_path: Path
) -> None:
    boot_twice(
        lambda n: VM(
            f"pbios-{n}",
            SQL_N1,
            tmp_path / f"pbios-{n}.log",
            disk=disk,
            tap="tap0",
            netns=proxy_lan.netns,
        ),
        LOCAL_BOOT_MARKER,
    )


# OVMF tries UEFI HTTP boot after PXE; this branch's ProxyDHCP does not ask the boot plan and
# offers media/ipxe.efi, whose exit back to the firmware hangs (Debian iPXE 20190125), so the
# disk is never reached. Main's ProxyDHCP (issue 14, netdeploy/boot/programs.py) answers a LOCAL
# plan with silence; with it, this test runs.
PROXY_ASKS_THE_PLAN = importlib.util.find_spec("netdeploy.boot.programs") is not None


@needs_ovmf
@pytest.mark.xfail(
    not PROXY_ASKS_THE_PLAN,
    run=False,
    reason="needs the ProxyDHCP to answer a LOCAL plan with silence (main, issue 14)",
)
# Silence costs time: OVMF waits ~60 s for a PXE offer, then tries HTTP boot over IPv4 and
# IPv6 (~60 s each) before its disk entry, so one boot takes ~190 s under TCG and two need more
# than the suite's 300 s (it timed out there in session 3, on a quiet host too).
@pytest.mark.timeout(1200)
def test_ovmf_own_pxe_through_proxydhcp_boots_the_released_disk_twice(
    proxy_lan, disk: Path, tmp_path: Path
) -> None:
    boot_twice(  # by silence from the proxy or by iPXE's exit: the disk, never the agent
        lambda n: VM(
            f"puefi-{n}",
            SQL_N2,
            tmp_path / f"puefi-{n}.log",
            disk=disk,
            tap="tap1",
            netns=proxy_lan.netns,
            uefi=True,
            nic_rom=False,
        ),
        EFI_BOOT_MARKER,
        wait=540,
    )
