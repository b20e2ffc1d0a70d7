"""A real kubelet's node (tests/kubelet_node.py) beside KWOK's, and real pods on it.

What it proves:
- the toolchain's kubelet, in a node container on the tests' Docker engine, registers with the tests' control plane
  (its API server on the engine's link) and its Node is Ready, reported by the kubelet itself at the node's address,
  while KWOK's fake node stays Ready and KWOK leaves the real one alone; the API server reaches the kubelet's API;
- a pod pinned to it by nodeName runs an image imported into its containerd (imagePullPolicy Never: nothing is
  pulled), gets an address from the bridge CNI and its exec readiness probe passes; `kubectl exec`, `logs` and
  `port-forward` (from this machine, over loopback, to a port the pod serves on its own loopback) work through the
  API server and the kubelet;
- a privileged hostPID and hostNetwork pod enters the node's namespaces with nsenter and sees the node's own
  processes (containerd, the kubelet) by their node pids, which a pod without hostPID does not.
"""

from __future__ import annotations

import ipaddress
import json
import queue
import re
import subprocess
import threading
import urllib.request
import uuid

import pytest

from tests.conftest import require_tool
from tests.control_plane import NODE as KWOK_NODE
from tests.control_plane import ControlPlane
from tests.docker_engine import ENGINE_SIDE
from tests.kubelet_node import (
    CLEANUP_SCRIPT,
    ENTRY_SCRIPT,
    KUBELET,
    KUBELET_VERSION,
    POD_IMAGE,
    POD_SUBNET,
    KubeletNode,
)

MARKER = f"served-by-the-real-node-{uuid.uuid4().hex[:8]}"
WEB_PORT = 8000


def pod_manifest(name: str, node: str, command: list[str], *, host: bool = False, probe: list[str] | None = None,
                 env: dict[str, str] | None = None) -> str:
    spec = {
        "nodeName": node,
        "terminationGracePeriodSeconds": 1,
        "containers": [{
            "name": name,
            "image": POD_IMAGE,
            "imagePullPolicy": "Never",
            "command": command,
            "env": [{"name": k, "value": v} for k, v in (env or {}).items()],
            **({"readinessProbe": {"exec": {"command": probe}, "periodSeconds": 1}} if probe else {}),
            **({"securityContext": {"privileged": True}} if host else {}),
        }],
        **({"hostPID": True, "hostNetwork": True} if host else {}),
    }
    return json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
                       "spec": spec})


def ready_pod(plane: ControlPlane, node: KubeletNode, manifest: str, name: str, timeout: int = 180):
    """The pod created and Ready (or the test fails with its description and the node's log tails); deleted after."""
    plane.kubectl("apply", "-f", "-", stdin=manifest)
    try:
        waited = plane.kubectl("wait", "--for=condition=Ready", f"pod/{name}", f"--timeout={timeout}s", check=False,
                               timeout=timeout + 30)
        if waited.returncode != 0:
            described = plane.kubectl("describe", "pod", name, check=False).stdout
            raise AssertionError(f"pod {name} not Ready within {timeout} s: {waited.stderr}\n{described}\n"
                                 f"{node.log_tails()}")
        yield json.loads(plane.kubectl("get", "pod", name, "-o", "json").stdout)
    finally:
        plane.kubectl("delete", "pod", name, "--ignore-not-found", "--wait=true", "--timeout=60s", check=False,
                      timeout=90)


