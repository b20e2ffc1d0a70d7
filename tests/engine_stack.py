"""A developer's host stack on this machine, for the real engine: what `pulumi up` of a `nodeAccess: docker`,
`envoySource: prebuilt` stack needs around it, made of stand-ins the tests can start (tests/test_engine_up.py and
bench/engine_cycle.py use it).

- The tests' Docker engine (tests/docker_engine.py) and the images the stack pulls or builds from, as stand-ins made
  from Debian bookworm (`registry:2`, `ubuntu:22.04`, `istio/proxyv2`).
- A node container (tests/kind_node.py) on a Docker network of its own, named as its Kubernetes node is (kind names
  both alike).
- A control plane (tests/control_plane.py) whose KWOK reports a pod on that node Ready only once the stand-in kubelet
  (tests/kind_node.py SandboxKubelet) runs its sandbox there, from the image the pod names, pulled by the node's
  containerd.
- Origins on the root side of the engine's network namespace, which containers reach: Istio's bucket
  (tests/http_origin.py, with an `envoy-debug-<SHA>` made as Istio's CI makes it, tests/istio_envoy.py) and Envoy's
  repository (`git daemon`); istio/proxy's repository is a folder (`sourceRepository: file://…`).
- The project as a user's clone has it, the CLI run as the user runs it (tests/toolchain.py), and stacks made as
  `make stack` makes them, then set up for this node and these origins with `pulumi config set`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import git
from tests.control_plane import ControlPlane, control_plane, free_port
from tests.docker_engine import BOOKWORM, HOST_SIDE, Engine, base_image, made_by, registry_stand_in
from tests.http_origin import Origin, publish
from tests.istio_envoy import WORKER_CC, PublishedEnvoy, build, envoy_origin, line_of, proxy_checkout
from tests.kind_node import kwok_pod_stages, start_node
from tests.mesh_images import proxyv2_image
from tests.toolchain import Pulumi, pulumi_env, script_value, toolchain_dir, user_project

NODE = "ipd-e2e-node"
NETWORK = "ipd-e2e"
# Every container and network made here carries it: one without it is someone else's, and left alone.
LABEL = "istio-proxy-debug.test=engine-stack"
ISTIO_VERSION = "1.30.3"
# The published .dwp is padded by this much, so that a download held to a link's speed lasts long enough to show
# its progress.
PADDING_BYTES = 24 << 20


class NotOurs(RuntimeError):
    """A container or network of the name this needs exists and was not made here: it is left alone."""


# --- the machine -------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def node_plane(bin_dir: Path, work: Path) -> Iterator[ControlPlane]:
    """The control plane, with the node Ready: NODE, the node container's name, which the stack pins its pods to."""
    kwok = toolchain_dir() / "go" / "mod" / "sigs.k8s.io" / f"kwok@v{script_value('KWOK_VERSION')}"
    with control_plane(bin_dir, work, kwok_stages=kwok_pod_stages(kwok)) as plane:
        plane.kubectl("apply", "-f", "-", stdin=f"""apiVersion: v1
kind: Node
metadata:
  name: {NODE}
  labels: {{kubernetes.io/hostname: {NODE}, kubernetes.io/os: linux, kubernetes.io/arch: amd64}}
  annotations: {{kwok.x-k8s.io/node: fake}}
""")
        deadline = time.monotonic() + 60
        while plane.kubectl("get", "node", NODE, "-o", "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
                            check=False).stdout != "True":
            assert time.monotonic() < deadline, f"node {NODE} is not Ready after 60 s"
            time.sleep(0.5)
        yield plane


def _ours(engine: Engine, kind: str, name: str) -> bool:
    """Whether `name` exists, made here (a leftover of an earlier run); NotOurs if another made it."""
    made = made_by(engine, kind, name, LABEL)
    if made is False:
        raise NotOurs(f"a {kind} named {name} that these tests did not make exists on this Docker engine")
    return bool(made)


def _remove_network(engine: Engine) -> None:
    """The node network and every container on it: the node, and whatever stacks that were not destroyed left."""
    attached = engine.docker("network", "inspect", "--format", "{{range .Containers}}{{.Name}} {{end}}", NETWORK,
                             check=False).stdout.split()
    if attached:
        engine.docker("rm", "--force", "--volumes", *attached, check=False)
    engine.docker("network", "rm", NETWORK, check=False)


