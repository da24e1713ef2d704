"""The boot decision: one pure function of (node, state, cluster, server URLs) → :class:`BootPlan`.

The rule (DESIGN, node state machine):

========================================  ============================================
state                                     next boot
========================================  ============================================
registered, pxe, imaging                  imaging agent (``nd.mode=image``)
imaged, held, failed                      agent in wait mode (``nd.mode=wait``)
released                                  agent in wait mode: restores the boot code
starting, joined, unhealthy               local disk
discovered, or a MAC not in the store     discovery agent (``nd.mode=discover``)
marked for capture (any state)            capture agent (``nd.mode=capture``)
capture finished (done/failed/refused)    local disk, until the admin clears it
========================================  ============================================

A node to be imaged whose reported storage controller has no driver in its hardware profile
(netdeploy.boot.hardware, the seed's [SysprepMassStorage] rule) is not imaged: its agent is
told why (the plan's mode ``error``, naming the PCI ID) and reports it as failed.

An imaged or held machine is never sent to its local disk: until its cluster releases it, a reboot
brings it back to the agent, which waits on the gate (a held machine that reboots stays held).
A failed node is not re-imaged behind the admin's back either: its agent reports and waits until
the admin retries it (docs/decisions/0002-boot-plan-and-tokens.md).

A held disk does not boot by itself either: until release its boot code is netdeploy's hold stub
(docs/decisions/0011-hold-on-disk.md). So a released node boots the agent once more, which puts
the real boot code back, verifies it and reports ``starting``; only then the local disk.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from netdeploy.inventory import NodeState, mac_hyphens

# Where the agent's startup media live under the bootfiles root (built by `netdeploy media build`).
KERNEL_PATH = "media/vmlinuz"
INITRD_PATH = "media/initrd.gz"
# The EFI program a UEFI HTTP-boot client is pointed at; it then runs /boot.ipxe.
UEFI_LOADER_PATH = "media/ipxe.efi"  # from Debian's ipxe package, by `netdeploy media build`


class BootAction(StrEnum):
    IMAGE = "image"  # agent writes the node's image to disk
    WAIT = "wait"  # agent reports, then waits on the gate; never touches the disk
    DISCOVER = "discover"  # agent reports hardware facts of an unknown machine; never images
    LOCAL = "local"  # boot from the first local disk
    CAPTURE = "capture"  # agent streams the disk to the server (netdeploy image capture)


AGENT_ACTIONS = frozenset(
    {BootAction.IMAGE, BootAction.WAIT, BootAction.DISCOVER, BootAction.CAPTURE}
)
# a capture's state (netdeploy.images.capture) -> what the machine boots
_BY_CAPTURE = {
    "requested": BootAction.CAPTURE,
    "capturing": BootAction.CAPTURE,  # a reboot mid-capture resumes it
    "done": BootAction.LOCAL,  # its own disk again: never a capture loop
    "failed": BootAction.LOCAL,
    "refused": BootAction.LOCAL,
}

_BY_STATE: dict[NodeState, BootAction] = {
    NodeState.REGISTERED: BootAction.IMAGE,
    NodeState.PXE: BootAction.IMAGE,
    NodeState.IMAGING: BootAction.IMAGE,
    NodeState.IMAGED: BootAction.WAIT,
    NodeState.HELD: BootAction.WAIT,
    NodeState.FAILED: BootAction.WAIT,
    NodeState.RELEASED: BootAction.WAIT,  # the agent restores the held boot code first
    NodeState.STARTING: BootAction.LOCAL,
    NodeState.JOINED: BootAction.LOCAL,
    NodeState.UNHEALTHY: BootAction.LOCAL,  # its OS runs; its cluster service is what is wrong
    NodeState.DISCOVERED: BootAction.DISCOVER,
}


@dataclass(frozen=True)
class NodeFacts:
    """What the decision needs to know about one MAC; ``state=None``: not in the store at all."""

    mac: str
    state: NodeState | None
    hostname: str | None = None
    cluster: str | None = None
    gate: str | None = None  # the cluster's gate (waiting, formed, releasing, ...)
    image: str | None = None
    capture: tuple[str, str] | None = None  # (state, image) when the admin marked it
    # why its reported hardware must not be imaged (netdeploy.boot.hardware), or ""
    hardware_refusal: str = ""


@dataclass(frozen=True)
class BootUrls:
    """Where a booting machine finds us; always built from the configured public URL."""

    server: str

    @property
    def kernel(self) -> str:
        return f"{self.server}/bootfiles/{KERNEL_PATH}"

    @property
    def initrd(self) -> str:
        return f"{self.server}/bootfiles/{INITRD_PATH}"

    @property
    def uefi_loader(self) -> str:
        return f"{self.server}/bootfiles/{UEFI_LOADER_PATH}"

    def node_script(self, mac: str) -> str:
        return f"{self.server}/boot/{mac_hyphens(mac)}.ipxe"


@dataclass(frozen=True)
class BootPlan:
    """One decision: what ``mac`` boots now and why (the why is shown to admins, per MAC)."""

    mac: str
    action: BootAction
    why: str
    state: NodeState | None
    hostname: str | None
    args: tuple[tuple[str, str], ...] = ()  # kernel arguments except the token, in order
    kernel: str | None = None  # HTTP URL of the agent kernel (None for LOCAL)
    initrd: str | None = None
    refused: bool = False  # the node would be imaged, but its hardware is refused (``why``)

    @property
    def boots_agent(self) -> bool:
        """Agent plans carry a fresh token on the kernel command line."""
        return self.action in AGENT_ACTIONS

    def cmdline(self, token: str) -> str:
        """The agent's kernel command line (docs/boot.md, "Kernel command line")."""
        if not self.boots_agent:
            raise ValueError(f"a {self.action} plan boots no kernel")
        parts = [f"{key}={value}" if value else key for key, value in self.args]
        parts.append(f"nd.token={token}")
        return " ".join(parts)


