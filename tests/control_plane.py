"""A Kubernetes control plane for the tests, from the binaries tools/toolchain.sh builds: etcd, kube-apiserver,
kube-controller-manager and kube-scheduler on loopback, and KWOK's controller in place of a kubelet (it marks
the nodes Ready and the pods scheduled to them Running and Ready; no container runs).

Everything listens on 127.0.0.1 only, on ports chosen free at start, with its data in the test's folder; the API
server, when asked, on another address of this machine instead (`address`: the host side of the tests' Docker
engine's link, where tests/kubelet_node.py's real kubelet reaches it). The admin's credential is a static token
(system:masters); the API server's serving certificate is the self-signed one it makes in its --cert-dir for its
advertised address (its bind address among the names), which the kubeconfig names as its certificate authority.

KWOK manages only the nodes annotated `kwok.x-k8s.io/node: fake` (NODE_MANIFEST's, and those of the tests that add
one), so a real kubelet's node beside them, and its pods, are left to that kubelet.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import stop

NODE = "kwok-node-0"
ADMIN_TOKEN = "istio-proxy-debug-tests-admin"
SERVICE_CIDR = "10.96.0.0/16"


@dataclass
class ControlPlane:
    kubeconfig: Path
    kubectl_path: Path

    def kubectl(self, *args: str, check: bool = True, stdin: str | None = None,
                timeout: float = 60) -> subprocess.CompletedProcess:
        done = subprocess.run([str(self.kubectl_path), "--kubeconfig", str(self.kubeconfig), *args], input=stdin,
                              capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)}: {done.stderr}")
        return done


def free_port(address: str = "127.0.0.1") -> int:
    return free_ports(address)[0]


def free_ports(*addresses: str) -> list[int]:
    """A free port on each address, all different (on one address): every socket stays bound until all are
    chosen, so the kernel cannot hand out one port twice (as it could to picks made one at a time, each socket
    closed before the next). They are free when this returns, not when a server binds them later: see ATTEMPTS."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in addresses]
        ports: list[int] = []
        for sock, address in zip(sockets, addresses, strict=True):
            sock.bind((address, 0))
            ports.append(sock.getsockname()[1])
        assert len(set(zip(addresses, ports, strict=True))) == len(ports), ports
        return ports


def _kubeconfig(server: str, ca: Path) -> str:
    return f"""apiVersion: v1
kind: Config
clusters:
- name: tests
  cluster:
    server: {server}
    certificate-authority: {ca}
users:
- name: admin
  user:
    token: {ADMIN_TOKEN}
contexts:
- name: tests
  context:
    cluster: tests
    user: admin
current-context: tests
"""


# The ports are chosen before the servers bind them (up to minutes later, the API server's readiness first):
# meanwhile another program, or an outgoing connection's ephemeral port, may take one. A start that fails so is
# made again, with fresh ports, at most this many times in all.
ATTEMPTS = 3
PORT_TAKEN = "address already in use"


class PortTaken(AssertionError):
    """A component of the plane could not bind its port: another program has it."""


def _failed(name: str, what: str, log: str) -> AssertionError:
    taken = [line for line in log.splitlines() if PORT_TAKEN in line]
    if taken:
        return PortTaken(f"{name} {what}, its port taken: {taken[-1][:500]}")
    return AssertionError(f"{name} {what}: {log}")


def _wait(what: str, ready, processes: dict[str, subprocess.Popen], logs: Path, timeout: float) -> None:
    """Polls `ready` until it is true (a probe that hangs counts as not yet); a process that exits, or the
    time-out, fails with its log's tail (PortTaken where the exit, or a log at the time-out, says a port was
    taken)."""
    deadline = time.monotonic() + timeout

    def probe() -> bool:
        try:
            return ready()
        except subprocess.TimeoutExpired:
            return False

    while not probe():
        for name, process in processes.items():
            if process.poll() is not None:
                raise _failed(name, f"exited ({process.returncode}) before {what}",
                              (logs / f"{name}.log").read_text()[-3000:])
        if time.monotonic() > deadline:
            tails = {name: (logs / f"{name}.log").read_text()[-1500:] for name in processes}
            taken = [name for name in processes if PORT_TAKEN in (logs / f"{name}.log").read_text()]
            raise (PortTaken if taken else AssertionError)(
                f"{what} did not happen within {timeout:.0f} s" + (f" (a port of {taken} taken)" if taken else "")
                + f"; logs: {tails}")
        time.sleep(0.2)


