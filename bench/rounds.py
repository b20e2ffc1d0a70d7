"""The figures tests measure (tests/figures.py), gathered by running the test modules with IPD_FIGURES set: one
round is one pytest run of the modules; a bench takes medians over rounds."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def one_round(modules: tuple[str, ...]) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder:
        figures = Path(folder) / "figures.json"
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *modules], cwd=ROOT,
                              env={**os.environ, "CI": "true", "IPD_FIGURES": str(figures)}, capture_output=True,
                              text=True)
        if done.returncode != 0:
            raise SystemExit(f"the tests failed:\n{done.stdout[-3000:]}")
        return json.loads(figures.read_text())


def print_medians(rounds: list[dict[str, float]], unit: str = "s") -> None:
    for figure in rounds[0]:
        values = [r[figure] for r in rounds if figure in r]
        shown = "" if "(MiB)" in figure else f" {unit}"
        print(f"{figure}: median {statistics.median(values):.2f}{shown} over {len(values)} ({values})")


def medians_of_rounds(modules: tuple[str, ...], count: int) -> list[dict[str, float]]:
    """`count` rounds of the modules, each printed as it ends, then the medians; the rounds."""
    rounds = []
    for number in range(count):
        rounds.append(one_round(modules))
        print(f"round {number + 1}: {json.dumps(rounds[-1])}", flush=True)
    print_medians(rounds)
    return rounds
