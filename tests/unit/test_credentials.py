"""Credential lifecycle and at-rest rules, pure (docs/security.md)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from netdeploy.inventory import NodeState as S
from netdeploy.rollout.identity import PHASE_STATES, new_boot_token, phase_ok
from netdeploy.rollout.state import CREDENTIALS, set_state
from netdeploy.tokens import SECRET_KEPT, report_token, token_digest, without_secrets


class Sink:
    def add(self, _event: object) -> None:
        pass


def node(state: S) -> SimpleNamespace:
    values = dict.fromkeys(CREDENTIALS, "x")
    return SimpleNamespace(
        mac="52:54:00:00:00:01", cluster=None, state=state, state_since=None, progress=None,
        **values,
    )  # fmt: skip


@pytest.mark.parametrize("to", [S.REGISTERED, S.JOINED, S.FAILED])
def test_every_credential_dies_with_its_phase(to: S) -> None:
    n = node(S.STARTING if to == S.JOINED else S.IMAGING)
    set_state(Sink(), n, to, reason="test", force=True)
    assert all(getattr(n, name) is None for name in CREDENTIALS)


@pytest.mark.parametrize("to", [S.IMAGED, S.HELD, S.RELEASED, S.STARTING])
def test_credentials_live_through_their_phase(to: S) -> None:
    n = node(S.IMAGING)
    set_state(Sink(), n, to, reason="test", force=True)
    assert all(getattr(n, name) == "x" for name in CREDENTIALS)


def test_a_new_boot_script_starts_a_phase_and_remembers_the_last() -> None:
    n = SimpleNamespace(claim="claimed", token="old", claim_prev=None)
    new_boot_token(n, "new", "wait", 3)  # type: ignore[arg-type]
    assert (n.token, n.token_phase, n.token_rollout, n.claim) == ("new", "wait", 3, None)
    assert n.claim_prev == "claimed"
    new_boot_token(n, "newer", "wait", 3)  # type: ignore[arg-type]
    assert n.claim_prev == "new"  # unclaimed: its boot token is what a racer would use


def test_a_token_is_bound_to_its_rollout_and_its_phase_states() -> None:
    cluster = SimpleNamespace(rollout=2)
    n = SimpleNamespace(token_phase="wait", token_rollout=2, state=S.HELD)
    assert phase_ok(n, cluster)  # type: ignore[arg-type]
    assert not phase_ok(SimpleNamespace(**{**vars(n), "token_rollout": 1}), cluster)  # type: ignore[arg-type]
    assert not phase_ok(SimpleNamespace(**{**vars(n), "state": S.IMAGING}), cluster)  # type: ignore[arg-type]
    assert S.PXE in PHASE_STATES["image"] and S.JOINED not in set().union(
        *(states for phase, states in PHASE_STATES.items() if phase != "capture")
    )


def test_report_tokens_are_keyed_and_bound_to_the_claim() -> None:
    a = report_token(b"k" * 32, "52:54:00:00:00:01", token_digest("claim-one"))
    assert a != report_token(b"k" * 32, "52:54:00:00:00:01", token_digest("claim-two"))
    assert a != report_token(b"j" * 32, "52:54:00:00:00:01", token_digest("claim-one"))
    assert a != report_token(b"k" * 32, "52:54:00:00:00:02", token_digest("claim-one"))


def test_secret_vars_are_never_stored() -> None:
    kept = without_secrets(
        {"domain_admin_password": "p", "product_key": "k", "ip": "10.0.0.1",
         "nested": {"api_token": "t", "list": [{"root_password_hash": "h"}]}}
    )  # fmt: skip
    assert kept == {
        "domain_admin_password": SECRET_KEPT,
        "product_key": SECRET_KEPT,
        "ip": "10.0.0.1",
        "nested": {"api_token": SECRET_KEPT, "list": [{"root_password_hash": SECRET_KEPT}]},
    }
