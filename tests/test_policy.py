"""The CrossGuard policy pack (policy/): each policy passes and fails where it should, every resource the real
program makes passes every policy, a tampered copy fails the right one, and the pack itself answers the
engine's gRPC calls as the CLI would make them.

The validators are called directly, without the pack (building a PolicyPack starts its gRPC server and
blocks), with the properties shaped as the engine hands them over: secrets unwrapped, unknown values as
the engine's sentinels, everything behind pulumi_policy's unknown-checking proxies.
"""

from __future__ import annotations

import copy
import importlib.metadata
import re
import select
import subprocess
import sys
import threading
from collections.abc import Iterator

import grpc
import pytest
import yaml
from google.protobuf import empty_pb2, json_format, struct_pb2
from pulumi.runtime.proto import analyzer_pb2, analyzer_pb2_grpc
from pulumi_policy import (
    EnforcementLevel,
    PolicyCustomTimeouts,
    PolicyResourceOptions,
    ResourceValidationArgs,
    ResourceValidationPolicy,
)
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE, UnknownValueError, unknown_checking_proxy

from policy import policies
from tests.conftest import CLUSTER_PLACEMENT, KUBERNETES_ACCESS, ROOT, evaluate, resource, revealed

POLICY_DIR = ROOT / "policy"
LLDB, PRIVILEGED, DIGEST = policies.LLDB_SERVER_POLICY, policies.PRIVILEGED_POLICY, policies.DIGEST_POLICY
DIGEST_REF = "192.168.122.1:5000/proxyv2@sha256:" + "d" * 64
SECRET_SIG = "4dabf18193072939515e22adb298388d"
SECRET_VALUE_SIG = "1b47061264138c4ac30d75fd1eb44270"
# The program's own evaluations: attach (dev as committed), startup, and lldb-server on every address; the
# Envoy of a waypoint or an ingress gateway as the target (Istio 1.26 on: the Gateway's parametersRef overlay).
GATEWAY_TARGET = ("istioVersion=1.30.3",)
PROGRAM_VARIANTS = {
    "attach": (),
    "startup": ("mode=startup",),
    "listen-all": ("lldbServerListenAll=true",),
    "cluster": CLUSTER_PLACEMENT,
    "prebuilt": ("envoySource=prebuilt",),
    "cluster, prebuilt": (*CLUSTER_PLACEMENT, "envoySource=prebuilt"),
    "waypoint": ("target=waypoint", *GATEWAY_TARGET),
    "waypoint, startup": ("target=waypoint", *GATEWAY_TARGET, "mode=startup"),
    "gateway": ("target=gateway", *GATEWAY_TARGET),
    "gateway, startup": ("target=gateway", *GATEWAY_TARGET, "mode=startup"),
    "cluster, waypoint": (*CLUSTER_PLACEMENT, "target=waypoint", *GATEWAY_TARGET),
    "kubernetes": KUBERNETES_ACCESS,
    "cluster, kubernetes": (*CLUSTER_PLACEMENT, *KUBERNETES_ACCESS),
}
GATEWAY_VARIANTS = sorted(v for v in PROGRAM_VARIANTS if "waypoint" in v or "gateway" in v)
CONFIG_MAP = "kubernetes:core/v1:ConfigMap"
GATEWAY = "kubernetes:gateway.networking.k8s.io/v1:Gateway"


def engine_props(inputs: dict) -> dict:
    """The harness's JSON inputs as the engine passes them to a policy: secrets unwrapped, "<unknown>"
    (a preview's value not known yet) as the engine's sentinel."""
    return revealed(inputs, lambda v: UNKNOWN_STRING_VALUE if v == "<unknown>" else v)


def violations(policy: ResourceValidationPolicy, resource_type: str, props: dict, name: str = "r") -> list[str]:
    """What `policy` reports for one resource, called as the analyzer calls it."""
    opts = PolicyResourceOptions(False, [], None, [], PolicyCustomTimeouts(0, 0, 0), [])
    args = ResourceValidationArgs(resource_type, unknown_checking_proxy(engine_props(props)),
                                  f"urn:pulumi:dev::istio-proxy-debug::{resource_type}::{name}", name, opts, None)
    found: list[str] = []
    assert policy.validate(args, lambda message, urn=None: found.append(message)) is None, "validators are sync"
    return found


def failing(resource_type: str, props: dict) -> set[str]:
    return {p.name for p in policies.POLICIES if violations(p, resource_type, props)}


def program(variant: str) -> dict:
    return evaluate("dev", *PROGRAM_VARIANTS[variant])


def custom(evaluation: dict) -> Iterator[dict]:
    return (r for r in evaluation["resources"] if r["custom"])


# --- the pack's files ----------------------------------------------------------------------------------------


def test_the_pack_is_a_python_policy_pack_pinned_to_the_tested_sdk():
    project = yaml.safe_load((POLICY_DIR / "PulumiPolicy.yaml").read_text())
    assert project["runtime"]["name"] == "python"
    assert re.fullmatch(r"\d+\.\d+\.\d+", project["version"])
    pins = dict(line.split("==") for line in (POLICY_DIR / "requirements.txt").read_text().split()
                if "==" in line)
    assert pins["pulumi-policy"] == "1.21.0" == importlib.metadata.version("pulumi-policy")
    program_pins = dict(line.split("==") for line in (ROOT / "requirements.txt").read_text().split() if "==" in line)
    assert pins["pulumi"] == program_pins["pulumi"], "the pack and the program use one Pulumi SDK"


