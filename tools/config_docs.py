"""Writes Pulumi.yaml's `config:` block and the README's settings table from components/settings.py.

    python -m tools.config_docs           # `make config-docs`: rewrite both
    python -m tools.config_docs --check   # `make lint`: exit 1, naming the file, when either differs
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from components.settings import BOOLEAN, SETTINGS, STRINGS, Setting  # noqa: E402

PULUMI_YAML_HEAD = """\
# Generated from components/settings.py by `make config-docs`: change a setting there, not here.
# The secret settings (sshPrivateKey, codeServerPassword) are not declared: the CLI requires every declared key
# that has no default, and a secret has none. The program checks every value again at start-up (preview
# included) and names the key, the bad value and what is expected.
"""
README_BEGIN = "<!-- settings: generated from components/settings.py by `make config-docs` -->\n"
README_END = "<!-- end of settings -->\n"


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


def readme(current: str) -> str:
    """`current` (README.md) with the table between its two markers made anew."""
    head, rest = current.split(README_BEGIN)
    _, tail = rest.split(README_END)
    return head + README_BEGIN + settings_table() + README_END + tail


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 when a file differs")
    parser.add_argument("--root", type=Path, default=ROOT, help="the project folder (default: this one)")
    args = parser.parse_args()
    stale = []
    for name, make in (("Pulumi.yaml", pulumi_yaml), ("README.md", readme)):
        path = args.root / name
        current = path.read_text()
        wanted = make(current)
        if wanted != current:
            stale.append(name)
            if not args.check:
                path.write_text(wanted)
    if args.check and stale:
        print(f"{' and '.join(stale)} differ from components/settings.py: run `make config-docs`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