@contextlib.contextmanager
def node_container(engine: Engine, work: Path) -> Iterator[str]:
    """The node container on its network, removed afterwards with what is left on it (and, first, what an earlier
    run left)."""
    if _ours(engine, "container", NODE):
        engine.docker("rm", "--force", "--volumes", NODE)
    if _ours(engine, "network", NETWORK):
        _remove_network(engine)
    engine.docker("network", "create", "--label", LABEL, NETWORK)
    try:
        start_node(engine, NODE, NETWORK, work, "--label", LABEL)
        yield NODE
    finally:
        _remove_network(engine)


def stand_in_images(engine: Engine, work: Path) -> None:
    """The images the stack pulls or builds from, made here (nothing can be pulled)."""
    work.mkdir(parents=True, exist_ok=True)
    base_image(engine, BOOKWORM)
    base_image(engine, "docker.io/library/ubuntu:22.04")
    proxyv2_image(engine, ISTIO_VERSION, work / "proxyv2")
    registry_stand_in(engine, work)


@dataclass
class Origins:
    bucket: Origin
    source_repository: str
    envoy_repository: str
    # istio/proxy's commit at the release's tag: the <SHA> of the published files.
    sha: str
    # The line of Envoy's own file where a breakpoint goes.
    worker_line: int = field(default_factory=lambda: line_of(WORKER_CC, "envoy: stop here"))

    def downloads(self) -> list[str]:
        """The bucket's GETs, in order."""
        return [r.path for r in self.bucket.requests if r.method == "GET"]


