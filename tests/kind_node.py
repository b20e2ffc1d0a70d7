"""A kind node stand-in on the tests' Docker engine (tests/docker_engine.py), and pods on it.

The node is a container as kind makes one: privileged, on a user-defined network, running Debian's containerd on
kind's containerd config (version 2, plus the stack's own `containerdConfigPatches`) as its main process, with its
containerd root on a volume. The stack's node scripts reach it with `docker exec -i <node> bash -s`.

A pod on it is what containerd makes of one, by hand: a sandbox whose pause process holds the pod's UTS namespace
(hostname = the pod's name), and istio-proxy joining it with its own PID and mount namespaces, the pod's namespace in
its environment (POD_NAMESPACE, as Istio gives it), its root the image the node pulled through its own containerd
(so through the registry entry the stack wrote), mounted writable as a container's is, running the image's
/usr/local/bin/envoy.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from components.kind_cluster import CERTS_DIR, kind_config
from tests.control_plane import ControlPlane
from tests.docker_engine import BOOKWORM, Engine, base_image
from tests.test_docker_engine import privileged_flags

NODE_IMAGE = "istio-proxy-debug-stand-in/kind-node:bookworm"
# kind's base image packages what the node scripts use (images/base/Dockerfile: iptables, iproute2,
# util-linux, procps, bash); containerd is Debian's here, kind builds its own.
NODE_IMAGE_DOCKERFILE = f"""FROM {BOOKWORM}
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \\
      containerd iptables iproute2 util-linux procps \\
 && rm -rf /var/lib/apt/lists/* \\
 && cp /bin/sleep /usr/local/bin/pause
COPY config.toml /etc/containerd/config.toml
"""
# kind's own containerd config (images/base/files/etc/containerd/config.toml), less what needs kind's files
# (its base runtime spec, fuse-overlayfs, systemd cgroups); the stack's patches are appended to it.
KIND_BASE_CONTAINERD_CONFIG = """version = 2

[plugins."io.containerd.grpc.v1.cri".containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.10"
  tolerate_missing_hugepages_controller = true
  restrict_oom_score_adj = false
"""
# Where a pod's istio-proxy root (the pulled image) is mounted on the node, below the pod's own folder.
PODS_DIR = "/run/ipd-test/pods"
ENVOY = "/usr/local/bin/envoy"


def node_config() -> str:
    """kind's containerd config with the stack's containerdConfigPatches, as kind merges them (appended: the
    patch's table is not in the base config)."""
    patches = yaml.safe_load(kind_config())["containerdConfigPatches"]
    return KIND_BASE_CONTAINERD_CONFIG + "".join("\n" + patch for patch in patches)


def node_image(engine: Engine, context: Path) -> str:
    base_image(engine, BOOKWORM)
    context.mkdir(parents=True, exist_ok=True)
    (context / "config.toml").write_text(node_config())
    (context / "Dockerfile").write_text(NODE_IMAGE_DOCKERFILE)
    engine.docker("build", "--tag", NODE_IMAGE, str(context))
    return NODE_IMAGE


def start_node(engine: Engine, name: str, network: str, context: Path, *extra: str) -> None:
    """The node container `name` on `network` (`extra`: more `docker run` options), once its containerd answers."""
    image = node_image(engine, context)
    engine.docker("run", "--detach", "--name", name, "--hostname", name, "--init", *privileged_flags(),
                  "--network", network, *extra,
                  # The engine's client config hands every container the test's forward proxy (for Debian's
                  # archive); the node reaches the registry directly, as a kind node without a proxy does.
                  "--env", "HTTP_PROXY=", "--env", "http_proxy=",
                  "--volume", "/var/lib/containerd", image, "containerd")
    deadline = time.monotonic() + 60
    while engine.docker("exec", name, "ctr", "version", check=False).returncode != 0:
        assert time.monotonic() < deadline, engine.docker("logs", name, check=False).stderr[-3000:]
        time.sleep(0.2)


def firewall(engine: Engine, node: str, ports: list[int]) -> None:
    """Inbound TCP to the node only on `ports` (and replies to what the node opened itself)."""
    for rule in (["-i", "lo", "-j", "ACCEPT"],
                 ["-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"],
                 ["-p", "tcp", "-m", "multiport", "--dports", ",".join(map(str, ports)), "-j", "ACCEPT"],
                 ["-p", "tcp", "-j", "DROP"]):
        engine.docker("exec", node, "iptables", "-A", "INPUT", *rule)


def pull(engine: Engine, node: str, reference: str) -> subprocess.CompletedProcess:
    """containerd on the node pulls `reference` with the hosts folder kind's config names (no --plain-http), as
    the kubelet's CRI pull would."""
    return engine.docker("exec", node, "ctr", "--namespace", "k8s.io", "images", "pull", "--hosts-dir", CERTS_DIR,
                         reference, check=False, timeout=600)


def node_pids(engine: Engine, node: str, name: str) -> list[int]:
    done = engine.docker("exec", node, "pgrep", "-x", name, check=False)
    return [int(p) for p in done.stdout.split()]


@dataclass(frozen=True)
class Pod:
    name: str
    # Where istio-proxy's root (the pulled image) is mounted on the node.
    root: str
    # Node pids: the sandbox's pause, and istio-proxy's envoy.
    pause: int
    envoy: int


def start_pod(engine: Engine, node: str, namespace: str, pod: str, reference: str,
              envoy_pid: int | None = None) -> Pod:
    """Pod `pod` of `namespace` on the node, its istio-proxy from the pulled image `reference` with the pod's
    namespace in its environment, as Istio's injector gives it (POD_NAMESPACE); with `envoy_pid`, envoy gets that pid
    in its PID namespace (as a walkthrough's recorded pid)."""
    root = f"{PODS_DIR}/{namespace}/{pod}"
    before = {name: set(node_pids(engine, node, name)) for name in ("pause", "envoy")}
    engine.docker("exec", node, "mkdir", "-p", root)
    engine.docker("exec", node, "ctr", "--namespace", "k8s.io", "images", "mount", "--rw", reference, root)
    engine.docker("exec", "--detach", node, "unshare", "--uts", "--pid", "--mount", "--mount-proc", "--fork",
                  "--kill-child", "--", "bash", "-c", f"hostname {shlex.quote(pod)} && exec pause infinity")
    pause = _new_pid(engine, node, "pause", before["pause"])
    # Into the image's root as runc does it (pivot_root . . then detach the old root); then, for a wanted pid,
    # fork until the next pid is it, and start envoy.
    skip = (f'while :; do /bin/true & wait $!; [ "$!" -lt {envoy_pid - 1} ] || break; done\n'
            if envoy_pid is not None else "")
    container = f"""set -e
mount --make-rprivate /
cd {shlex.quote(root)}
mount -t proc proc proc
mount --rbind /dev dev
pivot_root . .
umount -l .
cd /
{skip}POD_NAMESPACE={shlex.quote(namespace)} {ENVOY} &
wait
"""
    engine.docker("exec", "--detach", node, "nsenter", "-t", str(pause), "-u", "--", "unshare", "--pid", "--mount",
                  "--fork", "--kill-child", "--", "bash", "-c", container)
    return Pod(pod, root, pause, _new_pid(engine, node, "envoy", before["envoy"]))


def stop_pod(engine: Engine, node: str, pod: Pod) -> None:
    """The pod's processes killed (pause, then everything in its namespaces), and its root unmounted."""
    engine.docker("exec", node, "kill", "-KILL", str(pod.envoy), str(pod.pause), check=False)
    engine.docker("exec", node, "ctr", "--namespace", "k8s.io", "images", "unmount", pod.root, check=False)


def _new_pid(engine: Engine, node: str, name: str, before: set[int]) -> int:
    deadline = time.monotonic() + 30
    while not (new := set(node_pids(engine, node, name)) - before):
        assert time.monotonic() < deadline, f"no new {name} process started on the node"
        time.sleep(0.1)
    assert len(new) == 1, f"several new {name} processes on the node: {sorted(new)}"
    return new.pop()


def lldb_in(engine: Engine, container: str, commands: list[str], timeout: float = 300) -> str:
    """The lldb client in `container`, in batch mode, running `commands`; what it printed."""
    args = [a for command in commands for a in ("-o", command)]
    done = engine.docker("exec", container, "lldb", "--batch", "--no-lldbinit", *args, check=False, timeout=timeout)
    return done.stdout + done.stderr


# --- the node as a Kubernetes node: KWOK plays its kubelet's API side, the pods' sandboxes are started here --------

# The annotation the stand-in kubelet puts on a pod once its sandbox runs; KWOK reports the pod Ready only then.
SANDBOX_STARTED = "istio-proxy-debug.test/sandbox"
# The image the stand-in runs as istio-proxy: the one the injector would put there (no injector runs here).
PROXY_IMAGE_ANNOTATION = "sidecar.istio.io/proxyImage"


def kwok_pod_stages(kwok_module: Path) -> str:
    """KWOK's own pod stages (the module's kustomize/stage/pod/fast, its defaults), with the step to Ready held
    until the pod's sandbox has started on the node (SANDBOX_STARTED): a pod is Ready once its containers run, and
    the stack's next step (lldb-server, in the pod's namespaces) relies on that."""
    folder = kwok_module / "kustomize" / "stage" / "pod" / "fast"
    stages = []
    for name in yaml.safe_load((folder / "kustomization.yaml").read_text())["resources"]:
        stage = yaml.safe_load((folder / name).read_text())
        if stage["metadata"]["name"] == "pod-ready":
            stage["spec"]["selector"]["matchExpressions"].append(
                {"key": f'.metadata.annotations["{SANDBOX_STARTED}"]', "operator": "Exists"})
        stages.append(stage)
    assert any(s["metadata"]["name"] == "pod-ready" for s in stages), f"no pod-ready stage in {folder}"
    return yaml.safe_dump_all(stages)


class SandboxKubelet:
    """What the kubelet does for pods bound to `node` that KWOK cannot: their images pulled by the node's containerd
    and their sandboxes started (start_pod), then the pod marked for KWOK's Ready; a pod that is gone has its sandbox
    stopped. Polls the API server in a thread. A kubelet retries, so does this: `errors` is what went wrong and has
    not come right since (a pod's errors until its sandbox runs and is marked, or the pod is gone; the listing's
    until a listing answers; a sandbox that could not be stopped, for good); `history` is everything that went
    wrong, in order."""

    # The keys in `_failing` that are no pod's.
    LISTING, STOPPING = "listing the node's pods", "stopping sandboxes"

    def __init__(self, engine: Engine, plane: ControlPlane, node: str):
        self.engine, self.plane, self.node = engine, plane, node
        self.pods: dict[str, Pod] = {}
        # The pods (by uid) whose sandbox runs and which carry SANDBOX_STARTED.
        self.marked: set[str] = set()
        self.history: list[str] = []
        self._failing: dict[str, list[str]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def errors(self) -> list[str]:
        with self._lock:
            return [error for errors in self._failing.values() for error in errors]

    def __enter__(self) -> SandboxKubelet:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
        for pod in self.pods.values():
            stop_pod(self.engine, self.node, pod)

    def _failed(self, key: str, what: str, error: Exception) -> None:
        message = f"{what}: {type(error).__name__}: {error}"
        with self._lock:
            self.history.append(message)
            self._failing.setdefault(key, []).append(message)

    def _cleared(self, key: str) -> None:
        with self._lock:
            self._failing.pop(key, None)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            try:
                self._sync()
            except Exception as error:  # noqa: BLE001 (kept for the tests to report; the loop goes on)
                self._failed(self.LISTING, self.LISTING, error)

    def _sync(self) -> None:
        listed = self.plane.kubectl("get", "pods", "--all-namespaces", "--field-selector",
                                    f"spec.nodeName={self.node}", "-o", "json", timeout=30)
        current = {pod["metadata"]["uid"]: pod for pod in json.loads(listed.stdout)["items"]
                   if not pod["metadata"].get("deletionTimestamp")}
        self._cleared(self.LISTING)
        for uid in set(self.pods) - set(current):
            gone = self.pods.pop(uid)
            self.marked.discard(uid)
            try:
                stop_pod(self.engine, self.node, gone)
            except Exception as error:  # noqa: BLE001 (a sandbox left running: kept, for good)
                self._failed(self.STOPPING, f"stopping {gone.name}'s sandbox", error)
        # A pod that is gone can fail no more: what it went through stays in `history` only.
        with self._lock:
            for key in set(self._failing) - set(current) - {self.LISTING, self.STOPPING}:
                del self._failing[key]
        for uid, pod in current.items():
            if uid in self.marked:
                continue
            metadata = pod["metadata"]
            try:
                self._start(uid, metadata)
            except Exception as error:  # noqa: BLE001 (kept until the pod starts; retried next round)
                self._failed(uid, f"{metadata['namespace']}/{metadata['name']}", error)

    def _start(self, uid: str, metadata: dict) -> None:
        """The pod's sandbox started, unless it runs already, and the pod marked: a round that fails between the
        two marks it the next time."""
        if uid not in self.pods:
            reference = metadata.get("annotations", {}).get(PROXY_IMAGE_ANNOTATION)
            if reference is None:
                return
            pulled = pull(self.engine, self.node, reference)
            if pulled.returncode != 0:
                raise RuntimeError(f"pulling {reference}: {pulled.stderr.strip()[-500:]}")
            self.pods[uid] = start_pod(self.engine, self.node, metadata["namespace"], metadata["name"], reference)
        self.plane.kubectl("annotate", "pod", metadata["name"], "--namespace", metadata["namespace"],
                           f"{SANDBOX_STARTED}=true", "--overwrite")
        self.marked.add(uid)
        self._cleared(uid)
