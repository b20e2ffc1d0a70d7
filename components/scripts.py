"""The shell scripts the components run, read from `components/scripts/`.

Each script is passed to its command as text (not as a path), so a change to a script shows in the
preview diff and re-runs the command, and no machine-specific path reaches a resource input.
"""

from pathlib import Path

SCRIPTS_DIR = Path(__file__).parent / "scripts"


def script(name: str) -> str:
    return (SCRIPTS_DIR / name).read_text()
