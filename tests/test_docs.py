"""The documentation says what the program does, and holds together: README.md and docs/.

- every stack output the program exports, over the stacks it can make, is described in components/outputs.py, and
  nothing else is; every setting and output is in the generated tables once;
- every message docs/troubleshooting.md lists still occurs, in those words, in the file that prints it; every rule
  of components/config_rules.py has its messages there;
- every relative link and #anchor resolves (GitHub's anchors), every `make` target named exists in the Makefile,
  every page of docs/ is reachable from the README and starts by saying what it answers;
- the README is the short one, its first command is a new user's `make up`, and its test command is what CI runs.
"""

from __future__ import annotations

import re

import pytest

from components.config_rules import RULES
from components.outputs import OUTPUTS
from components.settings import SETTINGS
from tests.conftest import CLUSTER_PLACEMENT, ROOT, evaluate
from tools import config_docs, troubleshooting

DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))
DOCUMENTS = [ROOT / "README.md", *PAGES]
README_MOST_LINES = 210

# --- the outputs ---------------------------------------------------------------------------------------------------

# Every kind of stack the program makes: the committed ones, the cluster placement, a waypoint, and attach in place.
IN_PLACE = ("dev", "attachTo=mesh/app-0", "nodeAccess=kubernetes", "nodes=", "targetNodeAddress=", "registryHost=",
            "envoySource=prebuilt")
STACKS = {
    "dev": ("dev",),
    "lab": ("lab",),
    "ci": ("ci",),
    "cluster placement": ("dev", *CLUSTER_PLACEMENT),
    "waypoint": ("dev", "target=waypoint", "istioVersion=1.30.3"),
    "attach in place": IN_PLACE,
}


@pytest.fixture(scope="module")
def exported() -> dict[str, set[str]]:
    return {name: set(evaluate(*args)["outputs"]) for name, args in STACKS.items()}


def test_the_outputs_the_program_exports_are_exactly_the_documented_ones(exported):
    every = set().union(*exported.values())
    assert sorted(every - set(OUTPUTS)) == [], "exported, not described in components/outputs.py"
    assert sorted(set(OUTPUTS) - every) == [], "described in components/outputs.py, exported by no stack"


def test_what_the_outputs_table_says_only_in_place_is_only_in_place(exported):
    """An output documented as `attachTo` only is exported by the in-place stack alone."""
    for name, about in OUTPUTS.items():
        if about.startswith("`attachTo` only"):
            assert {stack for stack, outputs in exported.items() if name in outputs} == {"attach in place"}, name


def generated(block_name: str) -> tuple[str, str]:
    """(the file, the text between the markers) of a generated block."""
    block = next(b for b in config_docs.BLOCKS if b.name == block_name)
    text = (ROOT / block.file).read_text()
    return block.file, text.split(block.begin, 1)[1].split(block.end, 1)[0]


def first_cells(table: str) -> list[str]:
    return re.findall(r"^\| `(\w+)` \|", table, flags=re.MULTILINE)


def test_every_setting_and_every_output_is_documented_once_where_it_is_generated():
    _, settings = generated("settings")
    _, outputs = generated("outputs")
    assert first_cells(settings) == [s.key for s in SETTINGS]
    assert first_cells(outputs) == list(OUTPUTS)
    # Nowhere else a table of settings or outputs: a row of the settings table's shape only in that block.
    for path in DOCUMENTS:
        text = path.read_text()
        for block in config_docs.BLOCKS:
            if block.file == str(path.relative_to(ROOT)):
                text = text.replace(text.split(block.begin, 1)[1].split(block.end, 1)[0], "")
        stray = re.findall(r"^\| `(\w+)` \| (?:string|integer|boolean|array of string|secret string) \|", text,
                           flags=re.MULTILINE)
        assert stray == [], f"{path.name} has a settings row outside the generated table"


# --- the messages --------------------------------------------------------------------------------------------------

MESSAGES = [message for _, messages in troubleshooting.MESSAGES for message in messages]


@pytest.mark.parametrize("message", MESSAGES, ids=[f"{m.source}: {m.says[:40]}" for m in MESSAGES])
def test_each_listed_message_is_still_what_its_file_prints(message):
    source = (ROOT / message.source).read_text()
    assert message.says in source, f"{message.source} no longer says {message.says!r}: update tools/troubleshooting.py"
    assert message.prefix.rstrip(": ") in source, f"{message.source} no longer tags its messages {message.prefix!r}"


def test_every_rule_has_its_messages_in_the_troubleshooting_page():
    messages = troubleshooting.rule_messages()
    assert [rule.__name__ for rule in RULES] == list(dict.fromkeys(m.rule for m in messages))
    _, rules = generated("rules")
    for message in messages:
        assert message.sentence.replace("|", "\\|") in rules


def test_the_rules_messages_fill_in_what_the_code_fixes_and_name_the_rest():
    by_rule = {}
    for message in troubleshooting.rule_messages():
        by_rule.setdefault(message.rule, []).append(message)
    # A loop over a module constant is unrolled: one message per key, its own words.
    deployed_only = {m.key: m.sentence for m in by_rule["in_place_deploys_nothing"]}
    assert list(deployed_only) == ["mode", "target", "envoySource", "nodes", "targetNodeName", "targetNodeAddress",
                                   "registryHost"]
    assert deployed_only["mode"].startswith("expected attach with attachTo: ")
    assert deployed_only["registryHost"].endswith("pulumi config rm registryHost")
    # Module constants and what is computed from them alone are filled in; a configuration's values are named.
    assert "from 30000 to 32767" in by_rule["the_cluster_registry_is_a_node_port"][0].sentence
    assert "from Istio 1.26.0 on" in by_rule["gateways_take_the_debug_image_from_1_26"][0].sentence
    assert "(<request>)" in by_rule["the_memory_request_fits_the_limit"][0].sentence
    assert by_rule["code_server_needs_a_password"][0].missing


def test_the_troubleshooting_page_names_every_setting_that_can_be_refused():
    _, refusals = generated("refusals")
    for setting in SETTINGS:
        if setting.refusal or setting.required:
            assert f"| `{setting.key}` |" in refusals, setting.key
