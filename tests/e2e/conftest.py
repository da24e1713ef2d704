"""Fixtures shared by the QEMU tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import build_media


@pytest.fixture(scope="session")
def media() -> Path:
    """Startup media in the repository's bootfiles, built once per run."""
    return build_media()
