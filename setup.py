"""The one compiled part: the TFTP data plane (docs/decisions/0021-tftp-native-data-plane.md).

Optional: without a C compiler and Python's headers the install still succeeds and TFTP
runs on the pure-Python plane (netdeploy/tftp/transfer.py); `netdeploy serve` logs which.
Everything else about the package is in pyproject.toml.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "netdeploy.tftp._native",
            ["netdeploy/tftp/_native.c"],
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-std=gnu11"],
            optional=True,
        )
    ]
)
