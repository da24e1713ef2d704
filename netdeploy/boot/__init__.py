"""Per-MAC boot decisions: the one place that answers "what does this machine boot now?".

``plan`` decides (pure); ``service.BootService`` is the seam every protocol asks (HTTP, TFTP
through ``tftp``, ProxyDHCP through ``programs``) and hands what a boot request changes to the
rollout writer; ``scripts`` renders the decision for iPXE, pxelinux and UEFI HTTP boot;
``agent`` is the imaging agent's plan; ``files`` serves a node's rendered answer files under its
boot token; ``check`` renders every boot template for ``netdeploy check``.
"""
