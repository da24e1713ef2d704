"""The `netdeploy` command as an installed host runs it (issue 19): where the config comes from,
one line (never a traceback) for every failure, --json, and `explain` against a real server."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import DEMO_CONFIG, REPO, run_cli, start_server


def test_netdeploy_config_is_honoured_and_no_config_is_one_line(tmp_path):
    copy = tmp_path / "netdeploy.toml"
    text = DEMO_CONFIG.read_text().replace('hostname = "web-1"', 'hostname = "web-one"')
    copy.write_text(text.replace('"templates"', f'"{REPO / "config" / "templates"}"'))
    result = run_cli("check", "--json", env={"NETDEPLOY_CONFIG": str(copy)})
    assert json.loads(result.stdout)["config"] == str(copy), result.stderr
    # nothing given and no /etc/netdeploy/netdeploy.toml: one line saying what to do
    env = {k: v for k, v in os.environ.items() if k != "NETDEPLOY_CONFIG"}
    bare = subprocess.run(
        [sys.executable, "-m", "netdeploy", "nodes"], capture_output=True, text=True, env=env
    )
    if not os.path.exists("/etc/netdeploy/netdeploy.toml"):
        assert bare.returncode == 1
        assert bare.stderr.count("\n") == 1 and "NETDEPLOY_CONFIG" in bare.stderr


def test_state_dir_from_the_environment(tmp_path):
    # the admin commands look for the server's admin token in the state dir
    env = {"NETDEPLOY_STATE_DIR": str(tmp_path / "st"), "NETDEPLOY_URL": "http://127.0.0.1:9"}
    result = run_cli("clusters", env=env)
    assert result.returncode == 1
    assert f"cannot read {tmp_path / 'st' / 'admin-token'}" in result.stderr, result.stderr


def test_a_bad_database_url_is_one_line():
    result = run_cli("nodes", "--db", "foo://x")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "database URL 'foo://x' is not usable" in result.stderr


def test_check_json_names_every_problem_at_once(tmp_path):
    broken = tmp_path / "netdeploy.toml"
    broken.write_text(
        DEMO_CONFIG.read_text()
        .replace('mac = "52:54:00:00:20:01"', 'mac = "zz"')
        .replace('hardware = "dl380-g4"', 'hardware = "nope"')
    )
    result = run_cli("check", "--json", "--config", str(broken))
    assert result.returncode == 1
    problems = json.loads(result.stdout)["problems"]
    assert any("nodes[3].mac" in p for p in problems), problems
    assert any("unknown hardware profile 'nope'" in p for p in problems), problems


def test_explain_broken_pipe_and_unreachable_server(tmp_path):
    server = start_server(tmp_path / "state")
    try:
        env = {**os.environ, "NETDEPLOY_CONFIG": str(DEMO_CONFIG)}
        common = ["--url", server.url, "--state-dir", str(tmp_path / "state")]
        shown = run_cli("explain", "sql-n2", *common)
        assert shown.returncode == 0, shown.stderr
        assert "sql-n2 (52:54:00:00:10:02): registered" in shown.stdout
        assert "new → registered" in shown.stdout
        never = run_cli("explain", "52:54:00:de:ad:02", "--json", *common)
        answer = json.loads(never.stdout)
        assert answer["state"] is None and answer["steps"] == []
        assert any("ProxyDHCP is off" in c for c in answer["causes"])
        nobody = run_cli("explain", "no-such-host", *common)
        assert nobody.returncode == 1 and "no node with MAC or host name" in nobody.stderr
        # the reader goes away after one byte: one line on stderr, no traceback
        piped = subprocess.run(
            f"{sys.executable} -m netdeploy clusters --json {' '.join(common)} | head -c1",
            shell=True,
            capture_output=True,
            text=True,
            env=env,
            cwd=REPO,
        )
        assert piped.stdout == "{"
        assert "Traceback" not in piped.stderr and piped.stderr.count("\n") <= 1
    finally:
        server.stop()
    gone = run_cli("clusters", *common)
    assert gone.returncode == 1 and gone.stderr.count("\n") == 1
    assert "cannot reach netdeploy" in gone.stderr