@contextlib.contextmanager
def git_daemon(base: Path, repository: str) -> Iterator[str]:
    """The repositories under `base` served over git:// on the engine's link; once `repository` answers, its URL's
    folder."""
    port = free_port(HOST_SIDE)
    process = subprocess.Popen(["git", "daemon", "--reuseaddr", f"--listen={HOST_SIDE}", f"--port={port}",
                                f"--base-path={base}", "--export-all", "--enable=upload-pack", str(base)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while subprocess.run(["git", "ls-remote", f"git://{HOST_SIDE}:{port}/{repository}"], capture_output=True,
                             timeout=30).returncode != 0:
            assert process.poll() is None, f"git daemon exited ({process.returncode})"
            assert time.monotonic() < deadline, "git daemon did not answer within 30 s"
            time.sleep(0.2)
        yield f"git://{HOST_SIDE}:{port}"
    finally:
        process.terminate()
        process.wait(timeout=30)


@contextlib.contextmanager
def origins(work: Path, published: PublishedEnvoy | None = None, padding: int = PADDING_BYTES) -> Iterator[Origins]:
    """istio/proxy's repository with the release's tag, Envoy's at the commit its WORKSPACE pins, and the bucket with
    the envoy-debug-<SHA> Istio's CI publishes for the tag's commit (`published`, else the synthetic Envoy of
    tests/istio_envoy.py), its .dwp padded by `padding` bytes."""
    envoy, envoy_commit = envoy_origin(work / "git" / "envoy")
    # The stack fetches the pinned commit by its SHA-1, as from GitHub.
    git(envoy, "config", "uploadpack.allowAnySHA1InWant", "true")
    proxy = proxy_checkout(work / "git" / "proxy", envoy_commit, tag=ISTIO_VERSION)
    sha = git(proxy, "rev-parse", f"{ISTIO_VERSION}^{{commit}}")
    published = published or build(work / "ci")
    dwp = work / "envoy.dwp"
    shutil.copy(published.dwp, dwp)
    if padding:
        (work / "padding").write_bytes(os.urandom(padding))
        subprocess.run(["objcopy", "--add-section", f".ipd_padding={work / 'padding'}", str(dwp)], check=True)
    publish(work / "bucket", sha, published.elf, dwp)
    with Origin(work / "bucket", host=HOST_SIDE) as bucket, git_daemon(work / "git", "envoy") as daemon:
        yield Origins(bucket, f"file://{proxy}", f"{daemon}/envoy", sha)


# --- the developer's side ----------------------------------------------------------------------------------------


def developer_env(engine: Engine, bin_dir: Path, state: Path, plane: ControlPlane) -> dict[str, str]:
    """The developer's shell: the CLI first on PATH, then Debian's docker client (and kubectl beside the CLI), the
    engine's socket and client config (its proxy for the image builds' apt), and the cluster's kubeconfig."""
    env = pulumi_env(bin_dir, state, KUBECONFIG=str(plane.kubeconfig), DOCKER_HOST=engine.env["DOCKER_HOST"],
                     DOCKER_CONFIG=engine.env["DOCKER_CONFIG"])
    env["PATH"] = f"{bin_dir}:{engine.env['PATH']}"
    return env


def project(engine: Engine, plane: ControlPlane, bin_dir: Path, work: Path) -> Pulumi:
    """The project as a user's clone has it, and the CLI in it."""
    return Pulumi(bin_dir, user_project(work / "clone"), developer_env(engine, bin_dir, work / "state", plane))


@dataclass
class Run:
    """A CLI command's outcome, with each line of its output and when it came (time.monotonic())."""

    returncode: int
    lines: list[tuple[float, str]]
    started: float
    ended: float

    @property
    def output(self) -> str:
        return "".join(line for _, line in self.lines)


@dataclass
class Stack:
    name: str
    pulumi: Pulumi
    work_dir: Path
    # Every command's output, for the secrets check.
    transcripts: list[str] = field(default_factory=list)

    def __call__(self, *args: str, check: bool = True, timeout: float = 1800, **kwargs) -> subprocess.CompletedProcess:
        done = self.pulumi(*args, "--stack", self.name, check=check, timeout=timeout, **kwargs)
        self.transcripts.append(done.stdout + done.stderr)
        return done

    def outputs(self) -> dict:
        return json.loads(self("stack", "output", "--json").stdout)

    def config_value(self, key: str) -> str:
        return json.loads(self("config", "--json").stdout)[f"istio-proxy-debug:{key}"]["value"]

    def streaming(self, *args: str, interrupt_when=None, timeout: float = 1800) -> Run:
        """`pulumi <args>` in a session of its own, its output read line by line as it comes; once
        `interrupt_when(line)` is true, SIGINT to the whole process group, as Ctrl-C in a terminal sends it."""
        command = [str(self.pulumi.bin_dir / "pulumi"), *args, "--stack", self.name, "--non-interactive"]
        started = time.monotonic()
        process = subprocess.Popen(command, cwd=self.pulumi.project, env=self.pulumi.env, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, start_new_session=True)
        lines: list[tuple[float, str]] = []
        interrupted = False

        def read() -> None:
            nonlocal interrupted
            for line in process.stdout:
                lines.append((time.monotonic(), line))
                if interrupt_when is not None and not interrupted and interrupt_when(line):
                    interrupted = True
                    os.killpg(process.pid, signal.SIGINT)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise AssertionError(f"pulumi {' '.join(args)} did not end within {timeout:.0f} s: "
                                 + "".join(line for _, line in lines)[-4000:]) from None
        reader.join(timeout=30)
        run = Run(process.returncode, lines, started, time.monotonic())
        self.transcripts.append(run.output)
        return run

    def tear_down(self) -> None:
        """What a failed run may have left: the stack destroyed if it holds resources."""
        exported = json.loads(self.pulumi("stack", "export", "--stack", self.name).stdout)
        if len(exported["deployment"].get("resources") or []) > 1:
            self.pulumi("destroy", "--yes", "--stack", self.name, check=False, timeout=1200)


def make_stack(project: Pulumi, origins: Origins, name: str, work_dir: Path) -> Stack:
    """A developer's stack as docs/your-cluster.md ("A stack of your own") makes one, set up for this machine's node
    and origins."""
    project.make_stack(name, "--work-dir", str(work_dir))
    stack = Stack(name, project, work_dir)
    for key, value in (("nodeAccess", "docker"), ("nodeNetwork", NETWORK), ("nodes[0]", NODE),
                       ("targetNodeAddress", NODE), ("targetNodeName", NODE),
                       ("sourceRepository", origins.source_repository), ("envoyRepository", origins.envoy_repository),
                       ("prebuiltBaseUrl", origins.bucket.url)):
        stack("config", "set", "--path", key, value)
    # The nodes pull from the registry container by its name on the node network.
    stack("config", "rm", "registryHost")
    return stack
