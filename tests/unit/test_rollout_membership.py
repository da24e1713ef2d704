"""Issue 16: the cluster's own view. Parsing what its tools print, and the gate that completes
only when that view lists exactly the configured nodes up; an unhealthy first node stops it."""

from __future__ import annotations

import itertools

import pytest

from netdeploy.inventory import NodeState as S
from netdeploy.rollout.errors import BadReport
from netdeploy.rollout.gate import ClusterView, Gate, NodeView, decide, parse_policy
from netdeploy.rollout.membership import (
    BadMembers,
    compare,
    parse_members,
    parse_output,
)
from netdeploy.rollout.reports import parse_health, parse_report

# cluster.exe on Windows Server 2003 (`cluster /cluster:SQLCLU node`)
CLUSTER_NODE = """\
Listing status for all available nodes:

Node           Node ID Status
-------------- ------- ---------------------
SQL-N1               1 Up
SQL-N2               2 Up
SQL-N3               3 Down
"""
# Get-ClusterNode | Format-Table Name,ID,State (Windows Server 2012 R2)
GET_CLUSTERNODE = """
Name                 ID    State
----                 --    -----
HV-N1                1     Up
HV-N2                2     Paused
"""
# crm_mon -1, Pacemaker 2
CRM_MON_2 = """\
Cluster Summary:
  * Stack: corosync
  * Current DC: web-n1 (version 2.1.5) - partition with quorum
  * 3 nodes configured
Node List:
  * Online: [ web-n1 web-n2 ]
  * OFFLINE: [ web-n3 ]
"""
# crm_mon -1, Pacemaker 1.1
CRM_MON_1 = """\
Stack: corosync
Current DC: a (version 1.1.23) - partition with quorum
2 nodes configured
Online: [ a b ]
"""


def names(members) -> list[tuple[str, str, bool]]:  # type: ignore[no-untyped-def]
    return [(m.name, m.state, m.up) for m in members]


def test_cluster_exe_node_listing() -> None:
    assert names(parse_output("cluster node", CLUSTER_NODE)) == [
        ("SQL-N1", "Up", True),
        ("SQL-N2", "Up", True),
        ("SQL-N3", "Down", False),
    ]


def test_get_clusternode_table_with_crlf() -> None:
    got = parse_output("Get-ClusterNode", GET_CLUSTERNODE.replace("\n", "\r\n"))
    assert names(got) == [("HV-N1", "Up", True), ("HV-N2", "Paused", False)]


@pytest.mark.parametrize(
    "text,expected",
    [
        (
            CRM_MON_2,
            [("web-n1", "Online", True), ("web-n2", "Online", True), ("web-n3", "OFFLINE", False)],
        ),
        (CRM_MON_1, [("a", "Online", True), ("b", "Online", True)]),
    ],
)
def test_crm_mon_node_lines(text: str, expected: list) -> None:
    assert names(parse_output("crm_mon", text)) == expected


@pytest.mark.parametrize(
    "source,text,why",
    [
        ("cluster node", "System error 1722 has occurred (0x000006ba).", "no table"),
        ("crm_mon", "Error: cluster is not currently running on this node", "no 'Online"),
        ("cluster node", "Node\n----\nSQL-N1\n", "expected NAME ... STATE"),
        ("cluster node", "Node Status\n---- ------\nA Up\nA Up\n", "listed twice"),
        ("cluster node", "Node Status\n---- ------\n;rm Up\n", "not a node name"),
        ("ipconfig", "x", "source must be one of"),
    ],
)
def test_output_that_is_not_a_member_list_is_refused(source: str, text: str, why: str) -> None:
    with pytest.raises(BadMembers, match=why):
        parse_output(source, text)


def test_members_sent_as_json() -> None:
    got = parse_members([{"name": "n1", "state": "Up"}, {"name": "n2"}])
    assert names(got) == [("n1", "Up", True), ("n2", "Up", True)]
    for bad in ("n1", [1], [{"name": "n1", "color": "red"}], [{"name": 5}]):
        with pytest.raises(BadMembers):
            parse_members(bad)


