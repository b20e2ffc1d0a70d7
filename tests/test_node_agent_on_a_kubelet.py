"""nodeAccess kubernetes on a real node: tests/kubelet_node.py's kubelet, joined to a control plane of the tests.

A stack with `nodeAccess: kubernetes` and the real node as its one node is evaluated under mocks, and what it
renders is used as rendered: its agents' namespace and pod are applied, its commands run as pulumi-command's
local.Command runs them (`/bin/sh -c <create>`, stdin given, KUBECONFIG naming the tests' cluster as the current
context would), and the real `lldb` gets only its outputs.

What it proves:
- the agent (privileged, the node's namespaces, bound by nodeName) is scheduled on the real node and Ready;
- the stack's containerd entry, written through the agent with `kubectl exec`, lets the kubelet pull the debug image
  from the stack's registry over plain HTTP (a real CRI pull: before the entry the same pod cannot pull it);
- a stand-in target pod (its envoy the debug image's, the pod's name as hostname, POD_NAMESPACE as Istio gives it)
  runs there; the stack's lookup names its node; lldb-server, started by the stack's command through the agent,
  finds its envoy and listens on the node's loopback only;
- the real lldb, given the stack's `lldbCommands` and nothing else, attaches through the stack's
  `lldbServerPortForward` command and shows the stand-in's backtrace with its source line;
- destroy's deletes, in the engine's order (lldb-server, the entry, the agent, its namespace), leave no
  lldb-server, no entry and no agent, and the node still pulls from a registry it had before.

Here the node shares the tests' Docker engine's network namespace (tests/kubelet_node.py), so a debugger container
on that engine's host network would share the node's loopback, where lldb-server listens on the very ports the
forward takes. The developer host is this machine instead: the forward listens on its loopback, and lldb runs
here, in a mount namespace of its own where the workspace is at the paths the debugger container mounts it at.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest

from components.containerd_mirror import registry_address
from components.debug_image import pull_reference
from components.debug_ports import DebuggerPorts
from components.kind_cluster import CERTS_DIR
from components.lldb_server import STATE_DIR
from components.workspace import CONTAINER_CACHE_DIR
from tests.conftest import evaluate, require_tool, resource
from tests.docker_engine import (
    BOOKWORM,
    ENGINE_SIDE,
    Engine,
    base_image,
    registry_stand_in,
    stage_and_build,
    start_registry,
)
from tests.figures import record
from tests.kubelet_node import NODE_NAME, KubeletNode
from tests.lldb_session import compile_debuggee, free_port_block, in_debugger_view, lldb_environment, source_line
from tests.mesh_node import port_forward
from tests.mock_stack import PREBUILT_BUILD_ID, WALKTHROUGH_ENVOY_PID

REGISTRY_PORT = 5311
# A registry the node pulled from before the stack came: its entry must outlive the stack's.
OTHER_REGISTRY_PORT = 5312
NAMESPACE = "ipd-node-agent"
POD_READY_SECONDS = 180


@pytest.fixture(scope="module")
def stack(module_tmp) -> dict:
    work = module_tmp("node-agent-stack")
    # The port-forward (lldbServerPortForward) binds every debugger port on this machine's loopback: a block free
    # now, not the default 2159-2163, which anything on this machine may hold.
    lldb_server_port = free_port_block(len(DebuggerPorts(0).all))
    evaluation = evaluate("dev", "nodeAccess=kubernetes", f'nodes=["{NODE_NAME}"]', "targetNodeAddress=",
                          "envoySource=prebuilt", f"workDir={work}", f"registryHost={ENGINE_SIDE}",
                          f"registryPort={REGISTRY_PORT}", f"namespace={NAMESPACE}",
                          f"lldbServerPort={lldb_server_port}")
    assert evaluation["outputs"]["debuggerPorts"] == list(DebuggerPorts(lldb_server_port).all)
    return {"work": work, "evaluation": evaluation, "outputs": evaluation["outputs"]}


def inputs_of(stack: dict, name: str) -> dict:
    return resource(stack["evaluation"], name)["inputs"]


def cluster_env(plane) -> dict[str, str]:
    """A developer's shell whose current context is the tests' cluster, with the toolchain's kubectl."""
    return {**os.environ, "KUBECONFIG": str(plane.kubeconfig),
            "PATH": f"{plane.kubectl_path.parent}:{os.environ['PATH']}"}


