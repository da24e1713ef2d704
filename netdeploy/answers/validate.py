"""Validate a rendered answer file by its kind; each problem names the file and the line.

sysprep.inf has a full schema check (:mod:`netdeploy.answers.sysprep`). The others get the checks
that catch what breaks an unattended install in practice: unattend.xml must be well-formed and
carry the facts Windows Setup needs per pass; kickstart sections must be closed and its required
commands present; preseed lines must be ``owner question type value``; cloud-init user-data must
start with ``#cloud-config`` and be a YAML mapping; diskpart scripts may only select and assign.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass

import yaml

from netdeploy.answers.render import WINDOWS_TEXT
from netdeploy.answers.sysprep import validate_sysprep


@dataclass(frozen=True)
class FileProblem:
    file: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.message}"


class InvalidAnswerFile(Exception):
    """A rendered file failed validation; it is refused, never served."""

    def __init__(self, problems: list[FileProblem]):
        self.problems = problems
        super().__init__("; ".join(str(p) for p in problems))


Checker = Callable[[str, str], list[FileProblem]]


def _sysprep(name: str, text: str) -> list[FileProblem]:
    return [
        FileProblem(name, p.line, f"[{p.section}]{' ' + p.entry if p.entry else ''}: {p.message}")
        for p in validate_sysprep(text)
    ]


UNATTEND_NS = "urn:schemas-microsoft-com:unattend"
_COMPONENT_ATTRS = ("name", "processorArchitecture", "publicKeyToken", "language", "versionScope")


def _unattend(name: str, text: str) -> list[FileProblem]:
    try:
        root = ET.fromstring(text.encode("utf-8"))
    except ET.ParseError as exc:
        return [FileProblem(name, exc.position[0], f"not well-formed XML: {exc}")]
    ns = {"u": UNATTEND_NS}
    if root.tag != f"{{{UNATTEND_NS}}}unattend":
        return [FileProblem(name, 1, f'root element must be <unattend xmlns="{UNATTEND_NS}">')]
    problems = []
    for component in root.iterfind("u:settings/u:component", ns):
        missing = [a for a in _COMPONENT_ATTRS if not component.get(a)]
        if missing:
            problems.append(
                FileProblem(
                    name,
                    None,
                    f"component {component.get('name')!r} lacks attribute(s) {', '.join(missing)}",
                )
            )
    required = {
        "specialize": ["Microsoft-Windows-Shell-Setup/u:ComputerName"],
        "oobeSystem": [
            "Microsoft-Windows-Shell-Setup/u:UserAccounts/u:AdministratorPassword/u:Value",
            "Microsoft-Windows-Shell-Setup/u:TimeZone",
        ],
    }
    for pass_name, paths in required.items():
        for path in paths:
            name_of, _, rest = path.partition("/")
            xpath = f"u:settings[@pass='{pass_name}']/u:component[@name='{name_of}']/{rest}"
            found = root.find(xpath, ns)
            if found is None or not (found.text or "").strip():
                element = rest.replace("u:", "")
                problems.append(
                    FileProblem(
                        name, None, f"pass {pass_name}: {name_of} {element} is missing or empty"
                    )
                )
    join = root.find(
        "u:settings[@pass='specialize']/u:component[@name='Microsoft-Windows-UnattendedJoin']"
        "/u:Identification",
        ns,
    )
    if join is None:
        problems.append(
            FileProblem(
                name,
                None,
                "pass specialize: Microsoft-Windows-UnattendedJoin "
                "Identification is missing (JoinDomain or JoinWorkgroup)",
            )
        )
    elif join.find("u:JoinDomain", ns) is not None:
        for element in (
            "u:Credentials/u:Domain",
            "u:Credentials/u:Username",
            "u:Credentials/u:Password",
        ):
            if not (getattr(join.find(element, ns), "text", "") or "").strip():
                problems.append(
                    FileProblem(
                        name, None, f"pass specialize: JoinDomain needs {element.replace('u:', '')}"
                    )
                )
    elif join.find("u:JoinWorkgroup", ns) is None:
        problems.append(
            FileProblem(
                name, None, "pass specialize: Identification needs JoinDomain or JoinWorkgroup"
            )
        )
    orders = [
        int(o.text or "0")
        for o in root.iterfind(".//u:FirstLogonCommands/u:SynchronousCommand/u:Order", ns)
    ]
    if orders != list(range(1, len(orders) + 1)):
        problems.append(FileProblem(name, None, "FirstLogonCommands Order must run 1, 2, 3, ..."))
    return problems


_KS_SECTION = re.compile(r"^%(packages|pre|post|pre-install|onerror|traceback|addon|anaconda)\b")
KICKSTART_REQUIRED = ("lang", "keyboard", "timezone", "rootpw")


def _kickstart(name: str, text: str) -> list[FileProblem]:
    problems, open_at, commands = [], None, set()
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if open_at is None and _KS_SECTION.match(line):
            open_at = (number, line.split()[0])
        elif line == "%end":
            if open_at is None:
                problems.append(FileProblem(name, number, "%end without an open section"))
            open_at = None
        elif open_at is None and line and not line.startswith("#"):
            commands.add(line.split()[0])
    if open_at is not None:
        problems.append(FileProblem(name, open_at[0], f"{open_at[1]} is never closed by %end"))
    problems += [
        FileProblem(name, None, f"required command {c!r} is missing")
        for c in KICKSTART_REQUIRED
        if c not in commands
    ]
    return problems


_DEBCONF_TYPES = {
    "string",
    "boolean",
    "select",
    "multiselect",
    "password",
    "note",
    "text",
    "error",
    "title",
}


def _preseed(name: str, text: str) -> list[FileProblem]:
    problems, pending, start = [], "", 0
    for number, raw in enumerate(text.splitlines(), start=1):
        if not pending and (not raw.strip() or raw.lstrip().startswith("#")):
            continue
        start = start if pending else number
        if raw.endswith("\\"):  # debconf-set-selections joins backslash continuations
            pending += raw[:-1] + " "
            continue
        fields, pending = (pending + raw).split(None, 3), ""
        if len(fields) < 3:
            problems.append(FileProblem(name, start, "expected 'owner question type value'"))
        elif fields[2] not in _DEBCONF_TYPES:
            problems.append(FileProblem(name, start, f"unknown debconf type {fields[2]!r}"))
        elif fields[2] == "boolean" and (fields[3:] or [""])[0].strip() not in ("true", "false"):
            problems.append(FileProblem(name, start, "a boolean must be true or false"))
    return problems


def _cloud_init(name: str, text: str) -> list[FileProblem]:
    if not text.startswith("#cloud-config"):
        return [FileProblem(name, 1, "user-data must start with '#cloud-config'")]
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        return [FileProblem(name, mark.line + 1 if mark else None, f"not valid YAML: {exc}")]
    if not isinstance(data, dict):
        return [FileProblem(name, 1, "cloud-config must be a YAML mapping")]
    return []


_DISKPART = re.compile(
    r"^(rem\b.*|rescan|exit|list (volume|disk)|select volume \d+|select disk \d+"
    r"|assign letter=[D-Z]( noerr)?|online (disk|volume)( noerr)?|attributes disk clear readonly)$",
    re.IGNORECASE,
)


def _diskpart(name: str, text: str) -> list[FileProblem]:
    return [
        FileProblem(name, n, f"not an allowed diskpart command: {line.strip()!r}")
        for n, line in enumerate(text.splitlines(), start=1)
        if line.strip() and not _DISKPART.match(line.strip())
    ]


def checker_for(name: str) -> Checker | None:
    lower = name.lower()
    if lower.endswith(".inf") and "sysprep" in lower:
        return _sysprep
    if lower.endswith(".xml"):
        return _unattend
    if "kickstart" in lower or lower.endswith(".ks"):
        return _kickstart
    if "preseed" in lower:
        return _preseed
    if "cloud-init" in lower or "user-data" in lower:
        return _cloud_init
    if "diskpart" in lower:
        return _diskpart
    return None


def _encoding(name: str, text: str) -> list[FileProblem]:
    if not name.lower().endswith(WINDOWS_TEXT):
        return []
    for number, line in enumerate(text.splitlines(), start=1):
        try:
            line.encode("cp1252")
        except UnicodeEncodeError as exc:
            return [
                FileProblem(
                    name,
                    number,
                    f"character {line[exc.start]!r} cannot be written "
                    "in Windows-1252 (Windows reads this file as ANSI)",
                )
            ]
    return []


def validate(name: str, text: str) -> list[FileProblem]:
    """Every problem of rendered file ``name``; an empty list means it may be served."""
    check = checker_for(name)
    return _encoding(name, text) + (check(name, text) if check else [])
