"""Answer-file rendering: every demo file renders and validates; errors name template and line."""

from __future__ import annotations

import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from netdeploy.answers.check import check_answer_files
from netdeploy.answers.render import TemplateProblem, is_secret_template, render_answer
from netdeploy.answers.validate import validate
from netdeploy.boot.check import check_boot_templates
from netdeploy.config import Config, load_config

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "config" / "netdeploy.toml"
URL = "http://10.0.2.2:8080"
NS = {"u": "urn:schemas-microsoft-com:unattend"}

ROCKY = """
[images.rocky-9]
file = "rocky-9.img"

[[nodes]]
mac = "52:54:00:00:30:01"
hostname = "app-1"
image = "rocky-9"
answer_files = ["kickstart.cfg", "preseed.cfg", "cloud-init.yaml"]
vars = { root_password_hash = "$6$salt$hash", ssh_authorized_keys = ["ssh-ed25519 AAAA x@y"] }
"""


def demo_with(
    tmp_path: Path,
    text: str = "",
    *,
    replace: tuple[str, str] | None = None,
    templates: Path | None = None,
) -> Config:
    source = DEMO.read_text()
    if replace:
        assert replace[0] in source
        source = source.replace(*replace)
    path = tmp_path / "netdeploy.toml"
    path.write_text(source + text)
    return load_config(
        path,
        state_dir=str(tmp_path / "state"),
        bootfiles_dir=str(ROOT / "bootfiles"),
        templates_dir=str(templates or ROOT / "config" / "templates"),
    )


def render(cfg: Config, host: str, name: str, token: str = "tok-1234567890"):  # type: ignore[no-untyped-def]
    node = cfg.node_by_hostname(host)
    assert node is not None
    return render_answer(cfg, node, name, server_url=URL, token=token)


def test_every_demo_file_renders_and_validates() -> None:
    cfg = load_config(DEMO)
    assert check_answer_files(cfg) == []
    assert check_boot_templates(cfg) == []
    seen = {f for n in cfg.nodes for f in cfg.answer_files_for(n)}
    assert {
        "sysprep.inf",
        "unattend.xml",
        "AssignDriveLetters.bat",
        "diskpartparams.txt",
        "cloud-init.yaml",
        "preseed.cfg",
    } <= seen


def test_secret_classification() -> None:
    templates = ROOT / "config" / "templates"
    assert is_secret_template(templates, "sysprep.inf")
    assert is_secret_template(templates, "unattend.xml")
    assert is_secret_template(templates, "preseed.cfg")
    assert not is_secret_template(templates, "AssignDriveLetters.bat")
    assert not is_secret_template(templates, "diskpartparams.txt")
    assert not is_secret_template(templates, "report.vbs")
    cfg = load_config(DEMO)
    assert render(cfg, "sql-n1", "sysprep.inf").secret
    assert not render(cfg, "sql-n1", "diskpartparams.txt").secret


def test_secret_value_in_a_plain_template_makes_the_file_secret(tmp_path: Path) -> None:
    templates = tmp_path / "templates"
    shutil.copytree(ROOT / "config" / "templates", templates)
    # a password smuggled through an innocently named variable
    (templates / "diskpartparams.txt").write_text("rem {{ vars.innocent }}\nexit\n")
    cfg = demo_with(
        tmp_path,
        replace=(
            'full_name = "Lab Admin"',
            'full_name = "Lab Admin"\ninnocent = "Demo-Only-Admin-1"',
        ),
        templates=templates,
    )
    assert not is_secret_template(templates, "diskpartparams.txt")
    assert render(cfg, "sql-n1", "diskpartparams.txt").secret


def test_undefined_variable_names_template_line_and_variable(tmp_path: Path) -> None:
    templates = tmp_path / "templates"
    shutil.copytree(ROOT / "config" / "templates", templates)
    text = (templates / "sysprep.inf").read_text().replace("vars.timezone }}", "vars.tz }}")
    (templates / "sysprep.inf").write_text(text)
    line = next(i for i, x in enumerate(text.splitlines(), 1) if "vars.tz" in x)
    cfg = demo_with(tmp_path, templates=templates)
    with pytest.raises(TemplateProblem) as err:
        render(cfg, "sql-n2", "sysprep.inf")
    assert (err.value.template, err.value.line, err.value.node) == ("sysprep.inf", line, "sql-n2")
    assert "'tz' is undefined" in err.value.message
    problems = check_answer_files(cfg)
    assert (
        f"{templates / 'sysprep.inf'}:{line}: node sql-n1: variable 'tz' is undefined"
        in (problems[0])
    )
    assert len([p for p in problems if "'tz'" in p]) == 3  # one per cluster node


def test_syntax_error_names_the_line(tmp_path: Path) -> None:
    templates = tmp_path / "templates"
    shutil.copytree(ROOT / "config" / "templates", templates)
    (templates / "diskpartparams.txt").write_text("rescan\n{% for d in %}\nexit\n")
    cfg = demo_with(tmp_path, templates=templates)
    with pytest.raises(TemplateProblem) as err:
        render(cfg, "sql-n1", "diskpartparams.txt")
    assert err.value.line == 2 and "syntax error" in err.value.message


def test_unattend_xml_escapes_hostile_values(tmp_path: Path) -> None:
    cfg = demo_with(
        tmp_path, replace=('full_name = "Lab Admin"', 'full_name = "Lab <Admin> & \\"Ops\\" ]]>"')
    )
    rendered = render(cfg, "sql-n1", "unattend.xml")
    assert validate("unattend.xml", rendered.text) == []
    root = ET.fromstring(rendered.text)
    owner = root.find(".//u:RegisteredOwner", NS)
    assert owner is not None and owner.text == 'Lab <Admin> & "Ops" ]]>'


