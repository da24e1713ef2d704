"""Render one answer file for one node, and decide whether it holds secrets.

Variables a template sees (docs/boot.md, "Template variables"):
``node`` (mac, mac_hyphens, hostname, computer_name, is_first_node, hardware, ip, ...),
``cluster`` (name, first_node, service_account, shared_disks, nodes; None when standalone),
``hardware`` (name, description, mass_storage), ``image`` (name, description, format),
``vars`` (cluster vars overlaid by node vars) and ``netdeploy`` (url, token, files_url,
events_url, health_url).
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import TracebackType
from typing import Any

import jinja2
from jinja2 import meta, nodes

from netdeploy.clusterkinds import formation
from netdeploy.config import Config, NodeConfig
from netdeploy.inventory import mac_hyphens
from netdeploy.tokens import SECRET_NAME

# A variable whose name matches makes every file that uses it a secret file (token-guarded);
# the same names are never stored (netdeploy.tokens.without_secrets).
# Windows reads these as ANSI text with CRLF line ends; batch labels misbehave with bare LF.
WINDOWS_TEXT = (".inf", ".bat", ".cmd", ".txt", ".vbs")
PLACEHOLDER_TOKEN = "TOKEN-ISSUED-AT-BOOT"


@dataclass(frozen=True)
class TemplateProblem(Exception):
    """A template cannot be rendered for a node: which template, which line, what is missing."""

    template: str
    line: int | None
    node: str
    message: str

    def __str__(self) -> str:
        where = f"{self.template}:{self.line}" if self.line else self.template
        return f"{where}: node {self.node}: {self.message}"


@dataclass(frozen=True)
class Rendered:
    name: str
    text: str
    secret: bool

    @property
    def body(self) -> bytes:
        """The bytes served: CRLF and Windows-1252 for Windows text files, UTF-8 otherwise."""
        if self.name.lower().endswith(WINDOWS_TEXT):
            return self.text.replace("\r\n", "\n").replace("\n", "\r\n").encode("cp1252")
        return self.text.encode("utf-8")


@lru_cache(maxsize=8)
def environment(templates_dir: Path) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(templates_dir),
        undefined=jinja2.StrictUndefined,
        autoescape=jinja2.select_autoescape(enabled_extensions=("xml",), default=False),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def template_names(templates_dir: Path) -> list[str]:
    return sorted(environment(templates_dir).list_templates())


def referenced_names(templates_dir: Path, name: str) -> set[str]:
    """Every variable or attribute name the template (and what it includes) refers to."""
    env = environment(templates_dir)
    seen: set[str] = set()
    todo, names = [name], set()
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        assert env.loader is not None
        source, _, _ = env.loader.get_source(env, current)
        tree = env.parse(source)
        names |= {n.name for n in tree.find_all(nodes.Name)}
        names |= {n.attr for n in tree.find_all(nodes.Getattr)}
        names |= {
            n.arg.value
            for n in tree.find_all(nodes.Getitem)
            if isinstance(n.arg, nodes.Const) and isinstance(n.arg.value, str)
        }
        todo.extend(t for t in meta.find_referenced_templates(tree) if t)
    return names


def is_secret_template(templates_dir: Path, name: str) -> bool:
    return any(SECRET_NAME.search(n) for n in referenced_names(templates_dir, name))


def _secret_values(variables: dict[str, Any]) -> list[str]:
    values = [str(v) for k, v in variables["vars"].items() if SECRET_NAME.search(k)]
    values.append(variables["netdeploy"]["token"])
    return [v for v in values if len(v) >= 4]


def node_variables(
    cfg: Config, node: NodeConfig, *, server_url: str, token: str = PLACEHOLDER_TOKEN
) -> dict[str, Any]:
    """The variables every template of ``node`` is rendered with."""
    cluster_cfg = cfg.clusters.get(node.cluster) if node.cluster else None
    profile = cfg.hardware.get(node.hardware) if node.hardware else None
    image_name = cfg.image_for(node)
    image = cfg.images.get(image_name) if image_name else None
    base = f"{server_url}/nodes/{mac_hyphens(node.mac)}"
    api = f"{server_url}/api/nodes/{mac_hyphens(node.mac)}"
    cluster = None
    if cluster_cfg is not None:
        members = cfg.cluster_nodes(node.cluster or "")
        cluster = {
            "name": node.cluster,
            "first_node": cluster_cfg.first_node,
            "service_account": cluster_cfg.service_account,
            "shared_disks": [
                {"volume": d.volume, "letter": d.letter.upper()} for d in cluster_cfg.shared_disks
            ],
            "nodes": [m.hostname for m in members],
            "vars": dict(cluster_cfg.vars),
            "kind": cluster_cfg.kind,
            "quorum": cluster_cfg.quorum,
            # this node's create/join commands and how it lists members (clusterkinds.py);
            # None for a cluster without a kind, or when `check` reports a missing var
            "formation": None,
        }
    merged = {**(cluster_cfg.vars if cluster_cfg else {}), **node.vars}
    if cluster is not None and cluster_cfg is not None and cluster_cfg.kind:
        # a missing var: load_config refused this config already (check names it)
        with contextlib.suppress(KeyError):
            cluster["formation"] = formation(
                cluster_cfg.kind,
                cluster=str(node.cluster),
                node=node.hostname,
                first_node=cluster_cfg.first_node or "",
                values=merged,
                service_account=cluster_cfg.service_account,
                quorum=cluster_cfg.quorum,
            ).json()
    is_first = bool(cluster_cfg and (cluster_cfg.first_node or "").lower() == node.hostname.lower())
    # "ready" is what the started OS reports (rollout API): the first node reports its cluster
    # service health, which forms the cluster; every other node (and a standalone one) joined.
    ready_kind = "health" if is_first else "joined"
    ready_body = (
        '{"healthy": true, "message": "cluster service online"}'
        if is_first
        else '{"state": "joined", "message": "operating system up"}'
    )
    return {
        "node": {
            "mac": node.mac,
            "mac_hyphens": mac_hyphens(node.mac),
            "hostname": node.hostname,
            # NetBIOS name, upper case by convention; the validators refuse more than 15 characters
            "computer_name": node.hostname.upper(),
            "cluster": node.cluster,
            "hardware": node.hardware,
            "image": image_name,
            "is_first_node": is_first,
            "vars": dict(node.vars),
        },
        "cluster": cluster,
        "hardware": (
            {
                "name": node.hardware,
                "description": profile.description,
                "mass_storage": [d.model_dump() for d in profile.mass_storage],
            }
            if profile
            else None
        ),
        "image": (
            {"name": image_name, "description": image.description, "format": image.format}
            if image
            else None
        ),
        "vars": merged,
        "netdeploy": {
            "url": server_url,
            "token": token,
            "files_url": f"{base}/files",
            "events_url": f"{api}/events",
            "health_url": f"{api}/health",
            "ready_url": f"{api}/health" if is_first else f"{api}/events",
            "ready_kind": ready_kind,
            "ready_body": ready_body,
        },
    }


def _template_line(tb: TracebackType | None, filename: str | None) -> int | None:
    """The template line of a render error: jinja maps template frames to their source lines."""
    line = None
    while tb is not None:
        if filename and tb.tb_frame.f_code.co_filename == filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _undefined_message(exc: jinja2.UndefinedError) -> str:
    text = str(exc)
    attr = re.search(r"has no attribute '([^']+)'", text)
    if attr:
        return f"variable {attr.group(1)!r} is undefined ({text}); define it in the config vars"
    name = re.search(r"'([^']+)' is undefined", text)
    if name:
        return f"variable {name.group(1)!r} is undefined; define it in the config vars"
    return f"undefined variable: {text}"


def render_answer(
    cfg: Config,
    node: NodeConfig,
    name: str,
    *,
    server_url: str,
    token: str = PLACEHOLDER_TOKEN,
) -> Rendered:
    """Render template ``name`` for ``node``; raise :class:`TemplateProblem` on any error.

    The file is secret when its template refers to a secret-named variable, or when its text
    contains a secret value or the token (a second guard, e.g. a password passed through a
    differently named variable).
    """
    templates_dir = cfg.server.templates_dir
    env = environment(templates_dir)
    try:
        template = env.get_template(name)
    except jinja2.TemplateNotFound:
        raise TemplateProblem(
            name, None, node.hostname, f"no template {name!r} in {templates_dir}"
        ) from None
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateProblem(
            exc.name or name, exc.lineno, node.hostname, f"syntax error: {exc.message}"
        ) from None
    variables = node_variables(cfg, node, server_url=server_url, token=token)
    try:
        text = template.render(**variables)
    except jinja2.UndefinedError as exc:
        line = _template_line(exc.__traceback__, template.filename)
        raise TemplateProblem(name, line, node.hostname, _undefined_message(exc)) from None
    except jinja2.TemplateError as exc:
        line = _template_line(exc.__traceback__, template.filename)
        raise TemplateProblem(name, line, node.hostname, str(exc)) from None
    secret = is_secret_template(templates_dir, name) or any(
        value in text for value in _secret_values(variables)
    )
    return Rendered(name, text, secret)
