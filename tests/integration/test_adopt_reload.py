"""From discovered machine to inventory (issue 18), at API level against the real app:
hardware facts kept and shown, `adopt` and `reload` through the running server (validated, all
or nothing), and the seed's driver rule in the boot decision."""

from __future__ import annotations

import re
import secrets
from pathlib import Path

import aiohttp
from sqlalchemy import select

from netdeploy.inventory import mac_hyphens
from netdeploy.store.models import Event, Node
from tests.conftest import demo_variant
from tests.integration.dashboard_helpers import csrf_of
from tests.integration.rollout_support import in_process_server

UNKNOWN = "52:54:00:00:99:01"
QEMU_PC = "Standard PC (i440FX + PIIX, 1996)"
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
AHCI = {**VIRTIO_BLK, "vendor": "8086", "device": "2922", "class": "010601", "disks": ["sda"]}


def facts(*storage: dict) -> dict:
    return {
        "smbios": {"vendor": "QEMU", "product": QEMU_PC, "serial": "", "uuid": "u-1"},
        "firmware": "bios",
        "cpus": 1,
        "cpu_model": "QEMU Virtual CPU",
        "memory_mib": 488,
        "disks": [{"name": "vda", "size_bytes": 1 << 28, "model": "", "bus": "virtio"}],
        "nics": [{"name": "eth0", "mac": UNKNOWN, "driver": "virtio_net", "link": "up"}],
        "storage": list(storage),
    }


def lab(tmp_path: Path) -> Path:
    """The demo config (it includes nodes.d/*.toml) with its state in ``tmp_path``."""
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    return demo_variant(tmp_path / "netdeploy.toml", replace={'"../var"': f'"{state}"'})


async def boot(http: aiohttp.ClientSession, url: str, mac: str) -> tuple[str, str]:
    """Fetch the per-MAC iPXE script as the firmware does: (nd.mode, nd.token)."""
    async with http.get(f"{url}/boot/{mac_hyphens(mac)}.ipxe") as resp:
        assert resp.status == 200
        script = await resp.text()
    mode = re.search(r"nd\.mode=(\w+)", script)
    token = re.search(r"nd\.token=(\S+)", script)
    assert mode and token, script
    return mode.group(1), token.group(1)


async def claim(http: aiohttp.ClientSession, url: str, mac: str, token: str) -> str:
    """Claim the node as the agent does (issue 22): the boot token, a secret of its own; the
    secret, which the agent then speaks with on every agent route."""
    secret = secrets.token_hex(24)
    headers = {"Authorization": f"Bearer {token}"}
    body = {"secret": secret}
    async with http.post(f"{url}/api/nodes/{mac}/claim", json=body, headers=headers) as resp:
        assert resp.status == 200, await resp.text()
    return secret


async def boot_and_claim(http: aiohttp.ClientSession, url: str, mac: str) -> tuple[str, str]:
    """Boot as the firmware does, then claim as the agent does: (nd.mode, the agent's secret)."""
    mode, token = await boot(http, url, mac)
    return mode, await claim(http, url, mac, token)


async def post_facts(http, url: str, mac: str, token: str, body: dict) -> tuple[int, dict]:  # type: ignore[no-untyped-def]
    headers = {"Authorization": f"Bearer {token}"}
    async with http.post(f"{url}/api/nodes/{mac}/facts", json=body, headers=headers) as resp:
        return resp.status, await resp.json()


async def test_an_unknown_machine_reports_facts_and_is_adopted_without_a_restart(
    tmp_path: Path,
) -> None:
    config = lab(tmp_path)
    async with in_process_server(config) as srv, aiohttp.ClientSession() as http:
        admin = {"Authorization": f"Bearer {srv.ctx.admin_token}"}
        mode, secret = await boot_and_claim(http, srv.url, UNKNOWN)
        assert mode == "discover"
        wrong = secrets.token_hex(24)  # well-formed, not this node's claim
        status, _ = await post_facts(http, srv.url, UNKNOWN, wrong, facts(VIRTIO_BLK))
        assert status == 403
        status, _ = await post_facts(http, srv.url, UNKNOWN, "wrong", facts(VIRTIO_BLK))
        assert status == 401  # malformed: refused before anything else
        status, kept = await post_facts(http, srv.url, UNKNOWN, secret, facts(VIRTIO_BLK))
        assert status == 200 and kept["facts"]["storage"][0]["device"] == "1001"
        async with http.get(f"{srv.url}/api/nodes/{UNKNOWN}", headers=admin) as resp:
            assert resp.status == 200, await resp.text()
            node = await resp.json()
        assert node["state"] == "discovered"
        assert node["facts"]["smbios"]["product"] == QEMU_PC
        assert node["facts"]["storage"][0]["vendor"] == "1af4"

        body = {"hostname": "sql-n4", "cluster": "sqlclu", "hardware": "auto", "actor": "t"}
        async with http.post(
            f"{srv.url}/api/admin/nodes/{UNKNOWN}/adopt", json=body, headers=admin
        ) as resp:
            assert resp.status == 200, await resp.text()
            result = await resp.json()
        written = tmp_path / "nodes.d" / "sql-n4.toml"
        assert result["file"] == str(written) and written.exists()
        assert f"node {UNKNOWN} (sql-n4)" in result["updated"]
        assert 'hardware = "auto"' in written.read_text()
        assert srv.ctx.config.node_by_mac(UNKNOWN) is not None  # the live config, no restart

        mode, secret = await boot_and_claim(http, srv.url, UNKNOWN)
        assert mode == "image"
        plan_url = f"{srv.url}/api/nodes/{UNKNOWN}/plan"
        async with http.get(plan_url, headers={"Authorization": f"Bearer {secret}"}) as resp:
            assert resp.status == 200, await resp.text()
            plan = await resp.json()
        assert plan["hostname"] == "sql-n4" and plan["hardware"] == "qemu-virtio"
        assert {t["file"] for t in plan["inject"]} >= {"sysprep.inf"}  # its own answer files
        files = f"{srv.url}/nodes/{mac_hyphens(UNKNOWN)}/files/sysprep.inf?token={secret}"
        async with http.get(files) as resp:
            sysprep = await resp.text()
        assert resp.status == 200, sysprep
        assert "SQL-N4" in sysprep and "VEN_1AF4&DEV_1001" in sysprep  # the matched profile


