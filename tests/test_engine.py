"""The user's commands on the real Pulumi engine (the CLI and language host `make toolchain` builds), in a copy
of the project as a user's clone has it, with stacks made as the README says (`make stack`'s new_stack.py,
`pulumi stack init`, `pulumi config set`).

What needs the `command` and `docker` provider plugins (a whole preview or up of the stack) cannot run here:
the Go module proxy serves neither (README, "The toolchain the tests run on"). The configuration is checked
before any resource is registered, so a bad one meets the real engine without them; and the policy pack
(`pulumi preview --policy-pack`) judges the stack's own target StatefulSet, and a waypoint stack's overlay
ConfigMap (the debug image of the Envoy istiod deploys), each run in a program of its own with the kubernetes
plugin against the tests' API server."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, evaluate
from tests.test_api_server import create_namespaces, kubernetes_objects
from tests.toolchain import Pulumi, program_project, pulumi_env, toolchain_bin, user_project


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


def policy_pack(folder: Path) -> Path:
    """policy/ as the CLI loads it, its virtualenv the project's (which holds pulumi-policy)."""
    pack = folder / "policy"
    shutil.copytree(ROOT / "policy", pack, ignore=shutil.ignore_patterns("venv", "__pycache__"))
    declaration = pack / "PulumiPolicy.yaml"
    declaration.write_text(declaration.read_text().replace("virtualenv: venv", f"virtualenv: {ROOT / '.venv'}"))
    return pack


@pytest.fixture
def target_statefulset(api_server, tmp_path) -> tuple[Pulumi, dict]:
    """The dev stack's target StatefulSet, as it renders, in a program of its own on the real engine and the
    tests' API server: the policy pack judges it as it would the stack's."""
    (statefulset,) = [o for o in kubernetes_objects(evaluate("dev")) if o["kind"] == "StatefulSet"]
    create_namespaces(api_server, [statefulset])
    pulumi = program_project("statefulset", toolchain_bin(), tmp_path, KUBECONFIG=str(api_server.kubeconfig))
    return pulumi, statefulset


@pytest.fixture
def waypoint_parameters(api_server, tmp_path) -> tuple[Pulumi, dict]:
    """The waypoint stack's overlay ConfigMap (its `deployment` key gives istio-proxy the debug image), as it
    renders, in a program of its own on the real engine and the tests' API server."""
    (parameters,) = [o for o in kubernetes_objects(evaluate("dev", "target=waypoint", "istioVersion=1.30.3"))
                     if o["kind"] == "ConfigMap"]
    create_namespaces(api_server, [parameters])
    pulumi = program_project("configmap", toolchain_bin(), tmp_path, KUBECONFIG=str(api_server.kubeconfig))
    return pulumi, parameters


def preview_with_policies(pulumi: Pulumi, obj: dict, folder: Path) -> subprocess.CompletedProcess:
    manifest = folder / "manifest.json"
    manifest.write_text(json.dumps(obj))
    pulumi("config", "set", "manifest", str(manifest))
    return pulumi("preview", "--policy-pack", str(policy_pack(folder)), check=False)


def test_the_policy_pack_runs_on_the_engine_and_passes_the_stacks_statefulset(target_statefulset, tmp_path):
    pulumi, statefulset = target_statefulset
    done = preview_with_policies(pulumi, statefulset, tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "istio-proxy-debug-safety@v0.1.0" in done.stdout and "mandatory" not in done.stdout, done.stdout


def test_the_policy_pack_refuses_a_proxy_image_by_tag_on_the_engine(target_statefulset, tmp_path):
    pulumi, statefulset = target_statefulset
    annotations = statefulset["spec"]["template"]["metadata"]["annotations"]
    annotations["sidecar.istio.io/proxyImage"] = annotations["sidecar.istio.io/proxyImage"].split("@")[0] + ":debug"
    done = preview_with_policies(pulumi, statefulset, tmp_path)
    assert done.returncode != 0
    output = done.stdout + done.stderr
    assert "debug-image-by-digest" in output, output[-3000:]
    assert "does not name the debug image by digest" in output


def test_the_policy_pack_passes_a_waypoints_overlay_and_refuses_one_by_tag_on_the_engine(waypoint_parameters,
                                                                                          tmp_path):
    pulumi, parameters = waypoint_parameters
    done = preview_with_policies(pulumi, parameters, tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "istio-proxy-debug-safety@v0.1.0" in done.stdout and "mandatory" not in done.stdout, done.stdout
    overlay = parameters["data"]["deployment"]
    by_digest = re.compile(r"^( *image: \S+)@sha256:[0-9a-f]{64}$", re.MULTILINE)
    assert len(by_digest.findall(overlay)) == 1
    parameters["data"]["deployment"] = by_digest.sub(r"\1:debug", overlay)
    (tmp_path / "by-tag").mkdir()
    done = preview_with_policies(pulumi, parameters, tmp_path / "by-tag")
    assert done.returncode != 0
    output = done.stdout + done.stderr
    assert "debug-image-by-digest" in output, output[-3000:]
    assert "not the debug image by digest" in output and ":debug'" in output, output[-3000:]
