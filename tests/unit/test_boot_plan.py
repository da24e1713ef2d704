"""The boot decision over every node state, and its renderings for iPXE, pxelinux and UEFI."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from netdeploy.boot import scripts
from netdeploy.boot.plan import (
    AGENT_ACTIONS,
    BootAction,
    BootPlan,
    BootUrls,
    NodeFacts,
    boot_plan,
)
from netdeploy.inventory import NodeState, mac_hyphens

BOOTFILES = Path(__file__).resolve().parents[2] / "bootfiles"
URLS = BootUrls("http://10.0.2.2:8080")
MAC = "52:54:00:00:10:02"

# DESIGN, "What a node gets when it PXE-boots depends on its state"; None = MAC not in the store.
EXPECTED: dict[NodeState | None, BootAction] = {
    NodeState.REGISTERED: BootAction.IMAGE,
    NodeState.PXE: BootAction.IMAGE,
    NodeState.IMAGING: BootAction.IMAGE,
    NodeState.IMAGED: BootAction.WAIT,
    NodeState.HELD: BootAction.WAIT,
    NodeState.FAILED: BootAction.WAIT,
    # the agent puts the held boot code back first (issue 21, decision 0011)
    NodeState.RELEASED: BootAction.WAIT,
    NodeState.STARTING: BootAction.LOCAL,
    NodeState.JOINED: BootAction.LOCAL,
    NodeState.UNHEALTHY: BootAction.LOCAL,  # its OS runs; only its cluster service is wrong
    NodeState.DISCOVERED: BootAction.DISCOVER,
    None: BootAction.DISCOVER,
}
BEFORE_RELEASE = {
    NodeState.DISCOVERED,
    NodeState.REGISTERED,
    NodeState.PXE,
    NodeState.IMAGING,
    NodeState.IMAGED,
    NodeState.HELD,
    NodeState.FAILED,
    None,
}


def facts(state: NodeState | None, **kw: object) -> NodeFacts:
    if state is None or state == NodeState.DISCOVERED:
        return NodeFacts(MAC, state)
    values: dict = {"hostname": "sql-n2", "cluster": "sqlclu", "gate": "waiting", "image": "w2k3"}
    values.update(kw)
    return NodeFacts(MAC, state, **values)


def args_of(plan: BootPlan) -> dict[str, str]:
    return dict(plan.args)


def test_every_state_has_an_expectation() -> None:
    assert set(EXPECTED) == {*NodeState, None}


@pytest.mark.parametrize("state", list(EXPECTED), ids=lambda s: str(s))
def test_plan_for_every_state(state: NodeState | None) -> None:
    plan = boot_plan(facts(state), URLS)
    assert plan.action == EXPECTED[state]
    assert plan.mac == MAC and plan.state == state
    assert plan.why  # an admin always sees a reason
    if plan.action == BootAction.LOCAL:
        assert plan.kernel is None and plan.args == () and not plan.boots_agent
        with pytest.raises(ValueError):
            plan.cmdline("t")
    else:
        assert plan.boots_agent
        assert plan.kernel == "http://10.0.2.2:8080/bootfiles/media/vmlinuz"
        assert plan.initrd == "http://10.0.2.2:8080/bootfiles/media/initrd.gz"
        args = args_of(plan)
        assert args["BOOTIF"] == "01-52-54-00-00-10-02"
        assert args["nd.server"] == "http://10.0.2.2:8080"
        assert args["nd.mode"] == plan.action.value
        assert ("nd.image" in args) == (plan.action == BootAction.IMAGE)


@pytest.mark.parametrize("state", sorted(BEFORE_RELEASE, key=str), ids=str)
def test_never_local_disk_before_release(state: NodeState | None) -> None:
    """A held or imaged machine that reboots must come back to the agent, not its old disk."""
    assert boot_plan(facts(state), URLS).action != BootAction.LOCAL


@pytest.mark.parametrize("state", [NodeState.DISCOVERED, None], ids=str)
def test_unknown_machines_are_never_imaged(state: NodeState | None) -> None:
    plan = boot_plan(facts(state), URLS)
    assert plan.action == BootAction.DISCOVER
    assert "nd.image" not in args_of(plan)
    assert "nd.hostname" not in args_of(plan)


def test_failed_node_waits_for_the_admin() -> None:
    plan = boot_plan(facts(NodeState.FAILED), URLS)
    assert plan.action == BootAction.WAIT
    assert "admin" in plan.why


def test_held_plan_names_cluster_and_gate() -> None:
    plan = boot_plan(facts(NodeState.HELD), URLS)
    assert "sqlclu" in plan.why and "waiting" in plan.why


def test_registered_without_image_waits_instead_of_guessing() -> None:
    plan = boot_plan(facts(NodeState.REGISTERED, image=None), URLS)
    assert plan.action == BootAction.WAIT
    assert "no image" in plan.why


def test_cmdline_contract() -> None:
    plan = boot_plan(facts(NodeState.PXE), URLS)
    line = plan.cmdline("tok-123")
    assert line.split() == [
        "initrd=initrd.gz",
        "console=tty0",
        "console=ttyS0,115200n8",
        "panic=30",
        "BOOTIF=01-52-54-00-00-10-02",
        "nd.server=http://10.0.2.2:8080",
        "nd.mode=image",
        "nd.hostname=sql-n2",
        "nd.image=w2k3",
        "nd.token=tok-123",
    ]


@given(st.sampled_from([*NodeState, None]), st.binary(min_size=6, max_size=6))
def test_plan_is_pure_and_keyed_by_mac(state: NodeState | None, raw: bytes) -> None:
    mac = ":".join(f"{b:02x}" for b in raw)
    one = boot_plan(NodeFacts(mac, state, "h", None, None, "img"), URLS)
    two = boot_plan(NodeFacts(mac, state, "h", None, None, "img"), URLS)
    assert one == two
    if one.boots_agent:
        assert args_of(one)["BOOTIF"] == f"01-{mac_hyphens(mac)}"


@pytest.mark.parametrize("state", list(EXPECTED), ids=str)
def test_ipxe_script_for_every_state(state: NodeState | None) -> None:
    plan = boot_plan(facts(state), URLS)
    token = "tok-abc" if plan.boots_agent else None
    text = scripts.ipxe_script(BOOTFILES, plan, token)
    lines = text.splitlines()
    assert lines[0] == "#!ipxe"
    assert any(line.startswith("echo ") and MAC in line for line in lines)
    for line in lines:  # iPXE: a comment must be a line of its own (RECIPES.md 5.10)
        assert "#" not in line or line.startswith("#"), line
    if plan.action == BootAction.LOCAL:
        assert "sanboot --no-describe --drive 0x80 || goto nodisk" in lines
        # issue 16: under UEFI, exit with an error (OVMF then boots its next entry, the disk;
        # a plain `exit` opens its boot menu) and tell the first stage not to reboot into PXE
        assert "set netdeploy-local 1" in lines and lines[-1] == "exit 1"
        assert "kernel" not in text and "tok-abc" not in text
    else:
        kernel = next(line for line in lines if line.startswith("kernel "))
        assert kernel.startswith(f"kernel {plan.kernel} ")
        assert kernel.endswith(f"{plan.cmdline('tok-abc')} || goto failed")
        assert f"initrd {plan.initrd} || goto failed" in lines
        assert "reboot" in lines  # a failed agent start never hangs at an iPXE prompt


@pytest.mark.parametrize("state", list(EXPECTED), ids=str)
def test_pxelinux_config_for_every_state(state: NodeState | None) -> None:
    plan = boot_plan(facts(state), URLS)
    token = "tok-abc" if plan.boots_agent else None
    lines = [line.strip() for line in scripts.pxelinux_config(BOOTFILES, plan, token).splitlines()]
    assert "DEFAULT netdeploy" in lines and "LABEL netdeploy" in lines
    assert not any(line.startswith("SERIAL") for line in lines)  # sercon doubles characters
    if plan.action == BootAction.LOCAL:
        assert "LOCALBOOT 0" in lines
    else:
        assert "KERNEL media/vmlinuz" in lines and "INITRD media/initrd.gz" in lines
        append = next(line for line in lines if line.startswith("APPEND "))
        assert "initrd=initrd.gz" not in append  # pxelinux would load it as a second file
        assert "BOOTIF=01-52-54-00-00-10-02" in append and "nd.token=tok-abc" in append


def test_agent_scripts_refuse_to_render_without_a_token() -> None:
    plan = boot_plan(facts(NodeState.PXE), URLS)
    with pytest.raises(ValueError, match="needs a token"):
        scripts.ipxe_script(BOOTFILES, plan, None)


def test_first_stage_chains_to_the_per_mac_script_on_the_public_url() -> None:
    text = scripts.first_stage_ipxe(BOOTFILES, URLS)
    assert "chain --autofree http://10.0.2.2:8080/boot/${netX/mac:hexhyp}.ipxe || goto failed" in (
        text.splitlines()
    )


def test_uefi_http_url() -> None:
    assert scripts.uefi_http_url(boot_plan(facts(NodeState.JOINED), URLS), URLS) is None
    for state in (NodeState.PXE, NodeState.HELD, None):
        url = scripts.uefi_http_url(boot_plan(facts(state), URLS), URLS)
        assert url == "http://10.0.2.2:8080/bootfiles/media/ipxe.efi"


def test_agent_actions_are_exactly_the_non_local_ones() -> None:
    assert set(AGENT_ACTIONS) == set(BootAction) - {BootAction.LOCAL}
