"""What ``netdeploy explain`` answers (netdeploy/boot/explain.py builds it, advice.py words the
advice): plain data, shown as JSON by the API and the CLI and as HTML by the node page."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


class ExplainSettings:
    """What the answer depends on besides the record: from the config, handed in."""

    def __init__(
        self,
        *,
        public_url: str,
        dhcp_proxy: bool,
        dhcp_interface: str | None = None,
        tftp_enabled: bool = True,
        stale_after: float = 90.0,
        gate_poll: float = 60.0,
    ) -> None:
        self.public_url = public_url
        self.dhcp_proxy = dhcp_proxy
        self.dhcp_interface = dhcp_interface
        self.tftp_enabled = tftp_enabled
        self.stale_after = stale_after
        self.gate_poll = gate_poll


@dataclass(frozen=True)
class Step:
    """One thing that happened on the machine's boot path."""

    id: int | None
    at: str | None
    kind: str
    phase: str
    severity: str
    text: str
    by_address: bool = False  # no MAC in the request: placed here by the client's address


@dataclass(frozen=True)
class AdminAction:
    """Something the admin can do now: a dashboard button (``action``) and its CLI command."""

    action: str  # release | retry | fail | reset | ""  (no button: a change outside netdeploy)
    label: str
    command: str


@dataclass
class Explanation:
    query: str
    mac: str
    hostname: str | None = None
    cluster: str | None = None
    state: str | None = None  # None: never heard of
    state_since: str | None = None
    last_seen: str | None = None
    last_ip: str | None = None
    quiet_for: float | None = None
    stale: bool = False
    stale_limit: float | None = None
    gate: str | None = None
    gate_detail: str | None = None
    steps: list[Step] = field(default_factory=list)
    truncated: bool = False
    next_boot: str = ""  # what the machine gets on its next boot, and why
    machine_next: str = ""  # what the machine should do next
    causes: list[str] = field(default_factory=list)  # likely causes when something is missing
    admin: list[AdminAction] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)
