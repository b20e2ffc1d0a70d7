"""A mesh on the tests' real node (tests/kubelet_node.py), and what the real-Envoy tests do with it: Istio's side
as far as the node needs it (stand-in proxyv2 and app images on the node, the injector's webhook, KWOK's node
cordoned so pods land on the real one), requests to a pod's IP from the node's network, Envoy's own stats, the
stack's port-forward, and the real lldb and lldb-dap on this machine in the debugger container's view of a
workspace (tests/test_real_envoy_on_a_kubelet.py, tests/test_attach_in_place_on_a_kubelet.py)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from components.target import PROXY_CONTAINER
from tests.conftest import ROOT, require_tool
from tests.control_plane import NODE as KWOK_NODE
from tests.control_plane import ControlPlane
from tests.docker_engine import HOST_SIDE, NETNS, Engine
from tests.engine_stack import Stack, developer_env, stand_in_images
from tests.kubelet_node import NODE_NAME, POD_IMAGE, KubeletNode
from tests.lldb_session import InteractiveLldb, debian_lldb, in_debugger_view, lldb_environment
from tests.mesh_images import app_image, proxyv2_image
from tests.releases import releases
from tests.sidecar_injector import InjectorWebhook, injector_webhook
from tests.toolchain import Pulumi, toolchain_bin, user_project

BYSTANDER_NAMESPACE = "ipd-bystander"


def wait_for(what: str, check, timeout: float, explain=lambda: ""):
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not within {timeout:.0f} s: {explain()}")
        time.sleep(0.5)
    return value


@contextlib.contextmanager
def sidecar_mesh(engine: Engine, plane: ControlPlane, node: KubeletNode, work: Path,
                 istio_version: str) -> Iterator[InjectorWebhook]:
    """Istio's side: proxyv2 and the app's image on the node (a cluster running Istio has them; nothing can be
    pulled here), the injector's webhook registered, and KWOK's node cordoned, so the scheduler puts pods on the
    real node as on a one-node cluster. A bystander pod runs there throughout."""
    node.import_image(proxyv2_image(engine, istio_version, work / "proxyv2"))
    node.import_image(app_image(engine, work / "app"))
    release = next(r for r in releases() if r.version == istio_version)
    plane.kubectl("cordon", KWOK_NODE)
    plane.kubectl("create", "namespace", BYSTANDER_NAMESPACE)
    plane.kubectl("apply", "-f", "-", stdin=json.dumps({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bystander", "namespace": BYSTANDER_NAMESPACE},
        "spec": {"nodeName": NODE_NAME, "terminationGracePeriodSeconds": 0,
                 "containers": [{"name": "main", "image": POD_IMAGE, "imagePullPolicy": "IfNotPresent",
                                 "command": ["/bin/sleep", "infinity"]}]}}))
    try:
        with injector_webhook(plane, release, HOST_SIDE, work / "webhook",
                              f"docker.io/istio/proxyv2:{istio_version}") as webhook:
            yield webhook
    finally:
        plane.kubectl("delete", "namespace", BYSTANDER_NAMESPACE, "--wait=false", check=False)
        plane.kubectl("uncordon", KWOK_NODE, check=False)


def bystander_phase(plane: ControlPlane) -> str:
    return plane.kubectl("get", "pod", "bystander", "-n", BYSTANDER_NAMESPACE, "-o",
                         "jsonpath={.status.phase}").stdout


# --- a pod, its Envoy, its traffic ---------------------------------------------------------------------------------


def in_engine_netns(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    """A command in the node's network namespace (the engine's, which the node container shares)."""
    return subprocess.run(["nsenter", f"--net=/run/netns/{NETNS}", *args], capture_output=True, text=True,
                          timeout=timeout)


def request(url: str, timeout: float = 20) -> str:
    done = in_engine_netns("curl", "-sS", "--max-time", str(timeout - 5), url, timeout=timeout)
    return done.stdout if done.returncode == 0 else f"curl failed: {done.stderr.strip()}"


def in_background(url: str) -> tuple[threading.Thread, list[str]]:
    answers: list[str] = []
    thread = threading.Thread(target=lambda: answers.append(request(url, timeout=120)), daemon=True)
    thread.start()
    return thread, answers


def pod(plane: ControlPlane, name: str, namespace: str) -> dict:
    return json.loads(plane.kubectl("get", "pod", name, "-n", namespace, "-o", "json").stdout)


def proxy_status(pod_json: dict) -> dict:
    statuses = pod_json["status"].get("initContainerStatuses", []) + pod_json["status"].get("containerStatuses", [])
    return next(s for s in statuses if s["name"] == PROXY_CONTAINER)


def process_on_node(node: KubeletNode, pod_name: str, namespace: str, name: str = "envoy") -> int:
    """The node's pid of the pod's process `name`, by the env istio-proxy's processes have (the pod's name and
    namespace)."""
    found = []
    for pid in node.exec("pgrep", "-x", name, check=False).stdout.split():
        environ = node.exec("cat", f"/proc/{pid}/environ", check=False).stdout.split("\0")
        if f"POD_NAME={pod_name}" in environ and f"POD_NAMESPACE={namespace}" in environ:
            found.append(int(pid))
    assert len(found) == 1, f"{name} processes of {namespace}/{pod_name} on the node: {found}"
    return found[0]


def envoy_stat(plane: ControlPlane, name: str, namespace: str, stat: str) -> int:
    done = plane.kubectl("exec", name, "-n", namespace, "-c", PROXY_CONTAINER, "--", "curl", "-sS",
                         f"http://127.0.0.1:15000/stats?format=json&filter=^{re.escape(stat)}$")
    return next((s["value"] for s in json.loads(done.stdout)["stats"] if s.get("name") == stat), 0)


def pod_ip(plane: ControlPlane, name: str, namespace: str) -> str:
    return pod(plane, name, namespace)["status"]["podIP"]


# --- the debugger, with a stack's outputs ----------------------------------------------------------------------------


@contextlib.contextmanager
def port_forward(command: str, env: dict[str, str], ports: list[int], timeout: float = 60):
    """A stack's port-forward command, run as the developer runs it, until every port is forwarded; the seconds
    that took."""
    # stderr with stdout, read as it comes: kubectl logs each error of a forwarded connection there, and a pipe
    # nobody reads would block it once full.
    process = subprocess.Popen(["/bin/sh", "-c", f"exec {command}"], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    seen: list[str] = []
    threading.Thread(target=lambda: seen.extend(process.stdout), daemon=True).start()
    started = time.monotonic()

    def forwarded() -> set[int]:
        return {int(m.group(1)) for line in list(seen) if (m := re.match(r"Forwarding from 127\.0\.0\.1:(\d+) ->",
                                                                          line))}

    try:
        while forwarded() != set(ports):
            assert process.poll() is None, f"the port-forward ended: {seen}"
            assert time.monotonic() - started < timeout, f"{ports} not forwarded within {timeout:.0f} s: {seen}"
            time.sleep(0.1)
        yield time.monotonic() - started
    finally:
        process.terminate()
        process.wait(timeout=30)


def lldb(work_dir: Path) -> InteractiveLldb:
    """Debian's lldb 14 (the debugger container's LLDB), in the debugger's view of the workspace."""
    return InteractiveLldb(in_debugger_view(work_dir, [require_tool("lldb"), "--no-lldbinit", "--no-use-colors"]),
                           lldb_environment())


