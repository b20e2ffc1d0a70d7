"""placement: host (Docker on the developer host) and cluster (pods on a shared volume), the same components.

The cluster placement is evaluated by the real program under mocks; every Kubernetes object it would
create is checked against the API server's OpenAPI schema, and every pod that reads the build must see
the workspace where the debug info's paths (the source map, the ELF) point.
"""

from __future__ import annotations

import json
import posixpath

import pytest

from components.placement import Placement
from tests.conftest import CLUSTER_PLACEMENT, evaluate, resource, run_harness
from tests.mock_stack import WALKTHROUGH_BUILDER_IMAGE
from tests.test_target import validate

# In the cluster the nodes pull from a node's own address (the registry's NodePort).
CLUSTER = (*CLUSTER_PLACEMENT, "registryHost=192.168.122.55")


@pytest.fixture(scope="module")
def cluster() -> dict:
    return evaluate("dev", *CLUSTER)


def unwrap_secrets(value):
    """The mocks record a secret as {"secret": value}; the API server gets the value."""
    if isinstance(value, dict):
        return unwrap_secrets(value["secret"]) if set(value) == {"secret"} else {
            k: unwrap_secrets(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap_secrets(v) for v in value]
    return value


def kubernetes_objects(evaluation: dict) -> list[dict]:
    """Each kubernetes:* resource as the object the provider would send: apiVersion and kind from its type."""
    objects = []
    for r in evaluation["resources"]:
        if not r["type"].startswith("kubernetes:"):
            continue
        group_version, kind = r["type"].split(":")[1:]
        group, version = group_version.split("/")
        objects.append({"apiVersion": version if group == "core" else f"{group}/{version}", "kind": kind,
                        **{k: unwrap_secrets(v) for k, v in r["inputs"].items() if k not in ("apiVersion", "kind")}})
    return objects


def pod_specs(evaluation: dict) -> dict[str, dict]:
    """Every workload's pod spec, by resource name."""
    return {r["name"]: r["inputs"]["spec"]["template"]["spec"] for r in evaluation["resources"]
            if r["type"].startswith("kubernetes:apps/") and "template" in r["inputs"].get("spec", {})}


def mounted_paths(spec: dict, claim: str) -> dict[str, str]:
    """mountPath → subPath of the claim's volume, over every container of the pod."""
    volumes = {v["name"] for v in spec.get("volumes", [])
               if v.get("persistentVolumeClaim", {}).get("claimName") == claim}
    return {m["mountPath"]: m.get("subPath", "") for c in spec["containers"] for m in c.get("volumeMounts", [])
            if m["name"] in volumes}


def test_cluster_placement_creates_no_docker_resource_and_runs_no_docker_command(cluster):
    docker = [r["name"] for r in cluster["resources"] if r["type"].startswith("docker:")]
    assert docker == []
    commands = [r for r in cluster["resources"] if r["type"] == "command:local:Command"]
    assert commands, "the checkout, build and image steps are still commands"
    for command in commands:
        assert "docker " not in command["inputs"].get("create", ""), command["name"]


def test_host_placement_is_the_walkthrough_and_has_no_cluster_workloads(host):
    assert [r for r in host["resources"] if r["type"].startswith("docker:")]
    own = [r["name"] for r in host["resources"] if r["type"].startswith("kubernetes:")
           and r["inputs"]["metadata"].get("namespace") == "istio-proxy-debug"]
    assert own == []


def test_both_placements_share_the_components_and_differ_in_what_they_place(host, cluster):
    def components(evaluation):
        return {r["type"] for r in evaluation["resources"] if not r["custom"]}

    # The same components; the cluster adds only the volume the host's workDir stands for, the host only the
    # Docker network its containers share and the launch.json file (code-server's workspace file carries them).
    assert components(cluster) - components(host) == {"istio-proxy-debug:workspace:WorkspaceVolume"}
    assert components(host) - components(cluster) == {"istio-proxy-debug:network:DockerNetwork",
                                                      "istio-proxy-debug:launch_file:LaunchFile"}


def test_every_kubernetes_object_of_the_cluster_placement_validates_against_the_schema(cluster):
    objects = kubernetes_objects(cluster)
    kinds = {o["kind"] for o in objects}
    assert {"Namespace", "PersistentVolumeClaim", "StatefulSet", "Deployment", "Service", "Secret",
            "ConfigMap"} <= kinds
    for obj in objects:
        validate(obj)


def test_the_workspace_claim_is_read_write_many_sized_from_config_and_survives_destroy(cluster):
    claim = resource(cluster, "workspace-volume-claim")
    assert claim["inputs"]["spec"]["accessModes"] == ["ReadWriteMany"]
    assert claim["inputs"]["spec"]["resources"]["requests"]["storage"] == "200Gi"
    assert "storageClassName" not in claim["inputs"]["spec"], "empty workspaceStorageClass = the default class"
    # Deleting the namespace would delete the claim with it: both stay.
    assert claim["options"]["retainOnDelete"]
    assert resource(cluster, "workspace-volume-namespace")["options"]["retainOnDelete"]
    sized = evaluate("dev", *CLUSTER, "workspaceStorageClass=nfs-client", "workspaceVolumeSize=500Gi")
    spec = resource(sized, "workspace-volume-claim")["inputs"]["spec"]
    assert (spec["storageClassName"], spec["resources"]["requests"]["storage"]) == ("nfs-client", "500Gi")


def test_destroy_in_the_cluster_deletes_nothing_on_the_volume(cluster):
    for r in cluster["resources"]:
        if r["type"] == "command:local:Command":
            assert "delete" not in r["inputs"], f"{r['name']} has a delete step"
    # What holds data outlives the stack; the workloads that only use it do not.
    retained = {r["name"] for r in cluster["resources"] if r["options"].get("retainOnDelete")}
    assert retained == {"workspace-volume-namespace", "workspace-volume-claim"}


def test_every_pod_that_reads_the_build_sees_it_where_the_debug_info_points(cluster):
    claim = resource(cluster, "workspace-volume-claim")["inputs"]["metadata"]["name"]
    outputs = cluster["outputs"]
    launch = outputs["launchJson"]
    codelldb = json.loads(launch)["configurations"][0]
    needed = [codelldb["program"], *codelldb["sourceMap"].values()]
    pods = pod_specs(cluster)
    readers = {name: spec for name, spec in pods.items() if name.startswith(("builder-", "debugger-"))}
    assert set(readers) == {"builder-statefulset", "debugger-statefulset"}
    for name, spec in readers.items():
        mounts = mounted_paths(spec, claim)
        for path in needed:
            covering = [m for m in mounts if path == m or path.startswith(m + "/")]
            assert covering, f"{name} does not mount {path}"
    # The same folder of the volume behind the same path in every reader, as on the host.
    layouts = {name: sorted(mounted_paths(spec, claim).items()) for name, spec in readers.items()}
    assert len({tuple(v) for v in layouts.values()}) == 1, layouts
    host_layout = Placement.host("/w").layout
    assert {m: s for m, s in layouts["builder-statefulset"]} == {
        inside: posixpath.relpath(folder, "/w") for folder, inside in host_layout.container_mounts()}


@pytest.mark.parametrize("name, pod", [
    # The checkout tells which builder image to run, so it runs in the debugger's pod, which mounts the volume too.
    ("workspace-prepare", "code-server-0 --container code-server"),
    ("envoy-make", "istio-proxy-builder-0"),
    ("debug-image-context", "istio-proxy-builder-0"),
])
def test_cluster_steps_run_in_the_pods_through_kubectl(cluster, name, pod):
    create = resource(cluster, name)["inputs"]["create"]
    assert create.startswith(f"kubectl exec -i --namespace istio-proxy-debug {pod} "), create
    assert create.endswith(" bash -s")
    # Every variable the script reads crosses into the pod as an argument of env.
    for key in resource(cluster, name)["inputs"]["environment"]:
        assert f'{key}="${key}"' in create, (name, key)


def test_the_builder_runs_the_image_its_checkout_pins_and_waits_for_the_volume(cluster, host):
    assert "workspace-volume" in resource(cluster, "builder-statefulset")["options"]["dependsOn"]
    pod = resource(cluster, "builder-statefulset")["inputs"]["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == WALKTHROUGH_BUILDER_IMAGE
    # On the host it is the other way round: the folders exist before the container mounts them.
    assert "workspace" in resource(host, "builder-container")["options"]["dependsOn"]


def test_the_registry_is_a_node_port_the_nodes_pull_from(cluster):
    service = resource(cluster, "registry-service")["inputs"]["spec"]
    assert service["type"] == "NodePort"
    assert [p["nodePort"] for p in service["ports"]] == [30500]
    assert cluster["outputs"]["registryPullAddress"] == "192.168.122.55:30500"
    assert cluster["outputs"]["debugImage"].startswith("192.168.122.55:30500/proxyv2@sha256:")
    mirror = [r for r in cluster["resources"] if r["name"].startswith("containerd-mirror-")
              and r["type"] == "command:remote:Command"]
    assert mirror and all("192.168.122.55:30500" in r["inputs"]["create"] for r in mirror)
    registry = pod_specs(cluster)["registry-deployment"]
    claim = resource(cluster, "workspace-volume-claim")["inputs"]["metadata"]["name"]
    assert mounted_paths(registry, claim) == {"/var/lib/registry": "registry"}


def test_a_stack_off_dev_gets_its_own_cluster_namespace():
    other = evaluate("ci", *CLUSTER)
    namespaces = {r["inputs"]["metadata"]["name"] for r in other["resources"]
                  if r["type"] == "kubernetes:core/v1:Namespace"}
    assert "istio-proxy-debug-ci" in namespaces


@pytest.mark.parametrize(("sets", "message"), [
    (("placement=cloud",), "placement"),
    (("placement=cluster", "codeServerPassword=correct-horse-battery"), "registryPort"),
    (("placement=cluster", "registryPort=30500"), "codeServerPassword is required"),
    (("placement=cluster", "registryPort=30500", "codeServerPassword=short"), "at least 12"),
    ((*CLUSTER, "workspaceVolumeSize=lots"), "workspaceVolumeSize"),
    ((*CLUSTER, "workspaceStorageClass=Bad_Class"), "workspaceStorageClass"),
])
def test_bad_placement_settings_name_the_key(sets, message):
    done = run_harness("dev", *sets)
    assert done.returncode == 2, done.stdout[-500:]
    assert message in done.stderr


def test_a_bad_password_is_named_but_never_echoed():
    done = run_harness("dev", "placement=cluster", "registryPort=30500", "codeServerPassword=hunter2")
    assert done.returncode == 2
    assert "istio-proxy-debug:codeServerPassword = <secret>: expected at least 12 characters" in done.stderr
    assert "hunter2" not in done.stderr


def test_work_dir_is_needed_only_on_the_host():
    assert evaluate("dev", *CLUSTER, "workDir=")["outputs"]["connectUrl"]
    done = run_harness("dev", "workDir=")
    assert done.returncode == 2 and "istio-proxy-debug:workDir is required" in done.stderr
