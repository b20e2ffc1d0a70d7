"""Target waypoint and gateway: every Kubernetes object the stack renders, its Gateway and HTTPRoute included,
judged by a real Kubernetes API server with the Gateway API CRDs of the lab's release installed (the session's
`gateway_api_server`, tests/gateway_api.py): a server-side dry run, so the CRDs' own OpenAPI schemas and CEL
rules decide. A CRD prunes a field its schema does not know without a word, so what the server kept is compared
with what was sent.

The overlay in the ConfigMap is what istiod applies to the Deployment it renders, as a strategic merge patch;
the API server applies the same kind of patch (the same library) to a Deployment standing in for istiod's, and
validates the result."""

from __future__ import annotations

import copy
import json
import uuid
from collections import Counter

import pytest
import yaml

from tests.conftest import evaluate, resource
from tests.control_plane import ControlPlane
from tests.test_api_server import create_namespaces, dry_run, kubernetes_objects

WAYPOINT_KINDS = {"Namespace", "Service", "StatefulSet", "ConfigMap", "Gateway"}
STACKS = {
    "dev-waypoint": (("dev", "target=waypoint", "istioVersion=1.30.3"), WAYPOINT_KINDS),
    "dev-waypoint-startup": (("dev", "target=waypoint", "istioVersion=1.30.3", "mode=startup"), WAYPOINT_KINDS),
    "dev-gateway": (("dev", "target=gateway", "istioVersion=1.26.8"), WAYPOINT_KINDS | {"HTTPRoute"}),
    "lab-waypoint": (("lab", "target=waypoint", "istioVersion=1.30.3"), WAYPOINT_KINDS),
}
STACK_SETS = [sets for sets, _ in STACKS.values()]
GATEWAY_GROUP = "gateway.networking.k8s.io"


def target_of(sets: tuple[str, ...]) -> str:
    return next(s.split("=", 1)[1] for s in sets if s.startswith("target="))


def missing(sent, kept, path: str = "spec") -> list[str]:
    """Where `kept` (the server's object) lacks or changed what was `sent`: every key sent, at every depth, with
    its value; lists element by element. Keys the server added (its defaults) are not differences."""
    if isinstance(sent, dict):
        if not isinstance(kept, dict):
            return [path]
        return [p for key, value in sent.items()
                for p in ([f"{path}.{key}"] if key not in kept else missing(value, kept[key], f"{path}.{key}"))]
    if isinstance(sent, list):
        if not isinstance(kept, list) or len(kept) != len(sent):
            return [path]
        return [p for i, (s, k) in enumerate(zip(sent, kept, strict=True)) for p in missing(s, k, f"{path}[{i}]")]
    return [] if sent == kept else [path]


def by_kind(objects: list[dict], kind: str) -> dict:
    (obj,) = [o for o in objects if o["kind"] == kind]
    return obj


def accepted(api_server: ControlPlane, obj: dict) -> dict:
    done = dry_run(api_server, obj)
    assert done.returncode == 0, f"{obj['kind']} {obj['metadata']['name']}: {done.stderr}"
    return json.loads(done.stdout)


def refused(api_server: ControlPlane, obj: dict) -> str:
    done = dry_run(api_server, obj)
    assert done.returncode != 0, f"the server accepted {json.dumps(obj)}"
    return done.stderr


@pytest.fixture(scope="module")
def gateway_stack(gateway_api_server) -> list[dict]:
    """The gateway stack's objects, their namespaces created."""
    objects = kubernetes_objects(evaluate(*STACKS["dev-gateway"][0]))
    create_namespaces(gateway_api_server, objects)
    return objects


def test_missing_finds_what_the_server_dropped():
    sent = {"a": {"b": 1, "c": [1, {"d": 2}]}}
    assert missing(sent, {"a": {"b": 1, "c": [1, {"d": 2, "e": 3}]}, "f": 4}) == []
    assert missing(sent, {"a": {"c": [1, {"d": 2}]}}) == ["spec.a.b"]
    assert missing(sent, {"a": {"b": 1, "c": [1, {"d": 3}]}}) == ["spec.a.c[1].d"]
    assert missing(sent, {"a": {"b": 1, "c": [1]}}) == ["spec.a.c"]


