"""The launch.json on the developer host (placement host): the stack's rendered write and restore commands, run
for real by /bin/sh and python3 against files a developer could have — none, VS Code's own with comments,
their own configurations — across an up, a later up with another pid, their edits, and a destroy."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import evaluate, resource

# What VS Code writes for a new launch.json (its comments and a trailing comma), plus one of the developer's.
VS_CODE_FILE = """{
    // Use IntelliSense to learn about possible attributes.
    // For more information, visit: https://go.microsoft.com/fwlink/?linkid=830387
    "version": "0.2.0",
    "configurations": [
        {
            "name": "my unit tests", /* mine */
            "type": "lldb",
            "request": "launch",
            "program": "${workspaceFolder}/bazel-bin/test//tests",
        },
    ]
}
"""


ADDED = {"name": "added later", "type": "lldb", "request": "attach", "pid": 1}


def rendered(work: Path, *sets: str) -> tuple[dict, dict]:
    evaluation = evaluate("dev", f"workDir={work}", *sets)
    return resource(evaluation, "launch-file-merge")["inputs"], evaluation["outputs"]


def run(inputs: dict, action: str) -> subprocess.CompletedProcess:
    return subprocess.run(["/bin/sh", "-c", inputs[action]], env={**os.environ, **inputs["environment"]},
                          capture_output=True, text=True, timeout=60)


def names(path: Path) -> list[str]:
    return [c["name"] for c in json.loads(path.read_text())["configurations"]]


@pytest.fixture
def work(tmp_path: Path) -> Path:
    return tmp_path / "istio-testing"


def developers_file(work: Path, text: str) -> Path:
    """The launch.json the developer already has in the workspace."""
    path = work / "work" / ".vscode" / "launch.json"
    path.parent.mkdir(parents=True)
    path.write_text(text)
    return path


def edited(path: Path, configuration: dict) -> None:
    """The developer adds a configuration of their own."""
    document = json.loads(path.read_text())
    document["configurations"].append(configuration)
    path.write_text(json.dumps(document))


def test_the_file_is_the_one_the_debugger_opens_and_the_stacks_configurations_go_in(work):
    inputs, outputs = rendered(work)
    path = work / "work" / ".vscode" / "launch.json"
    assert outputs["launchJsonFile"] == inputs["environment"]["LAUNCH_FILE"] == str(path)
    done = run(inputs, "create")
    assert done.returncode == 0, done.stderr
    assert json.loads(path.read_text()) == json.loads(outputs["launchJson"])
    assert run(inputs, "delete").returncode == 0
    assert not path.exists() and not (path.parent / ".istio-proxy-debug-launch.json").exists()


def test_the_developers_own_configurations_and_comments_survive_an_up_and_a_destroy(work):
    path = developers_file(work, VS_CODE_FILE)
    inputs, outputs = rendered(work)
    assert run(inputs, "create").returncode == 0
    ours = [c["name"] for c in json.loads(outputs["launchJson"])["configurations"]]
    assert names(path) == ["my unit tests", *ours]
    assert run(inputs, "delete").returncode == 0
    assert path.read_text() == VS_CODE_FILE, "untouched since the up: the original comes back byte for byte"


def test_a_later_up_replaces_the_stacks_configurations_and_keeps_the_developers_edits(work):
    path = developers_file(work, VS_CODE_FILE)
    first, _ = rendered(work)
    assert run(first, "create").returncode == 0
    # The developer adds a configuration; the next up attaches to another mode, with other names.
    edited(path, ADDED)
    second, outputs = rendered(work, "mode=startup")
    assert run(second, "create").returncode == 0
    ours = [c["name"] for c in json.loads(outputs["launchJson"])["configurations"]]
    assert names(path) == ["my unit tests", "added later", *ours], "the first up's configurations are gone"
    assert run(second, "delete").returncode == 0
    assert names(path) == ["my unit tests", "added later"], "destroy takes only the stack's out"


def test_a_file_that_cannot_be_read_is_left_as_it_is_with_the_reason(work):
    path = developers_file(work, '{"configurations": [ {"name": "half')
    inputs, _ = rendered(work)
    done = run(inputs, "create")
    assert done.returncode != 0
    assert f"{path} is not a launch.json that can be read" in done.stderr and "left as it is" in done.stderr
    assert path.read_text() == '{"configurations": [ {"name": "half'


def test_the_cluster_placement_writes_no_file_on_the_developer_host():
    from tests.conftest import CLUSTER_PLACEMENT

    evaluation = evaluate("dev", *CLUSTER_PLACEMENT)
    assert not [r for r in evaluation["resources"] if r["name"] == "launch-file-merge"]
    assert evaluation["outputs"]["launchJsonFile"] is None


def test_a_configuration_of_the_developers_named_like_the_stacks_is_backed_up_and_comes_back(work):
    inputs, outputs = rendered(work)
    ours = json.loads(outputs["launchJson"])["configurations"]
    mine = {"name": ours[0]["name"], "type": "lldb", "request": "attach", "pid": 4242}
    path = developers_file(work, json.dumps({"version": "0.2.0", "configurations": [mine]}))
    assert run(inputs, "create").returncode == 0
    assert json.loads(path.read_text())["configurations"] == ours, "replaced by name"
    edited(path, ADDED)
    assert run(inputs, "delete").returncode == 0
    assert json.loads(path.read_text())["configurations"] == [ADDED, mine]
