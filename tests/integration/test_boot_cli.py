"""`netdeploy check` finds template errors before boot; `netdeploy render` prints what is served."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.integration.conftest_boot import DEMO, ROOT


def netdeploy(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "netdeploy", *args], capture_output=True, text=True, timeout=60
    )


def lab(tmp_path: Path) -> tuple[Path, Path]:
    templates = tmp_path / "templates"
    shutil.copytree(ROOT / "config" / "templates", templates)
    text = DEMO.read_text().replace('templates_dir = "templates"', f'templates_dir = "{templates}"')
    text = text.replace('bootfiles_dir = "../bootfiles"', f'bootfiles_dir = "{ROOT / "bootfiles"}"')
    config = tmp_path / "netdeploy.toml"
    config.write_text(text)
    return config, templates


def test_check_passes_the_demo_lab(tmp_path: Path) -> None:
    config, _ = lab(tmp_path)
    result = netdeploy("check", "-c", str(config), "--state-dir", str(tmp_path / "state"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("OK:")


def test_check_names_template_line_and_missing_variable(tmp_path: Path) -> None:
    config, templates = lab(tmp_path)
    source = (templates / "unattend.xml").read_text()
    source = source.replace(
        "<RegisteredOwner>{{ vars.full_name }}", "<RegisteredOwner>{{ vars.owner }}"
    )
    (templates / "unattend.xml").write_text(source)
    line = next(i for i, x in enumerate(source.splitlines(), 1) if "vars.owner" in x)
    sysprep = (templates / "sysprep.inf").read_text().replace("FullName=", "; FullName=")
    (templates / "sysprep.inf").write_text(sysprep)
    result = netdeploy("check", "-c", str(config), "--state-dir", str(tmp_path / "state"))
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    expected = f"{templates / 'unattend.xml'}:{line}: node sql-n1: variable 'owner' is undefined"
    assert any(expected in x for x in lines), result.stderr
    assert any(
        "sysprep.inf: node sql-n3: rendered sysprep.inf:" in x
        and "[UserData] FullName: required entry is missing" in x
        for x in lines
    )


def test_render_prints_the_served_file(tmp_path: Path) -> None:
    config, _ = lab(tmp_path)
    state = str(tmp_path / "state")
    result = netdeploy("render", "-c", str(config), "--state-dir", state, "SQL-N2", "sysprep.inf")
    assert result.returncode == 0, result.stderr
    assert "ComputerName=SQL-N2" in result.stdout
    for who in ("52-54-00-00-10-02", "525400001002", "sql-n2"):
        same = netdeploy("render", "-c", str(config), "--state-dir", state, who, "sysprep.inf")
        assert same.stdout == result.stdout
    bad = netdeploy("render", "-c", str(config), "--state-dir", state, "web-1", "sysprep.inf")
    assert bad.returncode == 1
    assert bad.stderr.strip() == (
        "netdeploy: 'sysprep.inf' is not a file of web-1; its files: cloud-init.yaml, preseed.cfg"
    )
    nobody = netdeploy("render", "-c", str(config), "--state-dir", state, "aa:bb:cc:dd:ee:ff", "x")
    assert nobody.returncode == 1 and "no node 'aa:bb:cc:dd:ee:ff'" in nobody.stderr
