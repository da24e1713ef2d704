"""Reliable multicast image distribution: wire format, sender sessions, receivers."""