def test_every_policy_is_mandatory_and_named_once():
    names = [p.name for p in policies.POLICIES]
    assert len(names) == len(set(names)) == 3
    assert all(p.enforcement_level == EnforcementLevel.MANDATORY for p in policies.POLICIES)


# --- 1. lldb-server only for the debugger -------------------------------------------------------------------


def lldb_server(variant: str = "attach") -> dict:
    return copy.deepcopy(resource(program(variant), "lldb-server-platform"))


def with_assignment(props: dict, name: str, value: str | None) -> dict:
    """The command with one of its leading assignments changed (None: removed)."""
    line = f"{name}='{value}'\n" if value is not None else ""
    props["stdin"], count = re.subn(rf"^{name}='[^']*'\n", line, props["stdin"], count=1, flags=re.MULTILINE)
    assert count == 1, f"{name} is not assigned in the command"
    return props


def remote(create: str, stdin: str | None = None) -> dict:
    props = {"connection": {"secret": {"host": "192.168.122.55", "user": "root"}}, "create": create}
    if stdin is not None:
        props["stdin"] = stdin
    return props


def test_lldb_server_of_the_program_takes_the_debuggers_address_only():
    props = lldb_server()["inputs"]
    # The developer host as the node sees it (registryHost): the debugger container's connections leave through it.
    assert "LISTEN_ADDRESS='192.168.122.1'\n" in props["stdin"] and "LISTEN_ALL='false'\n" in props["stdin"]
    assert violations(LLDB, "command:remote:Command", props) == []


def test_lldb_server_on_every_address_passes_only_with_the_marker():
    props = lldb_server("listen-all")["inputs"]
    assert "LISTEN_ADDRESS='0.0.0.0'\n" in props["stdin"] and "LISTEN_ALL='true'\n" in props["stdin"]
    assert violations(LLDB, "command:remote:Command", props) == []
    without = violations(LLDB, "command:remote:Command", with_assignment(copy.deepcopy(props), "LISTEN_ALL", "false"))
    # Both readings see it: the assignment, and the script's `--listen "$LISTEN_ADDRESS:$PLATFORM_PORT"`.
    assert len(without) == 2
    assert "LISTEN_ADDRESS='0.0.0.0' binds every address" in without[0]
    assert "lldb-server platform --listen '0.0.0.0:2159' binds every address" in without[1]
    assert violations(LLDB, "command:remote:Command", with_assignment(props, "LISTEN_ALL", None))


@pytest.mark.parametrize("wildcard", ["0.0.0.0", "*", "::", "[::]", "", "0", "0:0:0:0:0:0:0:0"])
def test_every_spelling_of_every_address_fails_without_the_marker(wildcard):
    props = with_assignment(lldb_server()["inputs"], "LISTEN_ADDRESS", wildcard)
    assert violations(LLDB, "command:remote:Command", props)


@pytest.mark.parametrize("address", ["192.168.122.55", "10.0.0.7", "fd00::55", "[fd00::55]", "node-1.lab"])
def test_a_single_address_passes(address):
    props = with_assignment(lldb_server()["inputs"], "LISTEN_ADDRESS", address)
    assert violations(LLDB, "command:remote:Command", props) == []


def test_an_address_the_policy_cannot_read_fails():
    props = with_assignment(lldb_server()["inputs"], "LISTEN_ADDRESS", "$(hostname -I)")
    assert any("not a literal address" in v for v in violations(LLDB, "command:remote:Command", props))


WALKTHROUGH = "nsenter -t $ENVOY_PID -u -p -m lldb-server platform --server --listen *:2159"


@pytest.mark.parametrize("create", [
    WALKTHROUGH,                                                                  # the walkthrough's own S8
    "lldb-server platform --server --listen=0.0.0.0:2159",
    "lldb-server-14 platform --server -L '[::]:2159'",
    "/opt/lldb-server/bin/lldb-server p --server -L:2159",
    "lldb-server platform --server --li 2159",                                   # a bare port: every address
    "lldb-server platform --server -listen '*:2159'",                             # getopt_long_only
    "lldb-server platform --server --listen 0.0.0 --listen .0:2159",              # values are joined
    "bash -c 'nsenter -t 1 -m -- lldb-server platform --server --listen \"*:2159\"'",
    "ssh root@192.168.122.55 \"lldb-server platform --server --listen 0.0.0.0:2159 </dev/null >log 2>&1 &\"",
    "setsid lldb-server platform --server \\\n  --listen tcp://0.0.0.0:2159",     # a continued line
    "ADDR=0.0.0.0\n\"$LLDB\" platform --server --listen \"$ADDR:2159\"",          # through variables
    "lldb-server platform --server --listen \"$NODE:2159\"",                      # an address it cannot read
    "lldb-server gdbserver *:2160 --attach 15",                                   # a gdbserver on its own
])
def test_a_command_that_runs_lldb_server_on_every_address_fails(create):
    assert violations(LLDB, "command:remote:Command", remote(create)), create
    assert violations(LLDB, "command:local:Command", {"create": "bash -s", "stdin": create}), create


