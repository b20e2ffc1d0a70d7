"""A real Kubernetes node for the tests: the toolchain's kubelet (1.34.4) in a node container on the tests' Docker
engine (tests/docker_engine.py), joined to a control plane of tests/control_plane.py beside KWOK's fake node, running
real pods through its containerd's CRI.

KWOK plays a kubelet's API side only: no container runs, no `kubectl exec`, `logs` or `port-forward` answers. What a
stack does on a real node (a privileged pod in the node's namespaces, a port forwarded to a pod) needs a real kubelet,
and none can be downloaded here: `make toolchain` builds it from Kubernetes' own module, at the control plane's
release.

The node is a container as kind makes one, on this machine's constraints:
- its image: Debian bookworm (the stand-in of tests/docker_engine.py) with Debian's containerd, runc and CNI plugins
  (/usr/lib/cni: bridge, host-local, loopback), what kind's base image packages (iptables, iproute2, util-linux,
  procps, bash), and python3 for tests/runc_within_bounds.py, which is containerd's runc here: this machine's bounding
  set lacks CAP_SYS_RESOURCE, so plain runc cannot start a privileged pod's container. The pods' sandbox image is a
  pause built here (tests/data/pause, FROM scratch) under containerd's default name, registry.k8s.io/pause:3.10,
  imported at start. The image is built once per machine, tagged by the hash of what goes into it;
- privileged (the engine's own runtime is runc_within_bounds.py too), in a cgroup namespace of its own (the kubelet's
  cgroups go below the container's, never at the machine's roots), on the engine's network namespace (`--network
  host`): the node's address is the engine's side of its link, ENGINE_SIDE (10.203.0.2), where the API server on the
  machine reaches the kubelet's port for exec, logs and port-forward; the kubelet reaches the API server on
  HOST_SIDE (10.203.0.1), where the control plane must listen (control_plane(..., address=HOST_SIDE)). The bridge
  CNI's bridge and the kubelet's iptables chains are in the engine's namespace, not the machine's;
- containerd and the kubelet are started by ENTRY_SCRIPT under docker's init; their logs are in a folder of the
  test's, so a time-out shows their tails even after the container is gone. The kubelet sets kernel settings that no
  namespace holds (vm.overcommit_memory, kernel.panic, kernel.panic_on_oops): in the node's mount namespace only, the
  entry script shows it the values it wants, so it writes none and the machine's stay as they are;
- the kubelet authenticates with the control plane's admin token and serves its API to anyone (anonymous,
  AlwaysAllow): a test cluster's shortcut, on the engine's link only.

The machine's cgroups are v1 (hybrid): kubelet 1.34 still runs there, told not to fail (failCgroupV1: false).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from components.kind_cluster import CONTAINERD_REGISTRY_PATCH
from tests.conftest import ROOT
from tests.control_plane import ControlPlane
from tests.docker_engine import (
    BOOKWORM,
    CLIENT,
    ENGINE_SIDE,
    HOST_SIDE,
    STAND_IN_LABEL,
    Engine,
    base_image,
    made_by,
)

NODE_NAME = "ipd-kubelet-node"
# Every node container made here carries it: one without it is someone else's, and left alone.
LABEL = "istio-proxy-debug.test=kubelet-node"
NODE_IMAGE = "istio-proxy-debug-stand-in/kubelet-node"
# containerd's own default sandbox image name: the stand-in is built here from tests/data/pause.
PAUSE_IMAGE = "registry.k8s.io/pause:3.10"
PAUSE_SOURCE = ROOT / "tests" / "data" / "pause" / "main.go"
# A stand-in image for the tests' pods, with what they run (python3's http.server, pgrep).
POD_IMAGE = "istio-proxy-debug-stand-in/bookworm-python3:latest"
POD_IMAGE_PACKAGES = ("python3", "procps")
POD_SUBNET = "10.244.0.0/24"
KUBELET_VERSION = "v1.34.4"
# In the node container.
KUBELET = "/usr/local/bin/kubelet"
CONFIG_DIR = "/etc/ipd-node"
LOG_DIR = "/var/log/ipd-node"
RUNC_WRAPPER = "/usr/local/bin/runc-within-bounds"

# containerd 1.6's CRI (config version 2), as kind's base config sets it, with this machine's runc wrapper and
# Debian's CNI plugin folder; registries' hosts.toml in CERTS_DIR, as the stack's containerdConfigPatches give a kind
# node (so the stack's containerd entry works here as there).
CONTAINERD_CONFIG = f"""version = 2

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  tolerate_missing_hugepages_controller = true
  # No container's oom_score_adj below containerd's own (0): lowering it needs CAP_SYS_RESOURCE, which this
  # machine's bounding set lacks (the kubelet asks -998 for every sandbox, and runc would fail to start it).
  restrict_oom_score_adj = true
