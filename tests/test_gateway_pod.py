"""components/scripts/gateway-pod.sh, the lookup of the pod istiod runs for a waypoint or gateway target, run
exactly as the stack renders it (resource `target-waypoint-pod`: its interpreter, its script, its environment)
against the tests' real API server, where KWOK plays the kubelet and marks the pods on its node Running.

Only NAMESPACE (a fresh one per test), KUBECONFIG (the control plane's; the dev stack uses the current context),
PATH (the toolchain's kubectl) and, where a time-out is the point, WAIT_SECONDS differ from the rendering. The
pods stand in for istiod's: the label and the annotation the rendering names, an istio-proxy container."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import evaluate, require_tool, resource
from tests.control_plane import NODE, ControlPlane

# An overlay id of an earlier rollout (the rendered one is a 16-digit hex digest, checked below).
OLDER_OVERLAY = "0123456789abcdef"
PROXY_IMAGE = "registry.test/proxyv2@sha256:" + "e" * 64


@pytest.fixture(scope="module")
def rendered() -> dict:
    """The pod lookup's command as the waypoint stack renders it."""
    inputs = resource(evaluate("dev", "target=waypoint", "istioVersion=1.30.3"), "target-waypoint-pod")["inputs"]
    assert inputs["interpreter"][0].endswith("/bash"), inputs["interpreter"]
    env = inputs["environment"]
    assert env["OVERLAY"] != OLDER_OVERLAY and "=" in env["SELECTOR"], env
    return inputs


@pytest.fixture
def namespace(api_server: ControlPlane):
    """A fresh namespace, with the default service account admission wants before a pod; every finalizer the
    test left taken off afterwards, so the namespace goes."""
    name = f"gateway-pod-{uuid.uuid4().hex[:8]}"
    api_server.kubectl("create", "namespace", name)
    wait_for(f"the default service account of {name}",
             lambda: api_server.kubectl("get", "serviceaccount", "default", "-n", name, check=False).returncode == 0)
    yield name
    for pod in api_server.kubectl("get", "pods", "-n", name, "-o", "name").stdout.split():
        api_server.kubectl("patch", pod, "-n", name, "--type=merge", "-p", '{"metadata":{"finalizers":null}}',
                           check=False)
    api_server.kubectl("delete", "namespace", name, "--wait=false")


