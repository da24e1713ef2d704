"""Admin login for the dashboard: a signed session cookie and a CSRF token bound to it.

The cookie is stateless: ``<expires>.<nonce>.<signature>``, signed with a key derived from the
admin token. Any server that knows the admin token (several servers sharing one PostgreSQL)
accepts it, a restart keeps admins logged in, and changing the admin token logs everybody out.
The CSRF token is a second signature over the session's nonce, so it is valid for exactly one
session and needs no storage either (OWASP "signed double-submit" pattern). The cookie itself is
HttpOnly (scripts cannot read it) and SameSite=Strict (other sites cannot send it, RFC 6265bis
§5.4.7); the CSRF token is the second, independent line of defence.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from aiohttp import web
from sqlalchemy import delete, select

from netdeploy.http.common import CTX, ctx_of
from netdeploy.store.models import RevokedSession
from netdeploy.tokens import clean_token

COOKIE = "nd_session"
# nonces of sessions ended by logout (table revoked_sessions; loaded at start)
REVOKED = web.AppKey("revoked_sessions", set)


@dataclass(frozen=True)
class Session:
    nonce: str
    expires: int
    csrf: str


def _key(admin_token: str) -> bytes:
    # a derived key, so the cookie never carries anything from which the token could be tried
    return hashlib.sha256(b"netdeploy dashboard session\0" + admin_token.encode()).digest()


def _sign(admin_token: str, purpose: str, text: str) -> str:
    mac = hmac.new(_key(admin_token), f"{purpose}\0{text}".encode(), hashlib.sha256)
    return mac.hexdigest()


def new_cookie(admin_token: str, lifetime_s: float, now: float | None = None) -> str:
    expires = int((now if now is not None else time.time()) + lifetime_s)
    nonce = secrets.token_urlsafe(16)
    return f"{expires}.{nonce}.{_sign(admin_token, 'session', f'{expires}.{nonce}')}"


def parse_cookie(admin_token: str, value: str | None, now: float | None = None) -> Session | None:
    """The session a cookie value proves, or None when it is absent, forged or expired."""
    if not value or value.count(".") != 2:
        return None
    expires_text, nonce, signature = value.split(".")
    expected = _sign(admin_token, "session", f"{expires_text}.{nonce}")
    if not hmac.compare_digest(signature, expected):
        return None
    try:
        expires = int(expires_text)
    except ValueError:
        return None
    if expires <= (now if now is not None else time.time()):
        return None
    return Session(nonce, expires, _sign(admin_token, "csrf", nonce))


def session_of(request: web.Request) -> Session | None:
    """The caller's dashboard session: signed, not expired, and not ended by logout."""
    value = request.cookies.get(COOKIE)
    if value is not None and not value.isascii():
        return None
    session = parse_cookie(ctx_of(request).admin_token, value)
    if session is None or session.nonce in request.app.get(REVOKED, ()):
        return None
    return session


async def revoke(request: web.Request, session: Session) -> None:
    """Logout ends the session on the server: its cookie is refused from now on, also after a
    restart (until it would have expired anyway)."""
    request.app[REVOKED].add(session.nonce)
    async with ctx_of(request).sessions() as db, db.begin():
        await db.merge(RevokedSession(nonce=session.nonce, expires=session.expires))


async def load_revoked(app: web.Application) -> None:
    """Read the revoked sessions that have not expired yet; forget the expired ones."""
    now = int(time.time())
    async with app[CTX].sessions() as db, db.begin():
        await db.execute(delete(RevokedSession).where(RevokedSession.expires <= now))
        rows = await db.scalars(select(RevokedSession.nonce))
        app[REVOKED].update(rows)


def token_is_admin(request: web.Request, given: str) -> bool:
    token = clean_token(given)
    admin = ctx_of(request).admin_token
    return token is not None and hmac.compare_digest(token.encode(), admin.encode())


def bearer_is_admin(request: web.Request) -> bool:
    """API clients (curl, scripts) may skip the login and send ``Authorization: Bearer``."""
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and token_is_admin(request, given.strip())


def may_read(request: web.Request) -> bool:
    """Anyone when ``[dashboard] public_read`` is set; otherwise a logged-in admin."""
    if ctx_of(request).config.dashboard.public_read:
        return True
    return session_of(request) is not None or bearer_is_admin(request)


def set_session_cookie(request: web.Request, response: web.StreamResponse) -> None:
    ctx = ctx_of(request)
    lifetime = ctx.config.dashboard.session_hours * 3600
    response.set_cookie(
        COOKIE,
        new_cookie(ctx.admin_token, lifetime),
        max_age=int(lifetime),
        path="/",
        httponly=True,
        samesite="Strict",
        secure=request.secure,  # only over TLS when the admin reaches us through a TLS proxy
    )


def clear_session_cookie(response: web.StreamResponse) -> None:
    response.del_cookie(COOKIE, path="/")


def check_csrf(request: web.Request, session: Session, form_value: str | None) -> bool:
    """The form field or ``X-CSRF-Token`` header must carry this session's CSRF token."""
    given = form_value or request.headers.get("X-CSRF-Token") or ""
    return hmac.compare_digest(given.encode(), session.csrf.encode())