def sh(plane, command: str, stdin: str | None = None, env: dict[str, str] | None = None,
       interpreter: tuple[str, ...] = ("/bin/sh", "-c"), timeout: float = 300) -> subprocess.CompletedProcess:
    """A command of the stack as local.Command runs it: `/bin/sh -c <create>` (or its interpreter), its stdin and
    environment given."""
    return subprocess.run([*interpreter, command], input=stdin, env={**cluster_env(plane), **(env or {})},
                          capture_output=True, text=True, timeout=timeout)


def apply(plane, manifest: dict) -> None:
    plane.kubectl("apply", "-f", "-", stdin=json.dumps(manifest))


def as_manifest(inputs: dict, kind: str) -> dict:
    """A Kubernetes resource's inputs as the provider sends them: apiVersion, kind, metadata and the rest."""
    return {"apiVersion": "v1", "kind": kind, **inputs}


def wait_for(what: str, check, timeout: float, explain=lambda: "") -> float:
    """Polls `check` until true; the seconds it took, or an AssertionError naming `what` and `explain()`."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what} not within {timeout:.0f} s: {explain()}")
        time.sleep(0.5)
    return time.monotonic() - started


def pod_state(plane, namespace: str, name: str) -> str:
    return plane.kubectl("get", "pod", name, "-n", namespace, "-o", "json", check=False).stdout


def pod_ready(plane, namespace: str, name: str) -> bool:
    done = plane.kubectl("get", "pod", name, "-n", namespace, "-o",
                         "jsonpath={.status.conditions[?(@.type=='Ready')].status}", check=False)
    return done.stdout.strip() == "True"


def waiting_reason(plane, namespace: str, name: str) -> str:
    """Why the pod's first container waits, with the kubelet's message (an image pull's error)."""
    done = plane.kubectl("get", "pod", name, "-n", namespace, "-o",
                         "jsonpath={.status.containerStatuses[0].state.waiting.reason} "
                         "{.status.containerStatuses[0].state.waiting.message}", check=False)
    return done.stdout.strip()


# --- the node's side: the agent, the registry, the images ----------------------------------------------------


@pytest.fixture(scope="module")
def agent(real_node: KubeletNode, kubelet_plane, kubelet_engine: Engine, stack: dict) -> dict:
    """The stack's agent namespace and pod, applied as the provider would; its image (the debug image's base, a
    stand-in) is on the node already, as a cluster that runs Istio has proxyv2. Yields the pod's name and the
    seconds until Ready."""
    namespace = as_manifest(inputs_of(stack, "node-agents-namespace"), "Namespace")
    pod = as_manifest(inputs_of(stack, f"node-agents-{NODE_NAME}"), "Pod")
    real_node.import_image(base_image(kubelet_engine, pod["spec"]["containers"][0]["image"]))
    apply(kubelet_plane, namespace)
    started = time.monotonic()
    apply(kubelet_plane, pod)
    name, agents = pod["metadata"]["name"], namespace["metadata"]["name"]
    wait_for(f"agent {name} Ready", lambda: pod_ready(kubelet_plane, agents, name), POD_READY_SECONDS,
             lambda: pod_state(kubelet_plane, agents, name) + real_node.log_tails())
    record("agent pod Ready", time.monotonic() - started)
    for figure, seconds in real_node.timings.items():
        record(f"node {figure}", seconds)
    yield {"name": name, "namespace": agents}
    kubelet_plane.kubectl("delete", "namespace", agents, "--ignore-not-found", "--wait=false", check=False)


@pytest.fixture(scope="module")
def registries(kubelet_engine: Engine, stack: dict, module_tmp) -> dict:
    """The stack's registry container, and another on OTHER_REGISTRY_PORT (the stand-in of one the node used
    before), each with an image pushed: the debug image, built and pushed by the stack's own commands, and a
    plain one."""
    registry_stand_in(kubelet_engine, module_tmp("registry-image"))
    inputs = start_registry(kubelet_engine, stack["evaluation"])
    elf_path = Path(stack["outputs"]["envoyElfHostPath"])
    elf_path.parent.mkdir(parents=True, exist_ok=True)
    elf = compile_debuggee(elf_path.parent, name=elf_path.name, extra=(f"-Wl,--build-id=0x{PREBUILT_BUILD_ID}",))
    base_image(kubelet_engine, inputs_of(stack, "debug-image-build")["environment"]["BASE_IMAGE"])
    _, pushed = stage_and_build(kubelet_engine, stack["evaluation"], elf, module_tmp("context"))
    # Another stack's registry container (its own name), on its own port.
    other = evaluate("ci", f"workDir={module_tmp('other-registry')}",
                     f"registryPort={OTHER_REGISTRY_PORT}")
    other_inputs = start_registry(kubelet_engine, other)
    plain = f"127.0.0.1:{OTHER_REGISTRY_PORT}/plain:1"
    kubelet_engine.docker("tag", base_image(kubelet_engine, BOOKWORM), plain)
    kubelet_engine.docker("push", plain, timeout=600)
    yield {"debug": pull_reference(pushed, stack["outputs"]["registryPullAddress"]),
           "other": f"{registry_address(ENGINE_SIDE, OTHER_REGISTRY_PORT)}/plain:1"}
    for container in (inputs["name"], other_inputs["name"]):
        kubelet_engine.docker("rm", "--force", container, check=False)


def hosts_toml(port: int) -> str:
    return f"{CERTS_DIR}/{registry_address(ENGINE_SIDE, port)}/hosts.toml"


@pytest.fixture(scope="module")
def other_entry(real_node: KubeletNode) -> str:
    """The node's own entry for the other registry, as its admin wrote it before the stack came."""
    path = hosts_toml(OTHER_REGISTRY_PORT)
    real_node.exec("mkdir", "-p", str(Path(path).parent))
    real_node.exec("sh", "-c", f"cat >{path}", stdin=f'server = "http://{ENGINE_SIDE}:{OTHER_REGISTRY_PORT}"\n\n'
                   f'[host."http://{ENGINE_SIDE}:{OTHER_REGISTRY_PORT}"]\n  capabilities = ["pull", "resolve"]\n')
    return path


def image_pod(name: str, image: str) -> dict:
    """A pod on the real node that only needs its image pulled to run."""
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"nodeName": NODE_NAME, "restartPolicy": "Never", "terminationGracePeriodSeconds": 0,
                     "containers": [{"name": "main", "image": image, "imagePullPolicy": "Always",
                                     "command": ["/bin/sleep", "3600"]}]}}