def _why(node: NodeFacts, action: BootAction) -> str:
    state = node.state
    who = f"cluster {node.cluster}" if node.cluster else "the admin"
    if state is None:
        return "MAC not in the inventory: recorded as discovered; discovery agent, never imaged"
    if state == NodeState.DISCOVERED:
        return "discovered, not in the config: discovery agent until the admin adds it"
    if state == NodeState.FAILED:
        return "failed: agent reports and waits for the admin to retry (never re-imaged alone)"
    if _BY_STATE[state] == BootAction.IMAGE and node.image is None:
        return f"{state}: no image configured; agent waits (add an image to the config)"
    if _BY_STATE[state] == BootAction.IMAGE and node.hardware_refusal:
        return f"{state}: refused to image: {node.hardware_refusal}"
    if action == BootAction.IMAGE:
        return f"{state}: imaging agent writes image {node.image}"
    if state == NodeState.RELEASED:
        return "released: agent restores the disk's own boot code, then boots the disk"
    if action == BootAction.WAIT:
        gate = f" (gate {node.gate})" if node.gate else ""
        return f"{state}: agent waits until {who} releases it{gate}; never the local disk"
    return f"{state}: past release; boot from the local disk"


def _capture_why(node: NodeFacts, action: BootAction) -> str:
    assert node.capture is not None
    state, image = node.capture
    if action == BootAction.CAPTURE:
        return f"marked for capture into image {image} ({state}): capture agent, disk read only"
    return (
        f"capture into {image} {state}: boots its own disk (netdeploy image capture --cancel "
        "--node MAC hands it back to the rollout)"
    )


def boot_plan(node: NodeFacts, urls: BootUrls) -> BootPlan:
    """Decide what ``node`` boots now. Pure: the same facts always give the same plan."""
    action = BootAction.DISCOVER if node.state is None else _BY_STATE[node.state]
    if action == BootAction.IMAGE and node.image is None:
        action = BootAction.WAIT  # nothing to write; never guess an image
    refused = action == BootAction.IMAGE and bool(node.hardware_refusal)
    if refused:
        action = BootAction.WAIT  # the seed's rule: no driver for a storage controller
    if node.capture is not None and node.capture[0] in _BY_CAPTURE:
        action = _BY_CAPTURE[node.capture[0]]  # the admin's capture outranks the rollout
        refused = False  # a capture reads the disk, it writes nothing
        why = _capture_why(node, action)
    else:
        why = _why(node, action)
    if action == BootAction.LOCAL:
        return BootPlan(node.mac, action, why, node.state, node.hostname)
    args: list[tuple[str, str]] = [
        ("initrd", "initrd.gz"),  # the EFI stub needs it to find iPXE's initrd; harmless on BIOS
        ("console", "tty0"),
        ("console", "ttyS0,115200n8"),  # the last console= is /dev/console: serial first
        ("panic", "30"),
        ("BOOTIF", f"01-{mac_hyphens(node.mac)}"),
        ("nd.server", urls.server),
        ("nd.mode", str(action)),
    ]
    if node.hostname:
        args.append(("nd.hostname", node.hostname))
    if action == BootAction.IMAGE and node.image:
        args.append(("nd.image", node.image))
    if action == BootAction.CAPTURE and node.capture:
        args.append(("nd.capture", node.capture[1]))
    return BootPlan(
        node.mac,
        action,
        why,
        node.state,
        node.hostname,
        tuple(args),
        urls.kernel,
        urls.initrd,
        refused,
    )