@pytest.mark.parametrize("create", [
    "lldb-server platform --server --listen 192.168.122.55:2159",
    "lldb-server platform --server --listen '[fd00::55]:2159' --gdbserver-port 2160",
    "lldb-server platform --server --listen unix:///run/lldb.sock",
    "LISTEN_ALL='true'\nlldb-server platform --server --listen '*:2159'",         # said on purpose
    "# was: lldb-server platform --server --listen *:2159\nlldb-server platform --server --listen 10.0.0.7:2159",
    "lldb-server gdbserver --reverse-connect 192.168.122.1:2160 --attach 15",
    "echo 'lldb-server platform listens on *:2159'",
    "lldb-server version",
])
def test_a_command_that_binds_one_address_or_says_so_passes(create):
    assert violations(LLDB, "command:remote:Command", remote(create)) == [], create


def test_a_listen_all_marker_that_is_not_true_everywhere_does_not_count():
    stdin = "LISTEN_ALL='true'\nLISTEN_ALL='false'\nLISTEN_ADDRESS='0.0.0.0'\n"
    assert violations(LLDB, "command:remote:Command", remote("bash -s", stdin))


def test_other_resources_are_not_the_lldb_policys_business():
    assert violations(LLDB, "docker:index/container:Container", {"name": "x", "command": [WALKTHROUGH]}) == []


# --- 2. privileged only where a step needs it ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["istio-proxy-builder", "lldb-vscode-server", "istio-proxy-builder-alice",
                                  "lldb-vscode-server-ci"])
def test_the_builder_and_the_debugger_may_be_privileged(name):
    assert violations(PRIVILEGED, policies.DOCKER_CONTAINER, {"name": name, "privileged": True}) == []


@pytest.mark.parametrize("name", ["image-registry", "fortio", "istio-proxy-builder2", "my-lldb-vscode-server",
                                  None])
def test_any_other_privileged_docker_container_fails(name):
    props = {"privileged": True, **({"name": name} if name else {})}
    assert violations(PRIVILEGED, policies.DOCKER_CONTAINER, props)
    assert violations(PRIVILEGED, policies.DOCKER_CONTAINER, {**props, "privileged": False}) == []


def test_the_programs_docker_containers_are_privileged_only_for_the_builder_and_the_debugger():
    containers = [r for r in program("attach")["resources"] if r["type"] == policies.DOCKER_CONTAINER]
    privileged = {r["inputs"]["name"] for r in containers if r["inputs"].get("privileged")}
    assert privileged == {"istio-proxy-builder", "lldb-vscode-server"}
    registry = copy.deepcopy(resource(program("attach"), "registry-container")["inputs"])
    assert violations(PRIVILEGED, policies.DOCKER_CONTAINER, registry) == []
    registry["privileged"] = True
    assert violations(PRIVILEGED, policies.DOCKER_CONTAINER, registry)


def pod_spec(containers: list[dict], init: list[dict] | None = None) -> dict:
    return {"containers": containers, **({"initContainers": init} if init else {})}


WORKLOADS = {
    "kubernetes:apps/v1:StatefulSet": lambda spec: {"spec": {"template": {"metadata": {}, "spec": spec}}},
    "kubernetes:apps/v1:Deployment": lambda spec: {"spec": {"template": {"metadata": {}, "spec": spec}}},
    "kubernetes:apps/v1:DaemonSet": lambda spec: {"spec": {"template": {"metadata": {}, "spec": spec}}},
    "kubernetes:batch/v1:CronJob": lambda spec: {"spec": {"jobTemplate": {"spec": {"template": {"spec": spec}}}}},
    "kubernetes:core/v1:Pod": lambda spec: {"metadata": {}, "spec": spec},
}


@pytest.mark.parametrize("kind", sorted(WORKLOADS))
def test_no_kubernetes_workload_has_a_privileged_container(kind):
    plain = {"name": "app", "image": "docker.io/fortio/fortio"}
    privileged = {**plain, "securityContext": {"privileged": True}}
    ptrace = {**plain, "securityContext": {"privileged": False, "capabilities": {"add": ["SYS_PTRACE"]}}}
    assert violations(PRIVILEGED, kind, WORKLOADS[kind](pod_spec([plain, ptrace]))) == []
    assert violations(PRIVILEGED, kind, WORKLOADS[kind](pod_spec([plain, privileged])))
    assert violations(PRIVILEGED, kind, WORKLOADS[kind](pod_spec([plain], init=[privileged])))


def test_only_the_cluster_builders_own_container_may_be_privileged():
    builder = copy.deepcopy(resource(program("cluster"), "builder-statefulset")["inputs"])
    spec = builder["spec"]["template"]["spec"]
    assert [c["securityContext"]["privileged"] for c in spec["containers"]] == [True]
    assert violations(PRIVILEGED, "kubernetes:apps/v1:StatefulSet", builder) == []
    renamed = copy.deepcopy(builder)
    renamed["metadata"]["name"] = "something-else"
    assert violations(PRIVILEGED, "kubernetes:apps/v1:StatefulSet", renamed)
    as_deployment = violations(PRIVILEGED, "kubernetes:apps/v1:Deployment", builder)
    assert as_deployment
    spec["initContainers"] = [{**spec["containers"][0]}]
    assert violations(PRIVILEGED, "kubernetes:apps/v1:StatefulSet", builder)


