"""No command writes the store behind a running server (issue 18, item 3), and the running
server re-reads its config on SIGHUP and `netdeploy reload`."""

from __future__ import annotations

import json
import signal
import sqlite3
import time
from pathlib import Path

from netdeploy.store import hold_store
from tests.conftest import ServerProcess, add_image, demo_variant, run_cli, start_server

NEW = "52:54:00:00:77:01"


def lab(tmp_path: Path) -> tuple[Path, Path]:
    state = tmp_path / "state"
    return demo_variant(tmp_path / "netdeploy.toml", replace={'"../var"': f'"{state}"'}), state


def stored(state: Path, table: str) -> list[tuple]:
    with sqlite3.connect(state / "netdeploy.db") as db:
        return sorted(db.execute(f"SELECT * FROM {table}"))


def macs(server: ServerProcess) -> set[str]:
    return {n["mac"] for n in server.get_json("/api/nodes")["nodes"]}  # type: ignore[index]


def test_image_list_on_an_edited_config_changes_nothing_behind_a_running_server(
    tmp_path: Path,
) -> None:
    config, state = lab(tmp_path)
    server = start_server(state, config=config)
    try:
        before = stored(state, "images"), stored(state, "nodes")
        edited = demo_variant(
            tmp_path / "edited.toml",
            replace={
                '"../var"': f'"{state}"',
                "[images.debian-12]": '[images.debian-13]\nfile = "d13.img"\n[images.debian-12]',
            },
        )
        cli = ("--config", str(edited), "--state-dir", str(state))
        listed = run_cli("image", "list", "--json", *cli)
        assert listed.returncode == 0, listed.stderr
        names = {i["name"] for i in json.loads(listed.stdout)}
        served = {i["name"] for i in server.get_json("/api/images")["images"]}  # type: ignore[index]
        assert names == served  # the server's view, not the edit's
        assert "debian-13" not in names and {"w2k3-ent-sp1", "debian-12"} <= names
        assert run_cli("nodes", "--facts", *cli).returncode == 0
        assert (stored(state, "images"), stored(state, "nodes")) == before
    finally:
        server.stop()


def test_a_writing_command_refuses_a_store_another_process_holds(tmp_path: Path) -> None:
    config, state = lab(tmp_path)
    master = tmp_path / "master.img"
    master.write_bytes(b"\0" * 4096)
    add_image(state, master)  # no server: the command writes the store itself
    with hold_store(state, exclusive=False):  # as `netdeploy serve` does while it runs
        refused = run_cli("image", "rm", "w2k3-ent-sp1", "--config", str(config))
    assert refused.returncode == 1
    assert "holds the store" in refused.stderr, refused.stderr
    with sqlite3.connect(state / "netdeploy.db") as db:
        ok = [n for (n,) in db.execute("SELECT name FROM images WHERE status = 'ok'")]
    assert ok == ["w2k3-ent-sp1"]  # not removed


def test_image_commands_go_through_the_running_server(tmp_path: Path) -> None:
    config, state = lab(tmp_path)
    server = start_server(state, config=config)
    try:
        master = tmp_path / "master.img"
        master.write_bytes(b"\0" * 4096)
        cli = ("--config", str(config), "--state-dir", str(state))
        added = run_cli(
            "image", "add", "debian-12", str(master), "-q", *cli
        )  # fmt: skip
        assert added.returncode == 0, added.stderr
        image = server.get_json("/api/images/debian-12")
        assert image["status"] == "ok"  # type: ignore[index]
        verified = run_cli("image", "verify", "debian-12", *cli)
        assert verified.returncode == 0 and "debian-12: ok" in verified.stdout, verified.stderr
    finally:
        server.stop()


def test_sighup_and_reload_apply_a_hand_edit_and_refuse_a_broken_one(tmp_path: Path) -> None:
    config, state = lab(tmp_path)
    server = start_server(state, config=config)
    try:
        assert NEW not in macs(server)
        (tmp_path / "nodes.d").mkdir()
        (tmp_path / "nodes.d" / "sql-n4.toml").write_text(
            f'[[nodes]]\nmac = "{NEW}"\nhostname = "sql-n4"\ncluster = "sqlclu"\n'
            'hardware = "qemu-virtio"\n'
        )
        server.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 60
        while NEW not in macs(server):
            assert time.monotonic() < deadline, server.log.read_text()[-2000:]
            time.sleep(0.2)
        assert "SIGHUP: config reloaded" in server.log.read_text()

        cli = ("--config", str(config), "--state-dir", str(state))
        (tmp_path / "nodes.d" / "sql-n4.toml").write_text(
            f'[[nodes]]\nmac = "{NEW}"\nhostname = "sql-n4"\ncluster = "nope"\n'
        )
        refused = run_cli("reload", *cli)
        assert refused.returncode == 1
        assert "sql-n4.toml" in refused.stderr and "unknown cluster 'nope'" in refused.stderr
        assert NEW in macs(server)  # nothing changed

        (tmp_path / "nodes.d" / "sql-n4.toml").unlink()
        reloaded = run_cli("reload", *cli)
        assert reloaded.returncode == 0, reloaded.stderr
        assert f"removed node {NEW} (sql-n4)" in reloaded.stdout
        assert NEW not in macs(server)
        assert server.proc.poll() is None
    finally:
        server.stop()