@pytest.fixture(scope="module")
def target_namespace(kubelet_plane):
    kubelet_plane.kubectl("create", "namespace", NAMESPACE)
    yield NAMESPACE
    kubelet_plane.kubectl("delete", "namespace", NAMESPACE, "--wait=false", check=False)


@pytest.fixture(scope="module")
def mirrored(kubelet_plane, real_node: KubeletNode, agent: dict, registries: dict, other_entry: str,
             target_namespace: str, stack: dict) -> dict:
    """A pod of the debug image before the stack's containerd-mirror command, the command as rendered (through the
    agent), then the stand-in target pod, of the same image, after it."""
    apply(kubelet_plane, image_pod("before-the-entry", registries["debug"]))
    wait_for("the pull before the entry to fail", lambda: "ErrImagePull" in waiting_reason(
        kubelet_plane, NAMESPACE, "before-the-entry") or "ImagePullBackOff" in waiting_reason(
        kubelet_plane, NAMESPACE, "before-the-entry"), 120, lambda: pod_state(kubelet_plane, NAMESPACE,
                                                                               "before-the-entry"))
    before = waiting_reason(kubelet_plane, NAMESPACE, "before-the-entry")
    kubelet_plane.kubectl("delete", "pod", "before-the-entry", "-n", NAMESPACE, "--wait=false")
    inputs = inputs_of(stack, f"containerd-mirror-{NODE_NAME}")
    created = sh(kubelet_plane, inputs["create"], inputs["stdin"])
    return {"inputs": inputs, "before": before, "created": created}


def target_pod(stack: dict, image: str) -> dict:
    """The target as the node runs it: the pod's name (the StatefulSet's first), the debug image's envoy with the
    pid the stack's mocks reported for the walkthrough's (forks until the next pid is it), POD_NAMESPACE as Istio
    gives istio-proxy."""
    skip = f'while :; do /bin/true & wait $!; [ "$!" -lt {WALKTHROUGH_ENVOY_PID - 1} ] || break; done'
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": stack["outputs"]["podName"], "namespace": NAMESPACE},
            # Scheduled (KWOK's node is there too): the stack looks up the node the scheduler chose.
            "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 0,
                     "nodeSelector": {"kubernetes.io/hostname": NODE_NAME},
                     "containers": [{"name": "istio-proxy", "image": image, "imagePullPolicy": "IfNotPresent",
                                     "command": ["/bin/bash", "-c", f"{skip}; /usr/local/bin/envoy & wait"],
                                     "env": [{"name": "POD_NAMESPACE", "valueFrom": {
                                         "fieldRef": {"fieldPath": "metadata.namespace"}}}]}]}}


