"""Per-MAC boot decisions: the one place that answers "what does this machine boot now?".

``plan`` decides (pure), ``scripts`` renders the decision for iPXE, pxelinux and UEFI HTTP boot,
``service`` records each request and applies the state change it implies, ``files`` serves a
node's rendered answer files under its boot token, and ``tftp`` is the seam the TFTP server calls.
"""
