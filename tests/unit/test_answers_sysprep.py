"""sysprep.inf schema: every required entry, refused by name when missing."""

from __future__ import annotations

import configparser
import re
from pathlib import Path

import pytest

from netdeploy.answers.render import render_answer
from netdeploy.answers.sysprep import parse_ini, validate_sysprep
from netdeploy.config import load_config

DEMO = Path(__file__).resolve().parents[2] / "config" / "netdeploy.toml"


@pytest.fixture(scope="module")
def good() -> str:
    cfg = load_config(DEMO)
    node = cfg.node_by_hostname("sql-n3")
    assert node is not None
    return render_answer(cfg, node, "sysprep.inf", server_url="http://10.0.2.2:8080").text


def without(text: str, section: str, entry: str) -> str:
    """``text`` with ``entry`` removed from ``[section]`` only."""
    out, current = [], ""
    for line in text.splitlines():
        if line.startswith("["):
            current = line.strip("[]")
        if current == section and re.match(rf"{entry}\s*=", line):
            continue
        out.append(line)
    return "\n".join(out) + "\n"


def replace(text: str, section: str, entry: str, value: str) -> str:
    out, current = [], ""
    for line in text.splitlines():
        if line.startswith("["):
            current = line.strip("[]")
        if current == section and re.match(rf"{entry}\s*=", line):
            line = f"{entry}={value}"
        out.append(line)
    return "\n".join(out) + "\n"


def messages(text: str) -> list[str]:
    return [str(p) for p in validate_sysprep(text)]


def test_demo_file_is_valid_and_configparser_reads_it(good: str) -> None:
    assert validate_sysprep(good) == []
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # INF keys keep their case
    parser.read_string(good)
    assert parser["Unattended"]["UnattendMode"] == "FullUnattended"
    assert parser["UserData"]["ComputerName"] == "SQL-N3"
    assert parser["Sysprep"]["BuildMassStorageSection"] == "Yes"


REQUIRED = [
    ("Unattended", "UnattendMode"),
    ("Unattended", "TargetPath"),
    ("GuiUnattended", "AdminPassword"),
    ("GuiUnattended", "TimeZone"),
    ("Identification", "DomainAdmin"),
    ("Identification", "DomainAdminPassword"),
    ("LicenseFilePrintData", "AutoMode"),
    ("LicenseFilePrintData", "AutoUsers"),
    ("UserData", "ComputerName"),
    ("UserData", "FullName"),
]


@pytest.mark.parametrize(("section", "entry"), REQUIRED, ids=lambda v: v)
def test_missing_required_entry_is_named(good: str, section: str, entry: str) -> None:
    problems = messages(without(good, section, entry))
    assert any(f"[{section}] {entry}: required entry is missing" in p for p in problems), problems


@pytest.mark.parametrize(
    "section", ["Unattended", "GuiUnattended", "Identification", "Networking", "UserData"]
)
def test_missing_section_is_named(good: str, section: str) -> None:
    text = good.replace(f"[{section}]", "[Renamed]")
    assert f"[{section}]: required section is missing" in messages(text)


def test_identification_needs_workgroup_or_full_domain_join(good: str) -> None:
    text = without(
        without(without(good, "Identification", "JoinDomain"), "Identification", "DomainAdmin"),
        "Identification",
        "DomainAdminPassword",
    )
    assert any("[Identification] JoinWorkgroup: required" in p for p in messages(text))
    workgroup = text.replace("[Identification]", "[Identification]\nJoinWorkgroup=LAB")
    assert messages(workgroup) == []
    both = good.replace("[Identification]", "[Identification]\nJoinWorkgroup=LAB")
    assert any("not both" in p for p in messages(both))


def test_per_seat_needs_no_auto_users(good: str) -> None:
    text = without(
        replace(good, "LicenseFilePrintData", "AutoMode", "PerSeat"),
        "LicenseFilePrintData",
        "AutoUsers",
    )
    assert messages(text) == []
    assert any(
        "AutoMode: must be PerServer or PerSeat" in p
        for p in messages(replace(good, "LicenseFilePrintData", "AutoMode", "Sometimes"))
    )
    assert any(
        "AutoUsers: must be" in p
        for p in messages(replace(good, "LicenseFilePrintData", "AutoUsers", "2"))
    )


def test_bad_values_are_refused(good: str) -> None:
    assert any(
        "UnattendMode: must be one of" in p
        for p in messages(replace(good, "Unattended", "UnattendMode", "Quiet"))
    )
    assert any(
        "TimeZone: must be a time zone index" in p
        for p in messages(replace(good, "GuiUnattended", "TimeZone", "GMT"))
    )
    long_name = replace(good, "UserData", "ComputerName", "SQL-NODE-NUMBER-0001")
    assert any("ComputerName: must be 1-15" in p for p in messages(long_name))


def test_mass_storage_lines_must_quote_all_four_fields(good: str) -> None:
    line = next(x for x in good.splitlines() if x.startswith("PCI\\VEN_0E11"))
    assert line == (
        'PCI\\VEN_0E11&DEV_0046&SUBSYS_40910E11="C:\\Drivers\\Storage\\cpqcissm.inf", '
        '"\\", "Smart Array 6i Controller Driver", "\\cpqcissm"'
    )
    unquoted = good.replace(
        '"C:\\Drivers\\Storage\\cpqcissm.inf"', "C:\\Drivers\\Storage\\cpqcissm.inf"
    )
    assert any(
        "[SysprepMassStorage] PCI\\VEN_0E11" in p and "all quoted" in p for p in messages(unquoted)
    )
    empty = "\n".join(x for x in good.splitlines() if not x.startswith("PCI\\")) + "\n"
    assert any(
        "[SysprepMassStorage]: required when BuildMassStorageSection=Yes" in p
        for p in messages(empty)
    )


def test_gui_run_once_order(good: str) -> None:
    sections, _ = parse_ini(good)
    commands = [v for _, v, _ in sections["guirunonce"].entries]
    assert commands[0] == '"C:\\netdeploy\\AssignDriveLetters.bat"'
    assert commands[1] == '"net localgroup Administrators LAB\\clussvc /add"'
    assert commands[2].startswith('"cluster /cluster:SQLCLU /add:SQL-N3 ')  # issue 16: join
    assert "report.vbs" in commands[-1] and "/api/nodes/52-54-00-00-10-03/events" in commands[-1]
    gap = good.replace("Command1=", "Command5=")
    assert any("expected Command1" in p for p in messages(gap))


def test_duplicates_and_garbage_lines_are_refused(good: str) -> None:
    twice = good.replace("[Networking]", "[Networking]\nInstallDefaultComponents=No\n")
    assert any("appears twice" in p for p in messages(twice))
    assert any("entry before the first [section]" in p for p in messages("Stray=1\n" + good))
    assert any("expected Entry=Value" in p for p in messages(good + "[Extra]\nnot an entry\n"))


def test_problems_carry_line_numbers(good: str) -> None:
    text = replace(good, "GuiUnattended", "TimeZone", "GMT")
    (problem,) = [p for p in validate_sysprep(text) if p.entry == "TimeZone"]
    assert text.splitlines()[problem.line - 1] == "TimeZone=GMT"  # type: ignore[operator]
