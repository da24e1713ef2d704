"""Refusals of the rollout core. Each message names the node and what to do next.

The HTTP layer maps them to status codes (404, 403, 400, 409, 503); the dashboard and the
CLI show the message as is. A refusal never changes a node's state, and it is recorded as an
event row before it is raised.
"""

from __future__ import annotations


class RolloutError(Exception):
    """Base: a request the rollout core refused; ``str(exc)`` is the message for the user."""


class NotFound(RolloutError):
    """No node (or cluster) by that MAC / name."""


class Forbidden(RolloutError):
    """The node token (or admin token) is missing or wrong."""


class BadReport(RolloutError):
    """The request body is malformed or out of range."""


class Refused(RolloutError):
    """Well-formed, but not allowed in the node's or cluster's current state."""


class Unavailable(RolloutError):
    """The store could not take the change (retry later); the server is stopping."""


class StoreUnreachable(Unavailable):
    """The store cannot be reached (an outage, not a refusal): retry in a moment."""