def test_only_the_node_agents_may_be_privileged_pods():
    """The agents of nodeAccess kubernetes pass as the program makes them; renamed away from their node, without
    their label, or with a second container, they fail."""
    agents = [r for r in custom(program("kubernetes")) if r["type"] == "kubernetes:core/v1:Pod"]
    assert [a["inputs"]["spec"]["nodeName"] for a in agents] == ["worker-1", "worker-2"]
    for agent in agents:
        assert agent["inputs"]["spec"]["containers"][0]["securityContext"]["privileged"] is True
        assert violations(PRIVILEGED, "kubernetes:core/v1:Pod", agent["inputs"]) == []
    pod = agents[0]["inputs"]
    other_node = copy.deepcopy(pod)
    other_node["spec"]["nodeName"] = "worker-2"
    unlabelled = copy.deepcopy(pod)
    del unlabelled["metadata"]["labels"]["app.kubernetes.io/component"]
    two = copy.deepcopy(pod)
    two["spec"]["containers"].append({**pod["spec"]["containers"][0], "name": "second"})
    unbound = copy.deepcopy(pod)
    del unbound["spec"]["nodeName"]
    for tampered in (other_node, unlabelled, two, unbound):
        assert violations(PRIVILEGED, "kubernetes:core/v1:Pod", tampered)
    assert violations(PRIVILEGED, "kubernetes:apps/v1:DaemonSet", WORKLOADS["kubernetes:apps/v1:DaemonSet"](
        pod["spec"]))


def test_startup_mode_ptraces_without_privilege():
    statefulset = copy.deepcopy(resource(program("startup"), "target-statefulset")["inputs"])
    spec = statefulset["spec"]["template"]["spec"]
    proxy = next(c for c in spec["containers"] if c["name"] == "istio-proxy")
    # SYS_PTRACE for lldb-server, SETUID and SETGID for the image's sudo (the template drops ALL).
    assert proxy["securityContext"]["capabilities"]["add"] == ["SYS_PTRACE", "SETUID", "SETGID"]
    assert violations(PRIVILEGED, "kubernetes:apps/v1:StatefulSet", statefulset) == []
    proxy["securityContext"]["privileged"] = True
    assert violations(PRIVILEGED, "kubernetes:apps/v1:StatefulSet", statefulset)


# --- 3. the debug image by digest ----------------------------------------------------------------------------


def statefulset(variant: str) -> dict:
    return copy.deepcopy(resource(program(variant), "target-statefulset")["inputs"])


def test_attach_mode_names_the_debug_image_by_digest():
    props = statefulset("attach")
    assert props["spec"]["template"]["metadata"]["annotations"]["sidecar.istio.io/proxyImage"] == DIGEST_REF
    assert violations(DIGEST, "kubernetes:apps/v1:StatefulSet", props) == []


@pytest.mark.parametrize("image", [
    "192.168.122.1:5000/proxyv2:debug",
    "docker.io/istio/proxyv2:1.17.2",
    "192.168.122.1:5000/proxyv2@sha256:" + "d" * 63,
    "192.168.122.1:5000/proxyv2@sha256:" + "D" * 64,
    "192.168.122.1:5000/proxyv2",
    "",
])
def test_a_proxy_image_annotation_not_by_digest_fails(image):
    props = statefulset("attach")
    props["spec"]["template"]["metadata"]["annotations"]["sidecar.istio.io/proxyImage"] = image
    assert violations(DIGEST, "kubernetes:apps/v1:StatefulSet", props)


def test_attach_mode_istio_proxy_may_only_say_auto_or_a_digest():
    props = statefulset("attach")
    proxy = next(c for c in props["spec"]["template"]["spec"]["containers"] if c["name"] == "istio-proxy")
    assert proxy["image"] == "auto"
    proxy["image"] = DIGEST_REF
    assert violations(DIGEST, "kubernetes:apps/v1:StatefulSet", props) == []
    proxy["image"] = "docker.io/istio/proxyv2:1.17.2"  # would override the injector's proxyImage
    assert violations(DIGEST, "kubernetes:apps/v1:StatefulSet", props)


def test_startup_mode_leaves_istio_proxy_and_istio_init_to_the_injectors_debug_image():
    props = statefulset("startup")
    spec = props["spec"]["template"]["spec"]
    assert {c["name"]: c["image"] for c in spec["containers"] + spec["initContainers"]
            if c["name"] in policies.SIDECAR_CONTAINERS} == {"istio-proxy": "auto", "istio-init": "auto"}
    assert props["spec"]["template"]["metadata"]["annotations"]["sidecar.istio.io/proxyImage"] == DIGEST_REF
    assert violations(DIGEST, "kubernetes:apps/v1:StatefulSet", props) == []


@pytest.mark.parametrize("field,name", [("containers", "istio-proxy"), ("initContainers", "istio-init")])
def test_startup_mode_sidecar_containers_by_tag_fail(field, name):
    props = statefulset("startup")
    container = next(c for c in props["spec"]["template"]["spec"][field] if c["name"] == name)
    container["image"] = "192.168.122.1:5000/proxyv2:debug"
    found = violations(DIGEST, "kubernetes:apps/v1:StatefulSet", props)
    assert len(found) == 1 and repr(name) in found[0]


@pytest.mark.parametrize("field,name", [("containers", "istio-proxy"), ("initContainers", "istio-init")])
def test_auto_without_injection_fails(field, name):
    props = statefulset("startup")
    props["spec"]["template"]["metadata"]["labels"]["sidecar.istio.io/inject"] = "false"
    found = violations(DIGEST, "kubernetes:apps/v1:StatefulSet", props)
    assert any(repr(name) in problem and "'auto'" in problem for problem in found), found  # nobody replaces it


