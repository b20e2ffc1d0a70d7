"""One declaration per setting: Pulumi.yaml's `config:` block and the generated blocks of docs/ (the settings and
outputs tables of docs/configuration.md, the messages of docs/troubleshooting.md) are what the code generates
(`make config-docs`), a setting added to the table is one entry, and the real CLI takes the generated Pulumi.yaml as
before."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from components.settings import SETTINGS, STRINGS
from tests.conftest import ROOT
from tests.toolchain import Pulumi, pulumi_env, toolchain_bin, user_project
from tools import config_docs


def test_pulumi_yaml_is_what_the_table_generates():
    current = (ROOT / "Pulumi.yaml").read_text()
    assert config_docs.pulumi_yaml(current) == current, "run `make config-docs`"


@pytest.mark.parametrize("name", [n for n in config_docs.generated_files() if n != "Pulumi.yaml"])
def test_the_generated_blocks_of_the_docs_are_what_the_code_generates(name):
    current = (ROOT / name).read_text()
    assert config_docs.document(name, current) == current, "run `make config-docs`"


def test_a_block_without_its_markers_is_an_error_not_a_silent_skip():
    block = config_docs.BLOCKS[0]
    with pytest.raises(ValueError, match="must hold each of"):
        block.written("# a page whose markers were deleted\n")


def test_pulumi_yaml_declares_each_setting_as_the_table_says():
    declared = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["config"]
    assert list(declared) == [s.key for s in SETTINGS if not s.secret]
    for setting in SETTINGS:
        if setting.secret:
            continue
        entry = declared[setting.key]
        assert entry["description"] == setting.about
        if setting.default is not None:
            assert entry["default"] == setting.default, setting.key
        else:
            assert entry["default"] in ("", []), setting.key


def test_every_check_has_the_sentence_a_refused_value_gets():
    for setting in SETTINGS:
        assert setting.about, setting.key
        if setting.accepts is not None:
            assert setting.refusal.startswith("expected "), setting.key
        if setting.type == STRINGS:
            assert setting.required, f"{setting.key}: a list that does not parse is told how to set it"


def project_copy(folder: Path) -> Path:
    for name in ("Pulumi.yaml", "Pulumi.dev.yaml"):
        shutil.copy(ROOT / name, folder / name)
    for tree in ("components", "tools", "docs"):
        shutil.copytree(ROOT / tree, folder / tree, ignore=shutil.ignore_patterns("__pycache__", "toolchain"))
    return folder


def config_docs_run(folder: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tools.config_docs", "--root", str(folder), *args], cwd=folder,
                          capture_output=True, text=True, timeout=60)


def test_the_check_names_the_file_that_drifted_and_make_config_docs_mends_it(tmp_path):
    folder = project_copy(tmp_path)
    page = folder / "docs" / "configuration.md"
    page.write_text(page.read_text().replace("| `mode` | string | `attach` |", "| `mode` | string | `startup` |"))
    checked = config_docs_run(folder, "--check")
    assert checked.returncode == 1
    assert checked.stderr.strip() == ("docs/configuration.md differ from the code they are generated from: "
                                      "run `make config-docs`")
    assert config_docs_run(folder).returncode == 0
    assert page.read_text() == (ROOT / "docs" / "configuration.md").read_text()
    assert config_docs_run(folder, "--check").returncode == 0


def test_a_changed_rule_message_is_drift_in_the_troubleshooting_page(tmp_path):
    """The rules' messages are read from components/config_rules.py's source: a changed sentence there is a stale
    docs/troubleshooting.md until `make config-docs`."""
    folder = project_copy(tmp_path)
    rules = folder / "components" / "config_rules.py"
    rules.write_text(rules.read_text().replace('"expected each node once"', '"expected every node only once"'))
    checked = config_docs_run(folder, "--check")
    assert checked.returncode == 1
    assert "docs/troubleshooting.md" in checked.stderr
    assert config_docs_run(folder).returncode == 0
    assert "expected every node only once" in (folder / "docs" / "troubleshooting.md").read_text()


# One line of at most 120 characters, as ruff wants the table's.
NEW_SETTING = ("""    Setting("proxyLogLevel", STRING, "info", about="Envoy's log level", """
               """accepts=_one_of(("debug", "info"))),\n""")


def test_a_new_setting_is_one_entry_in_the_table(tmp_path):
    """The line added to SETTINGS is all it takes: the program reads and checks the key into its own field, and
    Pulumi.yaml and docs/configuration.md carry it once `make config-docs` has run."""
    folder = project_copy(tmp_path)
    settings = folder / "components" / "settings.py"
    text = settings.read_text()
    end_of_table = "\n)\n\nKEYS = "
    assert text.count(end_of_table) == 1
    assert len(NEW_SETTING.rstrip("\n")) <= 120
    settings.write_text(text.replace(end_of_table, "\n" + NEW_SETTING + ")\n\nKEYS = "))
    assert config_docs_run(folder, "--check").returncode == 1
    assert config_docs_run(folder).returncode == 0
    declared = yaml.safe_load((folder / "Pulumi.yaml").read_text())["config"]["proxyLogLevel"]
    assert declared == {"type": "string", "default": "info", "description": "Envoy's log level"}
    configuration = (folder / "docs" / "configuration.md").read_text()
    assert "| `proxyLogLevel` | string | `info` | Envoy's log level |" in configuration
    assert "| `proxyLogLevel` | `expected debug or info` |" in (folder / "docs" / "troubleshooting.md").read_text()
    program = """
