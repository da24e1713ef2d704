"""Inject targets: which filesystems the agent can write answer files into, and precise errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from netdeploy.config import ConfigError, load_config
from netdeploy.media.build import media_status
from netdeploy.tomlpos import line_of
from tests.conftest import DEMO_CONFIG, run_cli

DEMO = DEMO_CONFIG.read_text()
SYSPREP_ENTRY = '{ file = "sysprep.inf", partition = 1, fs = "vfat", path = "sysprep/sysprep.inf" }'
BAT_ENTRY = (
    '{ file = "AssignDriveLetters.bat", partition = 1, fs = "vfat", '
    'path = "netdeploy/AssignDriveLetters.bat" }'
)


def demo_with(tmp_path: Path, old: str, new: str) -> tuple[Path, str]:
    assert old in DEMO, "the demo config no longer has this inject entry"
    text = DEMO.replace(old, new, 1)
    path = tmp_path / "netdeploy.toml"  # relative paths of the demo still resolve from tmp
    path.write_text(text)
    return path, text


def line_with(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), start=1) if needle in line)


def test_ntfs_is_accepted_for_windows_system_partitions(tmp_path):
    path, _ = demo_with(tmp_path, SYSPREP_ENTRY, SYSPREP_ENTRY.replace('"vfat"', '"ntfs"'))
    cfg = load_config(path)
    targets = cfg.inject_for(cfg.node_by_hostname("sql-n2"))
    assert [(t.file, t.fs) for t in targets[:2]] == [
        ("sysprep.inf", "ntfs"),
        ("AssignDriveLetters.bat", "vfat"),
    ]


@pytest.mark.parametrize("fs", ["ntfs3", "NTFS", "fuseblk", ""])
def test_unknown_fs_names_file_line_key_and_the_choices(tmp_path, fs):
    path, text = demo_with(tmp_path, BAT_ENTRY, BAT_ENTRY.replace('"vfat"', f'"{fs}"'))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    (problem,) = caught.value.problems
    assert problem.file == str(path)
    # the element's own line inside the multi-line `inject = [` array, not the array's first line
    assert problem.line == line_with(text, 'file = "AssignDriveLetters.bat"')
    assert problem.key == "clusters.sqlclu.inject[1].fs"
    assert problem.message == "Input should be 'vfat', 'ext4' or 'ntfs'"


def test_cli_check_prints_one_line_for_a_bad_fs(tmp_path):
    path, text = demo_with(tmp_path, SYSPREP_ENTRY, SYSPREP_ENTRY.replace('"vfat"', '"ntfs-3g"'))
    result = run_cli("check", "--config", str(path))
    assert result.returncode == 1
    line = line_with(text, 'file = "sysprep.inf", partition')
    assert result.stderr.strip().splitlines() == [
        f"{path}:{line}: clusters.sqlclu.inject[0].fs: Input should be 'vfat', 'ext4' or 'ntfs'"
    ]


def test_multiline_inline_table_arrays_map_each_element_to_its_line():
    source = (
        "[clusters.c]\n"
        "inject = [  # one per line\n"
        '  { file = "a", fs = "vfat" },\n'
        "\n"
        '  { file = "b", path = "x/[y]" },\n'
        "]\n"
        'image = "w"\n'
        "disks = [{ n = 1 }, { n = 2 }]\n"
    )
    assert line_of(source, ("clusters", "c", "inject", 0, "fs")) == 3
    assert line_of(source, ("clusters", "c", "inject", 1, "path")) == 5
    assert line_of(source, ("clusters", "c", "inject", 1, "partition")) == 5  # missing: element
    assert line_of(source, ("clusters", "c", "inject", 2)) == 2  # no such element: the array
    assert line_of(source, ("clusters", "c", "image")) == 7  # the array closed on line 6
    assert line_of(source, ("clusters", "c", "disks", 1, "n")) == 8  # one-line arrays: the key


def media_dir(tmp_path: Path, ntfs: object) -> Path:
    """A bootfiles dir whose built media has (or lacks) ntfs-3g according to its manifest."""
    bootfiles = tmp_path / "bootfiles"
    shutil.copytree(DEMO_CONFIG.parent.parent / "bootfiles" / "templates", bootfiles / "templates")
    media = bootfiles / "media"
    media.mkdir()
    for name in ("vmlinuz", "initrd.gz"):
        (media / name).write_bytes(b"x")
    (media / "manifest.json").write_text(json.dumps({"ntfs-3g": ntfs}))
    return bootfiles


def test_check_notes_media_without_ntfs3g_when_an_inject_entry_needs_it(tmp_path):
    bootfiles = media_dir(tmp_path, None)  # built with --ntfs-3g none
    text = DEMO.replace(SYSPREP_ENTRY, SYSPREP_ENTRY.replace('"vfat"', '"ntfs"'), 1)
    text = text.replace('bootfiles_dir = "../bootfiles"', f'bootfiles_dir = "{bootfiles}"')
    text = text.replace(
        'templates_dir = "templates"', f'templates_dir = "{DEMO_CONFIG.parent / "templates"}"'
    )
    path = tmp_path / "netdeploy.toml"
    path.write_text(text)
    result = run_cli("check", "--config", str(path), "--state-dir", str(tmp_path / "state"))
    assert result.returncode == 0, result.stderr
    assert (
        f'note: inject entries use fs = "ntfs" but the startup media in {bootfiles}/media has '
        "no ntfs-3g; run `netdeploy media build` (without --ntfs-3g none)"
    ) in result.stdout.splitlines()


def test_media_with_ntfs3g_or_a_config_without_ntfs_needs_no_note(tmp_path):
    with_ntfs = media_dir(tmp_path / "a", {"bin/ntfs-3g": {"size": 1}})
    without = media_dir(tmp_path / "b", None)
    assert media_status(with_ntfs, needs_ntfs=True) is None
    assert media_status(without, needs_ntfs=False) is None
    assert "has no ntfs-3g" in (media_status(without, needs_ntfs=True) or "")
    (without / "media" / "manifest.json").unlink()  # media from before manifests said so
    assert "has no ntfs-3g" in (media_status(without, needs_ntfs=True) or "")
    cfg = load_config(DEMO_CONFIG)
    assert cfg.injects_into("vfat") and not cfg.injects_into("ntfs")
