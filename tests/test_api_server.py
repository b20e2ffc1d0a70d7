"""Every Kubernetes object the program renders, and the pod Istio's injector makes of its StatefulSet for each
release and sidecar form, judged by a real Kubernetes 1.34 API server (the toolchain's control plane): a
server-side dry run, so its own decoding, defaulting, admission and validation decide, not a copy of its schema.

The namespaces the objects live in are created for real first (admission refuses an object in a namespace
that does not exist); every other object is only dry-run."""

from __future__ import annotations

import json

import pytest

from components.target import PROXY_CONTAINER
from tests.conftest import CLUSTER_PLACEMENT, KUBERNETES_ACCESS, evaluate, revealed
from tests.control_plane import ControlPlane
from tests.test_releases import FORM_CASES, FORM_IDS, startup_pod
from tests.test_target import ints

STACKS = {
    "dev": ("dev",),
    "dev-startup": ("dev", "mode=startup"),
    "dev-cluster-placement": ("dev", *CLUSTER_PLACEMENT),
    "dev-kubernetes-access": ("dev", *KUBERNETES_ACCESS),
    "lab": ("lab",),
    "ci": ("ci",),
}


def kubernetes_objects(evaluation: dict) -> list[dict]:
    """The objects the stack's Kubernetes resources send (Helm releases and providers are not objects)."""
    return [ints(revealed(r["inputs"])) for r in evaluation["resources"]
            if r["type"].startswith("kubernetes:") and "kind" in r["inputs"]]


def dry_run(api_server: ControlPlane, obj: dict):
    return api_server.kubectl("apply", "--dry-run=server", "-o", "json", "-f", "-", stdin=json.dumps(obj),
                              check=False)


def create_namespaces(api_server: ControlPlane, objects: list[dict]) -> None:
    names = {o["metadata"]["name"] for o in objects if o["kind"] == "Namespace"}
    names |= {o["metadata"]["namespace"] for o in objects if o["metadata"].get("namespace")}
    for name in sorted(names):
        api_server.kubectl("create", "namespace", name, check=False)


@pytest.mark.parametrize("sets", STACKS.values(), ids=STACKS.keys())
def test_every_object_the_stack_renders_is_accepted_by_the_api_server(api_server, sets):
    objects = kubernetes_objects(evaluate(*sets))
    assert any(o["kind"] == "StatefulSet" for o in objects)
    create_namespaces(api_server, objects)
    for obj in objects:
        done = dry_run(api_server, obj)
        assert done.returncode == 0, f"{obj['kind']} {obj['metadata']['name']}: {done.stderr}"
        # The server kept what the program asked for (no field dropped as unknown or disabled).
        accepted = json.loads(done.stdout)
        assert accepted["metadata"]["name"] == obj["metadata"]["name"]
        if obj["kind"] == "StatefulSet":
            sent, kept = obj["spec"]["template"]["spec"], accepted["spec"]["template"]["spec"]
            for field in ("containers", "initContainers"):
                assert [c["name"] for c in kept.get(field, [])] == [c["name"] for c in sent.get(field, [])]


def test_the_api_server_refuses_what_the_schema_forbids(api_server):
    """The dry run can fail: the target StatefulSet with a container port out of range."""
    (statefulset,) = [o for o in kubernetes_objects(evaluate("dev")) if o["kind"] == "StatefulSet"]
    create_namespaces(api_server, [statefulset])
    statefulset["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = 70000
    done = dry_run(api_server, statefulset)
    assert done.returncode != 0
    assert "spec.template.spec.containers[0].ports[0].containerPort: Invalid value: 70000" in done.stderr, \
        done.stderr


@pytest.mark.parametrize(("release", "form"), FORM_CASES, ids=FORM_IDS)
def test_the_startup_pod_of_each_release_is_accepted_by_the_api_server(api_server, release, form):
    _, pod = startup_pod(release, form)
    namespace = "startup-pods"
    api_server.kubectl("create", "namespace", namespace, check=False)
    obj = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "fortio-server-0", "namespace": namespace,
                        "labels": pod["metadata"].get("labels", {})},
           "spec": pod["spec"]}
    done = dry_run(api_server, obj)
    assert done.returncode == 0, done.stderr
    kept = json.loads(done.stdout)["spec"]
    field = "initContainers" if form == "native" else "containers"
    proxy = next(c for c in kept[field] if c["name"] == PROXY_CONTAINER)
    if form == "native":
        assert proxy["restartPolicy"] == "Always", "the native sidecar stays a sidecar"