@pytest.mark.parametrize(("sets", "kinds"), STACKS.values(), ids=STACKS.keys())
def test_every_object_of_a_gateway_target_is_accepted_and_kept(gateway_api_server, sets, kinds):
    evaluation = evaluate(*sets)
    objects = kubernetes_objects(evaluation)
    assert Counter(o["kind"] for o in objects) == Counter(kinds)
    create_namespaces(gateway_api_server, objects)
    kept = {}
    for obj in objects:
        kept[obj["kind"]] = accepted(gateway_api_server, obj)
        assert kept[obj["kind"]]["metadata"]["name"] == obj["metadata"]["name"]
    for kind in ("Gateway", "HTTPRoute"):
        if kind in kinds:
            sent = by_kind(objects, kind)
            assert kept[kind]["apiVersion"] == f"{GATEWAY_GROUP}/v1"
            assert missing(sent["spec"], kept[kind]["spec"]) == [], (kind, sent["spec"], kept[kind]["spec"])

    gateway, config_map = kept["Gateway"], kept["ConfigMap"]
    # The Gateway names the stack's ConfigMap, in its own namespace (a parametersRef has no namespace).
    assert gateway["spec"]["infrastructure"]["parametersRef"] == {
        "group": "", "kind": "ConfigMap", "name": config_map["metadata"]["name"]}
    assert gateway["metadata"]["namespace"] == config_map["metadata"]["namespace"]
    listeners = [(li["name"], li["port"], li["protocol"]) for li in gateway["spec"]["listeners"]]
    assert listeners == ([("mesh", 15008, "HBONE")] if target_of(sets) == "waypoint" else [("http", 80, "HTTP")])

    # The overlay: kept byte for byte, YAML, a patch of the pod template's istio-proxy carrying the id the pod
    # lookup waits for.
    text = config_map["data"]["deployment"]
    assert set(config_map["data"]) == {"deployment"}
    assert text == by_kind(objects, "ConfigMap")["data"]["deployment"]
    overlay = yaml.safe_load(text)
    template = overlay["spec"]["template"]
    assert [c["name"] for c in template["spec"]["containers"]] == ["istio-proxy"]
    lookup = resource(evaluation, f"target-{target_of(sets)}-pod")["inputs"]["environment"]
    assert template["metadata"]["annotations"][lookup["OVERLAY_ANNOTATION"]] == lookup["OVERLAY"]

    if "HTTPRoute" in kinds:
        route, service = kept["HTTPRoute"]["spec"], kept["Service"]
        # Attached to the stack's Gateway, sending to the stack's Service on one of its ports.
        assert route["parentRefs"] == [{"group": GATEWAY_GROUP, "kind": "Gateway",
                                        "name": gateway["metadata"]["name"]}]
        (rule,) = route["rules"]
        (backend,) = rule["backendRefs"]
        assert (backend["group"], backend["kind"], backend["name"]) == ("", "Service", service["metadata"]["name"])
        assert backend["port"] in [p["port"] for p in service["spec"]["ports"]]


def test_a_field_the_gateway_crd_does_not_know_is_dropped_silently_without_strict_validation(gateway_stack,
                                                                                             gateway_api_server):
    """Why the test above compares: without kubectl's strict field validation the CRD prunes an unknown field
    and still answers success; with it (kubectl's default, which the dry runs keep), it refuses."""
    gateway = copy.deepcopy(by_kind(gateway_stack, "Gateway"))
    gateway["spec"]["infrastructure"]["parametersRef"]["namespace"] = "elsewhere"
    done = gateway_api_server.kubectl("apply", "--dry-run=server", "--validate=false", "-o", "json", "-f", "-",
                                      stdin=json.dumps(gateway), check=False)
    assert done.returncode == 0, done.stderr
    assert missing(gateway["spec"], json.loads(done.stdout)["spec"]) == ["spec.infrastructure.parametersRef.namespace"]
    assert 'unknown field "spec.infrastructure.parametersRef.namespace"' in refused(gateway_api_server, gateway)


def test_the_gateway_crd_refuses_a_listener_port_out_of_range(gateway_stack, gateway_api_server):
    gateway = copy.deepcopy(by_kind(gateway_stack, "Gateway"))
    gateway["spec"]["listeners"][0]["port"] = 70000
    message = refused(gateway_api_server, gateway)
    assert "spec.listeners[0].port: Invalid value: 70000" in message, message


def test_the_gateway_crd_refuses_a_gateway_without_its_class(gateway_stack, gateway_api_server):
    gateway = copy.deepcopy(by_kind(gateway_stack, "Gateway"))
    del gateway["spec"]["gatewayClassName"]
    message = refused(gateway_api_server, gateway)
    assert "spec.gatewayClassName: Required value" in message, message


def test_the_gateway_crd_refuses_a_parameters_ref_without_a_name(gateway_stack, gateway_api_server):
    gateway = copy.deepcopy(by_kind(gateway_stack, "Gateway"))
    del gateway["spec"]["infrastructure"]["parametersRef"]["name"]
    message = refused(gateway_api_server, gateway)
    assert "spec.infrastructure.parametersRef.name: Required value" in message, message


