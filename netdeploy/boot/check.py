"""`netdeploy check` for the boot templates: every iPXE and pxelinux template renders for every
state a node can be in, before any machine asks for one."""

from __future__ import annotations

from pathlib import Path

import jinja2

from netdeploy.answers.check import server_url
from netdeploy.answers.render import PLACEHOLDER_TOKEN
from netdeploy.boot import scripts
from netdeploy.boot.plan import BootUrls, NodeFacts, boot_plan
from netdeploy.config import Config
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