def test_workloads_without_istio_containers_are_not_the_digest_policys_business():
    props = WORKLOADS["kubernetes:apps/v1:Deployment"](pod_spec([{"name": "app", "image": "nginx:latest"}]))
    assert violations(DIGEST, "kubernetes:apps/v1:Deployment", props) == []
    assert violations(DIGEST, "docker:index/container:Container", {"image": "nginx:latest"}) == []


# --- 3b. the debug image of a waypoint or gateway: the Gateway's deployment overlay -----------------------------


def gateway_target(variant: str) -> str:
    return "gateway" if "gateway" in variant else "waypoint"


def parameters(variant: str) -> dict:
    """The program's overlay ConfigMap (its inputs) for a waypoint or gateway variant."""
    return copy.deepcopy(resource(program(variant), f"target-{gateway_target(variant)}-parameters")["inputs"])


def overlay_of(props: dict) -> dict:
    return yaml.safe_load(props["data"]["deployment"])


def with_overlay(props: dict, change) -> dict:
    """The ConfigMap with its deployment overlay read, changed in place by `change`, and written back."""
    overlay = overlay_of(props)
    change(overlay)
    props["data"]["deployment"] = yaml.safe_dump(overlay, sort_keys=False)
    return props


def overlay_proxy(overlay: dict) -> dict:
    (proxy,) = [c for c in overlay["spec"]["template"]["spec"]["containers"] if c["name"] == "istio-proxy"]
    return proxy


def config_map(data: dict | None) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "mark"},
            **({"data": data} if data is not None else {})}


OVERLAY_TAG = "192.168.122.1:5000/proxyv2:debug"


@pytest.mark.parametrize("variant", GATEWAY_VARIANTS)
def test_a_gateways_overlay_gives_istio_proxy_the_debug_image_by_digest(variant):
    evaluation = program(variant)
    props = parameters(variant)
    # The Gateway istiod deploys the Envoy from names this ConfigMap, and the target pod has no sidecar to check.
    (gateway,) = [r["inputs"] for r in custom(evaluation) if r["type"] == GATEWAY]
    assert gateway["spec"]["infrastructure"]["parametersRef"] == {
        "group": "", "kind": "ConfigMap", "name": props["metadata"]["name"]}
    target = resource(evaluation, "target-statefulset")["inputs"]["spec"]["template"]
    assert target["metadata"]["labels"]["sidecar.istio.io/inject"] == "false"
    assert "sidecar.istio.io/proxyImage" not in target["metadata"].get("annotations", {})
    port = "30500" if variant.startswith("cluster") else "5000"
    proxy = overlay_proxy(overlay_of(props))
    assert proxy["image"] == f"192.168.122.1:{port}/proxyv2@sha256:" + "d" * 64
    assert proxy["securityContext"]["capabilities"]["add"] == ["SYS_PTRACE", "SETUID", "SETGID"]
    assert "privileged" not in proxy["securityContext"]
    assert failing(CONFIG_MAP, props) == set()


@pytest.mark.parametrize("image", [
    OVERLAY_TAG,
    "docker.io/istio/proxyv2:1.30.3",
    "192.168.122.1:5000/proxyv2@sha256:" + "d" * 63,
    "192.168.122.1:5000/proxyv2@sha256:" + "D" * 64,
    "192.168.122.1:5000/proxyv2",
    "auto",                                                           # no injector fills it in for istiod
    "",
])
def test_an_overlay_istio_proxy_not_by_digest_fails(image):
    props = with_overlay(parameters("waypoint"), lambda o: overlay_proxy(o).update(image=image))
    found = violations(DIGEST, CONFIG_MAP, props)
    assert len(found) == 1 and "'istio-proxy'" in found[0] and repr(image) in found[0], found
    assert failing(CONFIG_MAP, props) == {DIGEST.name}


@pytest.mark.parametrize("change", ["removed", "null"])
def test_an_overlay_istio_proxy_without_an_image_fails(change):
    def drop(overlay: dict) -> None:
        proxy = overlay_proxy(overlay)
        if change == "removed":
            del proxy["image"]
        else:
            proxy["image"] = None  # a strategic merge patch's null deletes the field

    found = violations(DIGEST, CONFIG_MAP, with_overlay(parameters("gateway, startup"), drop))
    assert len(found) == 1 and "'istio-proxy'" in found[0] and "no image" in found[0], found


def test_an_overlay_istio_init_by_tag_fails_too():
    def add_init(overlay: dict) -> None:
        overlay["spec"]["template"]["spec"]["initContainers"] = [{"name": "istio-init", "image": OVERLAY_TAG}]

    found = violations(DIGEST, CONFIG_MAP, with_overlay(parameters("waypoint"), add_init))
    assert len(found) == 1 and "'istio-init'" in found[0], found


def test_an_overlay_in_a_config_map_patch_is_read_too():
    props = with_overlay(parameters("waypoint"), lambda o: overlay_proxy(o).update(image=OVERLAY_TAG))
    assert violations(DIGEST, "kubernetes:core/v1:ConfigMapPatch", props)


