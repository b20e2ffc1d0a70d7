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


@pytest.mark.parametrize("path", troubleshooting.SCRIPTS)
def test_every_stop_of_every_script_is_in_the_troubleshooting_page(path):
    """Each die/fail/… line that starts with words is read (its continuation lines too), and is either explained in
    tools/troubleshooting.py's table or listed among the other stops."""
    stops = troubleshooting.script_stops(path)
    text = (ROOT / path).read_text()
    for first in re.findall(r'\b(?:die|fail|refuse|discard|roll_back|not_published) "([^"$\\]{12,})', text):
        assert any(first in stop for stop in stops), f"{path}: the stop beginning {first!r} was not read"
    _, others = generated("other stops")
    for stop in stops:
        assert troubleshooting.explained(path, stop) or troubleshooting._cell(
            troubleshooting.shown(troubleshooting.script_tag(path) + stop)) in others, stop


def test_a_stop_split_over_lines_is_read_whole(tmp_path, monkeypatch):
    script = tmp_path / "x.sh"
    script.write_text('die() {\n  echo "x: $*" >&2\n}\n[ -f a ] || die "no a in $DIR:" \\\n  "make it first"\n'
                      'die "$why"\n')
    monkeypatch.setattr(troubleshooting, "ROOT", tmp_path)
    assert troubleshooting.script_stops("x.sh") == ["no a in $DIR: make it first"]
    assert troubleshooting.shown(troubleshooting.script_tag("x.sh") + "no a in $DIR:") == "x: no a in <dir>:"


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


# --- links, anchors, make targets ----------------------------------------------------------------------------------

FENCE = re.compile(r"^```.*?^```[ \t]*$", flags=re.MULTILINE | re.DOTALL)
LINK = re.compile(r"(?<!!)\[(?:[^\]\[]|\[[^\]]*\])*\]\(([^)\s]+)\)")


def prose(text: str) -> str:
    """The text without its fenced blocks (a `# comment` in a shell block is no heading, a link in one no link)."""
    return FENCE.sub("", text)


def github_anchor(heading: str) -> str:
    """GitHub's id for a heading: its text lowercased, punctuation dropped (letters, digits, `_`, `-` and spaces
    kept), each space a '-'."""
    text = re.sub(r"`([^`]*)`", r"\1", heading).strip().lower()
    text = "".join(c for c in text if c in " -_" or c.isalnum())
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every heading's anchor; a repeated one gets -1, -2, … as GitHub numbers them."""
    seen: dict[str, int] = {}
    found = set()
    for heading in re.findall(r"^#{1,6} +(.+?) *#*$", prose(text), flags=re.MULTILINE):
        anchor = github_anchor(heading)
        count = seen.get(anchor, 0)
        seen[anchor] = count + 1
        found.add(anchor if count == 0 else f"{anchor}-{count}")
    return found


@pytest.mark.parametrize(("heading", "anchor"), [
    ("No SSH to the nodes (`nodeAccess: kubernetes`)", "no-ssh-to-the-nodes-nodeaccess-kubernetes"),
    ("The steps, S1–S12", "the-steps-s1s12"),
    ("The download's speed", "the-downloads-speed"),
    ("The walkthrough's lab (`STACK=dev`)", "the-walkthroughs-lab-stackdev"),
    ("What `make up` makes", "what-make-up-makes"),
])
def test_anchors_are_githubs(heading, anchor):
    assert github_anchor(heading) == anchor


def test_a_repeated_heading_is_numbered_and_a_heading_in_a_code_block_is_none():
    assert anchors("# A\n\n## B\n\n```\n# not a heading\n```\n\n## B\n") == {"a", "b", "b-1"}


def broken_links(path) -> list[str]:
    broken = []
    for target in LINK.findall(prose(path.read_text())):
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:: not ours to check
        file, _, anchor = target.partition("#")
        linked = (path.parent / file).resolve() if file else path
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked.read_text()):
            broken.append(f"{target}: no heading #{anchor} in {linked.name}")
    return broken


@pytest.mark.parametrize("path", DOCUMENTS, ids=[p.name for p in DOCUMENTS])
def test_every_relative_link_and_anchor_resolves(path):
    assert broken_links(path) == []


def test_the_link_check_finds_a_broken_file_and_a_broken_anchor(tmp_path):
    page = tmp_path / "page.md"
    (tmp_path / "other.md").write_text("# Other\n\n## A section\n")
    page.write_text("# Page\n\n[ok](other.md#a-section) [no file](gone.md) [no anchor](other.md#b-section) "
                    "[self](#page) [web](https://example.com/#x)\n\n```\n[in code](gone.md)\n```\n")
    assert broken_links(page) == ["gone.md: no such file", "other.md#b-section: no heading #b-section in other.md"]


MAKEFILE = (ROOT / "Makefile").read_text()
# `make` targets the pages name that are not this project's: istio/proxy's own build, run in the builder.
FOREIGN_MAKE_TARGETS = {"build"}


def makefile_targets() -> set[str]:
    return set(re.findall(r"^([a-z][\w-]*)\s*:(?!=)", MAKEFILE, flags=re.MULTILINE))


COMMAND_MAKE = re.compile(r"^\s*(?:\w+=\S*\s+)*make ([a-z][\w-]*)")


