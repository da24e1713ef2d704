"""Each kind of broken config gets a precise error: file, line, key path, what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from netdeploy.config import ConfigError, load_config
from tests.conftest import DEMO_CONFIG, run_cli

DEMO = DEMO_CONFIG.read_text()


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "netdeploy.toml"
    path.write_text(text)
    # keep relative paths of the demo (templates, bootfiles) working from the temp copy
    return path


def line_number(text: str, needle: str, occurrence: int = 1) -> int:
    lines = text.splitlines()
    hits = [i + 1 for i, line in enumerate(lines) if needle in line]
    return hits[occurrence - 1]


# (name, how to break the demo config, needle marking the line, occurrence, key, message part)
CASES = [
    (
        "bad MAC",
        ('mac = "52-54-00-00-10-02"', 'mac = "52-54-00-00-10"'),
        'mac = "52-54-00-00-10"',
        1,
        "nodes[1].mac",
        "not a MAC address",
    ),
    (
        "duplicate MAC in another notation",
        ('mac = "525400001003"', 'mac = "52:54:00:00:10:01"'),
        'mac = "52:54:00:00:10:01"',
        2,
        "nodes[2].mac",
        "already used by nodes[0]",
    ),
    (
        "duplicate hostname, other case",
        ('hostname = "sql-n3"', 'hostname = "SQL-N2"'),
        'hostname = "SQL-N2"',
        1,
        "nodes[2].hostname",
        "already used by nodes[1]",
    ),
    (
        "unknown cluster",
        ('cluster = "sqlclu"\nhardware = "dl380-g4"', 'cluster = "sqlclux"\nhardware = "dl380-g4"'),
        'cluster = "sqlclux"',
        1,
        "nodes[2].cluster",
        "unknown cluster 'sqlclux'; defined: haclu, hvclu, sqlclu",
    ),
    (
        "unknown hardware profile",
        ('hardware = "dl380-g4"\nvars', 'hardware = "dl999"\nvars'),
        'hardware = "dl999"',
        1,
        "nodes[2].hardware",
        "unknown hardware profile 'dl999'",
    ),
    (
        "unknown image",
        ('image = "w2k3-ent-sp1"\nfirst_node', 'image = "w2k8"\nfirst_node'),
        'image = "w2k8"',
        1,
        "clusters.sqlclu.image",
        "unknown image 'w2k8'",
    ),
    (
        "cluster without first node",
        ('first_node = "sql-n1"\n', ""),
        "[clusters.sqlclu]",
        1,
        "clusters.sqlclu.first_node",
        "needs a first_node",
    ),
    (
        "first node outside the cluster",
        ('first_node = "sql-n1"', 'first_node = "web-1"'),
        'first_node = "web-1"',
        1,
        "clusters.sqlclu.first_node",
        "not a node of this cluster",
    ),
    (
        "unknown key (typo)",
        ('release = "sequential"', 'relase = "sequential"'),
        'relase = "sequential"',
        1,
        "clusters.sqlclu.relase",
        "unknown key",
    ),
    (
        "wrong type",
        ("max_per_client = 16", 'max_per_client = "many"'),
        'max_per_client = "many"',
        1,
        "tftp.max_per_client",
        "valid integer",
    ),
    (
        "bad release policy",
        ('release = "sequential"', 'release = "waves:0"'),
        'release = "waves:0"',
        1,
        "clusters.sqlclu.release",
        "use sequential, waves:N or manual",
    ),
    (
        "bad hostname",
        ('hostname = "web-1"', 'hostname = "web_1!"'),
        'hostname = "web_1!"',
        1,
        "nodes[3].hostname",
        "not a host name",
    ),
    (
        "standalone node without image",
        ('image = "debian-12"\nanswer_files', "answer_files"),
        "[[nodes]]",
        4,
        "nodes[3]",
        "needs an image",
    ),
    (
        "bad public URL",
        ('bind = "0.0.0.0"', 'bind = "0.0.0.0"\npublic_url = "10.0.2.2:8080"'),
        "public_url",
        1,
        "server.public_url",
        "http:// or https:// URL",
    ),
    (
        "drive letter twice",
        ('{ volume = 2, letter = "S" }', '{ volume = 2, letter = "Q" }'),
        "shared_disks",
        1,
        "clusters.sqlclu.shared_disks",
        "assigned twice",
    ),
    (
        "port out of range",
        ("[server]\n", "[server]\nhttp_port = 70000\n"),
        "http_port",
        1,
        "server.http_port",
        "less than or equal to 65535",
    ),
]


@pytest.mark.parametrize(
    ("name", "edit", "needle", "occurrence", "key", "message"), CASES, ids=[c[0] for c in CASES]
)
def test_broken_config_names_file_line_key(tmp_path, name, edit, needle, occurrence, key, message):
    old, new = edit
    assert old in DEMO, f"test case {name!r} no longer matches the demo config"
    text = DEMO.replace(old, new, 1)
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    matching = [p for p in caught.value.problems if p.key == key]
    assert matching, f"expected a problem at {key}, got: {caught.value}"
    problem = matching[0]
    assert problem.file == str(path)
    assert problem.line == line_number(text, needle, occurrence)
    assert message in problem.message


def test_malformed_toml_reports_line(tmp_path):
    text = DEMO.replace('bind = "0.0.0.0"', 'bind = "0.0.0.0', 1)
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    (problem,) = caught.value.problems
    assert problem.line == line_number(text, 'bind = "0.0.0.0')
    assert "not valid TOML" in problem.message


def test_all_problems_are_reported_at_once(tmp_path):
    text = (
        DEMO.replace('mac = "525400001003"', 'mac = "zz"')
        .replace('hostname = "web-1"', 'hostname = "web 1"')
        .replace("max_per_client = 16", "max_per_cl = 1")
    )
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text))
    keys = {p.key for p in caught.value.problems}
    assert keys == {"nodes[2].mac", "nodes[3].hostname", "tftp.max_per_cl"}


def test_cross_references_are_all_reported_at_once(tmp_path):
    text = DEMO.replace('hostname = "web-1"', 'hostname = "sql-n1"').replace(
        'hardware = "dl380-g4"\nvars', 'hardware = "nope"\nvars'
    )
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text))
    keys = {p.key for p in caught.value.problems}
    assert keys == {"nodes[3].hostname", "nodes[2].hardware"}


def test_missing_file_says_what_to_do(tmp_path):
    with pytest.raises(ConfigError, match="no such file; pass --config PATH"):
        load_config(tmp_path / "nope.toml")


def test_demo_config_is_valid_and_macs_are_canonical():
    cfg = load_config(DEMO_CONFIG)
    assert [n.mac for n in cfg.nodes] == [
        "52:54:00:00:10:01",
        "52:54:00:00:10:02",
        "52:54:00:00:10:03",
        "52:54:00:00:20:01",
        # issue 16: a Windows 2008+ and a Pacemaker example cluster
        "52:54:00:00:50:01",
        "52:54:00:00:50:02",
        "52:54:00:00:60:01",
        "52:54:00:00:60:02",
    ]
    assert cfg.clusters["sqlclu"].first_node == "sql-n1"
    assert len(cfg.cluster_nodes("sqlclu")) == 3
    assert cfg.image_for(cfg.node_by_hostname("web-1")) == "debian-12"


def test_cli_check_exits_1_with_one_line_per_problem_and_no_traceback(tmp_path):
    text = DEMO.replace('mac = "525400001003"', 'mac = "zz"').replace(
        'release = "sequential"', 'relase = "sequential"'
    )
    path = write(tmp_path, text)
    result = run_cli("check", "--config", str(path))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2
    assert all(line.startswith(f"{path}:") for line in lines)
    assert any("nodes[2].mac" in line for line in lines)


def test_cli_check_passes_on_demo():
    result = run_cli("check")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("OK:")


def test_overrides_are_validated_and_blamed_on_the_command_line():
    with pytest.raises(ConfigError) as caught:
        load_config(DEMO_CONFIG, http_port=0)
    assert str(caught.value) == (
        "command line: --http-port: Input should be greater than or equal to 1"
    )


def test_an_included_inventory_file_adds_nodes_and_its_errors_name_that_file(
    tmp_path: Path,
) -> None:
    main = write(tmp_path, DEMO)  # the demo includes nodes.d/*.toml
    (tmp_path / "nodes.d").mkdir()
    good = tmp_path / "nodes.d" / "sql-n4.toml"
    good.write_text(
        '[[nodes]]\nmac = "52:54:00:00:10:04"\nhostname = "sql-n4"\ncluster = "sqlclu"\n'
    )
    cfg = load_config(main)
    assert cfg.node_by_hostname("sql-n4") is not None and cfg.included == (good.resolve(),)
    bad = tmp_path / "nodes.d" / "sql-n5.toml"
    bad.write_text(
        '# adopted\n[[nodes]]\nmac = "52:54:00:00:10:05"\nhostname = "sql-n5"\ncluster = "nope"\n'
    )
    with pytest.raises(ConfigError) as caught:
        load_config(main)
    (problem,) = caught.value.problems
    assert problem.file == str(bad.resolve()) and problem.line == 5
    assert problem.key == "nodes[0].cluster" and "unknown cluster 'nope'" in problem.message


def test_an_included_file_holds_nodes_only(tmp_path: Path) -> None:
    main = write(tmp_path, DEMO)  # the demo includes nodes.d/*.toml
    (tmp_path / "nodes.d").mkdir()
    (tmp_path / "nodes.d" / "x.toml").write_text('[server]\nbind = "::"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(main)
    (problem,) = caught.value.problems
    assert problem.line == 1 and "holds [[nodes]] only" in problem.message


def test_field_errors_and_cross_references_are_reported_in_one_pass(tmp_path):
    """A bad value and an unknown reference elsewhere: both at once, not one after the other."""
    text = (
        DEMO.replace('hardware = "dl380-g4"\nvars', 'hardware = "nope"\nvars')
        .replace('mac = "52:54:00:00:20:01"', 'mac = "zz"')
        .replace("max_per_client", "max_per_cl")
    )
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text))
    keys = {p.key for p in caught.value.problems}
    assert keys == {"nodes[3].mac", "tftp.max_per_cl", "nodes[2].hardware"}
    hardware = next(p for p in caught.value.problems if p.key == "nodes[2].hardware")
    assert hardware.line == line_number(text, 'hardware = "nope"')


def test_a_broken_cluster_is_not_also_reported_as_unknown(tmp_path):
    text = DEMO.replace('release = "sequential"', 'release = "sometimes"')
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text))
    assert [p.key for p in caught.value.problems] == ["clusters.sqlclu.release"]


def test_a_gate_poll_timeout_the_agent_cannot_use_is_refused(tmp_path: Path) -> None:
    """issue 15: below 5 s every held node polls in a tight loop; the agent asks for exactly
    the configured value (the plan's ND_GATE_TIMEOUT), so any accepted value works."""
    path = tmp_path / "c.toml"
    for value in ("0.5", "4", "7200"):
        path.write_text(f"[http]\ngate_poll_timeout = {value}\n")
        with pytest.raises(ConfigError, match="not a long-poll the agent can use"):
            load_config(path)
    path.write_text("[http]\ngate_poll_timeout = 30\n")
    assert load_config(path).http.gate_poll_timeout == 30