@pytest.mark.parametrize("privileged", [True, "true"])
def test_an_overlay_that_makes_a_container_privileged_fails_the_privileged_policy(privileged):
    proxy_privileged = with_overlay(
        parameters("waypoint"), lambda o: overlay_proxy(o)["securityContext"].update(privileged=privileged))
    found = violations(PRIVILEGED, CONFIG_MAP, proxy_privileged)
    assert len(found) == 1 and "'istio-proxy'" in found[0] and "privileged" in found[0], found
    assert failing(CONFIG_MAP, proxy_privileged) == {PRIVILEGED.name}

    def privileged_helper(overlay: dict) -> None:
        overlay["spec"]["template"]["spec"]["initContainers"] = [
            {"name": "helper", "image": "docker.io/library/busybox", "securityContext": {"privileged": privileged}}]

    found = violations(PRIVILEGED, CONFIG_MAP, with_overlay(parameters("gateway"), privileged_helper))
    assert len(found) == 1 and "'helper'" in found[0], found
    not_privileged = with_overlay(
        parameters("waypoint"), lambda o: overlay_proxy(o)["securityContext"].update(privileged=False))
    assert failing(CONFIG_MAP, not_privileged) == set()


NOT_AN_ENVOY_OVERLAY = {
    "no data": None,
    "no deployment key": {"mesh": "defaultConfig:\n  image: {imageType: debug}\n"},
    "a service overlay only": {"service": "spec:\n  type: NodePort\n"},
    "a deployment overlay without istio-proxy": {
        "deployment": "spec:\n  replicas: 2\n  template:\n    spec:\n      containers:\n"
                      "      - name: main-app\n        image: docker.io/fortio/fortio:latest\n"},
    "a deployment overlay without a pod template": {"deployment": "metadata:\n  labels: {team: mesh}\n"},
    "a deployment that is not an overlay": {"deployment": "fortio-server"},
    "an empty deployment": {"deployment": ""},
}


@pytest.mark.parametrize("case", sorted(NOT_AN_ENVOY_OVERLAY))
def test_config_maps_that_give_no_envoy_are_not_the_policies_business(case):
    assert failing(CONFIG_MAP, config_map(NOT_AN_ENVOY_OVERLAY[case])) == set()


def test_the_cluster_placements_own_config_map_is_not_the_policies_business():
    workspace = resource(program("cluster, waypoint"), "debugger-workspace")
    assert workspace["type"] == CONFIG_MAP and workspace["inputs"]["data"]
    assert failing(CONFIG_MAP, workspace["inputs"]) == set()


class _StrictLoader(yaml.SafeLoader):
    """The tests' own reading: safe_load that refuses a mapping key given twice."""

    def construct_mapping(self, node, deep=False):
        keys = [self.construct_object(k, deep=True) for k, _ in node.value]
        if len(keys) != len(set(keys)):
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key in {keys}", node.start_mark)
        return super().construct_mapping(node, deep=deep)


def _duplicate_image(props: dict) -> None:
    """istio-proxy given its image twice: the digest, then a tag."""
    props["data"]["deployment"], count = re.subn(r"^( *)(image: \S+@sha256:[0-9a-f]{64})$",
                                                 rf"\1\2\n\1image: {OVERLAY_TAG}", props["data"]["deployment"],
                                                 flags=re.MULTILINE)
    assert count == 1


UNREADABLE_OVERLAYS = {
    "an unclosed flow": lambda p: p["data"].update(deployment="spec: {template: {spec: {containers: ["),
    "a tab as indentation": lambda p: p["data"].update(deployment=p["data"]["deployment"].replace("\n  ", "\n\t", 1)),
    "two documents": lambda p: p["data"].update(deployment=p["data"]["deployment"] + "---\nspec: {}\n"),
    "an image given twice": _duplicate_image,
    "an object, not text": lambda p: p["data"].update(deployment=overlay_of(p)),
}


@pytest.mark.parametrize("case", sorted(UNREADABLE_OVERLAYS))
def test_an_overlay_the_policy_cannot_read_fails_with_the_reason(case):
    props = parameters("waypoint")
    UNREADABLE_OVERLAYS[case](props)
    found = violations(DIGEST, CONFIG_MAP, props)
    assert len(found) == 1 and "data.deployment" in found[0], found
    if case != "an object, not text":
        with pytest.raises(yaml.YAMLError):  # the test's own reading agrees the text is not one clean document
            yaml.load(props["data"]["deployment"], Loader=_StrictLoader)
    assert failing(CONFIG_MAP, props) == {DIGEST.name}


def test_the_duplicate_image_reading_is_not_a_guess():
    """The duplicated text is no harmless repetition: a last-key-wins reading (PyYAML's) gives istio-proxy the
    tag, so a policy that took either reading for granted could let a tag through."""
    props = parameters("waypoint")
    _duplicate_image(props)
    assert overlay_proxy(yaml.safe_load(props["data"]["deployment"]))["image"] == OVERLAY_TAG


def test_an_overlay_merge_key_may_be_overridden():
    """A YAML merge (`<<`) and a key of its own are not a key given twice."""
    text = (f"base: &proxy {{name: istio-proxy, image: {OVERLAY_TAG}}}\n"
            f"spec:\n  template:\n    spec:\n      containers:\n      - <<: *proxy\n        image: {DIGEST_REF}\n")
    assert failing(CONFIG_MAP, config_map({"deployment": text})) == set()
    text_by_tag = text.replace(f"image: {DIGEST_REF}", "resources: {}")
    assert violations(DIGEST, CONFIG_MAP, config_map({"deployment": text_by_tag}))