async def test_adopt_refuses_a_machine_whose_controller_has_no_driver_and_changes_nothing(
    tmp_path: Path,
) -> None:
    config = lab(tmp_path)
    async with in_process_server(config) as srv, aiohttp.ClientSession() as http:
        admin = {"Authorization": f"Bearer {srv.ctx.admin_token}"}
        _, secret = await boot_and_claim(http, srv.url, UNKNOWN)
        assert (await post_facts(http, srv.url, UNKNOWN, secret, facts(AHCI)))[0] == 200
        body = {"hostname": "sql-n4", "cluster": "sqlclu", "hardware": "auto"}
        async with http.post(
            f"{srv.url}/api/admin/nodes/{UNKNOWN}/adopt", json=body, headers=admin
        ) as resp:
            assert resp.status == 422
            refused = await resp.json()
        assert any("8086:2922" in p and "qemu-virtio" in p for p in refused["problems"])
        assert not (tmp_path / "nodes.d" / "sql-n4.toml").exists()
        assert list((tmp_path / "nodes.d").iterdir()) == []  # no temporary left behind either
        hostile = {"hostname": "../../evil", "cluster": "sqlclu"}
        async with http.post(
            f"{srv.url}/api/admin/nodes/{UNKNOWN}/adopt", json=hostile, headers=admin
        ) as resp:
            assert resp.status == 400 and "not a host name" in (await resp.json())["error"]
        assert not list(tmp_path.rglob("*evil*"))
        async with http.post(f"{srv.url}/api/admin/nodes/{UNKNOWN}/adopt", json=body) as resp:
            assert resp.status == 401  # the admin token, always
        assert srv.ctx.config.node_by_mac(UNKNOWN) is None
        async with srv.ctx.sessions() as session:
            assert (await session.get(Node, UNKNOWN)).state == "discovered"


async def test_reload_applies_a_hand_edit_and_an_invalid_config_changes_nothing(
    tmp_path: Path,
) -> None:
    config = lab(tmp_path)
    async with in_process_server(config) as srv, aiohttp.ClientSession() as http:
        admin = {"Authorization": f"Bearer {srv.ctx.admin_token}"}
        url = f"{srv.url}/api/admin/reload"
        async with http.post(url, headers=admin) as resp:
            assert resp.status == 200 and (await resp.json())["added"] == []
        (tmp_path / "nodes.d").mkdir()
        extra = tmp_path / "nodes.d" / "web-2.toml"
        extra.write_text(
            f'[[nodes]]\nmac = "{UNKNOWN}"\nhostname = "web-2"\nimage = "debian-12"\n'
            'answer_files = ["cloud-init.yaml"]\n'
            'vars = { ip = "10.88.0.22", domain = "lab.example", timezone_name = "Etc/UTC", '
            'root_password_hash = "$6$x$y" }\n'
        )
        async with http.post(url, headers=admin) as resp:
            assert resp.status == 200, await resp.text()
            assert f"node {UNKNOWN} (web-2)" in (await resp.json())["added"]
        async with srv.ctx.sessions() as session:
            assert (await session.get(Node, UNKNOWN)).state == "registered"
        before = srv.ctx.config

        # a broken edit in two files: a bad host name in the inventory file, a typo in the main
        extra.write_text(
            f'[[nodes]]\nmac = "{UNKNOWN}"\nhostname = "web_2!"\nimage = "debian-12"\n'
        )
        text = config.read_text().replace('hostname = "sql-n3"', 'hostname = "sql-n3"\nbogus = 1')
        config.write_text(text)
        async with http.post(url, headers=admin) as resp:
            assert resp.status == 422
            problems = (await resp.json())["problems"]
        assert any(p.startswith(f"{extra}:3: nodes[0].hostname") for p in problems), problems
        assert any(p.startswith(f"{config}:") and "bogus" in p for p in problems), problems
        assert srv.ctx.config is before
        async with srv.ctx.sessions() as session:
            nodes = {n.mac: n for n in await session.scalars(select(Node))}
            refusals = (await session.scalars(select(Event).where(Event.kind == "config"))).all()
        assert nodes[UNKNOWN].hostname == "web-2" and "52:54:00:00:10:03" in nodes
        assert any("refused" in (e.detail or {}) for e in refusals)


