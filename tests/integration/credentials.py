"""Seed a node's credentials straight into the store, for tests that drive the agent API
without a real agent: the boot token, the agent's claim of this phase and the report token of
its answer files all become one plain value, claimed from 127.0.0.1 (where tests connect from).

The real sequence (boot script → claim → answer files → report token) is exercised end to end
by tests/integration/test_identity.py and the QEMU e2e tests.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from netdeploy.rollout.identity import PHASE_STATES
from netdeploy.tokens import issue_token, token_digest


def phase_for(state: str) -> str | None:
    """A boot phase whose agent may speak in ``state`` (image first), None if none may."""
    return next((p for p, states in PHASE_STATES.items() if state in states), None)


def seed_credentials(
    node: Any, rollout: int, plain: str | None = None, ip: str = "127.0.0.1"
) -> str:
    """Give ``node`` (a Node row, in an open session) credentials; return the plain value."""
    if plain is None:
        plain, _ = issue_token()
    digest = token_digest(plain)
    node.token = digest
    node.token_phase = phase_for(node.state) or "image"
    node.token_rollout = rollout
    node.claim = digest
    node.claim_ip = ip
    node.report_token = digest
    node.report_at = datetime(2000, 1, 1, tzinfo=UTC)  # long past rollout.report_quiet
    return plain
