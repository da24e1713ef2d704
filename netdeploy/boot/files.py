"""Serve a node's rendered answer files to the agent that claimed the node in this phase.

Token rules (docs/boot.md, "Tokens"; docs/security.md): a file is secret when its template uses
a secret-named variable (``*password*``, ``*secret*``, ``*token*``, ``product_key``,
``private_key``) or its text holds a secret value. Every file needs the agent's claim of this
boot phase; a secret file is served only

* to a node that is being imaged (state ``pxe`` or ``imaging``: only the imaging agent needs it),
* once per claim and file: the second fetch of ``sysprep.inf`` in the same phase is refused,

and carries the phase's report token (the started OS's credential for health/joined). The
check and the marking run as one action of the rollout writer. Every refusal is a 403 and an
``Event(kind="auth")`` naming the node, the file, the reason and the client address; no
credential is written anywhere in plain text (only digests are stored).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from prometheus_client import Counter

from netdeploy import eventlog
from netdeploy.answers.render import TemplateProblem, render_answer
from netdeploy.answers.validate import validate
from netdeploy.boot.service import hardware_of
from netdeploy.config import AUTO_HARDWARE
from netdeploy.context import Context
from netdeploy.inventory import NodeState
from netdeploy.rollout.errors import NotFound, RolloutError
from netdeploy.rollout.identity import answer_file_fetch
from netdeploy.store.models import Event
from netdeploy.tokens import report_token, token_digest

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


async def serve_node_file(
    ctx: Context, mac: str, name: str, *, token: str | None, ip: str
) -> FileAnswer:
    """Render ``name`` for ``mac`` and decide whether the caller may have it.

    ``token`` is the claimed agent's secret (already checked to be well-formed). Secret files
    carry the phase's report token, derived from that claim (netdeploy.tokens.report_token):
    never the boot token, and never anything the request chose.
    """
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
    if not token:
        return FileAnswer.error(403, f"{name} for {mac} needs the agent's claim (Bearer)")
    report = report_token(ctx.secret_key, mac, token_digest(token))
    try:
        rendered = render_answer(cfg, node_cfg, name, server_url=ctx.public_url, token=report)
    except TemplateProblem as exc:
        return await _broken(ctx, mac, node_cfg.cluster, name, ip, str(exc))
    problems = validate(name, rendered.text)
    if problems:
        return await _broken(ctx, mac, node_cfg.cluster, name, ip, "; ".join(map(str, problems)))
    action = answer_file_fetch(
        mac, token, name, ip, secret_file=rendered.secret, report=token_digest(report)
    )
    try:
        await ctx.rollout.run(action, [mac])
    except RolloutError as exc:
        status = 404 if isinstance(exc, NotFound) else 403
        log.info("refused %s to %s from %s: %s", name, mac, ip, exc)
        ANSWER_FILES.labels("refused").inc()
        return FileAnswer.error(status, f"{name} for {mac} refused: {exc}")
    ANSWER_FILES.labels("served").inc()
    return FileAnswer(200, rendered.body, content_type(name), rendered.secret)


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
