"""`netdeploy image add|list|verify|rm` as an admin runs them: a real process, a real store."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from netdeploy.config import load_config
from netdeploy.inventory import NodeState
from netdeploy.rollout.state import set_state
from netdeploy.store import open_store
from netdeploy.store.models import Node
from tests.integration.conftest_images import IMAGE_SIZE, MAC_N2, make_image, write_lab

CLUSTER_FLAGS = ["--sysprep", "reseal", "--without-cluster-service", "--no-shared-storage"]


def netdeploy(config: Path, *args: str, user: str | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "netdeploy", *args, "--config", str(config)]
    if user:  # drop root so file permissions apply (root reads anything)
        command = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *command]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=config.parent)


def one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_lab(tmp_path)


def images(config: Path) -> dict[str, dict]:
    result = netdeploy(config, "image", "list", "--json")
    assert result.returncode == 0, result.stderr
    return {i["name"]: i for i in json.loads(result.stdout)}


def test_add_list_verify(config: Path) -> None:
    src = config.parent / "capture.img"
    sha = make_image(src)
    result = netdeploy(config, "image", "add", "base", str(src))
    assert result.returncode == 0, result.stderr
    assert sha in result.stdout and "hard link" in result.stdout
    assert "hashing base" in result.stderr  # the progress bar (size, rate, ETA) went to stderr
    base = images(config)["base"]
    assert (base["status"], base["sha256"], base["size"]) == ("ok", sha, IMAGE_SIZE)
    placed = Path(base["path"])
    assert placed == config.parent / "state" / "images" / "base.img"
    assert placed.stat().st_ino == src.stat().st_ino
    assert images(config)["clu"]["status"] == "unhashed"
    result = netdeploy(config, "image", "verify", "-q")
    assert result.returncode == 0 and f"base: ok: sha256 {sha} matches" in result.stdout


def test_verify_finds_content_changed_behind_same_size_and_mtime(config: Path) -> None:
    src = config.parent / "capture.img"
    make_image(src)
    assert netdeploy(config, "image", "add", "base", str(src), "-q").returncode == 0
    st = src.stat()
    with open(src, "r+b") as fh:  # same size; then put the old mtime back
        fh.seek(1000)
        fh.write(b"tampered")
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert images(config)["base"]["status"] == "ok"  # stat alone cannot see it
    result = netdeploy(config, "image", "verify", "base", "-q")
    assert result.returncode == 1 and "content changed" in result.stderr
    base = images(config)["base"]
    assert base["status"] == "bad" and "image add base" in base["status_detail"]


def test_list_marks_a_changed_file_bad(config: Path) -> None:
    src = config.parent / "capture.img"
    make_image(src)
    assert netdeploy(config, "image", "add", "base", str(src), "-q").returncode == 0
    with open(src, "ab") as fh:
        fh.write(b"more")
    base = images(config)["base"]
    assert base["status"] == "bad"
    assert f"size changed from {IMAGE_SIZE} to {IMAGE_SIZE + 4}" in base["status_detail"]


def test_add_copies_across_file_systems_and_compresses(config: Path) -> None:
    src = Path("/dev/shm") / f"netdeploy-test-{os.getpid()}.img"  # tmpfs: os.link fails (EXDEV)
    if not src.parent.is_dir():
        pytest.skip("no /dev/shm to test a cross-file-system copy")
    try:
        sha = make_image(src)
        result = netdeploy(config, "image", "add", "base", str(src), "-q")
        assert result.returncode == 0 and "copy at" in result.stdout, result
        result = netdeploy(config, "image", "add", "packed", str(src), "--compress", "zstd", "-q")
        assert result.returncode == 0, result.stderr
    finally:
        src.unlink()
    listed = images(config)
    assert listed["base"]["sha256"] == sha
    assert listed["packed"]["format"] == "raw+zstd"
    assert listed["packed"]["facts"]["raw_sha256"] == sha
    assert listed["packed"]["size"] < IMAGE_SIZE + 1024  # random data: zstd stores, barely grows


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["nosuch", "{src}"], "not declared in"),
        (["../etc", "{src}"], "not a valid image name"),
        (["base", "{dir}/missing.img"], "missing.img: no such file"),
        (["base", "{dir}"], "not a regular file"),
        (["clu", "{src}"], "--sysprep reseal|factory --without-cluster-service"),
        (["clu", "{src}", "--sysprep", "reseal"], "confirm with --without-cluster-service"),
        (["base", "{src}", "--compress", "zstd"], 'format = "raw+zstd"'),
        (["packed", "{src}"], "add --compress zstd"),
        (["base", "{src}", "--hardware", "nosuch"], "unknown hardware profile nosuch"),
    ],
)
def test_add_refuses_with_one_clear_line(config: Path, args: list[str], expected: str) -> None:
    src = config.parent / "capture.img"
    make_image(src, 4096)
    argv = [a.format(src=src, dir=config.parent) for a in args]
    line = one_error_line(netdeploy(config, "image", "add", *argv, "-q"))
    assert line.startswith("netdeploy: ") and expected in line


def test_add_unreadable_file(config: Path, tmp_path: Path) -> None:
    src = config.parent / "secret.img"
    make_image(src, 4096)
    src.chmod(0)
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("root without setpriv cannot test an unreadable file")
        for p in [tmp_path, *tmp_path.parents]:  # let 'nobody' reach the config and the file
            if p != Path("/"):
                p.chmod(p.stat().st_mode | 0o005)
        (config.parent / "state").mkdir(mode=0o777)
        result = netdeploy(config, "image", "add", "base", str(src), "-q", user="65534")
    else:
        result = netdeploy(config, "image", "add", "base", str(src), "-q")
    assert one_error_line(result) == f"netdeploy: cannot add {src}: Permission denied"


def test_cluster_image_records_preflight_facts(config: Path) -> None:
    src = config.parent / "master.img"
    make_image(src)
    result = netdeploy(config, "image", "add", "clu", str(src), *CLUSTER_FLAGS, "--hardware", "hw1")
    assert result.returncode == 0, result.stderr
    facts = images(config)["clu"]["facts"]
    assert facts["sysprep"] == "reseal"
    assert facts["cluster_service"] is False and facts["shared_storage"] is False
    assert facts["hardware"] == ["hw1"] and facts["clusters"] == ["c1"]


async def _set_state(config: Path, mac: str, state: NodeState) -> None:
    cfg = load_config(config)
    engine, sessions = await open_store(cfg.database_url)
    try:
        async with sessions() as session, session.begin():
            node = await session.get(Node, mac)
            set_state(session, node, state, reason="test", force=True)
    finally:
        await engine.dispose()


def test_rm_refused_while_a_node_is_imaged_with_it(config: Path) -> None:
    src = config.parent / "capture.img"
    make_image(src)
    assert netdeploy(config, "image", "add", "base", str(src), "-q").returncode == 0
    asyncio.run(_set_state(config, MAC_N2, NodeState.IMAGING))
    line = one_error_line(netdeploy(config, "image", "rm", "base"))
    assert "n2 (imaging)" in line and "wait until they finish" in line
    line = one_error_line(netdeploy(config, "image", "add", "base", str(src), "-q"))
    assert "cannot replace image 'base'" in line  # nor replaced under a node mid-stream
    assert images(config)["base"]["status"] == "ok"
    asyncio.run(_set_state(config, MAC_N2, NodeState.IMAGED))
    result = netdeploy(config, "image", "rm", "base", "--delete-file")
    assert result.returncode == 0, result.stderr
    assert images(config)["base"]["status"] == "unhashed"
    assert not (config.parent / "state" / "images" / "base.img").exists()
    assert src.exists()  # the admin's own capture is never deleted
