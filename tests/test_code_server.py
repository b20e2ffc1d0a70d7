"""S9 in the cluster: code-server instead of the host's debugger container.

The objects it renders are checked as plain data (and against the API server's schema), its start script
runs for real against stand-ins for code-server and apt-get, and the program is evaluated under mocks in
both placements.
"""

from __future__ import annotations

import json
import posixpath
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from components.builder import builder_statefulset
from components.debugger import (
    EXTENSION_VERSIONS,
    START_SCRIPT,
    code_server_secret,
    code_server_service,
    code_server_statefulset,
    code_server_url,
    code_server_workspace_configmap,
    code_server_workspace_file,
)
from components.launch import LLDB_CACHE_DIR, built_source_map, launch_json
from components.placement import WORKSPACE_VOLUME, Placement
from components.scripts import SCRIPTS_DIR, script
from tests.conftest import CLUSTER_PASSWORD as PASSWORD
from tests.conftest import require_tool, resource
from tests.test_target import validate

PLACEMENT = Placement.cluster(namespace="istio-proxy-debug", claim_name="workspace")
EXECROOT = "/home/.cache/bazel/_bazel_root/0123/execroot/io_istio_proxy"
LAUNCH_JSON = json.dumps(launch_json(
    mode="attach", elf=f"{EXECROOT}/bazel-out/k8-dbg/bin/envoy", pid=15, source_map=built_source_map(EXECROOT, []),
    connect_url="connect://192.168.122.55:2159", pod="fortio-server-0",
), indent=2)


def statefulset() -> dict:
    return code_server_statefulset(PLACEMENT, script(START_SCRIPT))


def pod_spec() -> dict:
    return statefulset()["spec"]["template"]["spec"]


def container() -> dict:
    [only] = pod_spec()["containers"]
    return only


def env(name: str) -> dict:
    [found] = [e for e in container()["env"] if e["name"] == name]
    return found


# --- the objects -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("obj", [
    statefulset(), code_server_service(PLACEMENT), code_server_secret(PLACEMENT, PASSWORD),
    code_server_workspace_configmap(PLACEMENT, code_server_workspace_file(LAUNCH_JSON)),
], ids=lambda o: o["kind"])
def test_every_code_server_object_validates_against_the_kubernetes_schema(obj):
    validate(obj)


def test_the_schema_check_would_catch_a_misspelt_field():
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    bad = statefulset()
    bad["spec"]["template"]["spec"]["containers"][0]["securityContex"] = {"privileged": False}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(bad)


def test_it_mounts_the_workspace_volume_where_the_builder_does():
    claim_mounts = [m for m in container()["volumeMounts"] if m["name"] == WORKSPACE_VOLUME]
    by_path = {m["mountPath"]: m["subPath"] for m in claim_mounts}
    assert by_path == {"/work": "work", "/home/.cache": "home/.cache"}
    assert by_path == {inside: folder for folder, inside in PLACEMENT.layout.container_mounts()}
    [builder] = builder_statefulset(PLACEMENT, "builder:image")["spec"]["template"]["spec"]["containers"]
    assert claim_mounts == builder["volumeMounts"]
    [claim] = [v for v in pod_spec()["volumes"] if v["name"] == WORKSPACE_VOLUME]
    assert claim["persistentVolumeClaim"]["claimName"] == "workspace"


def test_lldbs_caches_are_on_a_writable_mount_and_it_runs_as_root():
    covering = [m for m in container()["volumeMounts"] if LLDB_CACHE_DIR.startswith(m["mountPath"] + "/")]
    assert [m["mountPath"] for m in covering] == ["/home/.cache"]
    assert not covering[0].get("readOnly", False)
    assert container()["securityContext"]["runAsUser"] == 0


def test_it_is_not_privileged_and_adds_no_capability():
    security = container()["securityContext"]
    assert security["privileged"] is False
    assert "capabilities" not in security
    assert "hostPID" not in pod_spec() and "hostNetwork" not in pod_spec()