import json, sys, yaml
from components.config import ConfigError, parse_config
project = yaml.safe_load(open("Pulumi.yaml"))["config"]
raw = {k: (json.dumps(d["default"]) if isinstance(d["default"], list) else str(d["default"]).lower()
           if isinstance(d["default"], bool) else str(d["default"])) for k, d in project.items()}
raw |= {"workDir": "/srv/istio", "registryHost": "10.0.0.1", "nodes": '["10.0.0.2"]'}
print(parse_config(raw, stack="alice").proxy_log_level)
try:
    parse_config(raw | {"proxyLogLevel": "loud"}, stack="alice")
except ConfigError as error:
    print(error.problems)
"""
    done = subprocess.run([sys.executable, "-c", program], cwd=folder, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "info", str(['istio-proxy-debug:proxyLogLevel = "loud": expected debug or info'])]


# --- the generated Pulumi.yaml on the real CLI -------------------------------------------------------------


@pytest.fixture(scope="module")
def carol(module_tmp) -> Pulumi:
    """A stack made as the docs say (`make stack NAME=carol`), in a user's clone on the toolchain's CLI."""
    bin_dir = toolchain_bin()
    folder = module_tmp("config-docs")
    pulumi = Pulumi(bin_dir, user_project(folder / "clone"), pulumi_env(bin_dir, folder / "state"))
    pulumi.make_stack("carol", "--work-dir", str(folder / "work"))
    return pulumi


def cli_string(value) -> str:
    """A declared default as `pulumi config --json` shows it."""
    if isinstance(value, bool):
        return str(value).lower()
    return json.dumps(value) if isinstance(value, list) else str(value)


def test_the_cli_takes_the_generated_declarations_and_their_defaults(carol):
    shown = json.loads(carol("config", "--json").stdout)
    stack_file = yaml.safe_load((carol.project / "Pulumi.carol.yaml").read_text())["config"]
    for setting in SETTINGS:
        key = f"istio-proxy-debug:{setting.key}"
        if setting.secret:
            assert key not in shown
        elif key not in stack_file:
            default = setting.default if setting.default is not None else ([] if setting.type == STRINGS else "")
            assert shown[key]["value"] == cli_string(default), key


@pytest.mark.parametrize(("key", "value", "declared"), [("registryPort", "abc", "integer"),
                                                        ("buildEnvoy", "yes", "boolean")])
def test_the_cli_refuses_a_value_of_the_wrong_type_before_the_program_runs(carol, key, value, declared):
    stack_file = yaml.safe_load((carol.project / "Pulumi.carol.yaml").read_text())["config"]
    carol("config", "set", key, value)
    try:
        done = carol("preview", check=False)
    finally:
        original = stack_file.get(f"istio-proxy-debug:{key}")
        carol("config", *(("rm", key) if original is None else ("set", key, cli_string(original))))
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert f"Stack 'carol' with configuration key '{key}' must be of type '{declared}'" in output, output[-2000:]
    assert "the stack configuration has" not in output, "the CLI, not the program, refuses it"