def unknown_in_preview(evaluation: dict) -> set[tuple[str, str]]:
    """Every policy on every resource of a preview: none may report a violation; the (resource, policy) pairs
    that stopped at a value not known yet."""
    unknown = set()
    for r in custom(evaluation):
        for policy in policies.POLICIES:
            try:
                assert violations(policy, r["type"], r["inputs"], r["name"]) == [], (r["name"], policy.name)
            except UnknownValueError:
                unknown.add((r["name"], policy.name))
    return unknown


def test_a_preview_leaves_an_overlay_it_cannot_know_to_the_engine():
    """In a preview the overlay's text (the digest in it) is not known: a ConfigMap whose deployment (or whole
    data) is unknown raises UnknownValueError; an unknown value under another key is not read."""
    unknown = unknown_in_preview(evaluate("dev", *PROGRAM_VARIANTS["waypoint"], preview=True))
    assert ("target-waypoint-parameters", DIGEST.name) in unknown
    assert ("target-waypoint-parameters", PRIVILEGED.name) in unknown
    with pytest.raises(UnknownValueError):
        violations(DIGEST, CONFIG_MAP, config_map({"deployment": "<unknown>"}))
    assert failing(CONFIG_MAP, config_map({"mesh": "<unknown>", "deployment": "spec: {}\n"})) == set()
    workspace = resource(evaluate("dev", *CLUSTER_PLACEMENT, preview=True), "debugger-workspace")["inputs"]
    assert "<unknown>" in workspace["data"].values()
    assert failing(CONFIG_MAP, workspace) == set()


# --- the whole program ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", sorted(PROGRAM_VARIANTS))
def test_every_resource_of_the_program_passes_every_policy(variant):
    evaluation = program(variant)
    checked = {r["type"] for r in custom(evaluation)}
    workloads = "kubernetes:apps/v1:Deployment" if variant.startswith("cluster") else policies.DOCKER_CONTAINER
    # The node commands: over SSH, or with nodeAccess kubernetes kubectl exec from here into the privileged agents.
    node = ("command:local:Command", "kubernetes:core/v1:Pod") if "kubernetes" in variant else (
        "command:remote:Command",)
    assert {*node, workloads, "kubernetes:apps/v1:StatefulSet"} <= checked
    if variant in GATEWAY_VARIANTS:
        assert {CONFIG_MAP, GATEWAY} <= checked
    for r in custom(evaluation):
        for policy in policies.POLICIES:
            assert violations(policy, r["type"], r["inputs"], r["name"]) == [], (variant, r["name"], policy.name)


def test_every_stack_file_passes_every_policy():
    for path in sorted(ROOT.glob("Pulumi.*.yaml")):
        evaluation = evaluate(path.name.split(".")[1])
        for r in custom(evaluation):
            assert failing(r["type"], r["inputs"]) == set(), (path.name, r["name"])


def tampered(variant: str, name: str, change) -> tuple[str, dict]:
    r = copy.deepcopy(resource(program(variant), name))
    change(r["inputs"])
    return r["type"], r["inputs"]


def _privileged_fortio(props: dict) -> None:
    app = next(c for c in props["spec"]["template"]["spec"]["containers"] if c["name"] == "main-app")
    app["securityContext"] = {"privileged": True}


def _proxy_image_by_tag(props: dict) -> None:
    annotations = props["spec"]["template"]["metadata"]["annotations"]
    annotations["sidecar.istio.io/proxyImage"] = "192.168.122.1:5000/proxyv2:dbg"


def _startup_proxy_by_tag(props: dict) -> None:
    proxy = next(c for c in props["spec"]["template"]["spec"]["containers"] if c["name"] == "istio-proxy")
    proxy["image"] = "192.168.122.1:5000/proxyv2:dbg"


def _overlay_proxy_by_tag(props: dict) -> None:
    """The overlay's text as the program wrote it, its one image by digest turned into a tag."""
    props["data"]["deployment"], count = re.subn(r"^( *image: \S+)@sha256:[0-9a-f]{64}$", r"\1:dbg",
                                                 props["data"]["deployment"], flags=re.MULTILINE)
    assert count == 1


def _overlay_proxy_privileged(props: dict) -> None:
    with_overlay(props, lambda o: overlay_proxy(o)["securityContext"].update(privileged=True))


TAMPERINGS = {
    "lldb-server on 0.0.0.0 without the marker": (
        "attach", "lldb-server-platform", lambda p: with_assignment(p, "LISTEN_ADDRESS", "0.0.0.0"), LLDB),
    "listen-all with the marker switched off": (
        "listen-all", "lldb-server-platform", lambda p: with_assignment(p, "LISTEN_ALL", "false"), LLDB),
    "a privileged fortio container": ("attach", "target-statefulset", _privileged_fortio, PRIVILEGED),
    "a privileged registry": ("attach", "registry-container", lambda p: p.update(privileged=True), PRIVILEGED),
    "a privileged cluster registry": (
        "cluster", "registry-deployment",
        lambda p: p["spec"]["template"]["spec"]["containers"][0].update(securityContext={"privileged": True}),
        PRIVILEGED),
    "proxyImage by tag": ("attach", "target-statefulset", _proxy_image_by_tag, DIGEST),
    "startup istio-proxy by tag": ("startup", "target-statefulset", _startup_proxy_by_tag, DIGEST),
    "waypoint istio-proxy by tag": ("waypoint", "target-waypoint-parameters", _overlay_proxy_by_tag, DIGEST),
    "startup gateway istio-proxy by tag": (
        "gateway, startup", "target-gateway-parameters", _overlay_proxy_by_tag, DIGEST),
    "a privileged waypoint istio-proxy": (
        "waypoint", "target-waypoint-parameters", _overlay_proxy_privileged, PRIVILEGED),
    "a waypoint overlay that is not YAML": (
        "waypoint", "target-waypoint-parameters", lambda p: p["data"].update(deployment="spec: {template: ["), DIGEST),
}


