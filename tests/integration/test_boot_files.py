"""Answer files over real HTTP with curl: token rules, every demo file read back, static files."""

from __future__ import annotations

import asyncio
import configparser
import json
import re
import secrets
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import yaml

from netdeploy.boot.tftp import virtual_file
from netdeploy.inventory import NodeState, mac_hyphens
from netdeploy.tokens import token_matches
from tests.integration.conftest_boot import (
    ROOT,
    Server,
    agent_credential,
    boot_server,
    claim,
    curl,
    need,
    token_in,
)

SQL_N1, SQL_N2 = "52:54:00:00:10:01", "52:54:00:00:10:02"


async def boot(srv: Server, mac: str) -> str:
    """Boot as the agent does: fetch the boot script (as iPXE), claim the node with its token
    and a secret of our own; return the secret, the agent's credential for this phase."""
    return await agent_credential(srv.url, mac_hyphens(mac))


async def boot_token_of(srv: Server, mac: str) -> str:
    """Only the boot script's token, unclaimed."""
    got = await curl(f"{srv.url}/boot/{mac_hyphens(mac)}.ipxe")
    assert got.status == 200
    return token_in(got.text)


async def secrets_hex() -> str:
    return secrets.token_hex(24)


def files_url(srv: Server, mac: str, name: str) -> str:
    return f"{srv.url}/nodes/{mac_hyphens(mac)}/files/{name}"


async def test_secret_file_token_rules(tmp_path: Path) -> None:
    async with boot_server(tmp_path) as srv:
        boot_token = await boot_token_of(srv, SQL_N1)
        url = files_url(srv, SQL_N1, "sysprep.inf")
        refused = await curl(url)
        assert refused.status == 401 and "node credential" in refused.text
        # the boot token alone opens nothing (anyone can fetch a boot script) and alarms
        unclaimed = await curl(url, "-H", f"Authorization: Bearer {boot_token}")
        assert unclaimed.status == 403 and "without a claim" in unclaimed.text
        secret = await secrets_hex()
        assert (await claim(srv.url, SQL_N1, boot_token, secret)).status == 200
        served = await curl(url, "-H", f"Authorization: Bearer {secret}")
        assert served.status == 200
        assert "Cache-Control: no-store" in served.headers
        assert b'AdminPassword="Demo-Only-Admin-1"' in served.body
        report = re.search(rb"report\.vbs \S+ (\S+) health", served.body)
        assert report, served.body  # the GuiRunOnce report carries the report token ...
        assert report.group(1) not in (secret.encode(), boot_token.encode())  # ... its own
        node = await srv.node(SQL_N1)
        assert node is not None and token_matches(report.group(1).decode(), node.report_token)
        again = await curl(url, "-H", f"Authorization: Bearer {secret}")
        assert again.status == 403 and "already served" in again.text
        # the same claim still opens each other secret file once (query form for iPXE/wget)
        xml = await curl(files_url(srv, SQL_N1, "unattend.xml") + f"?token={secret}")
        assert xml.status == 200
        other = await boot(srv, SQL_N2)
        cross = await curl(
            files_url(srv, SQL_N2, "sysprep.inf"), "-H", f"Authorization: Bearer {secret}"
        )
        assert cross.status == 403 and "wrong or stale" in cross.text
        assert (await curl(files_url(srv, SQL_N2, "sysprep.inf") + f"?token={other}")).status == 200
        new = await boot(srv, SQL_N1)  # a reboot: new script, new claim; the old one is stale
        stale = await curl(files_url(srv, SQL_N1, "unattend.xml") + f"?token={secret}")
        assert stale.status == 403 and "earlier boot phase" in stale.text  # two machines?
        assert (await curl(files_url(srv, SQL_N1, "unattend.xml") + f"?token={new}")).status == 200
        await asyncio.sleep(1)  # declared auth's refusals are written off the request path
        auth = await srv.events("auth")
        assert all(e.detail.get("ip") == "127.0.0.1" for e in auth)  # who asked
        routes = [e.detail["route"] for e in auth]
        assert routes.count("/nodes/{mac}/files/{name}") == 1  # the 401 of declared auth
        assert [
            (e.mac, e.detail["route"]) for e in auth if e.detail["route"].startswith("file")
        ] == [
            (SQL_N1, "file sysprep.inf"),
            (SQL_N1, "file sysprep.inf"),
            (SQL_N2, "file sysprep.inf"),
            (SQL_N1, "file unattend.xml"),
        ]
        alarms = await srv.events("alarm")
        assert [e.mac for e in alarms] == [SQL_N1, SQL_N1]
        every = json.dumps([e.detail for e in await srv.events()])
        for value in (boot_token, secret, other, new, "Demo-Only-Admin-1", "Demo-Only-Secret-1"):
            assert value not in every  # never recorded