def test_health_and_joined_reports_carry_the_view() -> None:
    report = parse_health(
        {"healthy": True, "output": CLUSTER_NODE, "source": "cluster node", "cluster_state": "x"}
    )
    assert report.members is not None and len(report.members) == 3
    assert parse_health({"healthy": False}).members is None
    joined = parse_report({"state": "joined", "members": [{"name": "n1", "state": "Up"}]})
    assert joined.members is not None
    for body, why in [
        ({"state": "starting", "members": []}, "belongs to state joined"),
        ({"healthy": True, "output": "junk", "source": "crm_mon"}, "cluster member list"),
        ({"healthy": True, "members": [], "output": ""}, "not both"),
        ({"healthy": True, "source": "crm_mon"}, "source belongs with output"),
    ]:
        with pytest.raises(BadReport, match=why):
            (parse_report if "state" in body else parse_health)(body)


def test_compare_names_the_missing_and_the_strangers() -> None:
    listed = [{"name": "SQL-N1", "state": "Up"}, {"name": "SQL-N2", "state": "Down"}]
    listed.append({"name": "OLD-N9", "state": "Up"})
    seen = compare(listed, ["sql-n1", "sql-n2", "sql-n3"], ["sql-n1", "sql-n2", "sql-n3"])
    assert seen.up == {"sql-n1"}
    assert seen.listed == {"sql-n1": "Up", "sql-n2": "Down"}
    assert seen.missing == ("sql-n2", "sql-n3") and seen.strangers == ("OLD-N9",)
    assert not seen.exact


# ---------------------------------------------------------------- the gate


def view(members: list[str] | None, verify: bool = True, policy: str = "sequential") -> ClusterView:
    listed = None if members is None else tuple({"name": m, "state": "Up"} for m in members)
    return ClusterView("clu", "n1", parse_policy(policy), True, verify, listed)


def nodes(*states: S, message: str = "") -> list[NodeView]:
    return [
        NodeView(f"mac{i}", f"n{i}", s, message=message if i == 1 else "")
        for i, s in enumerate(states, start=1)
    ]


def test_complete_only_when_the_cluster_lists_exactly_the_joined_nodes() -> None:
    joined = nodes(S.JOINED, S.JOINED, S.JOINED)
    assert decide(view(["N1", "N2", "N3"]), joined).gate is Gate.COMPLETE
    assert "lists every one up" in decide(view(["n1", "n2", "n3"]), joined).detail
    short = decide(view(["n1", "n2"]), joined)
    assert short.gate is Gate.RELEASING and "does not list n3 as up" in short.detail
    extra = decide(view(["n1", "n2", "n3", "n4"]), joined)
    assert extra.gate is Gate.RELEASING and "lists n4, not configured" in extra.detail
    none = decide(view(None), joined)
    assert (
        none.gate is Gate.RELEASING and "waiting for the cluster's own member list" in none.detail
    )
    # a kind that reports no list keeps the nodes' own word
    assert decide(view(None, verify=False), joined).gate is Gate.COMPLETE


def test_a_node_given_up_by_the_admin_is_not_expected_in_the_list() -> None:
    states = nodes(S.JOINED, S.JOINED, S.FAILED)
    assert decide(view(["n1", "n2"]), states).gate is Gate.COMPLETE


def test_an_unhealthy_first_node_stops_the_gate_with_its_reason() -> None:
    d = decide(view(["n1"]), nodes(S.UNHEALTHY, S.HELD, S.HELD, message="quorum disk offline"))
    assert d.gate is Gate.STOPPED and d.release == ()
    assert "n1 reports its cluster unhealthy: quorum disk offline" in d.detail
    assert "netdeploy retry n1" in d.detail


@pytest.mark.parametrize(
    "states", list(itertools.product([S.HELD, S.RELEASED, S.STARTING, S.JOINED], repeat=2))
)
def test_unhealthy_first_node_never_releases_anyone(states: tuple[S, S]) -> None:
    for policy in ("sequential", "waves:2", "manual"):
        d = decide(view(["n1"], policy=policy), nodes(S.UNHEALTHY, *states))
        assert d.gate is Gate.STOPPED and d.release == ()


@pytest.mark.parametrize("listed", [["n1"], ["n1", "n2"], ["n1", "n2", "n3"], ["n2", "n3"], None])
def test_membership_never_changes_who_is_released(listed: list[str] | None) -> None:
    states = nodes(S.JOINED, S.JOINED, S.HELD)
    assert decide(view(listed), states).release == ("mac3",)
