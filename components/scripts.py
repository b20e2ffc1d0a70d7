"""The files the components hand to their commands: shell scripts and Dockerfiles.

Each is passed as text (not as a path), so a change to it shows in the preview diff and re-runs the
command, and no machine-specific path reaches a resource input.
"""

from collections.abc import Mapping
from pathlib import Path

SCRIPTS_DIR = Path(__file__).parent / "scripts"
DOCKERFILES_DIR = Path(__file__).parent / "docker"


def script(name: str) -> str:
    return (SCRIPTS_DIR / name).read_text()


def dockerfile(name: str) -> str:
    return (DOCKERFILES_DIR / name).read_text()


def key_values(stdout: str, required: set[str]) -> dict[str, str]:
    """Reads the `key=value` lines a script prints as its result; a missing key is an error."""
    values = dict(line.split("=", 1) for line in stdout.splitlines() if "=" in line)
    missing = required - values.keys()
    if missing:
        raise ValueError(f"the script printed no {', '.join(sorted(missing))}: {stdout!r}")
    return values


def shell_assignments(parameters: Mapping[str, object]) -> str:
    """`NAME='value'` lines for a script run over SSH, which passes no environment: every value single-quoted,
    so none reads as a command (PROCESS_NAME=sleep) to the shell or to shellcheck."""
    return "".join(f"{name}='{str(value).replace(chr(39), chr(39) + chr(92) + chr(39) * 2)}'\n"
                   for name, value in parameters.items())
