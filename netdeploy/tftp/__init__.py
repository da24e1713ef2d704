"""Read-only TFTP boot service: asyncio engine, rooted files, per-MAC virtual files.

See docs/tftp.md for what it serves and how it is measured, and
docs/decisions/0001-tftp-engine.md for why it is its own engine.
"""

from netdeploy.tftp.engine import TftpServer
from netdeploy.tftp.transfer import TransferStats

__all__ = ["TftpServer", "TransferStats"]
