"""Issue 16: each cluster kind forms its cluster in the answer files and declares what it needs.
The done-criteria renders (sql-n1 creates sqlclu, sql-n2 joins it) and the check's file:line."""

from __future__ import annotations

from pathlib import Path

import pytest

from netdeploy.answers.check import check_answer_files
from netdeploy.answers.render import render_answer
from netdeploy.clusterkinds import KINDS, formation, var_problems
from netdeploy.config import DEMO_CONFIG, ConfigError, load_config
from tests.conftest import demo_variant

URL = "http://10.0.2.2:8080"


def render(host: str, name: str) -> str:
    cfg = load_config(DEMO_CONFIG)
    node = cfg.node_by_hostname(host)
    assert node is not None
    return render_answer(cfg, node, name, server_url=URL).text


def test_sql_n1_sysprep_creates_sqlclu_and_sql_n2_joins_it() -> None:
    first = render("sql-n1", "sysprep.inf")
    assert (
        'Command2="cluster /cluster:SQLCLU /create /ipaddr:10.88.0.10,255.255.255.0,Public '
        '/user:LAB\\clussvc /pass:Demo-Only-ClusSvc-1 /unattend /verbose"'
    ) in first
    assert 'Command3="cluster /cluster:SQLCLU /quorum /path:Q:\\MSCS"' in first  # quorum = "Q"
    assert "/add:" not in first
    second = render("sql-n2", "sysprep.inf")
    assert 'Command2="cluster /cluster:SQLCLU /add:SQL-N2 /pass:Demo-Only-ClusSvc-1' in second
    assert "/create" not in second
    # the report comes last: after the cluster exists (or the node joined it)
    assert second.rstrip().splitlines()[-1].startswith('Command3="cscript //nologo //B')


def test_report_vbs_sends_the_cluster_node_listing() -> None:
    text = render("sql-n1", "report.vbs")
    assert 'shell.Exec("cmd /c cluster /cluster:SQLCLU node 2>&1")' in text
    assert '""source"": ""cluster node""' in text
    windows = render("hv-n2", "report.vbs")
    assert (
        "Get-ClusterNode -Cluster HVCLU" in windows and '""source"": ""Get-ClusterNode""' in windows
    )


def test_windows_2008_unattend_runs_new_cluster_and_add_clusternode() -> None:
    first = render("hv-n1", "unattend.xml")
    assert "New-Cluster -Name HVCLU -Node HV-N1 -StaticAddress 10.88.0.30 -NoStorage" in first
    second = render("hv-n2", "unattend.xml")
    assert "Add-ClusterNode -Cluster HVCLU -Name HV-N2 -NoStorage" in second
    assert "New-Cluster" not in second


@pytest.mark.parametrize("name", ["cloud-init.yaml", "kickstart.cfg"])
def test_pacemaker_first_boot_sets_up_or_joins(name: str) -> None:
    first = render("ha-n1", name)
    assert "pcs cluster setup haclu ha-n1 --start --enable" in first
    assert "crm_mon -1" in first and 'source="crm_mon"' in first
    second = render("ha-n2", name)
    assert "pcs cluster node add ha-n2 --start --enable" in second
    assert "pcs cluster setup" not in second


def test_the_demo_lab_with_its_three_kinds_passes_check() -> None:
    cfg = load_config(DEMO_CONFIG)
    assert {c.kind for c in cfg.clusters.values()} == {"windows2003", "windows", "pacemaker"}
    assert check_answer_files(cfg) == []


@pytest.mark.parametrize(
    "old,new,where,message",
    [
        (
            'product_key = "XXXXX-XXXXX-XXXXX-XXXXX-XXXXX"',
            'product_key = ""',
            "clusters.sqlclu.vars.product_key",
            "vars.product_key is empty; cluster kind windows2003 needs the Windows product key",
        ),
        (
            'cluster_ip = "10.88.0.10"',
            'cluster_address = "10.88.0.10"',
            "clusters.sqlclu.vars",
            "cluster kind windows2003 needs vars.cluster_ip",
        ),
        (
            'cluster_password = "Demo-Only-HaCluster-1"',
            'cluster_password = "  "',
            "clusters.haclu.vars.cluster_password",
            "vars.cluster_password is empty",
        ),
        (
            'cluster_network = "Public"',
            'cluster_network = "Public LAN"',
            "clusters.sqlclu.vars.cluster_network",
            "cannot go into a command line safely",
        ),
        ('quorum = "Q"', 'quorum = "T"', "clusters.sqlclu.quorum", "not a drive letter of"),
        (
            'service_account = "LAB\\\\clussvc"',
            'service_account = ""',
            "clusters.sqlclu.service_account",
            "needs service_account",
        ),
        (
            'vars = { ip = "10.88.0.12" }',
            'vars = { ip = "10.88.0.12", product_key = "" }',
            "nodes[1].vars.product_key",
            "node sql-n2: vars.product_key is empty",
        ),
    ],
)
def test_check_names_a_missing_or_empty_kind_var_with_file_and_line(
    tmp_path: Path, old: str, new: str, where: str, message: str
) -> None:
    path = demo_variant(tmp_path / "netdeploy.toml", replace={old: new})
    with pytest.raises(ConfigError) as err:
        load_config(path)
    problem = next(p for p in err.value.problems if p.key == where)
    assert message in problem.message
    assert problem.file == str(path) and problem.line is not None
    line = path.read_text().splitlines()[problem.line - 1]
    assert where.rsplit(".", 1)[-1] in line or line.startswith("[")


def test_every_kind_declares_its_vars_and_forms_its_cluster() -> None:
    values = {
        "cluster_ip": "10.0.0.9",
        "cluster_service_password": "pw-1",
        "product_key": "K",
        "admin_password": "a",
        "cluster_password": "pw-2",
    }
    for kind, spec in KINDS.items():
        assert var_problems(kind, values) == {}
        missing = var_problems(kind, {})
        assert set(missing) == set(spec.required)
        create = formation(
            kind, cluster="c", node="n1", first_node="n1", values=values, service_account="D\\s"
        )
        join = formation(kind, cluster="c", node="n2", first_node="n1", values=values)
        assert (create.role, join.role) == ("create", "join")
        assert create.members_source == spec.members_source and create.commands and join.commands
    with pytest.raises(ValueError, match="unknown cluster kind"):
        formation("vms", cluster="c", node="n", first_node="n", values={})
