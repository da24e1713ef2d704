"""`netdeploy serve` as a real process: JSON status over HTTP, state kept across restarts."""

from __future__ import annotations

import signal
import sqlite3
import urllib.error
import urllib.request

import pytest

from netdeploy.addresses import choose_ports
from netdeploy.config import load_config
from tests.conftest import DEMO_CONFIG, free_port, run_cli, start_server


def test_api_nodes_lists_the_demo_nodes(server):
    nodes = server.get_json("/api/nodes")["nodes"]
    by_host = {n["hostname"]: n for n in nodes}
    assert set(by_host) == {"sql-n1", "sql-n2", "sql-n3", "web-1"}
    assert by_host["sql-n3"]["mac"] == "52:54:00:00:10:03"  # written bare in the config
    assert by_host["sql-n2"]["cluster"] == "sqlclu"
    assert all(n["state"] == "registered" for n in nodes)
    clusters = server.get_json("/api/clusters")["clusters"]
    assert clusters[0]["name"] == "sqlclu"
    assert clusters[0]["first_node"] == "sql-n1"


@pytest.mark.parametrize("notation", ["52-54-00-00-10-02", "525400001002", "52:54:00:00:10:02"])
def test_one_node_in_any_mac_notation(server, notation):
    assert server.get_json(f"/api/nodes/{notation}")["hostname"] == "sql-n2"


def test_bad_and_unknown_macs_get_clear_json_errors(server):
    for path, status, words in [
        ("/api/nodes/zz", 400, "not a MAC address"),
        ("/api/nodes/52:54:00:12:34:56", 404, "no node with MAC"),
    ]:
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(server.url + path, timeout=10)
        assert caught.value.code == status
        assert words in caught.value.read().decode()


def test_metrics_are_prometheus_text(server):
    with urllib.request.urlopen(server.url + "/metrics", timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        assert b"# TYPE" in response.read()


def test_state_survives_restart_and_sigkill(state_dir):
    first = start_server(state_dir)
    first.stop(signal.SIGKILL)
    db = sqlite3.connect(state_dir / "netdeploy.db")
    with db:
        db.execute("UPDATE nodes SET state='held' WHERE hostname='sql-n2'")
    db.close()
    second = start_server(state_dir)
    try:
        nodes = {n["hostname"]: n["state"] for n in second.get_json("/api/nodes")["nodes"]}
        assert nodes["sql-n2"] == "held"
        assert nodes["sql-n1"] == "registered"
    finally:
        assert second.stop() == 0  # SIGTERM: clean shutdown


def test_admin_token_generated_once_and_private(state_dir):
    server = start_server(state_dir)
    server.stop()
    token_file = state_dir / "admin-token"
    token = token_file.read_text()
    assert len(token.strip()) >= 32
    assert token_file.stat().st_mode & 0o077 == 0
    assert f"generated the admin token {token.strip()}" in server.log.read_text()
    again = start_server(state_dir)
    again.stop()
    assert token_file.read_text() == token
    assert "generated the admin token" not in again.log.read_text()


def test_port_already_taken_is_one_clear_line(server, tmp_path):
    result = run_cli(
        "serve",
        "--state-dir",
        str(tmp_path),
        "--bind",
        "127.0.0.1",
        "--http-port",
        str(server.http_port),
        "--tftp-port",
        str(free_port()),
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"cannot listen for HTTP on 127.0.0.1:{server.http_port}" in result.stderr


def test_unprivileged_ports_are_chosen_and_explained(monkeypatch, tmp_path):
    import netdeploy.addresses as server_module

    monkeypatch.setattr(server_module, "may_bind_privileged_ports", lambda: False)
    ports = choose_ports(load_config(DEMO_CONFIG, state_dir=tmp_path))
    assert (ports.http, ports.tftp) == (8080, 6969)
    assert "8080" in ports.note and "6969" in ports.note
    monkeypatch.setattr(server_module, "may_bind_privileged_ports", lambda: True)
    assert choose_ports(load_config(DEMO_CONFIG, state_dir=tmp_path)).http == 80


def test_nodes_command_prints_the_table(tmp_path):
    result = run_cli("nodes", "--state-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "52:54:00:00:10:01" in result.stdout and "sql-n1" in result.stdout


def test_every_command_has_help():
    from netdeploy.cli.main import COMMANDS

    for name, *_ in COMMANDS:
        result = run_cli(name, "--help")
        assert result.returncode == 0 and "usage: netdeploy" in result.stdout, name
    assert run_cli("--version").stdout.startswith("netdeploy ")


def test_bad_database_url_is_one_clear_line(tmp_path):
    (tmp_path / "a-file").write_text("")
    result = run_cli(
        "nodes", "--state-dir", str(tmp_path), "--db", f"sqlite:///{tmp_path}/a-file/netdeploy.db"
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "cannot open" in result.stderr and "a-file is not a directory" in result.stderr
