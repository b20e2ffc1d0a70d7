"""nodeAccess kubernetes (components/node_agent.py): the settings it takes and refuses, what the program makes of
it under mocks, the agent's pod and namespace on the real API server (KWOK's node runs the pod), and the target
pod's node looked up by the stack's own script against it. The agent on a real kubelet, and lldb attaching
through it, are tests/test_kubelet_node.py's."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import uuid

import pytest

from components.config import ConfigError, parse_config
from components.node_agent import (
    LONGEST_NODE_NAME,
    NODE_SHELL,
    agent_name,
    agent_namespace_manifest,
    agent_pod_manifest,
    agent_shell,
    lldb_server_port_forward,
)
from components.scripts import script
from tests.conftest import CLUSTER_PLACEMENT, KUBERNETES_ACCESS, evaluate, resource
from tests.control_plane import NODE
from tests.mock_stack import NODE_AGENT_ADDRESS
from tests.test_config import raw_dev

KUBERNETES = {"nodeAccess": "kubernetes", "nodes": '["worker-1","worker-2"]', "targetNodeAddress": None}


def refusals(**overrides: str | None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(raw_dev(**{**KUBERNETES, **overrides}), stack="dev")
    return caught.value.problems


# --- the settings --------------------------------------------------------------------------------------------


def test_kubernetes_access_takes_node_names_and_finds_the_target_node_itself():
    config = parse_config(raw_dev(**KUBERNETES), stack="dev")
    assert (config.node_access, config.nodes, config.target_node_address) == (
        "kubernetes", ("worker-1", "worker-2"), None)
    pinned = parse_config(raw_dev(**KUBERNETES, targetNodeName="worker-2"), stack="dev")
    assert pinned.target_node_name == "worker-2"


@pytest.mark.parametrize(("overrides", "key", "expected"), [
    ({"sshPrivateKey": "-----BEGIN OPENSSH PRIVATE KEY-----\nx\n"}, "sshPrivateKey", "pulumi config rm sshPrivateKey"),
    ({"sshUser": "ubuntu"}, "sshUser", "pulumi config rm sshUser"),
    ({"targetNodeAddress": "worker-1"}, "targetNodeAddress", "pin it with targetNodeName"),
    ({"targetNodeName": "worker-3"}, "targetNodeName", "expected one of nodes with nodeAccess kubernetes"),
    ({"nodes": '["Worker_1"]'}, "nodes", "expected Kubernetes node names"),
    ({"nodes": json.dumps(["n" * (LONGEST_NODE_NAME + 1)])}, "nodes", f"at most {LONGEST_NODE_NAME} characters"),
    ({"cluster": "kind", "nodes": None}, "nodeAccess", "expected docker with cluster kind"),
    ({"nodeAccess": "kubectl"}, "nodeAccess", "or kubernetes (the nodes are reached through the Kubernetes API"),
])
def test_what_kubernetes_access_refuses_names_the_key_and_the_fix(overrides, key, expected):
    found = refusals(**overrides)
    assert len(found) == 1, found
    assert found[0].startswith(f"istio-proxy-debug:{key}") and expected in found[0], found


def test_the_longest_node_name_still_names_a_pod():
    node = "n" * LONGEST_NODE_NAME
    assert parse_config(raw_dev(**{**KUBERNETES, "nodes": json.dumps([node])}), stack="dev").nodes == (node,)
    assert len(agent_name(node)) == 253


# --- the program under mocks ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def host_stack() -> dict:
    return evaluate("dev", *KUBERNETES_ACCESS)


@pytest.fixture(scope="module")
def cluster_stack() -> dict:
    return evaluate("dev", *CLUSTER_PLACEMENT, *KUBERNETES_ACCESS, "targetNodeName=worker-2")


def test_each_node_gets_its_agent_in_the_stacks_own_privileged_namespace(host_stack):
    namespace = resource(host_stack, "node-agents-namespace")["inputs"]["metadata"]
    assert namespace["name"] == "istio-proxy-debug-nodes"
    assert namespace["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    assert namespace["labels"]["istio-injection"] == "disabled"
    for node in ("worker-1", "worker-2"):
        pod = resource(host_stack, f"node-agents-{node}")
        assert pod["options"]["parent"] == "node-agents"
        spec = pod["inputs"]["spec"]
        assert (pod["inputs"]["metadata"]["name"], spec["nodeName"]) == (f"node-agent-{node}", node)
        assert (spec["hostPID"], spec["hostNetwork"], spec["tolerations"]) == (True, True, [{"operator": "Exists"}])
        # The image the debug image is made from: the nodes pull it before they may pull the debug image.
        assert spec["containers"][0]["image"] == "docker.io/istio/proxyv2:1.17.2"
        assert spec["volumes"] == [{"name": "node-root", "hostPath": {"path": "/", "type": "Directory"}}]


def test_the_node_scripts_run_through_the_agents_after_they_are_ready(host_stack):
    for node in ("worker-1", "worker-2"):
        mirror = resource(host_stack, f"containerd-mirror-{node}")
        assert mirror["type"] == "command:local:Command"
        words = shlex.split(mirror["inputs"]["create"])
        assert words == ["kubectl", "exec", "-i", "-n", "istio-proxy-debug-nodes", f"node-agent-{node}", "-c",
                         "agent", "--", *NODE_SHELL]
        assert mirror["inputs"]["delete"].startswith(mirror["inputs"]["create"] + " <<'STOP'\n")
        assert set(mirror["options"]["dependsOn"]) >= {"node-agents-worker-1", "node-agents-worker-2"}


def test_lldb_server_runs_on_the_target_pods_node_on_its_loopback(host_stack):
    lookup = resource(host_stack, "lldb-server-node")
    assert lookup["inputs"]["create"] == script("pod-node.sh")
    env = lookup["inputs"]["environment"]
    assert (env["POD_NAME"], env["POD_NAMESPACE"], env["NODES"]) == ("fortio-server-0", "mark", "worker-1 worker-2")
    server = resource(host_stack, "lldb-server-platform")
    # The mocks' scheduler put the pod on worker-1.
    assert shlex.split(server["inputs"]["create"])[5] == "node-agent-worker-1"
    assert "LISTEN_ADDRESS='127.0.0.1'\n" in server["inputs"]["stdin"]
    assert "LISTEN_ALL='false'\n" in server["inputs"]["stdin"]
    assert "worker-1" in server["inputs"]["triggers"]
    outputs = host_stack["outputs"]
    assert outputs["connectUrl"] == "connect://127.0.0.1:2159"
    assert outputs["lldbServerPortForward"] == lldb_server_port_forward(
        "worker-1", "istio-proxy-debug-nodes", [2159, 2160, 2161, 2162, 2163], None)
    assert "connect://127.0.0.1:2159" in json.dumps(outputs["launchJson"])
    # The debugger container shares the host's loopback, where the port-forward listens.
    debugger = resource(host_stack, "debugger-container")["inputs"]
    assert debugger["networkMode"] == "host" and "networksAdvanced" not in debugger


def test_in_the_cluster_the_debugger_reaches_the_pinned_nodes_agent(cluster_stack):
    assert not [r for r in cluster_stack["resources"] if r["name"] == "lldb-server-node"]
    server = resource(cluster_stack, "lldb-server-platform")
    assert shlex.split(server["inputs"]["create"])[5] == "node-agent-worker-2"
    assert "LISTEN_ALL='true'\n" in server["inputs"]["stdin"]
    assert cluster_stack["outputs"]["connectUrl"] == f"connect://{NODE_AGENT_ADDRESS}:2159"
    assert cluster_stack["outputs"]["lldbServerPortForward"] is None


@pytest.mark.parametrize("placement", ("host", "cluster"))
@pytest.mark.parametrize("mode", ("attach", "startup"))
@pytest.mark.parametrize("target", ("sidecar", "waypoint", "gateway"))
def test_every_target_and_mode_reaches_its_envoy_through_the_agent(target, mode, placement):
    stack = evaluate("dev", *KUBERNETES_ACCESS, f"target={target}", f"mode={mode}", "istioVersion=1.30.3",
                     *(CLUSTER_PLACEMENT if placement == "cluster" else ()))
    lookup = resource(stack, "lldb-server-node")["inputs"]["environment"]
    assert lookup["POD_NAME"] == stack["outputs"]["podName"]
    server = resource(stack, "lldb-server-platform")["inputs"]
    assert shlex.split(server["create"])[:6] == ["kubectl", "exec", "-i", "-n", "istio-proxy-debug-nodes",
                                                 "node-agent-worker-1"]
    assert f"POD_NAME='{stack['outputs']['podName']}'\n" in server["stdin"]
    forward = stack["outputs"]["lldbServerPortForward"]
    assert (forward is not None) == (placement == "host")
    assert stack["outputs"]["connectUrl"].startswith(
        "connect://127.0.0.1:" if placement == "host" else f"connect://{NODE_AGENT_ADDRESS}:")


def test_other_node_accesses_make_no_agent():
    stack = evaluate("dev")
    assert not [r for r in stack["resources"] if r["name"].startswith("node-agents")]
    assert stack["outputs"]["lldbServerPortForward"] is None


# --- the agent and the lookup on the real API server ---------------------------------------------------------


@pytest.fixture
def namespace(api_server):
    name = f"agents-{uuid.uuid4().hex[:8]}"
    manifest = agent_namespace_manifest(name, "istio-proxy-debug-test")
    api_server.kubectl("apply", "-f", "-", stdin=json.dumps(manifest))
    yield name
    api_server.kubectl("delete", "namespace", name, "--wait=false", check=False)


def test_the_agent_is_admitted_and_runs_on_its_node(api_server, namespace):
    """In a namespace Pod Security admits privileged pods in, the agent is bound to KWOK's node by name (no
    scheduler) and Running; a privileged pod is refused where the baseline level is enforced."""
    pod = agent_pod_manifest(NODE, namespace, "docker.io/istio/proxyv2:1.30.3", "istio-proxy-debug-test")
    api_server.kubectl("apply", "-f", "-", stdin=json.dumps(pod))
    api_server.kubectl("wait", "-n", namespace, f"pod/{agent_name(NODE)}", "--for=condition=Ready",
                       "--timeout=60s", timeout=90)
    placed = api_server.kubectl("get", "-n", namespace, f"pod/{agent_name(NODE)}", "-o",
                                "jsonpath={.spec.nodeName} {.spec.hostPID} {.spec.hostNetwork}").stdout
    assert placed == f"{NODE} true true"
    strict = f"{namespace}-baseline"
    api_server.kubectl("create", "namespace", strict)
    try:
        api_server.kubectl("label", "namespace", strict, "pod-security.kubernetes.io/enforce=baseline")
        refused = api_server.kubectl("apply", "-f", "-", check=False,
                                     stdin=json.dumps({**pod, "metadata": {**pod["metadata"], "namespace": strict}}))
        assert refused.returncode != 0 and "violates PodSecurity" in refused.stderr, refused.stderr
    finally:
        api_server.kubectl("delete", "namespace", strict, "--wait=false", check=False)


def run_pod_node(api_server, pod: str, namespace: str, nodes: str, wait_seconds: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{api_server.kubectl_path.parent}:{os.environ['PATH']}",
           "KUBECONFIG": str(api_server.kubeconfig), "POD_NAME": pod, "POD_NAMESPACE": namespace, "NODES": nodes,
           "WAIT_SECONDS": str(wait_seconds)}
    return subprocess.run(["/bin/bash", "-c", script("pod-node.sh")], env=env, capture_output=True, text=True,
                          timeout=wait_seconds + 60)


def test_the_lookup_names_the_node_the_pod_was_scheduled_on(api_server, namespace):
    api_server.kubectl("run", "target-0", "-n", namespace, "--image=docker.io/fortio/fortio", "--restart=Never")
    found = run_pod_node(api_server, "target-0", namespace, f"other-node {NODE}", 60)
    assert found.returncode == 0, found.stderr
    assert found.stdout.strip().splitlines()[-1] == NODE
    elsewhere = run_pod_node(api_server, "target-0", namespace, "other-node", 60)
    assert elsewhere.returncode == 1
    assert f"scheduled on node {NODE}, which is not one of nodes (other-node)" in elsewhere.stderr
    assert "targetNodeName" in elsewhere.stderr


def test_the_lookup_of_a_pod_on_no_node_ends_with_what_it_saw(api_server, namespace):
    missing = run_pod_node(api_server, "absent-0", namespace, NODE, 3)
    assert missing.returncode == 1
    assert f"{namespace}/absent-0 is on no node after 3s (kubectl failed:" in missing.stderr
    assert "NotFound" in missing.stderr or "not found" in missing.stderr
    # A pod no node takes (its node selector matches none) stays unscheduled.
    api_server.kubectl("run", "nowhere-0", "-n", namespace, "--image=docker.io/fortio/fortio", "--restart=Never",
                       "--overrides", json.dumps({"spec": {"nodeSelector": {"no-such": "node"}}}))
    # 25 s: a round that ends between 10 s and 25 s reports (rounds are 2 s apart, plus kubectl's time), so a
    # slow kubectl round cannot jump from before the first report straight past the deadline.
    pending = run_pod_node(api_server, "nowhere-0", namespace, NODE, 25)
    assert pending.returncode == 1
    # It says what it sees while it waits, not only at the end.
    assert f"pod node: waiting for {namespace}/nowhere-0 (not scheduled yet)" in pending.stderr, pending.stderr
    assert "is on no node after 25s (not scheduled yet)" in pending.stderr


def test_the_agent_shell_is_kubectl_exec_into_the_nodes_namespaces():
    assert shlex.split(agent_shell("a.b", "ns", "/k/config")) == [
        "kubectl", "--kubeconfig", "/k/config", "exec", "-i", "-n", "ns", "node-agent-a.b", "-c", "agent", "--",
        "nsenter", "--target", "1", "--mount", "--uts", "--ipc", "--net", "--pid", "--", "bash", "-s"]
