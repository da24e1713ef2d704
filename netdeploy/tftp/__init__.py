"""Read-only TFTP boot service: asyncio engine, rooted files, per-MAC virtual files.

See docs/tftp.md for what it serves and how it is measured, and
docs/decisions/0001-tftp-engine.md for why it is its own engine.

The engine is :class:`netdeploy.tftp.engine.TftpServer`; this package face imports nothing, so
its modules can import each other without a cycle through it.
"""