async def test_secret_files_only_while_imaging(tmp_path: Path) -> None:
    async with boot_server(tmp_path) as srv:
        token = await boot(srv, SQL_N1)
        await srv.force_state(SQL_N1, NodeState.HELD)
        got = await curl(files_url(srv, SQL_N1, "sysprep.inf") + f"?token={token}")
        assert got.status == 403 and "only while imaging" in got.text


async def test_plain_files_need_the_claim_and_the_listing_is_read_access(tmp_path: Path) -> None:
    async with boot_server(tmp_path) as srv:
        secret = await boot(srv, SQL_N2)
        for name in ("AssignDriveLetters.bat", "diskpartparams.txt", "report.vbs"):
            assert (await curl(files_url(srv, SQL_N2, name))).status == 401, name
            got = await curl(files_url(srv, SQL_N2, name), "-H", f"Authorization: Bearer {secret}")
            assert got.status == 200, name
        listing_url = f"{srv.url}/nodes/{SQL_N2}/files"
        assert (await curl(listing_url)).status == 401  # [dashboard] public_read = false
        admin = f"Authorization: Bearer {srv.ctx.admin_token}"
        listing = json.loads((await curl(listing_url, "-H", admin)).body)
        assert [(f["name"], f["secret"]) for f in listing["files"]] == [
            ("sysprep.inf", True),
            ("unattend.xml", True),
            ("AssignDriveLetters.bat", False),
            ("diskpartparams.txt", False),
            ("report.vbs", False),
        ]
        bearer = f"Authorization: Bearer {secret}"
        assert (await curl(files_url(srv, SQL_N2, "cloud-init.yaml"), "-H", bearer)).status == 404
        bad = files_url(srv, SQL_N2, "..%2Fnetdeploy.toml")
        assert (await curl(bad, "-H", bearer)).status == 404
        unknown = await curl(f"{srv.url}/nodes/aa-bb-cc-dd-ee-ff/files/sysprep.inf", "-H", bearer)
        assert unknown.status == 404 and "not in the config" in unknown.text


async def test_every_demo_file_through_a_real_server(tmp_path: Path) -> None:
    """curl fetches every per-node file of the demo lab; real parsers read each one back."""
    debconf = shutil.which("debconf-set-selections")
    async with boot_server(tmp_path, public_url="http://10.0.2.2:8080") as srv:
        cfg = srv.ctx.config
        fetched = 0
        for node in cfg.nodes:
            token = await boot(srv, node.mac)
            for name in cfg.answer_files_for(node):
                got = await curl(
                    files_url(srv, node.mac, name), "-H", f"Authorization: Bearer {token}"
                )
                assert got.status == 200, (node.hostname, name, got.text)
                fetched += 1
                if name.endswith((".inf", ".bat", ".txt", ".vbs")):
                    assert b"\n" not in got.body.replace(b"\r\n", b""), name  # CRLF only
                    text = got.body.decode("cp1252")
                else:
                    text = got.text
                if name == "sysprep.inf":
                    ini = configparser.ConfigParser(interpolation=None, strict=True)
                    ini.optionxform = str  # type: ignore[assignment,method-assign]
                    ini.read_string(text)
                    assert ini["UserData"]["ComputerName"] == node.hostname.upper()
                    run_once = list(ini["GuiRunOnce"].values())  # the report runs last
                    assert "http://10.0.2.2:8080/api/nodes/" in run_once[-1]
                    drivers = cfg.hardware[node.hardware or ""].mass_storage
                    assert list(ini["SysprepMassStorage"]) == [d.hardware_id for d in drivers]
                elif name == "unattend.xml":
                    root = ET.fromstring(got.body)
                    assert root.tag == "{urn:schemas-microsoft-com:unattend}unattend"
                elif name == "cloud-init.yaml":
                    assert yaml.safe_load(text)["hostname"] == node.hostname
                elif name == "preseed.cfg" and debconf:
                    path = tmp_path / f"{node.hostname}.preseed"
                    path.write_text(text)
                    proc = await asyncio.create_subprocess_exec(
                        debconf, "--checkonly", str(path), stderr=asyncio.subprocess.PIPE
                    )
                    _, err = await proc.communicate()
                    assert proc.returncode == 0 and not err, err
                elif name == "diskpartparams.txt":
                    assert "select volume 1\r\nassign letter=Q noerr" in text
        assert (
            fetched == sum(len(cfg.answer_files_for(n)) for n in cfg.nodes) == 29
        )  # 17 + issue 16: hvclu 2x4, haclu 2x2
        served = [e for e in await srv.events("answer") if "refused" not in e.detail]
        assert len(served) == 29


