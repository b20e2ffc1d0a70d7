"""Sidecar stacks evaluate byte for byte as they did before the `target` setting existed (commit fe09b3d).

`tests/data/sidecar-stacks/<case>.json` is the mock evaluation (every resource with its inputs and options, and
the stack outputs) that commit's program produced for each case; nothing in them was written by hand. A change
that is meant to alter a sidecar stack regenerates them on purpose, and the diff shows in review:
`python -m tests.test_sidecar_stacks_unchanged`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.conftest import CLUSTER_PLACEMENT, run_harness

SNAPSHOTS = Path(__file__).parent / "data" / "sidecar-stacks"
CASES = {
    "dev": ("dev",),
    "dev-startup": ("dev", "mode=startup"),
    "dev-cluster-placement": ("dev", *CLUSTER_PLACEMENT),
    "dev-build": ("dev", "envoySource=build"),
    "lab": ("lab",),
    "lab-startup": ("lab", "mode=startup"),
    "ci": ("ci",),
}
PREVIEWS = ("dev", "lab")


def evaluation_text(sets: tuple[str, ...], preview: bool) -> str:
    done = run_harness(*sets, preview=preview)
    assert done.returncode == 0, done.stderr
    return done.stdout


def snapshot(case: str, preview: bool) -> Path:
    return SNAPSHOTS / f"{case}{'-preview' if preview else ''}.json"


PARAMS = [(c, False) for c in CASES] + [(c, True) for c in PREVIEWS]


@pytest.mark.parametrize(("case", "preview"), PARAMS, ids=[snapshot(c, p).stem for c, p in PARAMS])
def test_a_sidecar_stack_evaluates_exactly_as_before(case, preview):
    expected = json.loads(snapshot(case, preview).read_text())
    actual = json.loads(evaluation_text(CASES[case], preview))
    assert actual["outputs"] == expected["outputs"]
    by_name = {r["name"]: r for r in actual["resources"]}
    assert sorted(by_name) == sorted(r["name"] for r in expected["resources"])
    for resource in expected["resources"]:
        assert by_name[resource["name"]] == resource, resource["name"]
    assert evaluation_text(CASES[case], preview) == snapshot(case, preview).read_text(), "byte for byte"


if __name__ == "__main__":
    SNAPSHOTS.mkdir(exist_ok=True)
    for case, preview in PARAMS:
        snapshot(case, preview).write_text(evaluation_text(CASES[case], preview))
        print(snapshot(case, preview), file=sys.stderr)
