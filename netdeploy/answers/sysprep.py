"""Validate a rendered sysprep.inf against the Windows Server 2003 preinstallation reference.

Source: "Microsoft Windows Preinstallation Reference" (ref.chm in deploy.cab), Unattend.txt and
Sysprep.inf entries. The file is an INI file: ``[Section]`` headers, ``Entry=Value`` lines,
``;`` comments. We check what an unattended mini-setup cannot do without, and refuse the file
naming the section and the entry, so a broken file never reaches a machine.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

UNATTEND_MODES = {"FullUnattended", "ReadOnly", "DefaultHide", "ProvideDefault", "GuiAttended"}
LICENSE_MODES = {"PerServer", "PerSeat"}
# NetBIOS computer names: at most 15 characters, no spaces or punctuation except '-'
COMPUTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,14}$")
# [SysprepMassStorage] value: "path_to_inf", "disk_directory", "disk_description", "disk_tag"
MASS_STORAGE = re.compile(r'^"[^"]+\.inf"(\s*,\s*"[^"]*"){3}$', re.IGNORECASE)
GUI_RUN_ONCE_KEY = re.compile(r"^Command(\d+)$", re.IGNORECASE)


@dataclass(frozen=True)
class IniProblem:
    line: int | None
    section: str
    entry: str
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line else ""
        entry = f" {self.entry}" if self.entry else ""
        return f"{where}[{self.section}]{entry}: {self.message}"


@dataclass
class IniSection:
    name: str
    line: int
    entries: list[tuple[str, str, int]] = field(default_factory=list)  # key, value, line

    def get(self, key: str) -> str | None:
        wanted = key.lower()
        return next((v for k, v, _ in self.entries if k.lower() == wanted), None)

    def line_of(self, key: str) -> int:
        wanted = key.lower()
        return next((n for k, _, n in self.entries if k.lower() == wanted), self.line)


def parse_ini(text: str) -> tuple[dict[str, IniSection], list[IniProblem]]:
    """Sections by lower-case name; problems for lines that are not INI at all or repeat."""
    sections: dict[str, IniSection] = {}
    problems: list[IniProblem] = []
    current: IniSection | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith(";"):
            continue
        if line.startswith("["):
            if not line.endswith("]"):
                problems.append(IniProblem(number, line, "", "section header without ']'"))
                continue
            name = line[1:-1].strip()
            if name.lower() in sections:
                problems.append(IniProblem(number, name, "", "section appears twice"))
            current = sections.setdefault(name.lower(), IniSection(name, number))
            continue
        if current is None:
            problems.append(IniProblem(number, "", "", "entry before the first [section]"))
            continue
        if "=" not in line:
            problems.append(IniProblem(number, current.name, line, "expected Entry=Value"))
            continue
        key, value = (part.strip() for part in line.split("=", 1))
        if current.get(key) is not None:
            problems.append(IniProblem(number, current.name, key, "entry appears twice"))
        current.entries.append((key, value, number))
    return sections, problems


def _unquote(value: str) -> str:
    return value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value


def validate_sysprep(text: str) -> list[IniProblem]:
    """Every reason this sysprep.inf would stop or mislead an unattended mini-setup."""
    sections, problems = parse_ini(text)

    def section(name: str) -> IniSection | None:
        found = sections.get(name.lower())
        if found is None:
            problems.append(IniProblem(None, name, "", "required section is missing"))
        return found

    def require(sec: IniSection | None, key: str) -> str | None:
        if sec is None:
            return None
        value = sec.get(key)
        if value is None or _unquote(value) == "":
            problems.append(IniProblem(sec.line, sec.name, key, "required entry is missing"))
            return None
        return _unquote(value)

    def bad(sec: IniSection, key: str, message: str) -> None:
        problems.append(IniProblem(sec.line_of(key), sec.name, key, message))

    unattended = section("Unattended")
    mode = require(unattended, "UnattendMode")
    if unattended and mode and mode not in UNATTEND_MODES:
        bad(unattended, "UnattendMode", f"must be one of {', '.join(sorted(UNATTEND_MODES))}")
    require(unattended, "TargetPath")

    gui = section("GuiUnattended")
    require(gui, "AdminPassword")
    zone = require(gui, "TimeZone")
    if gui and zone and not zone.isdigit():
        bad(gui, "TimeZone", "must be a time zone index number (e.g. 85 for GMT)")

    ident = section("Identification")
    if ident is not None:
        workgroup, domain = ident.get("JoinWorkgroup"), ident.get("JoinDomain")
        if workgroup is not None and domain is not None:
            bad(ident, "JoinDomain", "give JoinWorkgroup or JoinDomain, not both")
        elif domain is not None:
            require(ident, "DomainAdmin")
            require(ident, "DomainAdminPassword")
        elif workgroup is None:
            problems.append(
                IniProblem(
                    ident.line,
                    ident.name,
                    "JoinWorkgroup",
                    "required entry is missing "
                    "(or JoinDomain with DomainAdmin and DomainAdminPassword)",
                )
            )

    licence = section("LicenseFilePrintData")
    auto = require(licence, "AutoMode")
    if licence and auto and auto not in LICENSE_MODES:
        bad(licence, "AutoMode", "must be PerServer or PerSeat")
    if licence and auto == "PerServer":
        users = require(licence, "AutoUsers")
        if users is not None and not (users.isdigit() and int(users) >= 5):
            bad(licence, "AutoUsers", "must be a number of client licences, at least 5")

    section("Networking")

    user = section("UserData")
    name = require(user, "ComputerName")
    if user and name and name != "*" and not COMPUTER_NAME.match(name):
        bad(user, "ComputerName", "must be 1-15 letters, digits or '-' (a NetBIOS name)")
    require(user, "FullName")

    _check_mass_storage(sections, problems)
    _check_gui_run_once(sections, problems)
    return sorted(problems, key=lambda p: (p.line or 0, p.section, p.entry))


def _check_mass_storage(sections: dict[str, IniSection], problems: list[IniProblem]) -> None:
    sysprep = sections.get("sysprep")
    build = sysprep.get("BuildMassStorageSection") if sysprep else None
    storage = sections.get("sysprepmassstorage")
    if build is not None and build.lower() not in ("yes", "no"):
        assert sysprep is not None
        problems.append(
            IniProblem(
                sysprep.line_of("BuildMassStorageSection"),
                "Sysprep",
                "BuildMassStorageSection",
                "must be Yes or No",
            )
        )
    if build and build.lower() == "yes" and (storage is None or not storage.entries):
        problems.append(
            IniProblem(
                None,
                "SysprepMassStorage",
                "",
                "required when BuildMassStorageSection=Yes; "
                "add mass_storage drivers to the node's hardware profile",
            )
        )
    for key, value, line in storage.entries if storage else []:
        if not MASS_STORAGE.match(value):
            problems.append(
                IniProblem(
                    line,
                    "SysprepMassStorage",
                    key,
                    'must read "path_to_inf", '
                    '"disk_directory", "disk_description", "disk_tag" (all quoted)',
                )
            )


def _check_gui_run_once(sections: dict[str, IniSection], problems: list[IniProblem]) -> None:
    run_once = sections.get("guirunonce")
    if run_once is None:
        return
    for index, (key, value, line) in enumerate(run_once.entries):
        match = GUI_RUN_ONCE_KEY.match(key)
        if not match or int(match.group(1)) != index:
            problems.append(
                IniProblem(
                    line,
                    run_once.name,
                    key,
                    f"expected Command{index}: commands run in "
                    "the order Command0, Command1, ... without gaps",
                )
            )
        if not (value.startswith('"') and value.endswith('"')) or value.count('"') != 2:
            problems.append(
                IniProblem(
                    line,
                    run_once.name,
                    key,
                    "the command must be one quoted string without inner quotes",
                )
            )