async def test_the_boot_decision_refuses_a_node_whose_controller_has_no_driver(
    tmp_path: Path,
) -> None:
    config = lab(tmp_path)
    text = config.read_text().replace(
        'hostname = "sql-n1"\ncluster = "sqlclu"\nhardware = "qemu-virtio"',
        'hostname = "sql-n1"\ncluster = "sqlclu"\nhardware = "auto"',
    )
    config.write_text(text)
    sql_n1 = "52:54:00:00:10:01"
    async with in_process_server(config) as srv, aiohttp.ClientSession() as http:
        mode, secret = await boot_and_claim(http, srv.url, sql_n1)
        assert mode == "image"  # no facts yet: today's behaviour
        assert (await post_facts(http, srv.url, sql_n1, secret, facts(AHCI)))[0] == 200
        plan_url = f"{srv.url}/api/nodes/{sql_n1}/plan"
        async with http.get(plan_url, headers={"Authorization": f"Bearer {secret}"}) as resp:
            assert resp.status == 200, await resp.text()
            plan = await resp.json()
        assert plan["mode"] == "error" and plan["missing_drivers"] == ["8086:2922"]
        assert "PCI\\VEN_8086&DEV_2922" in plan["why"]
        mode, _ = await boot(http, srv.url, sql_n1)
        assert mode == "wait"  # never the imaging agent while the driver is missing
        async with srv.ctx.sessions() as session:
            last = await session.scalar(
                select(Event)
                .where(Event.kind == "boot", Event.mac == sql_n1)
                .order_by(Event.id.desc())
                .limit(1)
            )
        assert "8086:2922" in last.detail["why"]
        # the fix: a driver for the AHCI controller in the profile, then a reload
        driver = (
            '[[hardware.qemu-virtio.mass_storage]]\nhardware_id = "PCI\\\\VEN_8086&DEV_2922"\n'
            'inf = "C:\\\\Drivers\\\\ahci\\\\iaahci.inf"\n'
        )
        match = "[hardware.qemu-virtio.match]"
        config.write_text(config.read_text().replace(match, driver + match))
        admin = {"Authorization": f"Bearer {srv.ctx.admin_token}"}
        async with http.post(f"{srv.url}/api/admin/reload", headers=admin) as resp:
            assert resp.status == 200, await resp.text()
        mode, _ = await boot(http, srv.url, sql_n1)
        assert mode == "image"


async def test_the_dashboard_shows_the_facts_and_adopts_with_the_same_validation(
    tmp_path: Path,
) -> None:
    config = lab(tmp_path)
    async with in_process_server(config) as srv:
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(cookie_jar=jar) as http:
            _, secret = await boot_and_claim(http, srv.url, UNKNOWN)
            assert (await post_facts(http, srv.url, UNKNOWN, secret, facts(AHCI)))[0] == 200
            login = {"token": srv.ctx.admin_token}
            async with http.post(f"{srv.url}/login", data=login) as resp:
                page = await resp.text()
            assert "<code>8086:2922</code> (sda)" in page and 'action="/actions/adopt"' in page
            csrf = csrf_of(page)
            form = {"csrf": csrf, "mac": UNKNOWN, "hostname": "sql-n4", "cluster": "sqlclu"}
            headers = {"Accept": "application/json", "Origin": srv.url}
            async with http.post(
                f"{srv.url}/actions/adopt", data={**form, "hardware": "auto"}, headers=headers
            ) as resp:
                assert resp.status == 422
                assert "8086:2922" in (await resp.json())["error"]
            assert not (tmp_path / "nodes.d" / "sql-n4.toml").exists()
            virtio_box = "52:54:00:00:99:02"
            _, secret = await boot_and_claim(http, srv.url, virtio_box)
            status, _ = await post_facts(http, srv.url, virtio_box, secret, facts(VIRTIO_BLK))
            assert status == 200
            async with http.post(
                f"{srv.url}/actions/adopt",
                data={**form, "mac": virtio_box, "hardware": "auto"},
                headers=headers,
            ) as resp:
                assert resp.status == 200, await resp.text()
            assert (tmp_path / "nodes.d" / "sql-n4.toml").exists()
            assert srv.ctx.config.node_by_hostname("sql-n4").mac == virtio_box
