"""Shared fixtures: the program evaluated under mocks (in a subprocess each), and CI's no-skip rule."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from functools import cache
from pathlib import Path

import pytest

from tests.disk_use import DiskUse, remove_folders

ROOT = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI") == "true"
# The dev stack in the cluster placement: what it needs beyond dev's settings (a NodePort, a password).
CLUSTER_PASSWORD = "correct-horse-battery"
# nodeAccess kubernetes on two nodes, lldb-server on the target pod's node.
KUBERNETES_ACCESS = ("nodeAccess=kubernetes", 'nodes=["worker-1","worker-2"]', "targetNodeAddress=")
CLUSTER_PLACEMENT = ("placement=cluster", "registryPort=30500", f"codeServerPassword={CLUSTER_PASSWORD}",
                     "lldbServerListenAll=true")


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(DiskUse(), "disk-use")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """In CI a skipped test is a failed test: every real-tool test must run there."""
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI (CI=true), which counts as a failure: {report.longrepr}"


def require_tool(name: str) -> str:
    """The path of a tool a test needs; a skip outside CI, a failure in CI."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (make test installs it)")
    return path


def stop(process: subprocess.Popen, timeout: float = 30) -> None:
    """A server the test started: asked to stop, killed if it has not within `timeout`, and reaped."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def run_rendered(inputs: dict, **values: str) -> subprocess.CompletedProcess:
    """A command's script on stdin to bash, with its own environment, as the program renders it; `values`
    replace some of it (this machine's paths, a test server; PATH, for stand-ins of tools) and name no other
    variable the program does not pass."""
    assert set(values) - {"PATH"} <= set(inputs["environment"]), set(values) - set(inputs["environment"])
    env = {**os.environ, **inputs["environment"], **values}
    return subprocess.run(["bash", "-s"], input=inputs["stdin"], env=env, capture_output=True, text=True,
                          timeout=120)


GIT_IDENTITY = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                "GIT_COMMITTER_EMAIL": "t@t"}


def git(cwd: Path, *args: str) -> str:
    """git in `cwd`, committing as a test identity; its output."""
    done = subprocess.run(["git", *args], cwd=cwd, env={**os.environ, **GIT_IDENTITY}, check=True,
                          capture_output=True, text=True)
    return done.stdout.strip()


# What `make up` sets on first use in a stack file without workDir (the lab's), for a developer whose $HOME is this.
MAKE_UP_HOME = "/home/newcomer"
MAKE_UP_WORK_DIR = f"{MAKE_UP_HOME}/istio-proxy-debug-lab"


def machine_config(stack: str) -> list[str]:
    """The settings `make up` adds to a committed stack file on a developer's machine."""
    path = ROOT / f"Pulumi.{stack}.yaml"
    return [f"workDir={MAKE_UP_WORK_DIR}"] if path.exists() and "workDir:" not in path.read_text() else []


def run_harness(stack: str, *sets: str, preview: bool = False, facts: str | None = None) -> subprocess.CompletedProcess:
    sets = (*machine_config(stack), *sets)
    args = [sys.executable, "-m", "tests.mock_stack", stack, *(f"--set={s}" for s in sets)]
    if preview:
        args.append("--preview")
    if facts is not None:
        args.append(f"--source-facts={facts}")
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=120)


@cache
def evaluate(stack: str, *sets: str, preview: bool = False, facts: str | None = None) -> dict:
    """The program's resources and outputs for `stack` (with `key=value` overrides), under mocks; `facts`, a
    release's manifest.json, stands for what the scripts read from that release's checkout."""
    done = run_harness(stack, *sets, preview=preview, facts=facts)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def revealed(value, leaf=lambda v: v):
    """The harness's record of inputs with each secret ({"secret": value}) as its plain value, as the provider
    sends it; every other value through `leaf`."""
    if isinstance(value, dict):
        if set(value) == {"secret"}:
            return revealed(value["secret"], leaf)
        return {k: revealed(v, leaf) for k, v in value.items()}
    if isinstance(value, list):
        return [revealed(v, leaf) for v in value]
    return leaf(value)


def resource(evaluation: dict, name: str) -> dict:
    matches = [r for r in evaluation["resources"] if r["name"] == name]
    assert len(matches) == 1, f"expected one resource named {name}, found {len(matches)}"
    return matches[0]