def test_unattend_xml_carries_the_sysprep_facts() -> None:
    root = ET.fromstring(render(load_config(DEMO), "sql-n2", "unattend.xml").text)
    spec = "u:settings[@pass='specialize']/u:component"
    assert (
        root.findtext(
            f"{spec}[@name='Microsoft-Windows-Shell-Setup']/u:ComputerName", namespaces=NS
        )
        == "SQL-N2"
    )
    join = f"{spec}[@name='Microsoft-Windows-UnattendedJoin']/u:Identification"
    assert root.findtext(f"{join}/u:JoinDomain", namespaces=NS) == "lab.example"
    assert root.findtext(f"{join}/u:Credentials/u:Domain", namespaces=NS) == "LAB"
    assert root.findtext(f"{join}/u:Credentials/u:Username", namespaces=NS) == "deploy"
    commands = [c.text for c in root.iterfind(".//u:SynchronousCommand/u:CommandLine", NS)]
    assert commands[0] == "C:\\netdeploy\\AssignDriveLetters.bat"
    assert commands[1] == "net localgroup Administrators LAB\\clussvc /add"
    # issue 16: the join command of kind windows2003 (it runs after release), then the report
    assert (commands[2] or "").startswith("cluster /cluster:SQLCLU /add:SQL-N2 ")
    assert "report.vbs" in (commands[-1] or "")


def test_unattend_validator_names_what_is_missing() -> None:
    text = render(load_config(DEMO), "sql-n1", "unattend.xml").text
    broken = text.replace("<ComputerName>SQL-N1</ComputerName>", "")
    assert any("ComputerName is missing" in str(p) for p in validate("unattend.xml", broken))
    no_creds = text.replace("<Username>deploy</Username>", "")
    assert any("Credentials/Username" in str(p) for p in validate("unattend.xml", no_creds))
    (problem,) = validate("unattend.xml", text.replace("</unattend>", ""))
    assert "not well-formed" in str(problem) and problem.line is not None


def test_windows_files_are_crlf_and_ansi() -> None:
    cfg = load_config(DEMO)
    body = render(cfg, "sql-n1", "AssignDriveLetters.bat").body
    assert b"\r\n" in body and b"\n" not in body.replace(b"\r\n", b"")
    assert render(cfg, "sql-n1", "unattend.xml").body.count(b"\r\n") == 0
    problems = validate("sysprep.inf", "[UserData]\nFullName=\u0141ukasz \u2603\n")
    assert "cannot be written in Windows-1252" in str(problems[0])


def test_diskpart_script_only_selects_and_assigns() -> None:
    text = render(load_config(DEMO), "sql-n2", "diskpartparams.txt").text
    lines = [x for x in text.splitlines() if not x.startswith("rem")]
    assert lines == [
        "rescan",
        "select volume 1",
        "assign letter=Q noerr",
        "select volume 2",
        "assign letter=S noerr",
        "exit",
    ]
    (problem,) = validate("diskpartparams.txt", "select volume 1\nclean all\n")
    assert problem.line == 2 and "clean all" in problem.message


def test_linux_files_read_back_by_real_tools(tmp_path: Path) -> None:
    cfg = demo_with(tmp_path, ROCKY)
    for name in ("kickstart.cfg", "preseed.cfg", "cloud-init.yaml"):
        rendered = render(cfg, "app-1", name)
        assert validate(name, rendered.text) == [], name
        assert rendered.secret  # they carry the root password hash and the token
    data = yaml.safe_load(render(cfg, "app-1", "cloud-init.yaml").text)
    assert data["hostname"] == "app-1"
    assert data["users"][0]["ssh_authorized_keys"] == ["ssh-ed25519 AAAA x@y"]
    assert data["chpasswd"]["users"][0]["password"] == "$6$salt$hash"
    ks = tmp_path / "ks.cfg"
    ks.write_text(render(cfg, "app-1", "kickstart.cfg").text)
    ksvalidator = Path(sys.executable).parent / "ksvalidator"
    if not ksvalidator.exists():
        pytest.fail("ksvalidator missing: pip install -e '.[test]' installs pykickstart")
    result = subprocess.run([str(ksvalidator), str(ks)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    preseed = tmp_path / "preseed.cfg"
    preseed.write_text(render(cfg, "app-1", "preseed.cfg").text)
    tool = shutil.which("debconf-set-selections")
    if tool is None:
        pytest.skip("debconf-set-selections missing (Debian package debconf)")
    result = subprocess.run([tool, "--checkonly", str(preseed)], capture_output=True, text=True)
    assert result.returncode == 0 and result.stderr == "", result.stderr


def test_linux_validators_catch_breakage() -> None:
    ks = "lang en_US\nkeyboard us\ntimezone UTC\n%packages\n@core\n"
    problems = [str(p) for p in validate("kickstart.cfg", ks)]
    assert "kickstart.cfg:4: %packages is never closed by %end" in problems
    assert "kickstart.cfg: required command 'rootpw' is missing" in problems
    (bad,) = validate("preseed.cfg", "d-i clock-setup/utc boolean maybe\n")
    assert bad.line == 1 and "true or false" in bad.message
    assert "unknown debconf type" in str(validate("preseed.cfg", "d-i a/b strng x\n")[0])
    assert "#cloud-config" in str(validate("cloud-init.yaml", "hostname: x\n")[0])
    assert "not valid YAML" in str(validate("cloud-init.yaml", "#cloud-config\na: [\n")[0])