@pytest.fixture(scope="module")
def target(kubelet_plane, real_node: KubeletNode, mirrored: dict, registries: dict, stack: dict) -> str:
    assert mirrored["created"].returncode == 0, mirrored["created"].stderr
    pod = target_pod(stack, registries["debug"])
    apply(kubelet_plane, pod)
    name = pod["metadata"]["name"]
    wait_for(f"target pod {name} Ready", lambda: pod_ready(kubelet_plane, NAMESPACE, name), POD_READY_SECONDS,
             lambda: pod_state(kubelet_plane, NAMESPACE, name) + real_node.log_tails())
    return name


# --- the tests -----------------------------------------------------------------------------------------------


def test_the_agent_runs_on_the_real_node_in_its_namespaces(kubelet_plane, real_node, agent, stack):
    placed = kubelet_plane.kubectl("get", "pod", agent["name"], "-n", agent["namespace"], "-o",
                                   "jsonpath={.spec.nodeName} {.status.podIP}").stdout.split()
    assert placed == [NODE_NAME, real_node.address]
    # Through the stack's own shell: the node's root shell, its PID 1 and its containerd.
    shell = inputs_of(stack, f"containerd-mirror-{NODE_NAME}")["create"]
    done = sh(kubelet_plane, shell, "readlink /proc/1/ns/mnt; pgrep -x containerd >/dev/null && echo containerd\n")
    assert done.returncode == 0, done.stderr
    node_mnt = real_node.exec("readlink", "/proc/1/ns/mnt").stdout.strip()
    assert done.stdout.split() == [node_mnt, "containerd"], done.stdout


def test_the_kubelet_pulls_the_debug_image_over_plain_http_once_the_entry_is_written(
        kubelet_plane, real_node, mirrored, target, registries):
    assert "http: server gave HTTP response to HTTPS client" in mirrored["before"], mirrored["before"]
    assert mirrored["created"].returncode == 0, mirrored["created"].stderr
    assert "(config_path is set); no restart needed" in mirrored["created"].stdout, mirrored["created"].stdout
    status = json.loads(pod_state(kubelet_plane, NAMESPACE, target))["status"]["containerStatuses"][0]
    assert (status["imageID"], list(status["state"])) == (registries["debug"], ["running"]), status
    # The kubelet's own pull: its event, and the image in the node's CRI store, by the stack's reference.
    events = kubelet_plane.kubectl("get", "events", "-n", NAMESPACE, "--field-selector",
                                   f"involvedObject.name={target},reason=Pulled", "-o",
                                   "jsonpath={.items[*].message}").stdout
    assert f'Successfully pulled image "{registries["debug"]}"' in events, events
    stored = real_node.ctr("images", "ls", "--quiet").stdout.split()
    assert registries["debug"] in stored, stored


@pytest.fixture(scope="module")
def platform(kubelet_plane, target: str, stack: dict) -> dict:
    """The stack's node lookup, then its lldb-server command through the agent; stopped by its delete at the end."""
    lookup = inputs_of(stack, "lldb-server-node")
    found = sh(kubelet_plane, lookup["create"], env=lookup["environment"], interpreter=lookup["interpreter"])
    inputs = inputs_of(stack, "lldb-server-platform")
    started = sh(kubelet_plane, inputs["create"], inputs["stdin"])
    yield {"lookup": found, "started": started, "inputs": inputs}
    sh(kubelet_plane, inputs["delete"])


def test_the_lookup_names_the_pods_node_and_lldb_server_listens_on_its_loopback(real_node, platform):
    assert platform["lookup"].returncode == 0, platform["lookup"].stderr
    assert platform["lookup"].stdout.strip().splitlines()[-1] == NODE_NAME
    started = platform["started"]
    assert started.returncode == 0, f"exit {started.returncode}: {started.stderr}"
    assert started.stdout.strip().splitlines()[-1] == str(WALKTHROUGH_ENVOY_PID), started.stdout
    port = int(re.search(r"^PLATFORM_PORT='(\d+)'$", platform["inputs"]["stdin"], re.MULTILINE).group(1))
    listening = real_node.exec("ss", "-Hltn", f"sport = :{port}").stdout.split()
    assert listening[3] == f"127.0.0.1:{port}", listening