@contextlib.contextmanager
def control_plane(bin_dir: Path, work: Path, kwok_stages: str | None = None,
                  address: str = "127.0.0.1") -> Iterator[ControlPlane]:
    """The control plane running, its API server ready and one node Ready; stopped afterwards. `kwok_stages`:
    KWOK's Stage documents in place of its default ones for pods. `address`: where the API server listens and
    what it advertises (the kubeconfig's server); everything else stays on loopback. A start whose port was
    taken meanwhile is made again with fresh ports (ATTEMPTS in all): the first attempt's logs are in `logs`, a
    later one's in logs-N."""
    certs = work / "certs"
    certs.mkdir(parents=True, exist_ok=True)
    key = work / "service-account.key"
    subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True, capture_output=True)
    tokens = work / "tokens.csv"
    tokens.write_text(f'{ADMIN_TOKEN},admin,admin,"system:masters"\n')
    if kwok_stages is not None:
        (work / "kwok-stages.yaml").write_text(kwok_stages)
    taken: list[str] = []
    for attempt in range(1, ATTEMPTS + 1):
        processes: dict[str, subprocess.Popen] = {}
        try:
            plane = _start(bin_dir, work, attempt, kwok_stages is not None, address, processes)
        except PortTaken as error:
            for process in reversed(processes.values()):
                stop(process)
            taken.append(f"attempt {attempt}: {str(error)[:3000]}")
            continue
        except BaseException:
            for process in reversed(processes.values()):
                stop(process)
            raise
        try:
            yield plane
        finally:
            for process in reversed(processes.values()):
                stop(process)
        return
    raise AssertionError(f"the control plane did not start in {ATTEMPTS} attempts, each with fresh ports: a port "
                         f"was taken each time (logs in {work}/logs*):\n" + "\n".join(taken))


