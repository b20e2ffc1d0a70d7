"""Figures the tests measure for the benchmarks under bench/: each into the JSON file IPD_FIGURES names, when it names
one (a bench runs the tests with it set and takes medians)."""

from __future__ import annotations

import json
import os
from pathlib import Path


def record(figure: str, value: float) -> None:
    if path := os.environ.get("IPD_FIGURES"):
        figures = json.loads(Path(path).read_text()) if Path(path).exists() else {}
        Path(path).write_text(json.dumps({**figures, figure: round(value, 2)}, indent=2))