@pytest.fixture(scope="module")
def forward(kubelet_plane, platform: dict, stack: dict):
    """The stack's port-forward command, run as the developer runs it, until every port is forwarded."""
    command = stack["outputs"]["lldbServerPortForward"]
    with port_forward(command, cluster_env(kubelet_plane), stack["outputs"]["debuggerPorts"]) as seconds:
        record("port-forward of every debugger port", seconds)
        yield command


def lldb_here(stack: dict, commands: list[str]) -> subprocess.CompletedProcess:
    """The real lldb on this machine, in the debugger container's view of the workspace."""
    args = [a for command in commands for a in ("-o", command)]
    return subprocess.run(in_debugger_view(stack["work"], [require_tool("lldb"), "--batch", "--no-lldbinit", *args]),
                          capture_output=True, text=True, timeout=300, env=lldb_environment())


def test_lldb_attaches_with_the_stacks_outputs_through_its_port_forward(stack, forward, real_node):
    outputs = stack["outputs"]
    # What prepare-workspace.sh and envoy-source leave: the folders the debugger mounts and the Envoy checkout that
    # lldbCommands' source maps point at.
    checkout = Path(outputs["envoyCheckout"]).relative_to(CONTAINER_CACHE_DIR)
    for folder in ("work", "home/.cache", f"home/.cache/{checkout}"):
        (stack["work"] / folder).mkdir(parents=True, exist_ok=True)
    assert urlparse(outputs["connectUrl"]).hostname == "127.0.0.1"
    started = time.monotonic()
    done = lldb_here(stack, [*outputs["lldbCommands"].splitlines(), "bt", "detach"])
    attach_seconds = time.monotonic() - started
    transcript = done.stdout + done.stderr
    log = real_node.exec("sh", "-c", f"cat {STATE_DIR}/lldb-server-*.log", check=False).stdout
    explained = f"{transcript}\nlldb-server's log:\n{log}"
    assert "error:" not in transcript, explained
    assert f"Process {WALKTHROUGH_ENVOY_PID} stopped" in transcript, explained
    assert f"demo::wait_for_debugger() at prog.cc:{source_line('parked here')}" in transcript, explained
    record("lldb attach through the port-forward (batch: connect, attach, bt, detach)", attach_seconds)


def test_destroy_leaves_nothing_privileged_and_the_node_pulls_as_before(kubelet_plane, real_node, agent, platform,
                                                                         mirrored, registries, other_entry, stack):
    """The deletes in the engine's order: lldb-server, the containerd entry, the agent, its namespace."""
    stopped = sh(kubelet_plane, platform["inputs"]["delete"])
    assert stopped.returncode == 0, stopped.stderr
    assert not real_node.exec("pgrep", "-f", "lldb-server", check=False).stdout.strip()
    assert real_node.exec("test", "-e", STATE_DIR, check=False).returncode != 0
    removed = sh(kubelet_plane, mirrored["inputs"]["delete"])
    assert removed.returncode == 0, removed.stderr
    assert real_node.exec("test", "-e", hosts_toml(REGISTRY_PORT), check=False).returncode != 0
    kubelet_plane.kubectl("delete", "pod", agent["name"], "-n", agent["namespace"], "--timeout=60s", timeout=90)
    kubelet_plane.kubectl("delete", "namespace", agent["namespace"], "--timeout=120s", timeout=150)
    privileged = kubelet_plane.kubectl("get", "pods", "-A", "-o", "jsonpath={range .items[*]}{.metadata.name} "
                                       "{.spec.containers[*].securityContext.privileged}{'\\n'}{end}").stdout
    assert "true" not in privileged, privileged
    assert real_node.exec("test", "-f", other_entry, check=False).returncode == 0, "the node's own entry stays"
    apply(kubelet_plane, image_pod("after-destroy", registries["other"]))
    wait_for("a pod from the node's other registry Ready", lambda: pod_ready(kubelet_plane, NAMESPACE, "after-destroy"),
             POD_READY_SECONDS, lambda: pod_state(kubelet_plane, NAMESPACE, "after-destroy"))
