"""Serve a node's rendered answer files; secret files only under the node's boot token.

Token rules (docs/boot.md, "Tokens"): a file is secret when its template uses a secret-named
variable (``*password*``, ``*secret*``, ``*token*``, ``product_key``, ``private_key``) or its text
holds a secret value. A secret file is served only

* to a node that is being imaged (state ``pxe`` or ``imaging``: only the imaging agent needs it),
* with the node's current boot token (the one in its last boot script), and
* once per token and file: the second fetch of ``sysprep.inf`` with the same token is refused.

Every refusal is a 403 and an ``Event(kind="auth")`` naming the node, the file, the reason and the
client address; the token itself is never written anywhere (only its digest is stored).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from prometheus_client import Counter
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from netdeploy import eventlog
from netdeploy.answers.render import PLACEHOLDER_TOKEN, TemplateProblem, render_answer
from netdeploy.answers.validate import validate
from netdeploy.boot.service import hardware_of
from netdeploy.config import AUTO_HARDWARE
from netdeploy.context import Context
from netdeploy.inventory import NodeState
from netdeploy.store.models import Event, Node, SecretFetch
from netdeploy.tokens import token_digest, token_matches

log = logging.getLogger("netdeploy.boot.files")

ANSWER_FILES = Counter(
    "netdeploy_answer_files",
    "Answer-file requests by outcome (served, refused: 403, broken: 500 template or validation)",
    ["outcome"],
)
SECRET_STATES = frozenset({NodeState.PXE, NodeState.IMAGING})
CONTENT_TYPES = {
    ".xml": "application/xml; charset=utf-8",
    ".yaml": "text/cloud-config; charset=utf-8",
    ".inf": "text/plain; charset=windows-1252",
    ".bat": "text/plain; charset=windows-1252",
    ".txt": "text/plain; charset=windows-1252",
    ".vbs": "text/plain; charset=windows-1252",
}


@dataclass(frozen=True)
class FileAnswer:
    status: int  # 200, 403, 404 or 500
    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    secret: bool = False

    @classmethod
    def error(cls, status: int, message: str) -> FileAnswer:
        return cls(status, (message + "\n").encode())


def content_type(name: str) -> str:
    suffix = name[name.rfind(".") :].lower() if "." in name else ""
    return CONTENT_TYPES.get(suffix, "text/plain; charset=utf-8")


def node_files(ctx: Context, mac: str) -> list[str] | None:
    """The answer files of ``mac`` as configured, or None when the MAC is not in the config."""
    node = ctx.config.node_by_mac(mac)
    return None if node is None else ctx.config.answer_files_for(node)


async def _record(ctx: Context, event: Event) -> None:
    async with ctx.sessions() as session, session.begin():
        session.add(event)
    ctx.bus.publish(event)


async def _refuse(
    ctx: Context, node: Node, name: str, ip: str, reason: str, **extra: str
) -> FileAnswer:
    await _record(
        ctx,
        eventlog.refusal(
            forbidden=True,
            mac=node.mac,
            cluster=node.cluster,
            file=name,
            ip=ip,
            reason=reason,
            **extra,
        ),
    )
    log.warning("refused %s to %s from %s: %s", name, node.mac, ip, reason)
    ANSWER_FILES.labels("refused").inc()
    return FileAnswer.error(403, f"{name} for {node.mac} refused: {reason}")


async def serve_node_file(
    ctx: Context, mac: str, name: str, *, token: str | None, ip: str
) -> FileAnswer:
    """Render ``name`` for ``mac`` and decide whether the caller may have it."""
    cfg = ctx.config
    node_cfg = cfg.node_by_mac(mac)
    if node_cfg is None:
        return FileAnswer.error(
            404,
            f"{mac} is not in the config, so it has no answer files; add it as a [[nodes]] entry",
        )
    files = cfg.answer_files_for(node_cfg)
    if name not in files:
        listed = ", ".join(files) or "none"
        return FileAnswer.error(
            404, f"{name!r} is not a file of {node_cfg.hostname}; its files: {listed}"
        )
    if node_cfg.hardware == AUTO_HARDWARE:  # render with the profile its facts matched
        profile = (await hardware_of(ctx, mac)).profile
        node_cfg = node_cfg.model_copy(update={"hardware": profile})
    try:
        rendered = render_answer(
            cfg, node_cfg, name, server_url=ctx.public_url, token=token or PLACEHOLDER_TOKEN
        )
    except TemplateProblem as exc:
        return await _broken(ctx, mac, node_cfg.cluster, name, ip, str(exc))
    problems = validate(name, rendered.text)
    if problems:
        return await _broken(ctx, mac, node_cfg.cluster, name, ip, "; ".join(map(str, problems)))
    answer = FileAnswer(200, rendered.body, content_type(name), rendered.secret)
    async with ctx.sessions() as session:
        node = await session.get(Node, mac)
    if node is None:  # config changed under us and the import has not run yet
        return FileAnswer.error(404, f"{mac} is not in the store yet; retry in a moment")
    if rendered.secret:
        refusal = await _check_secret(ctx, node, name, token, ip)
        if refusal is not None:
            return refusal
    else:
        await _record(
            ctx,
            eventlog.answer_file(mac, node.cluster, file=name, ip=ip),
        )
    ANSWER_FILES.labels("served").inc()
    return answer


async def _broken(
    ctx: Context, mac: str, cluster: str | None, name: str, ip: str, problem: str
) -> FileAnswer:
    """A file that does not render or validate is refused (500), never served half-right."""
    await _record(
        ctx,
        eventlog.answer_file(mac, cluster, file=name, ip=ip, refused=problem),
    )
    log.error("refusing broken %s for %s: %s", name, mac, problem)
    ANSWER_FILES.labels("broken").inc()
    return FileAnswer.error(
        500, f"{name} for {mac} is refused: {problem}; fix the template or the config vars"
    )


async def _check_secret(
    ctx: Context, node: Node, name: str, token: str | None, ip: str
) -> FileAnswer | None:
    """None when the secret file may be served (and is now marked used), else the 403."""
    if node.state not in SECRET_STATES:
        return await _refuse(
            ctx, node, name, ip, f"node is {node.state}; secret files are served only while imaging"
        )
    if not token:
        return await _refuse(ctx, node, name, ip, "no token (send Authorization: Bearer TOKEN)")
    if not token_matches(token, node.token):
        digest = token_digest(token)
        async with ctx.sessions() as session:
            owner = await session.scalar(select(Node.mac).where(Node.token == digest))
        if owner is not None:
            return await _refuse(ctx, node, name, ip, "token of another node", token_of=owner)
        return await _refuse(ctx, node, name, ip, "not the node's current token (stale or forged)")
    digest = token_digest(token)
    used = eventlog.answer_file(node.mac, node.cluster, file=name, ip=ip, secret=True)
    try:
        async with ctx.sessions() as session, session.begin():
            session.add(SecretFetch(mac=node.mac, token=digest, name=name, ip=ip))
            session.add(used)
    except IntegrityError:
        return await _refuse(
            ctx, node, name, ip, "token already used for this file; reboot the node"
        )
    ctx.bus.publish(used)
    return None
