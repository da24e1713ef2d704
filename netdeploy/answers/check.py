"""`netdeploy check` and `netdeploy render`: render what would be served, before any boot.

A template that breaks for one node (Cobbler #1696) is found here, at check time, with the
template, the line and the missing variable named, rather than by a machine at boot time.
"""

from __future__ import annotations

from netdeploy.answers.render import (
    PLACEHOLDER_TOKEN,
    Rendered,
    TemplateProblem,
    render_answer,
)
from netdeploy.answers.validate import InvalidAnswerFile, validate
from netdeploy.config import Config, NodeConfig
from netdeploy.inventory import BadMac, normalize_mac

CHECK_URL = "http://netdeploy.invalid:8080"  # stands in for public_url when none is configured


def server_url(cfg: Config) -> str:
    return cfg.server.public_url or CHECK_URL


def find_node(cfg: Config, who: str) -> NodeConfig | None:
    """A node by MAC (any notation) or host name."""
    try:
        return cfg.node_by_mac(normalize_mac(who))
    except BadMac:
        return cfg.node_by_hostname(who)


def render_checked(cfg: Config, node: NodeConfig, name: str, *, token: str, url: str) -> Rendered:
    """Render and validate exactly as the server does; raise on any problem."""
    rendered = render_answer(cfg, node, name, server_url=url, token=token)
    problems = validate(name, rendered.text)
    if problems:
        raise InvalidAnswerFile(problems)
    return rendered


def _where(cfg: Config, problem: TemplateProblem) -> str:
    path = cfg.server.templates_dir / problem.template
    where = f"{path}:{problem.line}" if problem.line else str(path)
    return f"{where}: node {problem.node}: {problem.message}"


def check_answer_files(cfg: Config) -> list[str]:
    """Render every answer file of every node and validate it; one line per problem."""
    lines = []
    for node in cfg.nodes:
        for name in cfg.answer_files_for(node):
            if not (cfg.server.templates_dir / name).is_file():
                continue  # reported by the config check ("answer template ... not found")
            try:
                render_checked(cfg, node, name, token=PLACEHOLDER_TOKEN, url=server_url(cfg))
            except TemplateProblem as exc:
                lines.append(_where(cfg, exc))
            except InvalidAnswerFile as exc:
                path = cfg.server.templates_dir / name
                lines += [
                    f"{path}: node {node.hostname}: rendered {p}; fix the template or the vars"
                    for p in exc.problems
                ]
    return lines
