"""The toolchain tools/toolchain.sh builds, run for real: the Pulumi CLI and its Python language host, the
kubernetes provider plugin, and the Kubernetes control plane (tests/control_plane.py) they drive.

The pins are held in step here: the CLI is the release the Makefile installs for users, the plugins are the
versions requirements.txt pins (the Python SDKs ask the engine for exactly those)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT, require_tool
from tests.control_plane import NODE, ControlPlane
from tests.toolchain import Pulumi, program_project, pulumi_env, script_value, toolchain_bin


def pinned(requirement: str) -> str:
    return re.search(rf"^{re.escape(requirement)}==(\S+)$", (ROOT / "requirements.txt").read_text(), re.M).group(1)


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def test_the_cli_is_the_release_make_up_installs_and_not_older_than_the_sdk():
    makefile = re.search(r"^PULUMI_VERSION \?= (\S+)$", (ROOT / "Makefile").read_text(), re.M).group(1)
    assert script_value("PULUMI_VERSION") == makefile
    assert version_tuple(makefile) >= version_tuple(pinned("pulumi"))


PLUGIN_PINS = {"kubernetes": "KUBERNETES_PROVIDER_VERSION", "command": "COMMAND_PROVIDER_VERSION",
               "docker": "DOCKER_PROVIDER_VERSION"}


@pytest.mark.parametrize("plugin", PLUGIN_PINS)
def test_each_plugin_is_the_version_requirements_pins(plugin):
    """The engine takes a plugin only at exactly the version its SDK asks for."""
    assert script_value(PLUGIN_PINS[plugin]) == pinned(f"pulumi-{plugin}")


def test_the_testing_page_names_the_versions_the_script_builds():
    page = (ROOT / "docs" / "testing.md").read_text()
    for binary, variable in (("pulumi", "PULUMI_VERSION"), ("etcd", "ETCD_VERSION"), ("kwok", "KWOK_VERSION"),
                             ("kubelet", "KUBERNETES_VERSION"),
                             ("pulumi-resource-kubernetes", "KUBERNETES_PROVIDER_VERSION"),
                             ("pulumi-language-python", "PYTHON_LANGUAGE_HOST_VERSION")):
        assert re.search(rf"^\| `{binary}`[^|]*\| {re.escape(script_value(variable))}\b", page, re.M), binary
    assert re.search(rf"`kubectl` \| {re.escape(script_value('KUBERNETES_VERSION'))} \|", page)


@pytest.fixture(scope="module")
def bin_dir() -> Path:
    return toolchain_bin()


def plugin_mirror() -> Path:
    """The mirror tools/toolchain.sh installs the command and docker plugins from."""
    mirror = Path(os.environ.get("PULUMI_PLUGIN_MIRROR") or ROOT.parent / "shared" / "pulumi-plugins")
    if not (mirror / "SHA256SUMS").exists():
        pytest.skip(f"no plugin mirror at {mirror} (PULUMI_PLUGIN_MIRROR)")
    return mirror


def run_toolchain(tmp_path: Path, mirror: str) -> subprocess.CompletedProcess:
    """tools/toolchain.sh (which builds nothing again) installing the plugins into a PULUMI_HOME of the test's, from
    `mirror`; Pulumi's own plugin downloads, when it tries them, go to a closed port on loopback."""
    env = {**os.environ, "PULUMI_HOME": str(tmp_path / "pulumi-home"), "PULUMI_PLUGIN_MIRROR": mirror,
           "PULUMI_PLUGIN_DOWNLOAD_URL_OVERRIDES": "^.*$=http://127.0.0.1:9"}
    return subprocess.run(["bash", str(ROOT / "tools" / "toolchain.sh")], env=env, capture_output=True, text=True,
                          timeout=600)


def installed_plugins(tmp_path: Path) -> set[str]:
    return {p.name for p in (tmp_path / "pulumi-home" / "plugins").glob("resource-*") if p.is_dir()}


def test_a_mirrored_plugin_whose_checksum_does_not_match_is_not_installed(bin_dir, tmp_path):
    source = plugin_mirror()
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for archive in source.glob("*.tar.gz"):
        (mirror / archive.name).write_bytes(archive.read_bytes())
    (mirror / "SHA256SUMS").write_text((source / "SHA256SUMS").read_text())
    (docker,) = mirror.glob("pulumi-resource-docker-*.tar.gz")
    docker.write_bytes(docker.read_bytes() + b"\0")

    done = run_toolchain(tmp_path, str(mirror))
    assert done.returncode != 0
    assert f"{docker} has SHA-256" in done.stderr and "but SHA256SUMS says" in done.stderr, done.stderr
    installed = installed_plugins(tmp_path)
    assert f"resource-command-v{pinned('pulumi-command')}" in installed, installed
    assert not [p for p in installed if p.startswith("resource-docker")], installed


def test_with_no_mirror_and_no_download_one_line_names_both_ways(bin_dir, tmp_path):
    done = run_toolchain(tmp_path, "")
    assert done.returncode != 0
    (line,) = [line for line in done.stderr.splitlines() if line.startswith("toolchain: ")]
    version = pinned("pulumi-command")
    assert f"the command plugin {version} could not be downloaded" in line, line
    assert "PULUMI_PLUGIN_MIRROR" in line and f"`pulumi plugin install resource command {version}`" in line, line


