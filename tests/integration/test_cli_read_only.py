"""`netdeploy nodes` looks read-only, so it must be (DESIGN: the running server owns the store).
Before, it imported an edited config into the live store behind a running server: the server
then imaged a machine with no answer files, and an edit deleted a node (issue 18)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from tests.conftest import demo_variant, run_cli, start_server

NEW = "52:54:00:00:77:01"
SQL_N3 = "52:54:00:00:10:03"


def stored_macs(state_dir: Path) -> set[str]:
    with sqlite3.connect(state_dir / "netdeploy.db") as db:
        return {mac for (mac,) in db.execute("SELECT mac FROM nodes")}


def edited_config(tmp_path: Path) -> Path:
    """The demo config with sql-n3 removed from it and a new machine added."""
    config = demo_variant(
        tmp_path / "edited.toml",
        replace={'mac = "525400001003"': 'mac = "52:54:00:00:77:01"'},
    )
    return config


def test_nodes_on_an_edited_config_changes_nothing_behind_a_running_server(tmp_path: Path) -> None:
    state = tmp_path / "state"
    server = start_server(state)
    try:
        before = stored_macs(state)
        assert SQL_N3 in before and NEW not in before
        edited = edited_config(tmp_path)
        result = run_cli("nodes", "--json", "--config", str(edited), "--state-dir", str(state))
        assert result.returncode == 0, result.stderr
        shown = {n["mac"] for n in json.loads(result.stdout)}
        assert shown == before  # the running server's view, not the edited file's
        assert stored_macs(state) == before  # nothing imported, nothing deleted
        served = {n["mac"] for n in server.get_json("/api/nodes")["nodes"]}  # type: ignore[index]
        assert served == before
    finally:
        server.stop()


def test_nodes_without_a_server_reads_and_never_writes(tmp_path: Path) -> None:
    state = tmp_path / "state"
    edited = edited_config(tmp_path)
    fresh = run_cli("nodes", "--json", "--config", str(edited), "--state-dir", str(state))
    assert fresh.returncode == 0, fresh.stderr
    rows = {n["mac"]: n for n in json.loads(fresh.stdout)}
    assert NEW in rows and "not in the store yet" in rows[NEW]["message"]
    assert not (state / "netdeploy.db").exists()  # no store created behind anyone's back

    server = start_server(state)  # the demo config: sql-n3 stored
    server.stop()
    before = stored_macs(state)
    after_stop = run_cli("nodes", "--json", "--config", str(edited), "--state-dir", str(state))
    assert after_stop.returncode == 0, after_stop.stderr
    rows = {n["mac"]: n for n in json.loads(after_stop.stdout)}
    # sql-n3 is no longer in the edited config, but the store holds it: shown as stored
    assert "not in the store yet" not in rows[SQL_N3]["message"]
    assert "not in the store yet" in rows[NEW]["message"]
    assert stored_macs(state) == before  # still nothing written