@pytest.fixture(scope="module")
def module_tmp(request, tmp_path_factory):
    """mktemp for a test module's fixtures: their folders (stack work folders, bundles, builds: hundreds of MB each)
    are removed once the module's fixtures have stopped, unless one of its tests failed, so a run's disk use stays
    that of one module rather than the sum of all."""
    made: list[Path] = []
    failed_before = request.session.testsfailed

    def mktemp(name: str) -> Path:
        made.append(tmp_path_factory.mktemp(name))
        return made[-1]

    yield mktemp
    if request.session.testsfailed == failed_before:
        for kept in remove_folders(made):
            warnings.warn(f"not removed: {kept}", stacklevel=1)


@pytest.fixture(scope="session")
def api_server(tmp_path_factory):
    """The toolchain's Kubernetes control plane (tests/control_plane.py), one for the whole session."""
    from tests.control_plane import control_plane
    from tests.toolchain import toolchain_bin

    bin_dir = toolchain_bin()
    if os.geteuid() != 0:
        pytest.skip("the control plane's tests run as root (make test does)")
    require_tool("openssl")
    with control_plane(bin_dir, tmp_path_factory.mktemp("control-plane")) as plane:
        yield plane


@pytest.fixture(scope="session")
def gateway_api_server(api_server):
    """The session's control plane with the Gateway API CRDs of the lab's release (tests/gateway_api.py)
    installed, each Established and served."""
    from tests.gateway_api import install, standard_crds

    install(api_server, standard_crds())
    return api_server


@pytest.fixture(scope="module")
def cluster() -> dict:
    """The dev stack, cluster placement, under mocks."""
    return evaluate("dev", *CLUSTER_PLACEMENT)


@pytest.fixture(scope="module")
def host() -> dict:
    """The dev stack as committed (host placement), under mocks."""
    return evaluate("dev")


# --- the real node (tests/kubelet_node.py): one node, and one control plane on the engine's link, per session ---


@pytest.fixture(scope="session")
def kubelet_engine():
    """The tests' Docker engine, in its own network namespace (the real node's address is its side of the link)."""
    from tests.docker_engine import engine

    if os.geteuid() != 0:
        pytest.skip("dockerd, network namespaces and debootstrap need root")
    for tool in ("dockerd", "debootstrap", "ip", "nsenter", "go", "openssl"):
        require_tool(tool)
    with engine() as running:
        if not running.in_netns:
            pytest.skip("the real node needs the tests' own Docker engine (in its network namespace), and another "
                        "engine serves the default socket")
        yield running


@pytest.fixture(scope="session")
def kubelet_bin_dir() -> Path:
    """The toolchain's bin folder, with the kubelet."""
    from tests.toolchain import toolchain_bin

    bin_dir = toolchain_bin()
    if not os.access(bin_dir / "kubelet", os.X_OK):
        pytest.skip(f"kubelet not built in {bin_dir}: run `make toolchain`")
    return bin_dir


@pytest.fixture(scope="session")
def kubelet_plane(kubelet_engine, kubelet_bin_dir: Path, tmp_path_factory):
    """A control plane of its own whose API server listens on the engine's link (HOST_SIDE), where the kubelet
    reaches it; the session's `api_server` stays on loopback."""
    from tests.control_plane import control_plane
    from tests.docker_engine import HOST_SIDE

    with control_plane(kubelet_bin_dir, tmp_path_factory.mktemp("kubelet-plane"), address=HOST_SIDE) as plane:
        yield plane


@pytest.fixture(scope="session")
def real_node(kubelet_engine, kubelet_plane, kubelet_bin_dir: Path, tmp_path_factory):
    """The real node, joined to `kubelet_plane` and Ready, its pod image imported into its containerd."""
    from tests.kubelet_node import kubelet_node, pod_image

    with kubelet_node(kubelet_engine, kubelet_plane, kubelet_bin_dir, tmp_path_factory.mktemp("kubelet-node")) as node:
        node.import_image(pod_image(kubelet_engine))
        yield node


@pytest.fixture(scope="module")
def kubelet_mesh(kubelet_engine, kubelet_plane, real_node, tmp_path_factory):
    """Istio's side on the real node, for a module (tests/mesh_node.py): the injector's webhook, which it yields."""
    from tests.engine_stack import ISTIO_VERSION
    from tests.mesh_node import sidecar_mesh

    with sidecar_mesh(kubelet_engine, kubelet_plane, real_node, tmp_path_factory.mktemp("mesh"),
                      ISTIO_VERSION) as webhook:
        yield webhook