async def test_broken_template_is_refused_naming_section_and_entry(tmp_path: Path) -> None:
    templates = tmp_path / "templates"
    shutil.copytree(ROOT / "config" / "templates", templates)
    text = (templates / "sysprep.inf").read_text().replace("TargetPath=\\WINDOWS\n", "")
    (templates / "sysprep.inf").write_text(text)
    async with boot_server(tmp_path, templates_dir=str(templates)) as srv:
        token = await boot(srv, SQL_N1)
        got = await curl(files_url(srv, SQL_N1, "sysprep.inf") + f"?token={token}")
        assert got.status == 500
        assert "[Unattended] TargetPath: required entry is missing" in got.text
        assert "Demo-Only" not in got.text
        (event,) = [e for e in await srv.events("answer") if "refused" in e.detail]
        assert "TargetPath" in event.detail["refused"]
        # nothing was marked used: the node gets the file once the template is fixed
        (templates / "sysprep.inf").write_text((ROOT / "config/templates/sysprep.inf").read_text())
        assert (await curl(files_url(srv, SQL_N1, "sysprep.inf") + f"?token={token}")).status == 200


async def test_bootfiles_are_served_rooted(tmp_path: Path) -> None:
    bootfiles = tmp_path / "bootfiles"
    shutil.copytree(ROOT / "bootfiles" / "templates", bootfiles / "templates")
    (bootfiles / "media").mkdir()
    kernel = bytes(range(256)) * 40
    (bootfiles / "media" / "vmlinuz").write_bytes(kernel)
    (tmp_path / "outside.txt").write_text("secret outside the root")
    (bootfiles / "media" / "escape").symlink_to(tmp_path / "outside.txt")
    async with boot_server(tmp_path, bootfiles_dir=str(bootfiles)) as srv:
        got = await curl(f"{srv.url}/bootfiles/media/vmlinuz")
        assert got.status == 200 and got.body == kernel
        part = await curl(f"{srv.url}/bootfiles/media/vmlinuz", "-r", "100-199")
        assert part.status == 206 and part.body == kernel[100:200]
        missing = await curl(f"{srv.url}/bootfiles/media/initrd.gz")
        assert missing.status == 404 and "netdeploy media build" in missing.text
        for path in (
            "media/escape",
            "../outside.txt",
            "media/../../outside.txt",
            "%2e%2e/outside.txt",
            "media",
            "media/",
        ):
            got = await curl(f"{srv.url}/bootfiles/{path}", "--path-as-is")
            assert got.status == 404, path
            assert b"secret outside" not in got.body


async def test_tftp_virtual_files(tmp_path: Path) -> None:
    async with boot_server(tmp_path, public_url="http://10.0.2.2:8080") as srv:
        data = await virtual_file(srv.boot, "pxelinux.cfg/01-52-54-00-00-10-03", "10.88.0.13")
        assert data is not None
        text = data.decode()
        assert "KERNEL media/vmlinuz" in text and "nd.mode=image" in text
        assert "BOOTIF=01-52-54-00-00-10-03" in text
        node = await srv.node("52:54:00:00:10:03")
        assert node is not None and node.state == "pxe" and node.last_ip == "10.88.0.13"
        (event,) = await srv.events("boot", "52:54:00:00:10:03")
        assert event.detail["via"] == "tftp" and event.detail["decision"] == "image"
        first = await virtual_file(srv.boot, "/boot.ipxe", "10.88.0.13")
        assert first is not None and b"http://10.0.2.2:8080/boot/${netX/mac:hexhyp}.ipxe" in first
        unknown = await virtual_file(srv.boot, "pxelinux.cfg/01-AA-BB-CC-DD-EE-01", "10.88.0.99")
        assert unknown is not None and b"nd.mode=discover" in unknown
        await srv.force_state("52:54:00:00:10:03", NodeState.JOINED)
        local = await virtual_file(srv.boot, "pxelinux.cfg/01-52-54-00-00-10-03", "10.88.0.13")
        assert local is not None and b"LOCALBOOT 0" in local
        for path in (
            "pxelinux.0",
            "pxelinux.cfg/default",
            "pxelinux.cfg/C0A8",
            "media/vmlinuz",
            "pxelinux.cfg/01-52-54-00-00-10",
            "pxelinux.cfg/01-zz-54-00-00-10-03",
        ):
            assert await virtual_file(srv.boot, path, "10.88.0.13") is None, path


def test_curl_is_available() -> None:
    need("curl")