def _start(bin_dir: Path, work: Path, attempt: int, kwok_config: bool, address: str,
           processes: dict[str, subprocess.Popen]) -> ControlPlane:
    """One attempt: the plane's processes (into `processes`, for the caller to stop) on ports chosen together,
    etcd's data new; returns once the API server answers, the node is Ready and the default service account is
    there. PortTaken if a component could not bind its port."""
    logs = work / ("logs" if attempt == 1 else f"logs-{attempt}")
    logs.mkdir(parents=True, exist_ok=True)
    certs = work / "certs"
    key = work / "service-account.key"
    tokens = work / "tokens.csv"
    api_port, etcd_port, etcd_peer, controller_port, scheduler_port, kwok_port = free_ports(
        address, *["127.0.0.1"] * 5)
    server = f"https://{address}:{api_port}"
    kubeconfig = work / "kubeconfig"
    kubeconfig.write_text(_kubeconfig(server, certs / "apiserver.crt"))
    commands = {
        "etcd": [f"--data-dir={work / ('etcd' if attempt == 1 else f'etcd-{attempt}')}",
                 f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
                 f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
                 f"--listen-peer-urls=http://127.0.0.1:{etcd_peer}",
                 f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}",
                 f"--initial-cluster=default=http://127.0.0.1:{etcd_peer}", "--listen-metrics-urls="],
        "kube-apiserver": [
            f"--etcd-servers=http://127.0.0.1:{etcd_port}", f"--bind-address={address}",
            f"--advertise-address={address}", f"--secure-port={api_port}", f"--cert-dir={certs}",
            f"--token-auth-file={tokens}", "--authorization-mode=RBAC",
            f"--service-account-key-file={key}", f"--service-account-signing-key-file={key}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            # As kubeadm, kind and k3s start it: the builder and the node-side pods are privileged.
            "--allow-privileged=true",
            # kubeadm's order: a real kubelet (exec, logs, port-forward) is dialled at its node's InternalIP, not at
            # the Hostname address it also reports (its node name, which no resolver here knows).
            "--kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname"],
        "kube-controller-manager": [
            f"--kubeconfig={kubeconfig}", f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}", "--leader-elect=false", "--bind-address=127.0.0.1",
            f"--secure-port={controller_port}", f"--service-account-private-key-file={key}",
            f"--root-ca-file={certs / 'apiserver.crt'}", f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--use-service-account-credentials=false",
            # KWOK's heartbeats lag on a busy 2-core machine: past the default grace the node lifecycle controller
            # marks every pod of the node NotReady, and KWOK, unlike a kubelet, never reports them Ready again.
            "--node-monitor-grace-period=1h"],
        "kube-scheduler": [
            f"--kubeconfig={kubeconfig}", f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}", "--leader-elect=false", "--bind-address=127.0.0.1",
            f"--secure-port={scheduler_port}"],
        # Only KWOK's own nodes (annotated so): a real kubelet's node and pods are that kubelet's.
        "kwok": [f"--kubeconfig={kubeconfig}", "--manage-all-nodes=false",
                 "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                 f"--server-address=127.0.0.1:{kwok_port}"],
    }
    if kwok_config:
        commands["kwok"].append(f"--config={work / 'kwok-stages.yaml'}")
    plane = ControlPlane(kubeconfig, bin_dir / "kubectl")

    def start(name: str) -> None:
        with open(logs / f"{name}.log", "w") as log:
            processes[name] = subprocess.Popen([str(bin_dir / name), *commands[name]], stdout=log,
                                               stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def answers(path: str) -> bool:
        return plane.kubectl("get", "--raw", path, "--request-timeout=5s", check=False,
                             timeout=10).stdout.strip() == "ok"

    start("etcd")
    start("kube-apiserver")
    _wait("the API server's /readyz", lambda: answers("/readyz"), processes, logs, 120)
    for name in ("kube-controller-manager", "kube-scheduler", "kwok"):
        start(name)
    plane.kubectl("apply", "-f", "-", stdin=NODE_MANIFEST)

    def node_ready() -> bool:
        done = plane.kubectl("get", "node", NODE, "-o",
                             "jsonpath={.status.conditions[?(@.type=='Ready')].status}", check=False)
        return done.stdout.strip() == "True"

    _wait(f"node {NODE} Ready", node_ready, processes, logs, 120)
    # The namespace controller and the service account controller: a pod needs its namespace's default
    # service account before admission lets it in.
    _wait("the default service account", lambda: plane.kubectl(
        "get", "serviceaccount", "default", check=False).returncode == 0, processes, logs, 120)
    for name, process in processes.items():
        if process.poll() is not None:
            raise _failed(name, f"exited ({process.returncode}) while the plane started",
                          (logs / f"{name}.log").read_text()[-3000:])
    return plane


NODE_MANIFEST = f"""apiVersion: v1
kind: Node
metadata:
  name: {NODE}
  labels:
    kubernetes.io/hostname: {NODE}
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    type: kwok
  annotations:
    kwok.x-k8s.io/node: fake
"""


def stand_in_storage_class(plane: ControlPlane, name: str, capacity: str) -> str:
    """A StorageClass no provisioner serves (kubernetes.io/no-provisioner, binding at once) and one ReadWriteMany
    PersistentVolume of it, made beforehand as an administrator makes static volumes: the controller-manager's
    volume binder binds the first claim of that class that fits. No container runs under KWOK, so nothing ever
    mounts the volume's hostPath. Returns the volume's name."""
    volume = f"{name}-0"
    plane.kubectl("apply", "-f", "-", stdin=f"""apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: {name}
provisioner: kubernetes.io/no-provisioner
volumeBindingMode: Immediate
---
apiVersion: v1
kind: PersistentVolume
metadata:
  name: {volume}
spec:
  storageClassName: {name}
  capacity:
    storage: {capacity}
  accessModes: [ReadWriteMany]
  persistentVolumeReclaimPolicy: Retain
  hostPath:
    path: /var/lib/{volume}
""")
    return volume
