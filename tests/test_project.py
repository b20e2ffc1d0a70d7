"""The project's own files agree with each other: Pulumi.yaml, the config parser, the settings' documentation.
(The README and docs/ against the Makefile and CI: tests/test_docs.py.)"""

from __future__ import annotations

import re

from components.settings import KEYS, SECRET_KEYS
from tests.conftest import ROOT
from tests.mock_stack import project_file

CONFIGURATION = (ROOT / "docs" / "configuration.md").read_text()


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


def test_the_configuration_page_documents_every_key_with_its_type():
    settings = CONFIGURATION.split("<!-- settings:", 1)[1].split("<!-- end of settings -->", 1)[0]
    rows = dict(re.findall(r"^\| `(\w+)` \| ([\w ]+?) \|", settings, flags=re.MULTILINE))
    assert set(rows) == set(KEYS)
    for key, declaration in project_file()["config"].items():
        expected = {"array": "array of string"}.get(declaration["type"], declaration["type"])
        assert rows[key] == expected, key


def test_requirements_are_pinned():
    lines = [x for x in (ROOT / "requirements.txt").read_text().splitlines() if x and not x.startswith("#")]
    names = {x.split("==")[0].lower() for x in lines}
    assert names == {"pulumi", "pulumi-kubernetes", "pulumi-docker", "pulumi-command", "pyyaml"}
    assert all(re.fullmatch(r"[\w-]+==[\w.]+", x) for x in lines), lines