[plugins."io.containerd.grpc.v1.cri".containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
  BinaryName = "{RUNC_WRAPPER}"
  SystemdCgroup = false
[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "/usr/lib/cni"
  conf_dir = "/etc/cni/net.d"
""" + CONTAINERD_REGISTRY_PATCH
CNI_CONFLIST = json.dumps({
    "cniVersion": "1.0.0",
    "name": "ipd-pods",
    "plugins": [
        {"type": "bridge", "bridge": "ipd-cni0", "isGateway": True, "ipMasq": False, "hairpinMode": True,
         "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_SUBNET}]], "routes": [{"dst": "0.0.0.0/0"}]}},
        {"type": "loopback"},
    ],
}, indent=2)
# The node's main process, under docker's init: containerd, the sandbox image imported, then the kubelet with the
# arguments given. Checked by shellcheck in tests/test_kubelet_node.py.
ENTRY_SCRIPT = f"""#!/bin/bash
set -euo pipefail
logs={LOG_DIR}
# The kubelet's mounts under /var/lib/kubelet (the pods' volumes) reach the pods' containers: shared propagation, as
# kind's node entrypoint makes it.
mount --make-rshared /
# The kubelet sets kernel settings no namespace holds (the machine's own). In this mount namespace only, it reads the
# values it wants, so it writes none.
mkdir -p /run/ipd-node/sysctl
for setting in vm/overcommit_memory=1 kernel/panic=10 kernel/panic_on_oops=1; do
  name=${{setting%%=*}}
  file=/run/ipd-node/sysctl/${{name//\\//.}}
  echo "${{setting#*=}}" >"$file"
  mount --bind "$file" "/proc/sys/$name"
done
containerd >"$logs/containerd.log" 2>&1 &
containerd_pid=$!
until ctr version >/dev/null 2>&1; do
  kill -0 "$containerd_pid" 2>/dev/null || {{ echo "containerd exited" >&2; exit 1; }}
  sleep 0.2
done
# The pods' sandbox image: nothing can be pulled here.
ctr --namespace k8s.io images import --all-platforms /opt/ipd-node/pause.tar >/dev/null
exec {KUBELET} "$@" >"$logs/kubelet.log" 2>&1
"""
# What the node leaves in the engine's network namespace, which it shares: the CNI bridge and the kubelet's iptables
# chains (KUBE-FIREWALL drops connections to loopback from other addresses). Run after the node is gone, from its
# image (the same iptables backend). Checked by shellcheck in tests/test_kubelet_node.py.
CLEANUP_SCRIPT = """#!/bin/bash
ip link del ipd-cni0 2>/dev/null || true
for iptables in iptables ip6tables; do
  for hook in INPUT OUTPUT; do
    while "$iptables" -D "$hook" -j KUBE-FIREWALL 2>/dev/null; do :; done
  done
  for table in filter nat mangle; do
    for chain in KUBE-FIREWALL KUBE-KUBELET-CANARY KUBE-IPTABLES-HINT; do
      if "$iptables" -t "$table" -F "$chain" 2>/dev/null; then "$iptables" -t "$table" -X "$chain"; fi
    done
  done
done
"""
NODE_DOCKERFILE = f"""FROM {BOOKWORM}
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \\
      containerd runc containernetworking-plugins iptables iproute2 util-linux procps bash python3 \\
 && rm -rf /var/lib/apt/lists/*
COPY config.toml /etc/containerd/config.toml
COPY 10-ipd-pods.conflist /etc/cni/net.d/10-ipd-pods.conflist
COPY runc-within-bounds {RUNC_WRAPPER}
COPY entry /usr/local/bin/ipd-node-entry
COPY pause.tar /opt/ipd-node/pause.tar
LABEL {STAND_IN_LABEL}=kubelet-node
ENTRYPOINT ["/usr/local/bin/ipd-node-entry"]
"""
PAUSE_DOCKERFILE = f"""FROM scratch
COPY pause /pause
LABEL {STAND_IN_LABEL}=tests-data-pause
ENTRYPOINT ["/pause"]
"""


def kubelet_config() -> str:
    """The KubeletConfiguration of the node."""
    return f"""apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This machine's cgroups are v1 (hybrid): kubelet 1.34 still runs on cgroup v1, but only when told not to fail there.
failCgroupV1: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
failSwapOn: false
# Tests only: the API server (and anyone on the engine's link) may use the kubelet's API without credentials.
authentication:
  anonymous:
    enabled: true
  webhook:
    enabled: false
authorization:
  mode: AlwaysAllow
address: {ENGINE_SIDE}
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
# The node's folders are on the machine's disk, whatever else fills it: no ephemeral storage accounting or eviction,
# and no image garbage collection (imported images cannot be pulled again).
localStorageCapacityIsolation: false
evictionHard:
  memory.available: 50Mi
  nodefs.available: 1%
  imagefs.available: 1%
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
serializeImagePulls: false
"""


def _kubeconfig(plane: ControlPlane) -> str:
    """The control plane's kubeconfig (its server, the admin's token) with its certificate authority inline."""
    config = yaml.safe_load(plane.kubeconfig.read_text())
    cluster = config["clusters"][0]["cluster"]
    ca = Path(cluster.pop("certificate-authority")).read_bytes()
    cluster["certificate-authority-data"] = base64.b64encode(ca).decode()
    return yaml.safe_dump(config)


def _api_server(plane: ControlPlane) -> str:
    return yaml.safe_load(plane.kubeconfig.read_text())["clusters"][0]["cluster"]["server"]


def _image_exists(engine: Engine, reference: str) -> bool:
    return engine.docker("image", "inspect", reference, check=False).returncode == 0


def pause_image(engine: Engine, context: Path) -> str:
    """PAUSE_IMAGE in the engine: tests/data/pause built static (the toolchain's go) and packaged FROM scratch."""
    if _image_exists(engine, PAUSE_IMAGE):
        return PAUSE_IMAGE
    context.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "GOTOOLCHAIN": "local", "GOFLAGS": "", "CGO_ENABLED": "0"}
    done = subprocess.run([shutil.which("go") or "go", "build", "-trimpath", "-ldflags=-s -w", "-o",
                           str(context / "pause"), str(PAUSE_SOURCE)], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, f"building {PAUSE_SOURCE}: {done.stderr}"
    (context / "Dockerfile").write_text(PAUSE_DOCKERFILE)
    engine.docker("build", "--tag", PAUSE_IMAGE, str(context))
    return PAUSE_IMAGE


def _node_files() -> dict[str, str]:
    return {"Dockerfile": NODE_DOCKERFILE, "config.toml": CONTAINERD_CONFIG, "10-ipd-pods.conflist": CNI_CONFLIST,
            "entry": ENTRY_SCRIPT, "runc-within-bounds": (ROOT / "tests" / "runc_within_bounds.py").read_text(),
            "pause.go": PAUSE_SOURCE.read_text()}


def node_image(engine: Engine, context: Path) -> str:
    """The node image, built once per machine: tagged by the hash of everything that goes into it."""
    files = _node_files()
    digest = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:12]
    reference = f"{NODE_IMAGE}:{digest}"
    if _image_exists(engine, reference):
        return reference
    base_image(engine, BOOKWORM)
    context.mkdir(parents=True, exist_ok=True)
    pause = pause_image(engine, context / "pause")
    with open(context / "pause.tar", "wb") as tar:
        saved = subprocess.run([CLIENT, "save", pause], env=engine.env, stdout=tar, stderr=subprocess.PIPE,
                               timeout=300)
    assert saved.returncode == 0, saved.stderr.decode()
    for name, text in files.items():
        if name != "pause.go":
            (context / name).write_text(text)
    for name in ("entry", "runc-within-bounds"):
        (context / name).chmod(0o755)
    engine.docker("build", "--tag", reference, str(context), timeout=1800)
    return reference


def pod_image(engine: Engine) -> str:
    """POD_IMAGE in the engine: Debian bookworm with python3 and procps, by debootstrap (tests/docker_engine.py)."""
    return base_image(engine, POD_IMAGE, include=POD_IMAGE_PACKAGES)


def cri_name(reference: str) -> str:
    """`reference` as containerd and the CRI name it (Docker's normalisation): docker.io/library/ for an official
    image, docker.io/ for a path without a registry, :latest without a tag or digest."""
    first, _, rest = reference.partition("/")
    if not rest:
        name = f"docker.io/library/{reference}"
    elif "." in first or ":" in first or first == "localhost":
        name = reference
    else:
        name = f"docker.io/{reference}"
    last = name.rsplit("/", 1)[1]
    return name if ":" in last or "@" in last else f"{name}:latest"


@dataclass
class KubeletNode:
    engine: Engine
    plane: ControlPlane
    # The Node's name (the kubelet's --hostname-override) and the node container's.
    name: str
    container: str
    # The node's InternalIP: the engine's side of its link.
    address: str
    # On this machine: the kubelet's and containerd's logs.
    logs: Path
    # Seconds: "image" (the node image made or found), "ready" (container started until the Node is Ready).
    timings: dict[str, float] = field(default_factory=dict)

    def exec(self, *args: str, check: bool = True, stdin: str | None = None,
             timeout: float = 120) -> subprocess.CompletedProcess:
        """`args` run in the node container (its mount, PID and network namespaces)."""
        flags = ["--interactive"] if stdin is not None else []
        return self.engine.docker("exec", *flags, self.container, *args, check=check, input=stdin,
                                  timeout=timeout)

    def ctr(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        """containerd's ctr in the CRI's namespace (k8s.io), where the kubelet's images and containers are."""
        return self.exec("ctr", "--namespace", "k8s.io", *args, check=check, timeout=timeout)

    def import_image(self, reference: str) -> str:
        """The engine's image `reference` loaded into the node's containerd for the kubelet (`docker save | ctr
        images import`, as `kind load docker-image` does); returns the name the CRI knows it by."""
        save = subprocess.Popen([CLIENT, "save", reference], env=self.engine.env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        imported = subprocess.run([CLIENT, "exec", "--interactive", self.container, "ctr", "--namespace", "k8s.io",
                                   "images", "import", "--all-platforms", "-"], env=self.engine.env,
                                  stdin=save.stdout, capture_output=True, text=True, timeout=600)
        save.stdout.close()
        saved = save.wait(timeout=60)
        assert saved == 0, f"docker save {reference}: {save.stderr.read().decode()}"
        assert imported.returncode == 0, f"importing {reference} into {self.container}: {imported.stderr}"
        name = cri_name(reference)
        listed = self.ctr("images", "ls", "--quiet").stdout.split()
        assert name in listed, f"{name} not among the node's images after the import: {listed}"
        return name

    def log_tails(self, lines: int = 40) -> str:
        """The last `lines` of the kubelet's and containerd's logs, and of the container's own output."""
        tails = []
        for name in ("kubelet", "containerd"):
            path = self.logs / f"{name}.log"
            text = path.read_text(errors="replace") if path.exists() else "(no log)"
            tails.append(f"--- {name}.log:\n" + "\n".join(text.splitlines()[-lines:]))
        done = self.engine.docker("logs", "--tail", str(lines), self.container, check=False)
        tails.append(f"--- docker logs {self.container}:\n{done.stdout}{done.stderr}")
        return "\n".join(tails)

    def running(self) -> bool:
        done = self.engine.docker("inspect", "--format", "{{.State.Running}}", self.container, check=False)
        return done.stdout.strip() == "true"

    def ready(self) -> bool:
        done = self.plane.kubectl("get", "node", self.name, "-o",
                                  "jsonpath={.status.conditions[?(@.type=='Ready')].status}", check=False,
                                  timeout=30)
        return done.stdout.strip() == "True"


def _claim(engine: Engine, name: str) -> None:
    """Removes an earlier run's node container `name`; one this module did not make is left alone."""
    made = made_by(engine, "container", name, LABEL)
    if made is False:
        raise AssertionError(f"a container named {name} that these tests did not make exists on this Docker engine")
    if made:
        engine.docker("rm", "--force", "--volumes", name)


@contextlib.contextmanager
def kubelet_node(engine: Engine, plane: ControlPlane, bin_dir: Path, work: Path, name: str = NODE_NAME,
                 timeout: float = 240) -> Iterator[KubeletNode]:
    """The node container `name` running containerd and the kubelet of `bin_dir`, registered with `plane` (whose API
    server must listen on HOST_SIDE) as Node `name`; yielded once that Node is Ready (within `timeout` seconds, or
    an AssertionError with the kubelet's and containerd's log tails). The container (with its volumes) and the Node
    are removed afterwards."""
    assert engine.in_netns, "the real node needs the tests' own engine, in its network namespace"
    server = _api_server(plane)
    assert f"//{HOST_SIDE}:" in server, f"the kubelet reaches the API server on {HOST_SIDE} only, not at {server}"
    kubelet = (bin_dir / "kubelet").resolve()
    started = time.monotonic()
    image = node_image(engine, work / "node-image")
    node = KubeletNode(engine, plane, name, name, ENGINE_SIDE, work / "logs")
    node.timings["image"] = time.monotonic() - started
    config = work / "config"
    for folder in (config, node.logs):
        folder.mkdir(parents=True, exist_ok=True)
    (config / "kubelet.yaml").write_text(kubelet_config())
    (config / "kubeconfig").write_text(_kubeconfig(plane))
    _claim(engine, name)
    try:
        started = time.monotonic()
        engine.docker(
            "run", "--detach", "--name", name, "--label", LABEL, "--init", "--privileged", "--cgroupns", "private",
            "--network", "host",
            # The engine's client config hands every container the tests' forward proxy (for Debian's archive);
            # the kubelet reaches the API server directly.
            "--env", "HTTP_PROXY=", "--env", "http_proxy=", "--env", "HTTPS_PROXY=", "--env", "https_proxy=",
            "--volume", "/var/lib/containerd", "--volume", "/var/lib/kubelet",
            "--mount", f"type=bind,source={kubelet},target={KUBELET},readonly",
            "--mount", f"type=bind,source={config},target={CONFIG_DIR},readonly",
            "--mount", f"type=bind,source={node.logs},target={LOG_DIR}",
            image, f"--config={CONFIG_DIR}/kubelet.yaml", f"--kubeconfig={CONFIG_DIR}/kubeconfig",
            f"--hostname-override={name}", f"--node-ip={ENGINE_SIDE}",
            "--node-labels=istio-proxy-debug.test/kubelet=real", "--v=2")
        deadline = started + timeout
        while not node.ready():
            if not node.running():
                raise AssertionError(f"the node container {name} stopped before its Node was Ready:\n"
                                     f"{node.log_tails()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"Node {name} was not Ready within {timeout:.0f} s:\n{node.log_tails()}")
            time.sleep(1)
        node.timings["ready"] = time.monotonic() - started
        (work / "join-times.json").write_text(json.dumps(node.timings))
        yield node
    finally:
        engine.docker("rm", "--force", "--volumes", name, check=False)
        engine.docker("run", "--rm", "--privileged", "--network", "host", "--entrypoint", "bash", image, "-c",
                      CLEANUP_SCRIPT, check=False)
        plane.kubectl("delete", "node", name, "--ignore-not-found", "--wait=false", check=False)
