"""Per-node secrets: issued in plain text once, stored only as a SHA-256 digest."""

from __future__ import annotations

import hashlib
import hmac
import secrets


def issue_token() -> tuple[str, str]:
    """A new random token and the digest to store in its place."""
    plain = secrets.token_urlsafe(24)
    return plain, token_digest(plain)


def token_digest(plain: str) -> str:
    return hashlib.sha256(plain.encode()).hexdigest()


def token_matches(plain: str | None, digest: str | None) -> bool:
    """Constant-time comparison; a missing token or digest never matches."""
    if not plain or not digest:
        return False
    return hmac.compare_digest(token_digest(plain), digest)