@pytest.fixture(scope="module")
def web_pod(kubelet_plane: ControlPlane, real_node: KubeletNode):
    """A pod on the real node serving MARKER with python3's http.server on its own loopback only; Ready once the
    server answers (an exec probe)."""
    serve = (f'mkdir -p /srv && echo "$MARKER" >/srv/marker && exec python3 -m http.server --bind 127.0.0.1 '
             f'--directory /srv {WEB_PORT}')
    probe = ["python3", "-c", f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{WEB_PORT}/marker')"]
    manifest = pod_manifest("web", real_node.name, ["sh", "-c", serve], probe=probe, env={"MARKER": MARKER})
    yield from ready_pod(kubelet_plane, real_node, manifest, "web")


@pytest.fixture(scope="module")
def node_shell(kubelet_plane: ControlPlane, real_node: KubeletNode):
    """A privileged pod on the real node in its PID and network namespaces."""
    manifest = pod_manifest("node-shell", real_node.name, ["sleep", "infinity"], host=True)
    yield from ready_pod(kubelet_plane, real_node, manifest, "node-shell")


def in_pod(plane: ControlPlane, pod: str, *args: str) -> subprocess.CompletedProcess:
    return plane.kubectl("exec", pod, "--", *args, check=False, timeout=60)


def ready_condition(node: dict) -> dict:
    [condition] = [c for c in node["status"]["conditions"] if c["type"] == "Ready"]
    return condition


@pytest.mark.parametrize("script", [ENTRY_SCRIPT, CLEANUP_SCRIPT], ids=["entry", "cleanup"])
def test_the_node_scripts_are_shellcheck_clean(script, tmp_path):
    shellcheck = require_tool("shellcheck")
    path = tmp_path / "script"
    path.write_text(script)
    done = subprocess.run([shellcheck, str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout


def test_the_kubelet_joins_ready_beside_kwoks_node(kubelet_plane: ControlPlane, real_node: KubeletNode):
    nodes = {n["metadata"]["name"]: n for n in json.loads(kubelet_plane.kubectl("get", "nodes", "-o",
                                                                               "json").stdout)["items"]}
    assert set(nodes) == {KWOK_NODE, real_node.name}
    real, fake = nodes[real_node.name], nodes[KWOK_NODE]
    condition = ready_condition(real)
    assert condition["status"] == "True", condition
    assert condition["reason"] == "KubeletReady", condition
    info = real["status"]["nodeInfo"]
    assert info["kubeletVersion"] == KUBELET_VERSION, info
    assert info["containerRuntimeVersion"].startswith("containerd://1.6"), info
    assert {"type": "InternalIP", "address": ENGINE_SIDE} in real["status"]["addresses"], real["status"]
    assert real_node.address == ENGINE_SIDE
    assert "kwok.x-k8s.io/node" not in real["metadata"].get("annotations", {}), "KWOK must leave it alone"
    assert real["metadata"]["labels"]["istio-proxy-debug.test/kubelet"] == "real"
    # KWOK's node is still KWOK's, and Ready.
    assert fake["metadata"]["annotations"]["kwok.x-k8s.io/node"] == "fake"
    assert ready_condition(fake)["status"] == "True", fake["status"]
    # The API server reaches the kubelet's own API at the node's address.
    healthz = kubelet_plane.kubectl("get", "--raw", f"/api/v1/nodes/{real_node.name}/proxy/healthz")
    assert healthz.stdout.strip() == "ok", healthz


def test_a_pod_runs_an_imported_image_and_exec_logs_and_port_forward_work(kubelet_plane: ControlPlane,
                                                                           real_node: KubeletNode, web_pod: dict):
    assert web_pod["spec"]["nodeName"] == real_node.name
    assert ipaddress.ip_address(web_pod["status"]["podIP"]) in ipaddress.ip_network(POD_SUBNET), web_pod["status"]
    [status] = web_pod["status"]["containerStatuses"]
    assert status["ready"] and "running" in status["state"], status
    assert status["containerID"].startswith("containerd://"), status
    # The container is containerd's, in the kubelet's namespace, from the imported image.
    containers = real_node.ctr("containers", "ls").stdout
    assert status["containerID"].removeprefix("containerd://") in containers, containers
    assert f"docker.io/{POD_IMAGE}" in containers, containers

    done = in_pod(kubelet_plane, "web", "cat", "/srv/marker")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == MARKER
    done = in_pod(kubelet_plane, "web", "hostname")
    assert done.stdout.strip() == "web", "the pod's own UTS namespace"

    port = port_forward_and_fetch(kubelet_plane, "web")
    assert port["body"].strip() == MARKER, port
    # The request reached the pod's server: its log (through the kubelet) has it.
    logs = kubelet_plane.kubectl("logs", "web").stdout + kubelet_plane.kubectl("logs", "web").stderr
    assert '"GET /marker HTTP/1.1" 200' in logs, logs


def port_forward_and_fetch(plane: ControlPlane, pod: str, timeout: float = 60) -> dict:
    """`kubectl port-forward pod/<pod> :WEB_PORT` on loopback, and GET /marker through it."""
    forward = subprocess.Popen([str(plane.kubectl_path), "--kubeconfig", str(plane.kubeconfig), "port-forward",
                                "--address", "127.0.0.1", f"pod/{pod}", f":{WEB_PORT}"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in forward.stdout], daemon=True).start()
    try:
        try:
            line = lines.get(timeout=timeout)
        except queue.Empty:
            forward.kill()
            raise AssertionError(f"port-forward printed nothing within {timeout:.0f} s: "
                                 f"{forward.stderr.read()}") from None
        # "Forwarding from 127.0.0.1:41234 -> 8000"
        assert line.startswith("Forwarding from 127.0.0.1:"), line
        local = int(line.split("127.0.0.1:")[1].split()[0])
        assert line.strip().endswith(f"-> {WEB_PORT}"), line
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"http://127.0.0.1:{local}/marker", timeout=30) as response:
            return {"port": local, "status": response.status, "body": response.read().decode()}
    finally:
        forward.terminate()
        forward.wait(timeout=30)


def test_a_privileged_host_pid_pod_enters_the_nodes_namespaces(kubelet_plane: ControlPlane, real_node: KubeletNode,
                                                               node_shell: dict, web_pod: dict):
    assert node_shell["spec"]["hostPID"] and node_shell["spec"]["hostNetwork"]
    entered = in_pod(kubelet_plane, "node-shell", "nsenter", "-t", "1", "-m", "-u", "-i", "-n", "-p", "--",
                     "cat", "/etc/hostname")
    assert entered.returncode == 0, entered.stderr
    assert entered.stdout == real_node.exec("cat", "/etc/hostname").stdout
    # The node's mount namespace, not the pod's: the kubelet's binary is mounted there, and not in the pod's image.
    assert in_pod(kubelet_plane, "node-shell", "nsenter", "-t", "1", "-m", "--", "test", "-x",
                  KUBELET).returncode == 0
    assert in_pod(kubelet_plane, "node-shell", "test", "-e", KUBELET).returncode == 1
    # hostPID: the node's processes, by the node's own pids.
    for process in ("containerd", "kubelet"):
        on_node = real_node.exec("pgrep", "-x", process).stdout.split()
        assert on_node, f"no {process} on the node"
        seen = in_pod(kubelet_plane, "node-shell", "pgrep", "-x", process)
        assert seen.stdout.split() == on_node, (process, seen.stdout, seen.stderr)
    # A pod without hostPID sees none of them.
    hidden = in_pod(kubelet_plane, "web", "pgrep", "-x", "containerd")
    assert hidden.returncode == 1 and not hidden.stdout.strip(), hidden
    # hostNetwork: the node's address is the pod's own (a local address of its network namespace), not the web pod's.
    local = re.compile(rf"\|-- {re.escape(ENGINE_SIDE)}\n\s+/32 host LOCAL")
    assert local.search(in_pod(kubelet_plane, "node-shell", "cat", "/proc/net/fib_trie").stdout)
    assert not local.search(in_pod(kubelet_plane, "web", "cat", "/proc/net/fib_trie").stdout)
