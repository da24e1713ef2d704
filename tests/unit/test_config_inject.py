"""Inject targets: which filesystems the agent can write answer files into, and precise errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from netdeploy.config import ConfigError, load_config
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