def test_pulumi_version_prints_the_pinned_release(bin_dir):
    done = subprocess.run([str(bin_dir / "pulumi"), "version"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PULUMI_SKIP_UPDATE_CHECK": "true"})
    assert done.stdout.strip() == f"v{script_value('PULUMI_VERSION')}", done.stderr


def test_the_kubelet_is_the_control_planes_release(bin_dir):
    done = subprocess.run([str(bin_dir / "kubelet"), "--version"], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == f"Kubernetes v{script_value('KUBERNETES_VERSION')}", done.stderr


def test_the_plugins_are_installed_at_the_pinned_versions(bin_dir, tmp_path):
    done = subprocess.run([str(bin_dir / "pulumi"), "plugin", "ls", "--json"], capture_output=True, text=True,
                          timeout=60, env=pulumi_env(bin_dir, tmp_path / "state"))
    assert done.returncode == 0, done.stderr
    installed = {(p["kind"], p["name"], p["version"]) for p in json.loads(done.stdout)}
    for plugin in PLUGIN_PINS:
        assert ("resource", plugin, pinned(f"pulumi-{plugin}")) in installed, installed


def test_the_api_server_answers_readyz(api_server):
    assert api_server.kubectl("get", "--raw", "/readyz").stdout.strip() == "ok"


NATIVE_SIDECAR_STATEFULSET = """apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: native-sidecar
  namespace: default
spec:
  serviceName: native-sidecar
  selector:
    matchLabels: {app: native-sidecar}
  template:
    metadata:
      labels: {app: native-sidecar}
    spec:
      initContainers:
      - name: istio-proxy
        image: docker.io/istio/proxyv2:1.30.3
        restartPolicy: Always
      containers:
      - name: app
        image: fortio/fortio:latest
"""


def test_the_api_server_accepts_a_restartable_init_container(api_server):
    done = api_server.kubectl("apply", "--dry-run=server", "-o",
                           "jsonpath={.spec.template.spec.initContainers[0].restartPolicy}", "-f", "-",
                           stdin=NATIVE_SIDECAR_STATEFULSET)
    assert done.stdout == "Always", "the server kept the native sidecar's restartPolicy"


def test_the_api_server_refuses_a_malformed_statefulset_with_its_message(api_server):
    # The app container named as the sidecar: the server's validation refuses the duplicate.
    malformed = NATIVE_SIDECAR_STATEFULSET.replace("- name: app", "- name: istio-proxy")
    done = api_server.kubectl("apply", "--dry-run=server", "-f", "-", stdin=malformed, check=False)
    assert done.returncode != 0
    assert 'The StatefulSet "native-sidecar" is invalid' in done.stderr, done.stderr
    assert 'initContainers[0].name: Duplicate value: "istio-proxy"' in done.stderr, done.stderr


def test_a_deployments_pod_is_scheduled_and_reported_ready(api_server):
    api_server.kubectl("create", "deployment", "ready-check", "--image=fortio/fortio:latest", "--namespace=default")
    try:
        done = api_server.kubectl("rollout", "status", "deployment/ready-check", "--namespace=default",
                               "--timeout=120s", timeout=150)
        assert "successfully rolled out" in done.stdout
        pod = api_server.kubectl("get", "pods", "--namespace=default", "-l", "app=ready-check", "-o",
                              "jsonpath={.items[0].spec.nodeName} {.items[0].status.conditions[?(@.type=='Ready')]"
                              ".status}").stdout
        assert pod == f"{NODE} True"
    finally:
        api_server.kubectl("delete", "deployment", "ready-check", "--namespace=default", "--wait=false", check=False)


@pytest.fixture
def smoke(bin_dir, api_server, tmp_path) -> Pulumi:
    return program_project("smoke", bin_dir, tmp_path, KUBECONFIG=str(api_server.kubeconfig))


def configmap_value(api_server: ControlPlane) -> subprocess.CompletedProcess:
    return api_server.kubectl("get", "configmap", "toolchain-smoke", "--namespace=default", "-o",
                           "jsonpath={.data.value}", check=False)


def connects(trace: Path) -> list[str]:
    """The addresses of every connect(2) strace recorded, for the IP families."""
    return re.findall(r"connect\(\d+, \{sa_family=AF_INET6?, (.*?)\}", trace.read_text())


def test_a_configmap_and_a_deployment_are_created_updated_and_deleted_by_up_and_destroy(smoke, api_server, tmp_path):
    strace = require_tool("strace")
    smoke("config", "set", "value", "first")
    trace = tmp_path / "connect.trace"
    # Every process the CLI starts (language host, Python, the plugin) traced: none connects but to loopback.
    done = subprocess.run([strace, "-f", "-qq", "-e", "trace=connect", "-o", str(trace),
                           str(smoke.bin_dir / "pulumi"), "up", "--yes", "--skip-preview", "--non-interactive"],
                          cwd=smoke.project, env=smoke.env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert configmap_value(api_server).stdout == "first"
    # The provider's await logic saw the Deployment's pod scheduled and Ready.
    assert smoke("stack", "output", "readyReplicas").stdout.strip() == "1"
    addresses = connects(trace)
    assert addresses, "strace saw the engine connect to its plugins and the API server"
    outside = [a for a in addresses if "127.0.0.1" not in a and '"::1"' not in a]
    assert not outside, f"connections beyond loopback: {outside}"

    first_uid = smoke("stack", "output", "uid").stdout.strip()
    smoke("config", "set", "value", "second")
    update = smoke("up", "--yes", "--skip-preview")
    # The provider replaces a ConfigMap whose data changes (its default: a rollout sees a new object).
    assert "+-1 replaced" in update.stdout, update.stdout
    assert configmap_value(api_server).stdout == "second"
    assert smoke("stack", "output", "uid").stdout.strip() not in ("", first_uid)

    smoke("destroy", "--yes", "--skip-preview")
    gone = configmap_value(api_server)
    assert gone.returncode != 0 and "NotFound" in gone.stderr, gone.stdout + gone.stderr
    assert "NotFound" in api_server.kubectl("get", "deployment", "toolchain-smoke", "--namespace=default",
                                         check=False).stderr