def test_istio_does_not_inject_it():
    template = statefulset()["spec"]["template"]
    assert template["metadata"]["annotations"]["sidecar.istio.io/inject"] == "false"


def test_the_image_is_a_pinned_code_server_release():
    assert re.fullmatch(r"docker\.io/codercom/code-server:4\.\d+\.\d+", container()["image"])


def test_the_password_reaches_the_pod_only_through_the_secret():
    secret = code_server_secret(PLACEMENT, PASSWORD)
    ref = env("PASSWORD")["valueFrom"]["secretKeyRef"]
    assert ref["name"] == secret["metadata"]["name"]
    assert secret["stringData"][ref["key"]] == PASSWORD
    assert "value" not in env("PASSWORD")
    assert secret["metadata"]["namespace"] == statefulset()["metadata"]["namespace"]


def test_the_service_is_cluster_ip_on_8080_in_front_of_the_pod():
    service = code_server_service(PLACEMENT)
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["selector"] == statefulset()["spec"]["template"]["metadata"]["labels"]
    [port] = service["spec"]["ports"]
    assert port["port"] == 8080
    assert port["targetPort"] in [p["containerPort"] for p in container()["ports"]]
    assert statefulset()["spec"]["serviceName"] == service["metadata"]["name"]


def test_one_replica_named_code_server_so_the_pod_is_code_server_0():
    assert statefulset()["metadata"]["name"] == "code-server"
    assert statefulset()["spec"]["replicas"] == 1


def test_the_workspace_file_is_json_whose_launch_is_the_given_launch_json():
    workspace = json.loads(code_server_workspace_file(LAUNCH_JSON))
    assert workspace["launch"] == json.loads(LAUNCH_JSON)
    assert workspace["folders"] == [{"path": "/work"}]
    assert isinstance(workspace["settings"], dict)


def test_the_workspace_file_is_mounted_as_a_directory_where_the_url_opens_it():
    configmap = code_server_workspace_configmap(PLACEMENT, code_server_workspace_file(LAUNCH_JSON))
    [volume] = [v for v in pod_spec()["volumes"] if "configMap" in v]
    assert volume["configMap"]["name"] == configmap["metadata"]["name"]
    [mount] = [m for m in container()["volumeMounts"] if m["name"] == volume["name"]]
    assert "subPath" not in mount, "a subPath mount never sees the ConfigMap's updates"
    [key] = configmap["data"]
    opened = code_server_url().split("?workspace=", 1)[1]
    assert opened == posixpath.join(mount["mountPath"], key)
    assert code_server_url().startswith("http://localhost:8080/")


# --- the start script, for real ----------------------------------------------------------------------------

FAKE_CODE_SERVER = r"""#!/usr/bin/env bash
# Stands in for code-server: records its argv (tab-separated, one call a line); keeps "installed"
# extensions as files named id@version in --extensions-dir; the server call records its own pid.
(IFS=$'\t'; printf 'code-server\t%s\n' "$*") >>"$FAKE_LOG"
dir= install= list= serve=
while [ $# -gt 0 ]; do
  case "$1" in
    --extensions-dir) dir=$2; shift ;;
    --install-extension) install=$2; shift ;;
    --list-extensions) list=1 ;;
    --bind-addr) serve=1; shift ;;
  esac
  shift
done
if [ -n "$install" ]; then touch "$dir/$install"; fi
if [ -n "$list" ]; then ls "$dir"; fi
if [ -n "$serve" ]; then printf 'serving\t%s\t%s\n' "$$" "${PASSWORD:-}" >>"$FAKE_LOG"; fi
"""

