"""Render a :class:`~netdeploy.boot.plan.BootPlan` for each kind of boot client.

iPXE gets a script over HTTP (or the first stage over TFTP), pxelinux a config file over TFTP,
a UEFI HTTP-boot client a URL. Templates live in ``<bootfiles>/templates`` so a site can adapt
them; they hold no secrets (the token is passed in at render time, never stored in them).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import jinja2

from netdeploy.boot.plan import INITRD_PATH, KERNEL_PATH, BootAction, BootPlan, BootUrls

FIRST_STAGE = "boot.ipxe.j2"
NODE_IPXE = "node.ipxe.j2"
PXELINUX = "pxelinux.cfg.j2"
ALL_TEMPLATES = (FIRST_STAGE, NODE_IPXE, PXELINUX)
# A machine whose boot fails retries after this long: slow enough not to flood the event log,
# fast enough that an admin who fixes the server sees the machine come back soon.
RETRY_SECONDS = 5


@lru_cache(maxsize=8)
def _env(templates_dir: Path) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(templates_dir),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )


def templates_dir(bootfiles_dir: Path) -> Path:
    return bootfiles_dir / "templates"


def _render(bootfiles_dir: Path, name: str, **values: object) -> str:
    return _env(templates_dir(bootfiles_dir)).get_template(name).render(**values)


def first_stage_ipxe(bootfiles_dir: Path, urls: BootUrls) -> str:
    """The generic ``boot.ipxe``: chain to ``/boot/<mac>.ipxe`` on the public URL."""
    return _render(bootfiles_dir, FIRST_STAGE, server=urls.server, retry_seconds=RETRY_SECONDS)


def ipxe_script(bootfiles_dir: Path, plan: BootPlan, token: str | None) -> str:
    """The per-MAC iPXE script; ``token`` is required exactly when the plan boots the agent."""
    cmdline = plan.cmdline(_need(plan, token)) if plan.boots_agent else ""
    return _render(
        bootfiles_dir, NODE_IPXE, plan=plan, cmdline=cmdline, retry_seconds=RETRY_SECONDS
    )


def pxelinux_config(bootfiles_dir: Path, plan: BootPlan, token: str | None) -> str:
    """``pxelinux.cfg/01-<mac>``: kernel and initrd by TFTP path (plain pxelinux has no HTTP)."""
    cmdline = ""
    if plan.boots_agent:
        # pxelinux reads initrd= in APPEND as a file to load; the INITRD line already says it
        cmdline = " ".join(
            part for part in plan.cmdline(_need(plan, token)).split() if part != "initrd=initrd.gz"
        )
    return _render(
        bootfiles_dir, PXELINUX, plan=plan, cmdline=cmdline, kernel=KERNEL_PATH, initrd=INITRD_PATH
    )


def uefi_http_url(plan: BootPlan, urls: BootUrls) -> str | None:
    """The URL a UEFI HTTP-boot client should load, or None: offer nothing, boot the disk.

    UEFI HTTP boot passes no kernel command line, so the client loads iPXE, which runs
    ``/boot.ipxe`` and asks for the same per-MAC plan as every other client.
    """
    return None if plan.action == BootAction.LOCAL else urls.uefi_loader


def _need(plan: BootPlan, token: str | None) -> str:
    if not token:
        raise ValueError(f"the {plan.action} plan for {plan.mac} needs a token")
    return token
