"""Writes what the documentation says that the code already knows: Pulumi.yaml's `config:` block from
components/settings.py, and the generated blocks of docs/ between their markers: the settings table and the outputs
table (components/outputs.py) of docs/configuration.md, and the messages of docs/troubleshooting.md
(tools/troubleshooting.py: the settings' refusals, the rules' messages, what the scripts stop with, explained, and
every other stop read from the scripts).

    python -m tools.config_docs           # `make config-docs`: rewrite them
    python -m tools.config_docs --check   # `make lint`: exit 1, naming the files, when any differs
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from components.outputs import OUTPUTS  # noqa: E402
from components.settings import BOOLEAN, SETTINGS, STRINGS, Setting  # noqa: E402
from tools import troubleshooting  # noqa: E402

PULUMI_YAML_HEAD = """\
# Generated from components/settings.py by `make config-docs`: change a setting there, not here.
# The secret settings (sshPrivateKey, codeServerPassword) are not declared: the CLI requires every declared key
# that has no default, and a secret has none. The program checks every value again at start-up (preview
# included) and names the key, the bad value and what is expected.
"""


def declared_type(setting: Setting) -> str:
    """The type Pulumi.yaml declares: a boolean derived from other settings is a string defaulting to "",
    Pulumi's booleans having no unset value."""
    return "string" if setting.type == BOOLEAN and setting.default is None else setting.type


def declaration(setting: Setting) -> dict:
    entry: dict = {"type": declared_type(setting)}
    if setting.type == STRINGS:
        entry["items"] = {"type": "string"}
    entry["default"] = setting.default if setting.default is not None else ([] if setting.type == STRINGS else "")
    entry["description"] = setting.about
    return entry


def config_block() -> str:
    declared = {s.key: declaration(s) for s in SETTINGS if not s.secret}
    return yaml.safe_dump({"config": declared}, sort_keys=False, width=2**16, allow_unicode=True)


def pulumi_yaml(current: str) -> str:
    """`current` (Pulumi.yaml) with everything from the generated comment on made anew."""
    project = current.split(PULUMI_YAML_HEAD.splitlines()[0])[0]
    return project + PULUMI_YAML_HEAD + config_block()


def readme_type(setting: Setting) -> str:
    return {STRINGS: "array of string", "secret": "secret string"}.get(setting.type, declared_type(setting))


def readme_default(setting: Setting) -> str:
    if setting.shown_default is not None:
        return setting.shown_default
    return f"`{str(setting.default).lower() if isinstance(setting.default, bool) else setting.default}`"


def settings_table() -> str:
    rows = [f"| `{s.key}` | {readme_type(s)} | {readme_default(s)} | {s.about} |" for s in SETTINGS]
    return "\n".join(["| key | type | default | meaning |", "|---|---|---|---|", *rows]) + "\n"


def outputs_table() -> str:
    rows = [f"| `{name}` | {about} |" for name, about in OUTPUTS.items()]
    return "\n".join(["| output | what |", "|---|---|", *rows]) + "\n"


@dataclass(frozen=True)
class Block:
    """A generated block of a Markdown file: between `<!-- NAME: generated from SOURCE by `make config-docs` -->`
    and `<!-- end of NAME -->`, each on a line of its own."""

    file: str
    name: str
    source: str
    make: Callable[[], str]

    @property
    def begin(self) -> str:
        return f"<!-- {self.name}: generated from {self.source} by `make config-docs` -->\n"

    @property
    def end(self) -> str:
        return f"<!-- end of {self.name} -->\n"

    def written(self, current: str) -> str:
        """`current` with the block between its two markers made anew; ValueError when they are not there once."""
        if current.count(self.begin) != 1 or current.count(self.end) != 1:
            raise ValueError(f"{self.file} must hold each of {self.begin.strip()} and {self.end.strip()} once")
        head, rest = current.split(self.begin)
        _, tail = rest.split(self.end)
        return head + self.begin + self.make() + self.end + tail


CONFIGURATION = "docs/configuration.md"
TROUBLESHOOTING = "docs/troubleshooting.md"
BLOCKS = (
    Block(CONFIGURATION, "settings", "components/settings.py", settings_table),
    Block(CONFIGURATION, "outputs", "components/outputs.py", outputs_table),
    Block(TROUBLESHOOTING, "refusals", "components/settings.py", troubleshooting.refusals_table),
    Block(TROUBLESHOOTING, "rules", "components/config_rules.py", troubleshooting.rules_table),
    Block(TROUBLESHOOTING, "messages", "tools/troubleshooting.py", troubleshooting.messages_tables),
    Block(TROUBLESHOOTING, "other stops", "the scripts' die lines", troubleshooting.other_stops_table),
)


def document(name: str, current: str) -> str:
    """`current` (the file `name`, from the project's root) as the code generates it."""
    if name == "Pulumi.yaml":
        return pulumi_yaml(current)
    for block in BLOCKS:
        if block.file == name:
            current = block.written(current)
    return current


def generated_files() -> list[str]:
    return ["Pulumi.yaml", *dict.fromkeys(block.file for block in BLOCKS)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 when a file differs")
    parser.add_argument("--root", type=Path, default=ROOT, help="the project folder (default: this one)")
    args = parser.parse_args()
    stale = []
    for name in generated_files():
        path = args.root / name
        current = path.read_text()
        try:
            wanted = document(name, current)
        except ValueError as error:
            print(error, file=sys.stderr)
            return 1
        if wanted != current:
            stale.append(name)
            if not args.check:
                path.write_text(wanted)
    if args.check and stale:
        print(f"{' and '.join(stale)} differ from the code they are generated from: run `make config-docs`",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