FAKE_APT_GET = r"""#!/usr/bin/env bash
# Stands in for apt-get: records its argv; `update` fills the lists folder, an install fetches each package into
# the archives folder (or, with --no-download, needs it there) and puts its command on the container's PATH
# (binutils: readelf).
(IFS=$'\t'; printf 'apt-get\t%s\n' "$*") >>"$FAKE_LOG"
lists= archives= command= offline= packages=()
while [ $# -gt 0 ]; do
  case "$1" in
    -o) case "$2" in
          Dir::State::Lists=*) lists=${2#*=} ;;
          Dir::Cache::Archives=*) archives=${2#*=} ;;
        esac
        shift ;;
    --no-download) offline=1 ;;
    update | install) command=$1 ;;
    -*) ;;
    *) packages+=("$1") ;;
  esac
  shift
done
case "$command" in
  update) touch "$lists/debian_dists_bookworm_Packages" ;;
  install)
    for package in "${packages[@]}"; do
      [ -e "$lists/debian_dists_bookworm_Packages" ] || { echo "E: Unable to locate package $package" >&2; exit 100; }
      if [ -n "$offline" ]; then
        [ -e "$archives/$package.deb" ] || exit 100
      else
        touch "$archives/$package.deb"
      fi
    done
    for package in "${packages[@]}"; do
      [ "$package" = binutils ] && package=readelf
      printf '#!/bin/true\n' >"$FAKE_ROOTFS/$package"
      chmod +x "$FAKE_ROOTFS/$package"
    done ;;
esac
"""