def test_the_httproute_crd_refuses_a_backend_port_of_zero(gateway_stack, gateway_api_server):
    route = copy.deepcopy(by_kind(gateway_stack, "HTTPRoute"))
    route["spec"]["rules"][0]["backendRefs"][0]["port"] = 0
    message = refused(gateway_api_server, route)
    assert "spec.rules[0].backendRefs[0].port: Invalid value: 0" in message, message


def test_the_httproute_crd_refuses_a_service_backend_without_a_port(gateway_stack, gateway_api_server):
    """A CEL rule of the CRD (x-kubernetes-validations), not only its OpenAPI bounds."""
    route = copy.deepcopy(by_kind(gateway_stack, "HTTPRoute"))
    del route["spec"]["rules"][0]["backendRefs"][0]["port"]
    message = refused(gateway_api_server, route)
    assert "spec.rules[0].backendRefs[0]: Invalid value" in message and "Must have port for Service" in message, \
        message


# A Deployment standing in for the one istiod renders from its waypoint/gateway template (Istio's
# manifests/charts/istio-control/istio-discovery/files/waypoint.yaml, abridged): the fields the overlay meets.
TEMPLATE_ARGS = ["proxy", "waypoint", "--domain", "$(POD_NAMESPACE).svc.cluster.local", "--serviceCluster",
                 "fortio-server-waypoint.$(POD_NAMESPACE)", "--proxyLogLevel", "warning"]
PROBE = {"httpGet": {"path": "/healthz/ready", "port": 15021}, "periodSeconds": 15}


def istiod_deployment(name: str, namespace: str) -> dict:
    labels = {f"{GATEWAY_GROUP}/gateway-name": name}
    proxy = {
        "name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.30.3", "args": TEMPLATE_ARGS,
        "ports": [{"containerPort": 15021, "name": "status-port", "protocol": "TCP"}],
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "2", "memory": "1Gi"}},
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                            "privileged": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
                            "runAsUser": 1337, "runAsGroup": 1337},
        "startupProbe": {**PROBE, "failureThreshold": 30}, "readinessProbe": PROBE,
    }
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {"replicas": 0, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels, "annotations": {"istio.io/rev": "default"}},
                                  "spec": {"terminationGracePeriodSeconds": 2, "containers": [proxy]}}}}


@pytest.mark.parametrize("sets", STACK_SETS, ids=STACKS.keys())
def test_the_overlay_patches_a_deployment_like_istiods(gateway_api_server, tmp_path, sets):
    (config_map,) = [o for o in kubernetes_objects(evaluate(*sets)) if o["kind"] == "ConfigMap"]
    text = config_map["data"]["deployment"]
    namespace = f"overlay-{uuid.uuid4().hex[:8]}"
    gateway_api_server.kubectl("create", "namespace", namespace)
    deployment = istiod_deployment("fortio-server-waypoint", namespace)
    gateway_api_server.kubectl("apply", "-f", "-", stdin=json.dumps(deployment))
    patch = tmp_path / "deployment.yaml"
    patch.write_text(text)
    done = gateway_api_server.kubectl("patch", "deployment", "fortio-server-waypoint", "-n", namespace,
                                      "--type=strategic", f"--patch-file={patch}", "--dry-run=server", "-o", "json",
                                      check=False)
    assert done.returncode == 0, done.stderr
    template = json.loads(done.stdout)["spec"]["template"]
    (proxy,) = template["spec"]["containers"]  # merged by name into the template's, not added beside it
    (wanted,) = yaml.safe_load(text)["spec"]["template"]["spec"]["containers"]
    assert missing({k: v for k, v in wanted.items() if v is not None}, proxy, "istio-proxy") == []
    for field in (k for k, v in wanted.items() if v is None):  # `null` deletes (startup mode's probes)
        assert field not in proxy, field
    # The template's own settings the overlay does not name stay.
    assert proxy["args"] == TEMPLATE_ARGS
    assert proxy["resources"]["requests"]["cpu"] == "100m" and proxy["resources"]["limits"]["cpu"] == "2"
    assert proxy["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert proxy["ports"][0]["containerPort"] == 15021
    assert template["metadata"]["annotations"]["istio.io/rev"] == "default"
    if "mode=startup" not in sets:
        assert proxy["startupProbe"]["httpGet"]["port"] == 15021 and "command" not in proxy
    overlay_template = yaml.safe_load(text)["spec"]["template"]
    assert missing(overlay_template["metadata"], template["metadata"], "metadata") == []
    if "affinity" in overlay_template["spec"]:
        assert template["spec"]["affinity"] == overlay_template["spec"]["affinity"]
