"""The user's commands on the real Pulumi engine (the CLI and language host `make toolchain` builds), in a copy
of the project as a user's clone has it, with stacks made as the docs say (`make stack`'s new_stack.py,
`pulumi stack init`, `pulumi config set`).

What needs the `command` and `docker` provider plugins (a whole preview or up of the stack) cannot run here:
the Go module proxy serves neither (docs/testing.md, "The toolchain the tests run on"). The configuration is checked
before any resource is registered, so a bad one meets the real engine without them; and the policy pack
(`pulumi preview --policy-pack`) judges the stack's own target StatefulSet, and a waypoint stack's overlay
ConfigMap (the debug image of the Envoy istiod deploys), each run in a program of its own with the kubernetes
plugin against the tests' API server. A gateway target's Kubernetes objects go through the engine in the lab's
order, on a control plane of their own that starts without the Gateway API CRDs."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
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
    project.make_stack("carol", "--work-dir", str(tmp_path / "work"))
    project("config", "set", "registryPort", "99999")
    project("config", "set", "namespace", "Bad_Name")
    # A waypoint on a release whose istiod does not apply a Gateway's parametersRef ConfigMap.
    project("config", "set", "istioVersion", "1.24.6")
    project("config", "set", "target", "waypoint")

    preview = project("preview", "--diff", check=False)
    assert preview.returncode != 0
    output = preview.stdout + preview.stderr
    assert "the stack configuration has 3 problem(s)" in output, output[-3000:]
    assert '- istio-proxy-debug:target = "waypoint": expected sidecar with istioVersion 1.24.6' in output
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


@pytest.fixture(scope="module")
def bare_api_server(module_tmp):
    """A control plane of its own without the Gateway API CRDs: the lab's cluster before its first `up`."""
    from tests.control_plane import control_plane

    with control_plane(toolchain_bin(), module_tmp("bare-plane")) as plane:
        yield plane


def gateway_objects(*sets: str) -> list[dict]:
    """What a gateway target's MeshGateway sends: its ConfigMap, Gateway and HTTPRoute, as the stack renders them."""
    objects = kubernetes_objects(evaluate("dev", "target=gateway", "istioVersion=1.30.3", *sets))
    return [o for o in objects if o["kind"] in ("ConfigMap", "Gateway", "HTTPRoute")]


def test_the_gateway_objects_come_after_the_crds_and_keep_the_gateway_when_the_overlay_changes(bare_api_server,
                                                                                                 tmp_path):
    """On the real engine and provider: the lab's order (the CRDs through a yaml/v2 ConfigFile, then the
    ConfigMap, the Gateway and the HTTPRoute) previews and applies on a cluster that has no CRDs yet; a new
    overlay (another mode) replaces the ConfigMap under the same name and leaves the Gateway alone; destroy
    removes them."""
    import yaml

    from tests.gateway_api import standard_crds

    objects = gateway_objects()
    by_kind = {o["kind"]: o for o in objects}
    assert set(by_kind) == {"ConfigMap", "Gateway", "HTTPRoute"}
    namespace = by_kind["Gateway"]["metadata"]["namespace"]
    create_namespaces(bare_api_server, objects)
    crds = tmp_path / "standard-install.yaml"
    crds.write_text("---\n".join(yaml.safe_dump(c) for c in standard_crds()))
    pulumi = program_project("gateway_objects", toolchain_bin(), tmp_path,
                             KUBECONFIG=str(bare_api_server.kubeconfig))
    manifest = tmp_path / "objects.json"
    manifest.write_text(json.dumps(objects))
    pulumi("config", "set", "objects", str(manifest))
    pulumi("config", "set", "crds", str(crds))
    assert bare_api_server.kubectl("get", "crd", "gateways.gateway.networking.k8s.io", check=False).returncode != 0

    preview = pulumi("preview", "--diff")
    assert "kubernetes:gateway.networking.k8s.io/v1:Gateway" in preview.stdout, preview.stdout[-3000:]
    pulumi("up", "--yes", "--skip-preview")
    gateway = json.loads(bare_api_server.kubectl(
        "get", "gateway", by_kind["Gateway"]["metadata"]["name"], "-n", namespace, "-o", "json").stdout)
    assert gateway["spec"]["infrastructure"]["parametersRef"]["name"] == by_kind["ConfigMap"]["metadata"]["name"]
    route = json.loads(bare_api_server.kubectl(
        "get", "httproute", by_kind["HTTPRoute"]["metadata"]["name"], "-n", namespace, "-o", "json").stdout)
    assert route["spec"]["parentRefs"][0]["name"] == gateway["metadata"]["name"]
    before = json.loads(pulumi("stack", "output", "--json").stdout)
    pulumi("preview", "--expect-no-changes")

    startup = gateway_objects("mode=startup")
    changed = {o["kind"]: o for o in startup}
    assert changed["ConfigMap"]["data"] != by_kind["ConfigMap"]["data"] and changed["Gateway"] == by_kind["Gateway"]
    manifest.write_text(json.dumps(startup))
    pulumi("up", "--yes", "--skip-preview")
    after = json.loads(pulumi("stack", "output", "--json").stdout)
    assert after["gatewayUid"] == before["gatewayUid"], "the Gateway stays: istiod does not redeploy from scratch"
    assert after["configMapUid"] != before["configMapUid"], "the provider replaces a ConfigMap whose data changes"
    data = json.loads(bare_api_server.kubectl(
        "get", "configmap", changed["ConfigMap"]["metadata"]["name"], "-n", namespace, "-o", "json").stdout)["data"]
    assert data == changed["ConfigMap"]["data"]

    pulumi("destroy", "--yes")
    for kind, obj in (("gateway", by_kind["Gateway"]), ("configmap", by_kind["ConfigMap"])):
        assert bare_api_server.kubectl("get", kind, obj["metadata"]["name"], "-n", namespace,
                                       check=False).returncode != 0, kind
