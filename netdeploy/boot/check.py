"""`netdeploy check` (and the running server before a reload): every iPXE and pxelinux template
renders for every state a node can be in, before any machine asks for one; paths exist; every
answer file renders and validates; reported hardware has its drivers (:func:`check_config`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2

from netdeploy.answers.check import check_answer_files, server_url
from netdeploy.answers.render import PLACEHOLDER_TOKEN
from netdeploy.boot import scripts
from netdeploy.boot.hardware import check_facts, verdict
from netdeploy.boot.plan import BootUrls, NodeFacts, boot_plan
from netdeploy.config import AUTO_HARDWARE, Config
from netdeploy.inventory import NodeState


def check_boot_templates(cfg: Config) -> list[str]:
    """Render the iPXE and pxelinux templates for every state a node can be in."""
    bootfiles = cfg.server.bootfiles_dir
    urls = BootUrls(server_url(cfg))
    lines = []
    states: list[NodeState | None] = [*NodeState, None]
    try:
        scripts.first_stage_ipxe(bootfiles, urls)
        for state in states:
            facts = NodeFacts("52:54:00:00:00:01", state, "check", "c", "waiting", "image")
            plan = boot_plan(facts, urls)
            scripts.ipxe_script(bootfiles, plan, PLACEHOLDER_TOKEN)
            scripts.pxelinux_config(bootfiles, plan, PLACEHOLDER_TOKEN)
    except jinja2.TemplateSyntaxError as exc:
        lines.append(f"{exc.filename or exc.name}:{exc.lineno}: {exc.message}")
    except jinja2.TemplateNotFound as exc:
        lines.append(f"{Path(scripts.templates_dir(bootfiles)) / str(exc.name)}: missing")
    except jinja2.UndefinedError as exc:
        lines.append(f"{scripts.templates_dir(bootfiles)}: boot template: {exc}")
    return lines


def check_paths(cfg: Config) -> list[str]:
    problems = []
    if not cfg.server.bootfiles_dir.is_dir():
        problems.append(f"server.bootfiles_dir: {cfg.server.bootfiles_dir} is not a directory")
    for name in sorted({f for n in cfg.nodes for f in cfg.answer_files_for(n)}):
        if not (cfg.server.templates_dir / name).is_file():
            problems.append(f"answer template {name!r} not found in {cfg.server.templates_dir}")
    return problems


def with_profiles(
    cfg: Config, facts_by_mac: dict[str, dict[str, Any]], fallback: str | None
) -> Config:
    """``cfg`` with each ``hardware = "auto"`` node given its profile: the one its reported
    facts match, or ``fallback`` when it has reported none yet."""
    nodes = []
    for node in cfg.nodes:
        if node.hardware == AUTO_HARDWARE:
            facts = facts_by_mac.get(node.mac)
            profile = verdict(cfg, node, facts).profile if facts else fallback
            node = node.model_copy(update={"hardware": profile})
        nodes.append(node)
    return cfg.model_copy(update={"nodes": nodes})


def check_answer_files_matched(cfg: Config, facts_by_mac: dict[str, dict[str, Any]]) -> list[str]:
    """Every answer file renders and validates with the profile each node gets: a node on
    ``auto`` that has not reported facts yet is checked with every profile it could match."""
    if not any(n.hardware == AUTO_HARDWARE for n in cfg.nodes):
        return check_answer_files(cfg)
    candidates = [name for name, p in cfg.hardware.items() if p.match] or [None]
    seen: set[str] = set()
    lines: list[str] = []
    for fallback in candidates:
        for line in check_answer_files(with_profiles(cfg, facts_by_mac, fallback)):
            if line not in seen:  # the same problem under every profile: said once
                seen.add(line)
                lines.append(line if fallback is None else f"{line} (with profile {fallback})")
    return lines


def check_config(cfg: Config, facts_by_mac: dict[str, dict[str, Any]] | None = None) -> list[str]:
    """Everything `netdeploy check` checks beyond loading: paths, boot templates, every answer
    file, and each node's reported hardware against its profile (the seed's driver rule).
    The running server runs the same before a reload or an adopt changes anything."""
    facts = facts_by_mac or {}
    return (
        check_paths(cfg)
        + check_boot_templates(cfg)
        + check_answer_files_matched(cfg, facts)
        + check_facts(cfg, facts)
    )
