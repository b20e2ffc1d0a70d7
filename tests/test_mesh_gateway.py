"""target waypoint and gateway, release by release: the Deployment istiod would run for the stack's Gateway.

tests/data/istio-gateways/<version>/ holds, from istio/istio at the tag, the gateway deployment controller's own
golden files (`waypoint.yaml`: a Gateway of class istio-waypoint; `simple.yaml`: class istio; each the objects the
controller renders from that release's template), its `customizations` case (the golden output, and the
ConfigMap `deployment` overlay its test gives), and facts read from deploymentcontroller.go (see its README).

As tests/test_releases.py computes an injection, this computes istiod's Deployment: the rendered golden with the
stack's ConfigMap overlay applied as the controller applies it, a strategic merge patch (tests/injector.py `merge`,
first shown to reproduce the controller's own `customizations` golden). Expectations come from the stack's
outputs and settings, never from the code that wrote the overlay.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from components.config_rules import FIRST_CUSTOMIZABLE_GATEWAY
from tests.conftest import evaluate, resource, run_harness
from tests.injector import POD_LIST_KEYS, merge
from tests.mock_stack import project_file
from tests.releases import version_key
from tests.test_releases import kubelet_args, wait_then_start

GATEWAYS = Path(__file__).parent / "data" / "istio-gateways"
RELEASES = sorted((f.name for f in GATEWAYS.iterdir() if (f / "facts.json").exists()), key=version_key)
# The controller's golden of each class: a Gateway with no customization.
GOLDEN = {"waypoint": "waypoint.yaml", "gateway": "simple.yaml"}
TARGETS = tuple(GOLDEN)
NODE = "node-a"


def facts(version: str) -> dict:
    return json.loads((GATEWAYS / version / "facts.json").read_text())


CUSTOMIZABLE = [v for v in RELEASES if facts(v)["parametersRefConfigMap"]]
NOT_CUSTOMIZABLE = [v for v in RELEASES if not facts(v)["parametersRefConfigMap"]]


def golden_objects(version: str, name: str) -> list[dict]:
    return [o for o in yaml.safe_load_all((GATEWAYS / version / name).read_text()) if o]


def golden_deployment(version: str, name: str) -> dict:
    return next(o for o in golden_objects(version, name) if o["kind"] == "Deployment")


def proxy_of(deployment: dict) -> dict:
    return next(c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "istio-proxy")


def renamed(obj: dict, old: str, new: str) -> dict:
    return json.loads(json.dumps(obj).replace(old, new))


# --- the controller's facts and its merge ------------------------------------------------------------------


def test_istiod_applies_a_parametersref_configmap_from_the_first_customizable_release_on():
    """The refusal's release is where the controller's own source starts to apply the ConfigMap."""
    assert CUSTOMIZABLE and NOT_CUSTOMIZABLE, "the data must show releases on both sides"
    for version in RELEASES:
        has_it = facts(version)["parametersRefConfigMap"]
        assert has_it == (version_key(version)[:2] >= FIRST_CUSTOMIZABLE_GATEWAY), version
        if has_it:
            assert facts(version)["overlayIsStrategicMergePatch"], version
            assert "deployment" in facts(version)["supportedOverlays"], version
            assert (GATEWAYS / version / "customizations.yaml").exists(), version


@pytest.mark.parametrize("version", CUSTOMIZABLE)
def test_the_merge_reproduces_the_controllers_customizations_golden(version):
    """simple.yaml's Gateway is `default`, the customizations case's `namespace`: the rest of the pod is the
    template's, and the overlay's merge gives exactly what the controller rendered."""
    overlay = yaml.safe_load((GATEWAYS / version / "customizations.deployment-overlay.yaml").read_text())
    plain = renamed(golden_deployment(version, "simple.yaml")["spec"]["template"]["spec"],
                    "default-istio", "namespace-istio")
    customized = golden_deployment(version, "customizations.yaml")
    assert plain != customized["spec"]["template"]["spec"], "the overlay changes something"
    assert merge(plain, overlay["spec"]["template"]["spec"], POD_LIST_KEYS) == customized["spec"]["template"]["spec"]
    assert customized["spec"]["replicas"] == overlay["spec"]["replicas"]


# --- the stack's Deployment, per release -------------------------------------------------------------------


def stack(version: str, target: str, mode: str, *sets: str) -> dict:
    return evaluate("dev", f"target={target}", f"istioVersion={version}", f"mode={mode}", *sets)


def istiods_deployment(version: str, target: str, mode: str) -> tuple[dict, dict]:
    """The Deployment istiod renders for the stack's Gateway, and the stack's evaluation."""
    evaluation = stack(version, target, mode, f"targetNodeName={NODE}")
    parameters = resource(evaluation, f"target-{target}-parameters")["inputs"]
    overlay = yaml.safe_load(parameters["data"]["deployment"])
    return merge(golden_deployment(version, GOLDEN[target]), overlay, POD_LIST_KEYS), evaluation


CASES = [(v, t, m) for v in CUSTOMIZABLE for t in TARGETS for m in ("attach", "startup")]
IDS = [f"{v}-{t}-{m}" for v, t, m in CASES]


@pytest.mark.parametrize(("version", "target", "mode"), CASES, ids=IDS)
def test_istiods_deployment_runs_the_debug_image_with_the_sidecars_memory_and_ptrace(version, target, mode):
    deployment, evaluation = istiods_deployment(version, target, mode)
    rendered = proxy_of(golden_deployment(version, GOLDEN[target]))
    proxy = proxy_of(deployment)
    image = evaluation["outputs"]["debugImage"]
    assert "@sha256:" in image and proxy["image"] == image
    defaults = project_file()["config"]
    assert proxy["resources"]["requests"]["memory"] == defaults["proxyMemory"]["default"]
    assert proxy["resources"]["limits"]["memory"] == defaults["proxyMemoryLimit"]["default"]
    for bound in ("requests", "limits"):
        if "cpu" in rendered.get("resources", {}).get(bound, {}):
            assert proxy["resources"][bound]["cpu"] == rendered["resources"][bound]["cpu"], "the template's CPU stays"
    context = proxy["securityContext"]
    assert "SYS_PTRACE" in context["capabilities"]["add"]
    assert context["capabilities"].get("drop") == rendered["securityContext"]["capabilities"]["drop"]
    assert context.get("privileged") in (None, False)
    # The template's own: arguments, env (pilot-agent's certificates and bootstrap) and mounts.
    assert proxy["args"] == rendered["args"]
    assert proxy["env"] == rendered["env"] and proxy["volumeMounts"] == rendered["volumeMounts"]
    terms = deployment["spec"]["template"]["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms == [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": [NODE]}]}]


@pytest.mark.parametrize(("version", "target", "mode"), CASES, ids=IDS)
def test_the_pod_lookup_matches_the_pods_istiod_makes_from_this_overlay(version, target, mode):
    """The golden's Gateway has another name than the stack's: istiod's label carries the Gateway's name, and its
    Deployment's name is the Gateway's with the same suffix."""
    deployment, evaluation = istiods_deployment(version, target, mode)
    env = resource(evaluation, f"target-{target}-pod")["inputs"]["environment"]
    template = deployment["spec"]["template"]["metadata"]
    owner = next(o for o in deployment["metadata"]["ownerReferences"] if o["kind"] == "Gateway")
    ours = resource(evaluation, f"target-{target}-gateway")["inputs"]
    key, value = env["SELECTOR"].split("=", 1)
    assert template["labels"][key] == owner["name"] and value == ours["metadata"]["name"]
    assert template["annotations"][env["OVERLAY_ANNOTATION"]] == env["OVERLAY"]
    # Another overlay (another mode) makes pods the lookup does not take.
    other, _ = istiods_deployment(version, target, "startup" if mode == "attach" else "attach")
    assert other["spec"]["template"]["metadata"]["annotations"][env["OVERLAY_ANNOTATION"]] != env["OVERLAY"]
    suffix = deployment["metadata"]["name"].removeprefix(owner["name"])
    pod = evaluation["outputs"]["podName"]
    assert pod.startswith(ours["metadata"]["name"] + suffix + "-")
    # A ReplicaSet's pod: the Deployment's name, a hash of up to 10 characters and 5 more; whole as a hostname.
    assert len(ours["metadata"]["name"] + suffix) + 1 + 10 + 1 + 5 <= 63


@pytest.mark.parametrize("version", CUSTOMIZABLE)
@pytest.mark.parametrize("target", TARGETS)
def test_attach_mode_keeps_pilot_agent_and_the_templates_probes(version, target):
    proxy = proxy_of(istiods_deployment(version, target, "attach")[0])
    rendered = proxy_of(golden_deployment(version, GOLDEN[target]))
    assert "command" not in proxy, "the image's entrypoint, pilot-agent"
    for probe in ("startupProbe", "readinessProbe"):
        assert proxy.get(probe) == rendered.get(probe)


@pytest.mark.parametrize("version", CUSTOMIZABLE)
@pytest.mark.parametrize("target", TARGETS)
def test_startup_mode_waits_with_nothing_that_restarts_it(version, target):
    proxy = proxy_of(istiods_deployment(version, target, "startup")[0])
    rendered = proxy_of(golden_deployment(version, GOLDEN[target]))
    assert any(p in rendered for p in ("startupProbe", "readinessProbe")), "the template has probes to remove"
    assert "startupProbe" not in proxy and "readinessProbe" not in proxy and "livenessProbe" not in proxy
    assert proxy["securityContext"]["readOnlyRootFilesystem"] is False, "the wait writes its start file"
    assert proxy["command"][:2] == ["/bin/sh", "-c"]


@pytest.mark.parametrize("version", [CUSTOMIZABLE[0], CUSTOMIZABLE[-1]])
@pytest.mark.parametrize("target", TARGETS)
def test_the_start_file_starts_pilot_agent_as_the_template_would(version, target, tmp_path):
    """The waiting container's command with the template's args, run by sh; then the stack's start file: the
    stand-in pilot-agent gets exactly the template's (kubelet-expanded) arguments."""
    proxy = proxy_of(istiods_deployment(version, target, "startup")[0])
    recorded, report = wait_then_start(tmp_path, proxy["command"], kubelet_args(proxy["args"], "mark"))
    assert "wait ended: 0" in report
    rendered = proxy_of(golden_deployment(version, GOLDEN[target]))
    assert recorded == kubelet_args(rendered["args"], "mark")
    assert recorded[:2] == ["proxy", "waypoint" if target == "waypoint" else "router"]


@pytest.mark.parametrize("version", NOT_CUSTOMIZABLE)
@pytest.mark.parametrize("target", TARGETS)
def test_a_release_without_the_mechanism_is_refused_with_the_first_that_has_it(version, target):
    done = run_harness("dev", f"target={target}", f"istioVersion={version}")
    assert done.returncode == 2, done.stdout[-500:]
    first = min(CUSTOMIZABLE, key=version_key)
    first_minor = ".".join(first.split(".")[:2])
    assert f'istio-proxy-debug:target = "{target}"' in done.stderr
    assert f"Istio {first_minor}.0 on" in done.stderr and "parametersRef" in done.stderr
    assert "Traceback" not in done.stderr


def test_sidecar_stays_the_default_and_needs_no_gateway():
    evaluation = evaluate("dev")
    assert not [r for r in evaluation["resources"] if "gateway.networking.k8s.io" in r["type"]]
    assert "requestCommand" not in evaluation["outputs"]
