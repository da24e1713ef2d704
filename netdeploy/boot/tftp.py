"""The seam between the TFTP server and boot decisions.

The TFTP engine asks :func:`virtual_file` for every read request before it looks on disk;
per-MAC files (``pxelinux.cfg/01-aa-bb-cc-dd-ee-ff``, the iPXE first-stage script) come
from here, rendered from the node's boot plan. ``None`` means "not a virtual file".
"""

from __future__ import annotations

from netdeploy.server import Context


async def virtual_file(ctx: Context, path: str, client_ip: str) -> bytes | None:
    """Bytes for a per-MAC virtual file, or None to let the engine serve from its root.

    Implemented by the boot-decisions work (issue 4); until then no path is virtual.
    """
    return None