class Pod:
    """The container's command run by bash with stand-ins on PATH: a volume that outlives each 'container',
    whose root filesystem (where apt puts clangd) is new on every start."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.volume = tmp / "volume"
        self.fakes = tmp / "fakes"
        self.tools = tmp / "tools"
        for folder in (self.volume, self.fakes, self.tools):
            folder.mkdir()
        for name, text in (("code-server", FAKE_CODE_SERVER), ("apt-get", FAKE_APT_GET)):
            (self.fakes / name).write_text(text)
            (self.fakes / name).chmod(0o755)
        # Only the tools the script and the stand-ins use: a clangd on this machine must not count.
        for tool in ("bash", "mkdir", "grep", "touch", "ls", "chmod"):
            (self.tools / tool).symlink_to(shutil.which(tool))
        self.starts = 0
        self.rootfs = None
        # The state folder as the pod sees it, and where that is on the volume.
        self.state_dir = env("STATE_DIR")["value"]
        self.state_on_volume = self.volume / PLACEMENT.layout.host_path(self.state_dir)

    def start(self, *, restart_container: bool = True, password: str | None = PASSWORD) -> list[list[str]]:
        """One container start; returns the recorded calls, each as its argv."""
        self.starts += 1
        if restart_container or self.rootfs is None:
            self.rootfs = self.tmp / f"rootfs-{self.starts}"
            self.rootfs.mkdir()
        log = self.tmp / f"calls-{self.starts}"
        log.touch()
        command = container()["command"]
        assert command[:2] == ["dumb-init", "--"] and command[2:4] == ["bash", "-c"]
        pod_env = {e["name"]: e["value"] for e in container()["env"] if "value" in e}
        run_env = {**pod_env, "STATE_DIR": str(self.state_on_volume), "FAKE_LOG": str(log),
                   "FAKE_ROOTFS": str(self.rootfs), "PATH": f"{self.fakes}:{self.rootfs}:{self.tools}"}
        if password is not None:
            run_env["PASSWORD"] = password
        process = subprocess.Popen([shutil.which("bash"), *command[3:]], env=run_env, text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = process.communicate(timeout=30)
        self.returncode, self.stderr, self.pid = process.returncode, err, process.pid
        return [line.split("\t") for line in log.read_text().splitlines()]


def installs(calls: list[list[str]]) -> list[str]:
    return [c[c.index("--install-extension") + 1] for c in calls if "--install-extension" in c]


def apt_commands(calls: list[list[str]]) -> list[list[str]]:
    return [[w for w in c[1:] if w in ("update", "install", "--no-download")] for c in calls if c[0] == "apt-get"]


def option(call: list[str], name: str) -> str:
    return call[call.index(name) + 1]


@pytest.fixture
def pod(tmp_path) -> Pod:
    return Pod(tmp_path)


def test_the_start_script_passes_shellcheck():
    shellcheck = require_tool("shellcheck")
    done = subprocess.run([shellcheck, "--severity=style", str(SCRIPTS_DIR / START_SCRIPT)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout


def test_the_pod_passes_the_script_and_the_pinned_extensions():
    command = container()["command"]
    assert command[4] == script(START_SCRIPT)
    pinned = command[6:]
    assert {p.split("@")[0] for p in pinned} == {"vadimcn.vscode-lldb", "llvm-vs-code-extensions.vscode-clangd"}
    assert all(re.fullmatch(r"[\w.-]+@\d+\.\d+\.\d+", p) for p in pinned), pinned
    assert pinned == [f"{name}@{version}" for name, version in EXTENSION_VERSIONS.items()]


def test_the_first_start_installs_clangd_and_the_pinned_extensions_on_the_volume(pod):
    calls = pod.start()
    assert pod.returncode == 0, pod.stderr
    assert sorted(installs(calls)) == sorted(container()["command"][6:])
    # clangd: lists and packages fetched into the state folder on the volume.
    assert apt_commands(calls)[-2:] == [["update"], ["install"]]
    for call in (c for c in calls if c[0] == "apt-get"):
        for setting in ("Dir::State::Lists", "Dir::Cache::Archives"):
            [value] = [w.split("=", 1)[1] for w in call if w.startswith(setting + "=")]
            assert value.startswith(str(pod.state_on_volume) + "/"), call
    # With them, what the download of a prebuilt Envoy runs here with: readelf (binutils) and pigz.
    assert all((pod.rootfs / tool).exists() for tool in ("clangd", "readelf", "pigz"))
    # Every code-server call keeps extensions and user data in the state folder, which is on the volume.
    for call in (c for c in calls if c[0] == "code-server"):
        for flag in ("--extensions-dir", "--user-data-dir"):
            assert option(call, flag).startswith(str(pod.state_on_volume) + "/"), call
    assert pod.state_dir.startswith("/home/.cache/")
    settings = json.loads((pod.state_on_volume / "user-data" / "User" / "settings.json").read_text())
    assert settings["extensions.autoUpdate"] is False


def test_it_execs_code_server_with_password_auth_on_every_address_port_8080(pod):
    calls = pod.start()
    server = [c for c in calls if c[0] == "code-server" and "--bind-addr" in c]
    assert len(server) == 1 and calls[-2] == server[0], "the server is the last call"
    assert option(server[0], "--bind-addr") == "0.0.0.0:8080"
    assert option(server[0], "--auth") == "password"
    serving = calls[-1]
    assert serving[0] == "serving"
    assert int(serving[1]) == pod.pid, "exec: code-server is the container's process, not a child of bash"
    assert serving[2] == PASSWORD, "code-server reads the password from PASSWORD"


def test_a_restarted_pod_installs_nothing_again(pod):
    pod.start()
    calls = pod.start()  # a new container: its root filesystem has no clangd
    assert pod.returncode == 0, pod.stderr
    assert installs(calls) == []
    assert apt_commands(calls) == [["install", "--no-download"]], "clangd from the volume's packages, offline"
    assert all((pod.rootfs / tool).exists() for tool in ("clangd", "readelf", "pigz"))
    assert [c for c in calls if "--bind-addr" in c]
    # The same container started again (clangd there): apt is not run at all.
    calls = pod.start(restart_container=False)
    assert apt_commands(calls) == [] and installs(calls) == []


def test_the_users_settings_survive_a_restart(pod):
    pod.start()
    settings = pod.state_on_volume / "user-data" / "User" / "settings.json"
    settings.write_text('{"editor.fontSize": 15}\n')
    pod.start()
    assert json.loads(settings.read_text()) == {"editor.fontSize": 15}


def test_another_pinned_version_is_installed_over_the_old_one(pod):
    extensions = pod.state_on_volume / "extensions"
    extensions.mkdir(parents=True)
    lldb = next(p for p in container()["command"][6:] if p.startswith("vadimcn.vscode-lldb@"))
    (extensions / "vadimcn.vscode-lldb@0.0.1").touch()
    calls = pod.start()
    assert lldb in installs(calls)
    install = next(c for c in calls if lldb in c)
    assert "--force" in install


def test_without_a_password_it_does_not_start(pod):
    calls = pod.start(password=None)
    assert pod.returncode != 0
    assert "PASSWORD" in pod.stderr
    assert not [c for c in calls if c[0] == "code-server"]


# --- the program, under mocks ------------------------------------------------------------------------------


CODE_SERVER_RESOURCES = {
    "debugger-statefulset": "kubernetes:apps/v1:StatefulSet",
    "debugger-service": "kubernetes:core/v1:Service",
    "debugger-password": "kubernetes:core/v1:Secret",
    "debugger-workspace": "kubernetes:core/v1:ConfigMap",
}


def test_the_cluster_placement_creates_code_server_in_the_debugger(cluster):
    for name, typ in CODE_SERVER_RESOURCES.items():
        found = resource(cluster, name)
        assert found["type"] == typ
        assert found["options"]["parent"] == "debugger"
    assert not [r for r in cluster["resources"] if r["name"].startswith("debugger-")
                and r["type"].startswith(("docker:", "command:"))]


def test_the_program_renders_the_statefulset_the_function_does(cluster):
    inputs = resource(cluster, "debugger-statefulset")["inputs"]
    claim = resource(cluster, "workspace-volume-claim")["inputs"]["metadata"]["name"]
    placement = Placement.cluster(namespace=inputs["metadata"]["namespace"], claim_name=claim)
    assert inputs["spec"] == code_server_statefulset(placement, script(START_SCRIPT))["spec"]
    # The pod needs the volume's namespace and claim, and its password, before it starts.
    assert {"workspace-volume", "debugger-password"} <= set(resource(cluster, "debugger-statefulset")
                                                             ["options"]["dependsOn"])


def test_the_secrets_data_stays_a_pulumi_secret(cluster):
    data = resource(cluster, "debugger-password")["inputs"]["stringData"]
    assert set(data) == {"secret"}, data
    assert PASSWORD in json.dumps(data["secret"])
    others = [r for r in cluster["resources"] if r["name"] != "debugger-password"]
    assert PASSWORD not in json.dumps(others), "the password appears in no other resource"


def test_the_workspace_configmap_carries_the_stacks_launch_json(cluster):
    data = resource(cluster, "debugger-workspace")["inputs"]["data"]
    [text] = data.values()
    assert json.loads(text)["launch"] == json.loads(cluster["outputs"]["launchJson"])


def test_the_cluster_outputs_say_how_to_reach_code_server(cluster):
    outputs = cluster["outputs"]
    namespace = resource(cluster, "debugger-service")["inputs"]["metadata"]["namespace"]
    service = resource(cluster, "debugger-service")["inputs"]["metadata"]["name"]
    assert outputs["codeServerPortForward"] == (
        f"kubectl port-forward --namespace {namespace} service/{service} 8080:8080")
    assert outputs["codeServerUrl"] == code_server_url()
    assert outputs["debuggerContainer"] == "code-server-0"
    assert outputs["debuggerAttachConfig"] is None and outputs["debuggerAttachConfigPath"] is None


def test_the_host_placement_has_no_code_server(host):
    assert not [r for r in host["resources"] if r["name"].startswith("debugger-")
                and r["type"].startswith("kubernetes:")]
    assert resource(host, "debugger-container")["inputs"]["name"] == "lldb-vscode-server"
    outputs = host["outputs"]
    assert outputs["codeServerUrl"] is None and outputs["codeServerPortForward"] is None
    assert outputs["debuggerContainer"] == "lldb-vscode-server"
    assert outputs["debuggerAttachConfigPath"].endswith("/lldb-vscode-server.json")