def resident_kib(pid: int) -> int:
    """VmRSS of lldb: the process under the unshare and bash that started it."""
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    for candidate in [pid, *map(int, children)]:
        status = Path(f"/proc/{candidate}/status").read_text()
        if re.search(r"^Name:\s+lldb", status, re.M):
            return int(re.search(r"^VmRSS:\s+(\d+)", status, re.M).group(1))
    return resident_kib(int(children[0])) if children else 0


def lldb_dap(work_dir: Path) -> list[str]:
    """LLVM's lldb-dap 19 (`make lldb-clients`), as VS Code starts it, in the debugger's view of the workspace."""
    if debian_lldb(19) is None:
        if os.environ.get("CI") == "true":
            raise AssertionError("Debian's lldb 19 is not unpacked: make lldb-clients")
        pytest.skip("Debian's lldb 19 is not unpacked (make lldb-clients)")
    llvm = "/mnt/lldb-19/usr/lib/llvm-19"
    return in_debugger_view(work_dir, ["env", f"LD_LIBRARY_PATH={llvm}/lib:/mnt/lldb-19/usr/lib/x86_64-linux-gnu",
                                       f"{llvm}/bin/lldb-dap"],
                            tools={"lldb-19": ROOT / ".cache" / "lldb-19" / "root"})


def dap_initialize(dap) -> None:
    dap.request("initialize", {"clientID": "vscode", "clientName": "Visual Studio Code", "adapterID": "lldb-dap",
                               "pathFormat": "path", "linesStartAt1": True, "columnsStartAt1": True})


def developer_stack(engine: Engine, plane: ControlPlane, work: Path, name: str, work_dir: Path,
                    sets: list[tuple[str, str]], removed: tuple[str, ...]) -> Stack:
    """A developer's stack made as `make stack` makes one, in a user's clone, on the tests' engine and cluster, then
    set up with `pulumi config set --path` and `pulumi config rm`, as docs/ says for its case."""
    stand_in_images(engine, work / "images")
    bin_dir = toolchain_bin()
    project = Pulumi(bin_dir, user_project(work / "clone"), developer_env(engine, bin_dir, work / "state", plane))
    project.make_stack(name, "--work-dir", str(work_dir))
    stack = Stack(name, project, work_dir)
    for key, value in sets:
        stack("config", "set", "--path", key, value)
    for key in removed:
        stack("config", "rm", key)
    return stack
