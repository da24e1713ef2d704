"""The README's config and CLI tables match the code (issue 19): every key of every config
section and every command is named there."""

from __future__ import annotations

import pytest

from netdeploy import config
from netdeploy.cli.main import COMMANDS, build_parser
from tests.conftest import REPO

README = (REPO / "README.md").read_text()
SECTIONS = [
    config.ServerConfig,
    config.TftpConfig,
    config.HttpConfig,
    config.DashboardConfig,
    config.RolloutConfig,
    config.MulticastConfig,
    config.DhcpConfig,
    config.ImageConfig,
    config.HardwareProfile,
    config.ClusterConfig,
    config.NodeConfig,
    config.Timeouts,
]


@pytest.mark.parametrize("model", SECTIONS, ids=lambda m: m.__name__)
def test_every_config_key_is_in_the_readme(model):
    missing = [key for key in model.model_fields if f"`{key}`" not in README]
    assert missing == [], f"README 'Config reference' lacks {model.__name__}: {missing}"


def test_every_command_and_its_json_option_is_in_the_readme():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, *_ in COMMANDS:
        assert f"netdeploy {name}" in README or f"`{name} " in README, name
        options = {o for a in sub.choices[name]._actions for o in a.option_strings}
        rows = [r for r in README.splitlines() if r.startswith("| `netdeploy ")]
        line = next((r for r in rows if f"netdeploy {name} " in r or f"`{name}`" in r), "")
        if "--json" in options:
            assert "--json" in line, f"README row of {name} does not say --json"