@pytest.mark.parametrize("case", sorted(TAMPERINGS))
def test_a_tampered_resource_fails_exactly_the_policy_it_breaks(case):
    variant, name, change, policy = TAMPERINGS[case]
    resource_type, props = tampered(variant, name, change)
    assert failing(resource_type, props) == {policy.name}


def test_a_preview_leaves_unknown_values_to_the_engine_and_reports_no_violation():
    """In a preview the debug image's digest (and so proxyImage and lldb-server's command) is not known yet:
    the validator stops with UnknownValueError, which the engine reports as not checkable in this preview."""
    unknown = unknown_in_preview(evaluate("dev", preview=True))
    assert ("target-statefulset", DIGEST.name) in unknown


# --- the pack as the CLI runs it -----------------------------------------------------------------------------


# How long one call to the pack may take: it answers in milliseconds; a pack that hangs fails the test instead.
CALL_SECONDS = 60


@pytest.fixture(scope="module")
def analyzer(module_tmp) -> Iterator[analyzer_pb2_grpc.AnalyzerStub]:
    """policy/__main__.py started as the CLI starts it: it prints its gRPC port, then serves. Its stderr goes to a
    file (a pipe nobody reads would block it once full); its stdout, after the port, is drained likewise."""
    log = module_tmp("policy-pack") / "stderr.log"
    with open(log, "w") as stderr:
        server = subprocess.Popen([sys.executable, str(POLICY_DIR / "__main__.py")], cwd=POLICY_DIR,
                                  stdout=subprocess.PIPE, stderr=stderr, text=True)
    try:
        ready, _, _ = select.select([server.stdout], [], [], 60)
        assert ready, f"the pack printed no port within 60 s; stderr: {log.read_text()[-3000:]}"
        port = server.stdout.readline().strip()
        assert port.isdigit(), f"the pack printed {port!r}; stderr: {log.read_text()[-3000:]}"
        threading.Thread(target=server.stdout.read, daemon=True).start()
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
            yield analyzer_pb2_grpc.AnalyzerStub(channel)
    finally:
        server.terminate()
        server.wait(timeout=30)


def wire(value):
    """The harness's inputs as the engine sends them: secrets in their signature envelope, unknowns as the
    engine's sentinels."""
    if isinstance(value, dict):
        if set(value) == {"secret"}:
            return {SECRET_SIG: SECRET_VALUE_SIG, "value": wire(value["secret"])}
        return {k: wire(v) for k, v in value.items()}
    if isinstance(value, list):
        return [wire(v) for v in value]
    return UNKNOWN_STRING_VALUE if value == "<unknown>" else value


def analyze(stub, r: dict) -> list:
    properties = struct_pb2.Struct()
    json_format.ParseDict(wire(r["inputs"]), properties)
    request = analyzer_pb2.AnalyzeRequest(type=r["type"], properties=properties, name=r["name"],
                                          urn=f"urn:pulumi:dev::istio-proxy-debug::{r['type']}::{r['name']}")
    return list(stub.Analyze(request, timeout=CALL_SECONDS).diagnostics)


def test_the_pack_declares_its_policies_mandatory(analyzer):
    info = analyzer.GetAnalyzerInfo(empty_pb2.Empty(), timeout=CALL_SECONDS)
    assert info.name == policies.PACK_NAME
    assert {p.name: p.enforcementLevel for p in info.policies} == {
        p.name: analyzer_pb2.MANDATORY for p in policies.POLICIES
    }


def test_the_pack_passes_the_program_and_stops_a_tampered_resource(analyzer):
    for variant in PROGRAM_VARIANTS:
        for r in custom(program(variant)):
            assert analyze(analyzer, r) == [], (variant, r["name"])
    for case, (variant, name, change, policy) in TAMPERINGS.items():
        r = copy.deepcopy(resource(program(variant), name))
        change(r["inputs"])
        diagnostics = analyze(analyzer, r)
        assert diagnostics, case
        assert {(d.policyName, d.enforcementLevel) for d in diagnostics} == {
            (policy.name, analyzer_pb2.MANDATORY)
        }, case


@pytest.mark.parametrize("variant,unknown", [("attach", "target-statefulset"),
                                             ("waypoint", "target-waypoint-parameters")])
def test_in_a_preview_the_pack_blocks_nothing_it_cannot_know(analyzer, variant, unknown):
    advisory = []
    for r in custom(evaluate("dev", *PROGRAM_VARIANTS[variant], preview=True)):
        for d in analyze(analyzer, r):
            assert d.enforcementLevel == analyzer_pb2.ADVISORY and "during preview" in d.message, (r["name"], d)
            advisory.append((r["name"], d.policyName))
    assert (unknown, DIGEST.name) in advisory
