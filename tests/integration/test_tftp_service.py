"""TFTP inside the running server: dual-stack bind, the boot seam, events and metrics."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select

from netdeploy.boot.service import BootService
from netdeploy.config import DEMO_CONFIG, load_config
from netdeploy.context import Context, Ports, ServiceError
from netdeploy.server import open_context
from netdeploy.store.models import Event, Node
from netdeploy.tftp import service as tftp_service
from tests.integration.conftest_tftp import make_root, need, run

KNOWN_MAC = "52:54:00:00:10:01"  # sql-n1 in the demo config


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
        sock.bind(("::", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def ctx(tmp_path: Path) -> Context:
    cfg = load_config(
        DEMO_CONFIG,
        state_dir=tmp_path / "state",
        database=f"sqlite:///{tmp_path}/db.sqlite",
        bootfiles_dir=make_root(tmp_path),
        bind="0.0.0.0",
    )
    context = await open_context(cfg, Ports(http=free_udp_port(), tftp=free_udp_port()))
    async with context.sessions() as session:
        node = await session.get(Node, KNOWN_MAC)
        assert node is not None
        node.last_ip = "127.0.0.1"
        await session.commit()
    yield context
    await context.close()


async def start_tftp(ctx: Context):  # type: ignore[no-untyped-def]
    """TFTP as the composition root starts it: over a boot service."""
    return await tftp_service.start(ctx, BootService(ctx))


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_serve_runs_tftp_on_both_stacks_with_events_and_metrics(
    ctx: Context, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    curl = need("curl")
    asked: list[tuple[str, str]] = []

    async def virtual_file(_boot: BootService, path: str, client_ip: str) -> bytes | None:
        asked.append((path, client_ip))
        return b"#!ipxe\necho per-MAC\n" if path == "pxelinux.cfg/01-52-54-00-00-10-01" else None

    monkeypatch.setattr(tftp_service, "virtual_file", virtual_file)
    ok_before = sample("netdeploy_tftp_transfers_total", outcome="ok")
    bytes_before = sample("netdeploy_tftp_sent_bytes_total")
    listener = ctx.bus.subscribe()
    stop = await start_tftp(ctx)
    try:
        port = ctx.ports.tftp
        root = ctx.config.server.bootfiles_dir
        for host, name in (
            ("127.0.0.1", "odd.bin"),
            ("[::1]", "odd.bin"),
            ("127.0.0.1", "pxelinux.cfg/01-52-54-00-00-10-01"),
        ):
            out = tmp_path / "out"
            rc, text = await run(curl, "-sS", "-o", str(out), f"tftp://{host}:{port}/{name}")
            assert rc == 0, text
            expected = (
                (root / name).read_bytes() if name == "odd.bin" else b"#!ipxe\necho per-MAC\n"
            )
            assert out.read_bytes() == expected
        events = []
        async with asyncio.timeout(10):
            async for item in listener:
                events.append(item)
                if len(events) == 3:
                    break
    finally:
        listener.close()
        await stop()
    assert asked == [
        ("odd.bin", "127.0.0.1"),
        ("odd.bin", "::1"),
        ("pxelinux.cfg/01-52-54-00-00-10-01", "127.0.0.1"),
    ]
    assert [(e["kind"], e["mac"]) for e in events] == [
        ("tftp", KNOWN_MAC),  # 127.0.0.1 is sql-n1's last_ip
        ("tftp", None),  # ::1 is no node's address
        ("tftp", KNOWN_MAC),
    ]
    assert events[2]["detail"]["virtual"] is True
    assert events[0]["detail"]["bytes"] == 700_001 and events[0]["detail"]["outcome"] == "ok"
    async with ctx.sessions() as session:
        rows = (await session.scalars(select(Event).where(Event.kind == "tftp"))).all()
    assert len(rows) == 3  # recorded in the store, not only published
    assert sample("netdeploy_tftp_transfers_total", outcome="ok") - ok_before == 3
    assert sample("netdeploy_tftp_sent_bytes_total") - bytes_before == 2 * 700_001 + 20


async def test_a_taken_port_is_a_clear_error(ctx: Context) -> None:
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as taken:
        taken.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        taken.bind(("::", ctx.ports.tftp))
        with pytest.raises(
            ServiceError, match=r"cannot listen for TFTP on 0.0.0.0:\d+: .*--tftp-port"
        ):
            await start_tftp(ctx)