def named_make_targets(text: str) -> set[str]:
    """The targets of the `make <target>` commands in code: inline spans and the lines of code blocks that are one,
    never prose ("make a stack") or a comment ("# where make keeps the stacks")."""
    lines = [*re.findall(r"`([^`\n]+)`", prose(text)),
             *(line.split("#")[0] for block in FENCE.findall(text) for line in block.splitlines())]
    return {match.group(1) for line in lines if (match := COMMAND_MAKE.match(line))}


@pytest.mark.parametrize("path", DOCUMENTS, ids=[p.name for p in DOCUMENTS])
def test_every_make_target_the_docs_name_is_in_the_makefile(path):
    named = named_make_targets(path.read_text()) - FOREIGN_MAKE_TARGETS
    assert sorted(named - makefile_targets()) == []


def test_the_make_target_check_reads_code_not_prose():
    assert named_make_targets("To make a stack, run `STACK=a make up`, then\n\n```\nmake frobnicate  # make keeps\n"
                              "tools/x.py   lists make targets\n```\n") == {"up", "frobnicate"}
    assert {"up", "test", "lint", "stack", "config-docs"} <= makefile_targets()


# --- the pages and the README --------------------------------------------------------------------------------------


def test_every_page_is_reachable_from_the_readme():
    linked = {(ROOT / target.partition("#")[0]).resolve() for target in LINK.findall((ROOT / "README.md").read_text())
              if target.startswith("docs/")}
    assert sorted(p.name for p in PAGES if p.resolve() not in linked) == []


@pytest.mark.parametrize("path", PAGES, ids=[p.name for p in PAGES])
def test_each_page_starts_with_the_question_it_answers(path):
    title, blank, *rest = path.read_text().splitlines()
    assert title.startswith("# ") and blank == ""
    first_paragraph = " ".join(rest[:rest.index("")] if "" in rest else rest)
    assert "?" in first_paragraph, f"{path.name}: its first paragraph says what question the page answers"


def test_the_readme_is_the_short_one():
    lines = len((ROOT / "README.md").read_text().splitlines())
    assert lines <= README_MOST_LINES, f"README.md has {lines} lines: move the detail to docs/"


def commands_in_order(text: str) -> list[str]:
    """Fenced blocks (but a picture) and inline spans that are commands, in the order a reader meets them."""
    found = []
    for match in re.finditer(r"^```(\w*)\n(.*?)^```|`([^`\n]+)`", text, flags=re.MULTILINE | re.DOTALL):
        language, block, span = match.groups()
        if block is not None and language != "mermaid":
            found.append(block.strip())
        elif span is not None and re.match(r"(\w+=\S+ )*(make|pulumi|kubectl|docker) ", span + " "):
            found.append(span.strip())
    return found


def test_a_new_users_make_up_is_the_first_command_the_readme_shows():
    readme = (ROOT / "README.md").read_text()
    assert commands_in_order(readme)[0] == "make up"
    sections = re.findall(r"^## (.*)$", readme, flags=re.MULTILINE)
    assert sections[0] == "Try it on your laptop: the lab", "the lab comes first"


def test_the_readmes_test_command_is_what_ci_and_the_workflow_run():
    readme = (ROOT / "README.md").read_text()
    tests = re.search(r"^## Tests\s+```\n(.*?)```", readme, flags=re.MULTILINE | re.DOTALL)
    assert tests is not None and tests.group(1) == "make test\n"
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert "make lint" in ci and "make test" in ci
    assert "make lint" in readme and ".ci/run" in readme
    assert re.search(r"\bmake test\b", (ROOT / ".github" / "workflows" / "ci.yml").read_text())


def test_the_readme_shows_a_stack_of_each_kind_in_a_few_commands():
    readme = (ROOT / "README.md").read_text()
    blocks = [b for b in commands_in_order(readme) if "\n" in b]
    for must in ("make stack NAME=alice WORK_DIR=", "nodeAccess kubernetes", "PLACEMENT=cluster", "attachTo"):
        block = next((b for b in blocks if must in b), None)
        assert block is not None, must
        assert len(block.splitlines()) <= 9, f"the {must} stack takes more than a few commands"


def test_the_lab_page_names_the_kind_release_make_up_installs():
    kind = re.search(r"^KIND_VERSION [?]= (v[0-9.]+)$", MAKEFILE, flags=re.MULTILINE).group(1)
    assert f"kind {kind}" in (DOCS / "lab.md").read_text()


def test_figures_still_to_come_are_placeholders_of_one_form():
    """`TBD(<bench>: <figure>)`, for the figures a real-node run fills in; nothing else says TBD."""
    for path in DOCUMENTS:
        for found in re.findall(r"TBD(?:\([^)\n]*\))?", path.read_text()):
            assert re.fullmatch(r"TBD\((real-envoy|attach-in-place): [^()]+\)", found), (path.name, found)


def test_every_debian_package_the_tests_install_is_named_where_make_test_is_explained():
    tools = re.search(r"^TEST_TOOLS := (.*?)\n\n", MAKEFILE, flags=re.MULTILINE | re.DOTALL).group(1)
    packages = {pair.split(":", 1)[1] for pair in tools.replace("\\\n", " ").split()}
    explained = (DOCS / "testing.md").read_text().split("## The tests (`make test`)", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"[\w.+-]+", explained))
    assert packages <= named, sorted(packages - named)
