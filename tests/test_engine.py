"""The user's commands on the real Pulumi engine (the CLI and language host `make toolchain` builds), in a copy
of the project as a user's clone has it, with stacks made as the README says (`make stack`'s new_stack.py,
`pulumi stack init`, `pulumi config set`).

What needs the `command` and `docker` provider plugins (a whole preview or up of the stack) cannot run here:
the Go module proxy serves neither (README, "The toolchain the tests run on"). The configuration is checked
before any resource is registered, so a bad one meets the real engine without them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.toolchain import Pulumi, pulumi_env, toolchain_bin, user_project


@pytest.fixture
def project(tmp_path) -> Pulumi:
    bin_dir = toolchain_bin()
    folder = user_project(tmp_path / "clone")
    return Pulumi(bin_dir, folder, pulumi_env(bin_dir, tmp_path / "state"))


def test_a_bad_configuration_stops_preview_and_up_with_the_problem_list_and_no_traceback(project, tmp_path):
    made = subprocess.run([sys.executable, "tools/new_stack.py", "carol", "--work-dir", str(tmp_path / "work")],
                          cwd=project.project, capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    project("stack", "init", "carol", "--secrets-provider", "passphrase")
    project("config", "set", "registryPort", "99999")
    project("config", "set", "namespace", "Bad_Name")

    preview = project("preview", "--diff", check=False)
    assert preview.returncode != 0
    output = preview.stdout + preview.stderr
    assert "the stack configuration has 2 problem(s)" in output, output[-3000:]
    assert '- istio-proxy-debug:registryPort = "99999": expected an integer port from 1 to 65535' in output
    assert '- istio-proxy-debug:namespace = "Bad_Name": expected a DNS-1123 label' in output
    assert "Traceback" not in output

    up = project("up", "--yes", "--skip-preview", check=False)
    assert up.returncode != 0 and "Traceback" not in up.stdout + up.stderr
    resources = json.loads(project("stack", "export").stdout)["deployment"].get("resources", [])
    # Only the engine's own root (the stack) is recorded: no resource of the program was created.
    assert [r["type"] for r in resources] in ([], ["pulumi:pulumi:Stack"]), resources