def wait_for(what: str, done, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"{what}: not within {timeout:.0f} s"
        time.sleep(0.5)


def selector_labels(rendered: dict) -> dict[str, str]:
    key, value = rendered["environment"]["SELECTOR"].split("=", 1)
    return {key: value}


def pod(name: str, rendered: dict, *, labelled: bool = True, overlay: str | None = None,
        held: bool = False) -> dict:
    """A pod of istiod's Deployment as the lookup sees it: the selector's label (unless not `labelled`), the
    overlay annotation (`overlay`, the rendered one by default).

    KWOK runs it on its node, and deletes a deleted pod at once (its pod-delete stage clears the finalizers).
    A `held` pod is out of KWOK's reach instead: no scheduler takes it (its schedulerName is none there), the
    test sets its phase, and a finalizer keeps it Terminating once deleted, as a real pod stays for its grace
    period."""
    environment = rendered["environment"]
    spec: dict = {"containers": [{"name": "istio-proxy", "image": PROXY_IMAGE}], "terminationGracePeriodSeconds": 1}
    metadata: dict = {
        "name": name,
        "labels": selector_labels(rendered) if labelled else {"app": "unrelated"},
        "annotations": {environment["OVERLAY_ANNOTATION"]: overlay or environment["OVERLAY"]},
    }
    if held:
        spec["schedulerName"] = "held-by-the-test"
        metadata["finalizers"] = ["istio-proxy-debug.test/hold"]
    else:
        spec["nodeName"] = NODE
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


def phases(api_server: ControlPlane, namespace: str) -> dict[str, str]:
    done = api_server.kubectl("get", "pods", "-n", namespace, "-o", "json")
    return {p["metadata"]["name"]: p.get("status", {}).get("phase", "") for p in json.loads(done.stdout)["items"]}


def held_status(ready: bool) -> str:
    """A held pod's status as a kubelet would report it: Running, istio-proxy ready or not."""
    proxy = {"name": "istio-proxy", "image": PROXY_IMAGE, "imageID": "", "ready": ready, "restartCount": 0,
             "started": True, "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}
    return json.dumps({"status": {"phase": "Running", "containerStatuses": [proxy]}})


def create(api_server: ControlPlane, namespace: str, *pods: dict, ready: bool = True) -> None:
    """`pods` created, and each Running before this returns (KWOK's, or set for a held one, its istio-proxy
    `ready` or not)."""
    for manifest in pods:
        api_server.kubectl("apply", "-n", namespace, "-f", "-", stdin=json.dumps(manifest))
        if manifest["spec"].get("schedulerName"):
            api_server.kubectl("patch", "pod", manifest["metadata"]["name"], "-n", namespace,
                               "--subresource=status", "--type=merge", "-p", held_status(ready))
    names = {p["metadata"]["name"] for p in pods}
    wait_for(f"pods {sorted(names)} Running in {namespace}",
             lambda: all(phases(api_server, namespace).get(n) == "Running" for n in names))


def lookup_env(api_server: ControlPlane, rendered: dict, namespace: str, wait_seconds: int | None = None,
               kubeconfig: Path | None = None, **extra: str) -> dict[str, str]:
    environment = rendered["environment"]
    values = {"NAMESPACE": namespace, "KUBECONFIG": str(kubeconfig or api_server.kubeconfig)}
    if wait_seconds is not None:
        values["WAIT_SECONDS"] = str(wait_seconds)
    path = f"{api_server.kubectl_path.parent}:{os.environ.get('PATH', '')}"
    return {**os.environ, **environment, **values, "PATH": path, **extra}


def command(rendered: dict) -> list[str]:
    return [*rendered["interpreter"], rendered["create"]]


def run_lookup(api_server: ControlPlane, rendered: dict, namespace: str, wait_seconds: int | None = None,
               timeout: float = 120, **env) -> tuple[subprocess.CompletedProcess, float]:
    """The rendered command run to its end (at most `timeout` s); its result and how long it took."""
    started = time.monotonic()
    done = subprocess.run(command(rendered), env=lookup_env(api_server, rendered, namespace, wait_seconds, **env),
                          capture_output=True, text=True, timeout=timeout)
    return done, time.monotonic() - started


def last_line(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr}"
    return done.stdout.strip().splitlines()[-1]


def test_the_script_passes_shellcheck():
    shellcheck = require_tool("shellcheck")
    script = Path(__file__).resolve().parents[1] / "components" / "scripts" / "gateway-pod.sh"
    done = subprocess.run([shellcheck, "--severity=style", str(script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_rendered_command_is_the_script(rendered):
    script = Path(__file__).resolve().parents[1] / "components" / "scripts" / "gateway-pod.sh"
    assert rendered["create"] == script.read_text()


def test_the_pod_with_the_current_overlay_is_taken(api_server, rendered, namespace):
    create(api_server, namespace,
           pod("gw-older", rendered, overlay=OLDER_OVERLAY),
           pod("gw-unlabelled", rendered, labelled=False),
           pod("gw-current", rendered))
    done, _ = run_lookup(api_server, rendered, namespace, wait_seconds=30)
    assert last_line(done) == "gw-current", done.stderr


def test_a_pod_that_comes_after_the_start_is_waited_for(api_server, rendered, namespace):
    create(api_server, namespace, pod("gw-older", rendered, overlay=OLDER_OVERLAY))
    delay = 5
    process = subprocess.Popen(command(rendered), env=lookup_env(api_server, rendered, namespace, 60),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(delay)
        assert process.poll() is None, f"the lookup ended before the pod was there: {process.communicate()}"
        create(api_server, namespace, pod("gw-current", rendered))
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    done = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    assert last_line(done) == "gw-current", stderr


def test_a_terminating_pod_is_not_taken(api_server, rendered, namespace):
    """The held pod is taken while it lives (so only its deletion can make the difference), not once it is
    Terminating; its replacement is."""
    create(api_server, namespace, pod("gw-current", rendered, held=True))
    assert last_line(run_lookup(api_server, rendered, namespace, wait_seconds=30)[0]) == "gw-current"
    assert phases(api_server, namespace)["gw-current"] == "Running", "taken while Running, as deleted"

    api_server.kubectl("delete", "pod", "gw-current", "-n", namespace, "--wait=false")
    # Only the deletion time is sure from here on: kube-controller-manager's pod GC may already have set the
    # phase of a Terminating pod that no node runs to Failed.
    deleted = api_server.kubectl("get", "pod", "gw-current", "-n", namespace, "-o",
                                 "jsonpath={.metadata.deletionTimestamp}").stdout.strip()
    assert deleted, "the held pod is Terminating, with its deletion time"
    done, _ = run_lookup(api_server, rendered, namespace, wait_seconds=3)
    assert done.returncode != 0, done.stdout
    # Listed with its deletion time, whatever its phase by then.
    assert re.search(rf"^gw-current\t\w+\t{re.escape(deleted)}\t", done.stderr, re.MULTILINE), done.stderr

    create(api_server, namespace, pod("gw-replacement", rendered))
    assert last_line(run_lookup(api_server, rendered, namespace, wait_seconds=30)[0]) == "gw-replacement"


def test_attach_mode_waits_for_a_ready_envoy_and_startup_mode_does_not(api_server, rendered, namespace):
    """The rendered (attach) lookup does not take a Running pod whose istio-proxy is not ready (Envoy is not up,
    or crash-looping); a startup lookup does: there nothing runs Envoy until the developer starts it."""
    assert rendered["environment"]["READY"] == "true"
    create(api_server, namespace, pod("gw-starting", rendered, held=True), ready=False)
    done, _ = run_lookup(api_server, rendered, namespace, wait_seconds=3)
    assert done.returncode != 0 and "gw-starting\tRunning\t" in done.stderr, done.stderr
    startup = resource(evaluate("dev", "target=waypoint", "istioVersion=1.30.3", "mode=startup"),
                       "target-waypoint-pod")["inputs"]
    assert startup["environment"]["READY"] == "false"
    done, _ = run_lookup(api_server, rendered, namespace, wait_seconds=3, READY="false")
    assert last_line(done) == "gw-starting"


def test_nothing_matching_fails_in_time_and_names_what_it_saw(api_server, rendered, namespace):
    create(api_server, namespace, pod("gw-older", rendered, overlay=OLDER_OVERLAY),
           pod("gw-unlabelled", rendered, labelled=False))
    done, took = run_lookup(api_server, rendered, namespace, wait_seconds=3, timeout=60)
    assert done.returncode != 0, done.stdout
    assert took < 3 + 20, f"took {took:.1f} s with WAIT_SECONDS=3"
    environment = rendered["environment"]
    assert environment["SELECTOR"] in done.stderr and namespace in done.stderr, done.stderr
    # The pods seen: the labelled one, with its phase, its (older) overlay and its image; not the unlabelled one.
    assert f"gw-older\tRunning\t\t{OLDER_OVERLAY}\t{PROXY_IMAGE}" in done.stderr, done.stderr
    assert "gw-unlabelled" not in done.stderr
    assert done.stdout.strip() == ""


def test_no_pod_at_all_is_said_so(api_server, rendered, namespace):
    done, _ = run_lookup(api_server, rendered, namespace, wait_seconds=3, timeout=60)
    assert done.returncode != 0, done.stdout
    assert done.stderr.rstrip().endswith("none"), done.stderr


class SilentServer:
    """A TLS server on loopback that takes every connection and request and never answers: an API server that
    hangs."""

    def __init__(self, folder: Path):
        openssl = require_tool("openssl")
        self.cert, key = folder / "silent.crt", folder / "silent.key"
        subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                        str(self.cert), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext",
                        "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(self.cert, key)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            self.connections.append(connection)
            threading.Thread(target=self._hold, args=(connection,), daemon=True).start()

    def _hold(self, connection: socket.socket) -> None:
        try:
            with self.context.wrap_socket(connection, server_side=True) as tls:
                while tls.recv(65536):
                    pass
        except OSError:
            pass

    def close(self) -> None:
        self.listener.close()
        for connection in self.connections:
            connection.close()


def test_a_server_that_never_answers_does_not_hold_the_lookup_past_its_bound(api_server, rendered, namespace,
                                                                               tmp_path):
    """kubectl has talked to the cluster before (its discovery cache is filled, as on a developer's machine),
    then the API server takes connections but answers nothing: the lookup still ends, within WAIT_SECONDS and
    one request's time-out, saying kubectl failed."""
    server = SilentServer(tmp_path)
    try:
        kubeconfig = tmp_path / "silent.kubeconfig"
        text = re.sub(r"server: \S+", f"server: https://127.0.0.1:{server.port}", api_server.kubeconfig.read_text())
        text = re.sub(r"certificate-authority: \S+", f"certificate-authority: {server.cert}", text)
        assert text.count(str(server.port)) == 1 and text.count(str(server.cert)) == 1, text
        kubeconfig.write_text(text)
        home = tmp_path / "home"
        cache = home / ".kube" / "cache" / "discovery"
        # The real server's discovery, cached under the silent server's address.
        api_server.kubectl("get", "pods", "-n", namespace, "--cache-dir", str(home / ".kube" / "cache"))
        (real,) = cache.iterdir()
        shutil.copytree(real, cache / f"127.0.0.1_{server.port}")
        done, took = run_lookup(api_server, rendered, namespace, wait_seconds=3, timeout=120,
                                kubeconfig=kubeconfig, HOME=str(home))
    finally:
        server.close()
    assert done.returncode != 0, done.stdout
    assert "kubectl failed: Unable to connect to the server" in done.stderr, done.stderr
    assert took < 3 + 2 * 20 + 10, f"took {took:.1f} s with WAIT_SECONDS=3"
