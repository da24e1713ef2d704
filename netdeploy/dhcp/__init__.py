"""ProxyDHCP (docs/boot.md "ProxyDHCP"): boot information for PXE clients whose address comes
from the LAN's own DHCP server. ``packet`` and ``pxe`` are pure; ``service`` owns the sockets,
``record`` the events and metrics."""
