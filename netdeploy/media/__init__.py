"""Startup media: the kernel + busybox initramfs that a network-booted machine runs."""
