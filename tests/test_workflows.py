"""The GitHub workflows (.github/workflows/): they pass actionlint (with shellcheck on every `run:`), CI runs
the README's commands, and the pull-request preview diffs the `ci` stack, comments on the PR and runs the
policy pack; the `ci` stack's file passes the program's own config checks and collides with no other stack."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, evaluate, require_tool, resource

WORKFLOWS = ROOT / ".github" / "workflows"
PROJECT = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["name"]
CI_STACK = "ci"
DEBUGGER_PORTS = 5  # lldbServerPort and the 4 gdbserver ports after it
# RFC 5737: addresses for documentation, which no real host has.
DOCUMENTATION_NETWORKS = [ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")]


def workflow(name: str) -> dict:
    return yaml.safe_load((WORKFLOWS / name).read_text())


def triggers(wf: dict) -> dict:
    """`on:` (PyYAML reads the bare key as the boolean True)."""
    on = wf.get("on", wf.get(True))
    return {on: None} if isinstance(on, str) else {k: None for k in on} if isinstance(on, list) else on


def steps(wf: dict) -> list[dict]:
    return [step for job in wf["jobs"].values() for step in job["steps"]]


def uses(wf: dict, action: str) -> list[dict]:
    return [s for s in steps(wf) if s.get("uses", "").split("@")[0] == action]


def makefile_variable(name: str) -> str:
    match = re.search(rf"^{name}\s*\?=\s*(\S+)", (ROOT / "Makefile").read_text(), flags=re.MULTILINE)
    assert match, f"the Makefile sets no {name}"
    return match.group(1)


@pytest.fixture
def actionlint(monkeypatch) -> list[str]:
    """actionlint (requirements-dev.txt installs it into the virtualenv) with shellcheck for `run:` blocks."""
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    return [require_tool("actionlint"), "-no-color", "-shellcheck", require_tool("shellcheck"), "-format",
            "{{json .}}"]


def lint(command: list[str], *files: Path, cwd: Path = ROOT) -> list[dict]:
    done = subprocess.run([*command, *map(str, files)], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert done.returncode in (0, 1), done.stderr
    return json.loads(done.stdout or "[]")


# --- actionlint ----------------------------------------------------------------------------------------------


def test_there_are_the_two_workflows():
    assert sorted(p.name for p in WORKFLOWS.glob("*.y*ml")) == ["ci.yml", "preview.yml"]


def test_the_workflows_pass_actionlint_and_shellcheck(actionlint):
    errors = lint(actionlint, *sorted(WORKFLOWS.glob("*.yml")))
    assert errors == [], "\n".join(f"{e['filepath']}:{e['line']}: {e['message']} [{e['kind']}]" for e in errors)


def test_actionlint_checks_action_inputs_and_run_scripts(actionlint, tmp_path):
    """The lint above is worth something: a misspelt pulumi/actions input, a shellcheck finding and an
    untrusted expression in a script are each caught."""
    broken = workflow("preview.yml")
    job = next(iter(broken["jobs"].values()))
    pulumi_step = next(s for s in job["steps"] if s.get("uses", "").startswith("pulumi/actions@"))
    pulumi_step["with"]["coment-on-pr"] = pulumi_step["with"].pop("comment-on-pr")
    job["steps"].append({"run": "echo $HOME ${{ github.event.pull_request.title }}"})
    (tmp_path / ".github" / "workflows").mkdir(parents=True)
    path = tmp_path / ".github" / "workflows" / "broken.yml"
    path.write_text(yaml.safe_dump({"name": broken["name"], "on": triggers(broken), **{
        k: v for k, v in broken.items() if k not in ("name", "on", True)}}, sort_keys=False))
    errors = lint(actionlint, path, cwd=tmp_path)
    kinds = {e["kind"] for e in errors}
    assert {"action", "shellcheck", "expression"} <= kinds, errors
    assert any("coment-on-pr" in e["message"] for e in errors)


# --- ci.yml --------------------------------------------------------------------------------------------------


def test_ci_runs_on_pull_requests_and_pushes_to_main():
    on = triggers(workflow("ci.yml"))
    assert "pull_request" in on
    assert on["push"]["branches"] == ["main"]


def test_ci_runs_the_readmes_lint_and_test_commands_with_python_311_as_root():
    wf = workflow("ci.yml")
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme and "make lint" in readme
    assert [s["with"]["python-version"] for s in uses(wf, "actions/setup-python")] == ["3.11"]
    runs = [s["run"].strip() for s in steps(wf) if "run" in s]
    assert "make lint" in runs
    test = [r for r in runs if re.search(r"\bmake test\b", r)]
    assert test == ['sudo -E env "PATH=$PATH" make test'], "network namespaces need root; PATH keeps Python 3.11"
    assert all(job["env"]["CI"] == "true" for job in wf["jobs"].values()), "a skip must fail CI"
    assert uses(wf, "actions/checkout")


def test_ci_tests_with_the_python_ruff_targets():
    ruff = (ROOT / "ruff.toml").read_text()
    assert 'target-version = "py311"' in ruff
    for name in ("ci.yml", "preview.yml"):
        assert [s["with"]["python-version"] for s in uses(workflow(name), "actions/setup-python")] == ["3.11"]


# --- preview.yml ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def preview() -> dict:
    return workflow("preview.yml")


@pytest.fixture(scope="module")
def pulumi_step(preview) -> dict:
    [step] = uses(preview, "pulumi/actions")
    return step


def test_preview_runs_on_pull_requests_and_may_comment(preview):
    assert list(triggers(preview)) == ["pull_request"]
    assert preview["permissions"] == {"contents": "read", "pull-requests": "write"}


def test_preview_diffs_the_ci_stack_and_comments_on_the_pr(pulumi_step):
    assert pulumi_step["uses"] in ("pulumi/actions@v6", "pulumi/actions@v7")
    inputs = pulumi_step["with"]
    assert inputs["command"] == "preview"
    assert str(inputs["comment-on-pr"]).lower() == "true"
    assert str(inputs["diff"]).lower() == "true"
    # A DIY backend names stacks organization/<project>/<stack>.
    assert inputs["stack-name"] == f"organization/{PROJECT}/{CI_STACK}"
    assert (ROOT / f"Pulumi.{CI_STACK}.yaml").exists()


def test_preview_uses_the_shared_backend_and_the_passphrase_from_secrets(pulumi_step):
    assert pulumi_step["with"]["cloud-url"] == "${{ secrets.PULUMI_BACKEND_URL }}"
    assert pulumi_step["env"]["PULUMI_CONFIG_PASSPHRASE"] == "${{ secrets.PULUMI_CONFIG_PASSPHRASE }}"
    assert "secrets-provider" not in pulumi_step["with"], "the ci stack keeps the passphrase provider it has"


def test_preview_runs_where_a_docker_daemon_answers_and_sets_no_docker_config(preview, pulumi_step):
    """The docker provider pings its daemon even to preview, whatever docker:disableDockerDaemonCheck says
    (tests/test_engine_preview.py shows both on the real engine): the job runs on GitHub's hosted Ubuntu image,
    which has Docker running, and sets no provider config that would only look as if it helped."""
    [job] = preview["jobs"].values()
    assert job["runs-on"] == "ubuntu-latest"
    assert "config-map" not in pulumi_step["with"]


def test_preview_runs_the_policy_pack(pulumi_step):
    assert pulumi_step["with"]["policyPacks"] == "policy"
    assert (ROOT / "policy" / "PulumiPolicy.yaml").exists()


def test_preview_uses_the_makefiles_pulumi_cli(pulumi_step):
    assert str(pulumi_step["with"]["pulumi-version"]) == makefile_variable("PULUMI_VERSION")


def test_preview_installs_the_requirements_where_the_projects_name_their_virtualenvs(preview):
    runs = []
    for step in steps(preview):
        if step.get("uses", "").startswith("pulumi/actions@"):
            break
        runs.append(step.get("run", ""))
    before = "\n".join(runs)
    venv = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["runtime"]["options"]["virtualenv"]
    pack_venv = yaml.safe_load((ROOT / "policy" / "PulumiPolicy.yaml").read_text())["runtime"]["options"]["virtualenv"]
    assert f"{venv}/bin/pip install -r requirements.txt" in before
    assert f"policy/{pack_venv}/bin/pip install -r policy/requirements.txt" in before


# --- Pulumi.ci.yaml ------------------------------------------------------------------------------------------


def test_the_ci_stack_passes_the_programs_config_checks_with_its_own_names():
    evaluation = evaluate(CI_STACK)
    assert resource(evaluation, "debugger-container")["inputs"]["name"] == "lldb-vscode-server-ci"
    assert resource(evaluation, "registry-container")["inputs"]["name"] == "image-registry-ci"
    assert resource(evaluation, "docker-network")["inputs"]["name"] == "router-ci"
    assert resource(evaluation, "target-namespace")["inputs"]["metadata"]["name"] == "mark-ci"


def test_the_ci_stack_points_at_documentation_addresses_only():
    config = yaml.safe_load((ROOT / f"Pulumi.{CI_STACK}.yaml").read_text())["config"]
    hosts = [config[f"{PROJECT}:registryHost"], config[f"{PROJECT}:targetNodeAddress"], *config[f"{PROJECT}:nodes"]]
    for host in hosts:
        assert any(ipaddress.ip_address(host) in n for n in DOCUMENTATION_NETWORKS), host


def test_the_ci_stack_shares_no_port_subnet_or_namespace_with_another_stack():
    defaults = {k: d.get("default") for k, d in yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["config"].items()}

    def values(path: Path) -> dict:
        config = yaml.safe_load(path.read_text()).get("config") or {}
        own = {k.split(":", 1)[-1]: v for k, v in config.items()}
        return {k: str(own.get(k, defaults[k])) for k in ("registryPort", "lldbServerPort", "dockerNetworkSubnet",
                                                            "namespace")}

    ci = values(ROOT / f"Pulumi.{CI_STACK}.yaml")
    others = [p for p in ROOT.glob("Pulumi.*.yaml") if p.name != f"Pulumi.{CI_STACK}.yaml"]
    assert others, "there is at least the dev stack"
    for path in others:
        other = values(path)
        assert {k for k in ci if ci[k] == other[k]} == set(), path.name
        ours, theirs = int(ci["lldbServerPort"]), int(other["lldbServerPort"])
        assert ours + DEBUGGER_PORTS <= theirs or theirs + DEBUGGER_PORTS <= ours, f"{path.name}: debugger ports"
        subnets = [ipaddress.ip_network(v["dockerNetworkSubnet"]) for v in (ci, other)]
        assert not subnets[0].overlaps(subnets[1]), path.name
