"""Agent request bodies: validated into plain values before they reach the writer. Pure."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from netdeploy.inventory import NodeState as S
from netdeploy.rollout.errors import BadReport
from netdeploy.rollout.machine import AGENT_STATES
from netdeploy.rollout.membership import BadMembers, Member, parse_members, parse_output

MAX_MESSAGE = 2000


@dataclass(frozen=True)
class AgentReport:
    state: S
    progress: float | None = None
    message: str = ""
    members: tuple[Member, ...] | None = None  # the cluster's own member list (with joined)


@dataclass(frozen=True)
class HealthReport:
    healthy: bool
    message: str = ""
    members: tuple[Member, ...] | None = None  # the cluster's own member list, when sent
    cluster_state: str = ""  # what the cluster tool said of itself, e.g. "ClusSvc running"


# The cluster's view, sent with a health report (or a joined report): either parsed by the
# sender (``members``) or the raw output of the cluster's own tool (``output`` + ``source``),
# parsed here by netdeploy.rollout.membership.
MEMBER_FIELDS = {"members", "output", "source"}


def _fields(body: Any, allowed: set[str], what: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadReport(f"{what} must be a JSON object such as {_EXAMPLES[what]}")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise BadReport(
            f"unknown field {unknown[0]!r} in {what}; allowed: {', '.join(sorted(allowed))}"
        )
    return body


def _message(body: dict[str, Any]) -> str:
    message = body.get("message", "")
    if not isinstance(message, str):
        raise BadReport("message must be a string")
    if len(message) > MAX_MESSAGE:
        raise BadReport(f"message is {len(message)} characters; at most {MAX_MESSAGE}")
    return message


_EXAMPLES = {
    "an event": '{"state": "imaging", "progress": 42.5, "message": "writing disk"}',
    "a health report": '{"healthy": true, "message": "cluster service online"}',
}


def _members(body: dict[str, Any]) -> tuple[Member, ...] | None:
    try:
        if "members" in body:
            if "output" in body:
                raise BadReport("send either members or output (with source), not both")
            return tuple(parse_members(body["members"]))
        if "output" in body:
            output, source = body["output"], body.get("source")
            if not isinstance(output, str) or len(output) > 64000:
                raise BadReport("output must be the cluster tool's text, at most 64,000 characters")
            return tuple(parse_output(str(source), output))
    except BadMembers as exc:
        raise BadReport(f"cluster member list: {exc}") from None
    if "source" in body:
        raise BadReport("source belongs with output (the cluster tool's text)")
    return None


def parse_report(body: Any) -> AgentReport:
    """Validate ``POST /api/nodes/{mac}/events`` JSON; raise :class:`BadReport` with the fix."""
    body = _fields(body, {"state", "progress", "message", *MEMBER_FIELDS}, "an event")
    state = body.get("state")
    if not isinstance(state, str) or state not in AGENT_STATES:
        raise BadReport(
            f"state must be one of {', '.join(sorted(AGENT_STATES))} (got {state!r}); "
            "pxe, held and released are decided by the server"
        )
    progress = body.get("progress")
    if progress is not None:
        if isinstance(progress, bool) or not isinstance(progress, int | float):
            raise BadReport(f"progress must be a number from 0 to 100 (got {progress!r})")
        if not (math.isfinite(progress) and 0 <= progress <= 100):
            raise BadReport(f"progress must be from 0 to 100 (got {progress!r})")
        if state != S.IMAGING:
            raise BadReport(f"progress belongs to state imaging, not {state}")
    members = _members(body)
    if members is not None and state != S.JOINED:
        raise BadReport(f"a member list belongs to state joined, not {state}")
    return AgentReport(
        S(state), None if progress is None else float(progress), _message(body), members
    )


def parse_health(body: Any) -> HealthReport:
    """Validate ``POST /api/nodes/{mac}/health`` JSON."""
    body = _fields(body, {"healthy", "message", "cluster_state", *MEMBER_FIELDS}, "a health report")
    healthy = body.get("healthy")
    if not isinstance(healthy, bool):
        raise BadReport(f"healthy must be true or false (got {healthy!r})")
    state = body.get("cluster_state", "")
    if not isinstance(state, str) or len(state) > 200:
        raise BadReport("cluster_state must be a string of at most 200 characters")
    return HealthReport(healthy, _message(body), _members(body), state)
