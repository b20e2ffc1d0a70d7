"""The project's own files agree with each other: Pulumi.yaml, the config parser, the README, CI."""

from __future__ import annotations

import re

from components.config import KEYS, SECRET_KEYS
from tests.conftest import ROOT
from tests.mock_stack import project_file

README = (ROOT / "README.md").read_text()


def test_pulumi_yaml_declares_every_key_the_program_reads_except_the_optional_secret():
    declared = set(project_file()["config"])
    assert declared == set(KEYS) - SECRET_KEYS


def test_pulumi_yaml_runtime_uses_its_own_virtualenv():
    project = project_file()
    assert project["name"] == "istio-proxy-debug"
    assert project["runtime"]["name"] == "python"
    assert project["runtime"]["options"]["virtualenv"] == ".venv"


def test_every_declared_key_has_a_type_and_a_description():
    for key, declaration in project_file()["config"].items():
        assert declaration["type"] in {"string", "integer", "boolean", "array"}, key
        assert declaration.get("description"), key
        if declaration["type"] == "array":
            assert declaration["items"]["type"] == "string", key


def test_readme_documents_every_key_with_its_type():
    rows = dict(re.findall(r"^\| `(\w+)` \| ([\w ]+?) \|", README, flags=re.MULTILINE))
    assert set(rows) == set(KEYS)
    for key, declaration in project_file()["config"].items():
        expected = {"array": "array of string"}.get(declaration["type"], declaration["type"])
        assert rows[key] == expected, key


def test_readme_gives_the_two_setup_commands_and_ci_runs_the_test_one():
    setup = re.search(r"## Set up on a fresh machine\s+```\n(.*?)```", README, flags=re.DOTALL)
    assert setup is not None
    assert setup.group(1).split("\n")[:2] == ["make up", "make test"]
    assert "make test" in (ROOT / ".ci" / "run").read_text().splitlines()


def test_requirements_are_pinned():
    lines = [x for x in (ROOT / "requirements.txt").read_text().splitlines() if x and not x.startswith("#")]
    names = {x.split("==")[0].lower() for x in lines}
    assert names == {"pulumi", "pulumi-kubernetes", "pulumi-docker", "pulumi-command", "pyyaml"}
    assert all(re.fullmatch(r"[\w-]+==[\w.]+", x) for x in lines), lines
