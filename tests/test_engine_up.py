"""The whole stack on the real engine: `pulumi up`, `preview`, `refresh` and `destroy` of a developer's host stack,
from nothing to a stopped Envoy, as the docs tell a user to run them (docs/commands.md).

Two stacks are made as `make stack` makes them and set up with `pulumi config set` for what this machine has
(tests/engine_stack.py): `envoySource: prebuilt` from a local bucket, `nodeAccess: docker` with a node container,
`cluster: existing` on the tests' control plane, whose pods on that node run as sandboxes in it. Every command runs
on the CLI, language host and plugins `make toolchain` builds or installs; nothing is mocked and nothing here
renders what the program renders.

In order (the issue's items): an `up` whose download is held to a link's speed (progress lines as it goes),
interrupted by Ctrl-C while the debug image builds, then the `up` that completes it; the stack's lldbCommands in its
debugger container and the written launch.json's lldb-dap configuration over DAP, both stopping at a breakpoint in
Envoy's source; `up --expect-no-changes`; a changed key's preview diff, also by the PR workflow's command; drift (the
StatefulSet and the registry container deleted by hand) reported by `refresh` and repaired by `up`; a second
developer's stack beside the first, then destroyed; `destroy`, and an `up` after it that downloads nothing; the
secrets nowhere in plain text.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest

from components.kind_cluster import CERTS_DIR
from components.lldb_server import STATE_DIR
from tests.conftest import ROOT, require_tool
from tests.control_plane import ControlPlane
from tests.dap_client import DapClient
from tests.docker_engine import Engine, engine
from tests.engine_stack import (
    ISTIO_VERSION,
    NODE,
    NotOurs,
    Origins,
    Run,
    Stack,
    make_stack,
    node_container,
    node_plane,
    stand_in_images,
)
from tests.engine_stack import origins as made_origins
from tests.engine_stack import project as user_clone
from tests.istio_envoy import line_of
from tests.kind_node import SandboxKubelet, lldb_in
from tests.lldb_session import debian_lldb
from tests.toolchain import Pulumi, toolchain_bin

# The secrets a developer may set: neither may show in plain text anywhere.
SSH_KEY = ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ-ipd-e2e-key\n"
           "-----END OPENSSH PRIVATE KEY-----\n")
CODE_SERVER_PASSWORD = "ipd-e2e-password-7Qx"
# About 16 s for the padded .dwp at the rate the first download is held to: several progress lines (one each 5 s).
FIRST_DOWNLOAD_RATE = 3 << 19


# --- the machine: the engine, the cluster, the node, the origins ------------------------------------------------


@pytest.fixture(scope="module")
def docker() -> Engine:
    if os.geteuid() != 0:
        pytest.skip("dockerd, network namespaces and the node's containerd need root")
    for tool in ("dockerd", "debootstrap", "ip", "nsenter", "git", "clang++", "llvm-dwp", "objcopy"):
        require_tool(tool)
    with engine() as running:
        yield running


@pytest.fixture(scope="module")
def plane(module_tmp) -> ControlPlane:
    with node_plane(toolchain_bin(), module_tmp("plane")) as running:
        yield running


@pytest.fixture(scope="module")
def node(docker: Engine, module_tmp) -> str:
    try:
        with node_container(docker, module_tmp("node-image")) as running:
            yield running
    except NotOurs as error:
        pytest.skip(str(error))


@pytest.fixture(scope="module")
def kubelet(docker: Engine, plane: ControlPlane, node: str) -> SandboxKubelet:
    with SandboxKubelet(docker, plane, node) as running:
        yield running


@pytest.fixture(scope="module")
def images(docker: Engine, module_tmp) -> None:
    stand_in_images(docker, module_tmp("registry-image"))


@pytest.fixture(scope="module")
def origins(docker: Engine, module_tmp) -> Origins:
    with made_origins(module_tmp("origins")) as running:
        yield running


@pytest.fixture(scope="module")
def project(docker: Engine, plane: ControlPlane, module_tmp) -> Pulumi:
    return user_clone(docker, plane, toolchain_bin(), module_tmp("developer"))


# --- the developer's stacks --------------------------------------------------------------------------------------


def stack_name(base: str) -> str:
    return f"e2e-{base}"


@pytest.fixture(scope="module")
def machine(docker, plane, node, kubelet, images, origins, project) -> None:
    """Everything around the stacks, up before any of them and torn down after their last destroy."""


@pytest.fixture(scope="module")
def ada(machine, project, origins, module_tmp) -> Stack:
    """The first developer's stack, with both secrets a developer may set (unused by this placement and node access,
    and still never shown)."""
    stack = make_stack(project, origins, stack_name("ada"), module_tmp("ada-work"))
    stack("config", "set", "--secret", "sshPrivateKey", input=SSH_KEY)
    stack("config", "set", "--secret", "codeServerPassword", CODE_SERVER_PASSWORD)
    yield stack
    stack.tear_down()


def image_build_started(line: str) -> bool:
    return "debug-image-build" in line and "creating" in line


@pytest.fixture(scope="module")
def interrupted(ada, origins) -> Run:
    """The first `up`, its download held to a link's speed, stopped by Ctrl-C while the debug image builds."""
    origins.bucket.rate = FIRST_DOWNLOAD_RATE
    try:
        return ada.streaming("up", "--yes", "--skip-preview", interrupt_when=image_build_started)
    finally:
        origins.bucket.rate = None


@pytest.fixture(scope="module")
def first_up(ada, interrupted) -> Run:
    """The plain `up` after the interrupted one: a single Ctrl-C leaves nothing pending (docs/commands.md, "Preview, up,
    destroy")."""
    return ada.streaming("up", "--yes", "--skip-preview")


# --- 8 and 3: an interrupted up, then the whole up ---------------------------------------------------------------


def containers(docker: Engine, stack: Stack) -> dict[str, dict]:
    """The stack's containers on the engine, by name (its names end with the stack's)."""
    names = docker.docker("ps", "--all", "--format", "{{.Names}}").stdout.split()
    mine = [n for n in names if n.endswith(f"-{stack.name}")]
    return {c["Name"].lstrip("/"): c for c in json.loads(docker.docker("inspect", *mine).stdout)} if mine else {}


def state_resources(stack: Stack) -> list[dict]:
    return json.loads(stack("stack", "export").stdout)["deployment"].get("resources") or []


def test_ctrl_c_during_the_image_build_stops_up(interrupted):
    output = interrupted.output
    assert interrupted.returncode != 0, output[-3000:]
    assert any(image_build_started(line) for _, line in interrupted.lines), output[-3000:]
    assert "^C received; cancelling" in output, output[-3000:]
    assert not re.search(r"debug-image-build created|target-statefulset created", output), "stopped in the build"
    assert "Traceback" not in output and "KeyboardInterrupt" not in output, output[-3000:]


def test_the_next_up_completes_with_nothing_duplicated_or_lost(first_up, ada, docker, origins):
    assert first_up.returncode == 0, first_up.output[-5000:]
    assert "pending operations" not in first_up.output, first_up.output[-5000:]
    urns = [r["urn"] for r in state_resources(ada)]
    assert len(urns) == len(set(urns)), "each resource once in the state"
    # One registry and one debugger container, each running; the download happened once.
    running = {name: c["State"]["Running"] for name, c in containers(docker, ada).items()}
    assert running == {f"image-registry-{ada.name}": True, f"lldb-vscode-server-{ada.name}": True}, running
    fetched = origins.downloads()
    assert sorted(fetched) == sorted({f"/envoy-debug-{origins.sha}{suffix}" for suffix in (".tar.gz", ".dwp")}
                                     | {f"/envoy-debug-{origins.sha}.sha256"}), fetched
    # One image in the registry, under the stack's one tag.
    assert registry_catalog(docker, ada) == {"name": "proxyv2", "tags": [f"{ISTIO_VERSION}-debug"]}


def kubectl_json(plane: ControlPlane, *args: str) -> dict:
    return json.loads(plane.kubectl("get", *args, "-o", "json").stdout)


def test_the_target_is_ready_on_the_node_in_a_sandbox_of_the_debug_image(first_up, ada, plane, kubelet):
    outputs = ada.outputs()
    namespace = namespace_of(ada)
    statefulset = kubectl_json(plane, "statefulset", "fortio-server", "-n", namespace)
    pod = kubectl_json(plane, "pod", outputs["podName"], "-n", namespace)
    assert statefulset["status"].get("readyReplicas") == 1, (statefulset["status"], pod, kubelet.errors)
    assert pod["spec"]["nodeName"] == NODE
    assert pod["metadata"]["annotations"]["sidecar.istio.io/proxyImage"] == outputs["debugImage"]
    assert not kubelet.errors, kubelet.errors
    (sandbox,) = [p for p in kubelet.pods.values() if p.name == outputs["podName"]]
    assert sandbox.root.endswith(f"/{namespace}/{outputs['podName']}")


def test_the_nodes_containerd_has_the_stacks_registry_entry(first_up, ada, docker):
    registry = ada.outputs()["registryPullAddress"]
    assert registry == f"image-registry-{ada.name}:5000"
    hosts = docker.docker("exec", NODE, "cat", f"{CERTS_DIR}/{registry}/hosts.toml").stdout
    assert f'[host."http://{registry}"]' in hosts, hosts


def lldb_server_process(docker: Engine, port: int) -> int:
    """The node pid of whatever listens on `port` on the node."""
    listening = docker.docker("exec", NODE, "ss", "-Hltnp", f"sport = :{port}").stdout
    pids = set(re.findall(r"pid=(\d+)", listening))
    assert len(pids) == 1, listening
    return int(pids.pop())


def namespaces(docker: Engine, pid: int) -> dict[str, str]:
    return {kind: docker.docker("exec", NODE, "readlink", f"/proc/{pid}/ns/{kind}").stdout.strip()
            for kind in ("uts", "pid", "mnt", "net")}


def test_lldb_server_runs_in_the_pods_namespaces_on_the_nodes_network(first_up, ada, docker, kubelet):
    outputs = ada.outputs()
    (sandbox,) = [p for p in kubelet.pods.values() if p.name == outputs["podName"]]
    server = lldb_server_process(docker, outputs["debuggerPorts"][0])
    server_ns, envoy_ns, node_ns = (namespaces(docker, pid) for pid in (server, sandbox.envoy, 1))
    assert {k: server_ns[k] for k in ("uts", "pid", "mnt")} == {k: envoy_ns[k] for k in ("uts", "pid", "mnt")}
    assert server_ns["net"] == node_ns["net"]
    assert urlparse(outputs["connectUrl"]).port == outputs["debuggerPorts"][0]


def test_launch_json_is_written_where_vs_code_reads_it(first_up, ada):
    outputs = ada.outputs()
    path = Path(outputs["launchJsonFile"])
    assert path == ada.work_dir / "work" / ".vscode" / "launch.json"
    written = json.loads(path.read_text())
    assert written["configurations"] == json.loads(outputs["launchJson"])["configurations"]


# --- 4: the mission, with nothing but the stack's outputs ----------------------------------------------------------


def worker_source(outputs: dict) -> str:
    """Envoy's own file with the breakpoint, in the Envoy checkout, as the editor in the debugger container names it."""
    return f"{outputs['envoyCheckout']}/source/common/worker.cc"


def attached_pid(outputs: dict) -> int:
    (pid,) = re.findall(r"^process attach --pid (\d+)$", outputs["lldbCommands"], re.MULTILINE)
    return int(pid)


def stop_in_envoy(docker: Engine, outputs: dict, origins: Origins) -> str:
    """The stack's lldbCommands in its debugger container, then a breakpoint by file and line, a continue to it and
    the backtrace with its source lines; what lldb printed."""
    return lldb_in(docker, outputs["debuggerContainer"], [
        *outputs["lldbCommands"].splitlines(),
        f"breakpoint set --file {worker_source(outputs)} --line {origins.worker_line}",
        "continue", "bt", "frame select 1", "detach",
    ])


def assert_stopped_in_envoy(transcript: str, outputs: dict, origins: Origins) -> None:
    from tests.istio_envoy import MAIN_CC

    assert f"Process {attached_pid(outputs)} stopped" in transcript, transcript
    assert "stop reason = breakpoint 1.1" in transcript, transcript
    assert re.search(rf"frame #0: .* envoy`Envoy::handle\(.*\) at worker\.cc:{origins.worker_line}", transcript), (
        transcript)
    assert re.search(rf"frame #1: .* envoy`main at main\.cc:{line_of(MAIN_CC, 'istio: calls envoy')}", transcript), (
        transcript)
    # The source lines, from the Envoy checkout and the istio/proxy checkout the stack made.
    assert "int doubled = request.id * 2;  // envoy: stop here" in transcript, transcript
    assert "Envoy::handle(request);  // istio: calls envoy" in transcript, transcript


def test_lldb_with_the_stacks_own_commands_stops_in_envoy_and_shows_the_sources(first_up, ada, docker, origins):
    outputs = ada.outputs()
    assert_stopped_in_envoy(stop_in_envoy(docker, outputs, origins), outputs, origins)


LLDB_DAP_HOME = "/opt/ipd-lldb-19"


def lldb_dap_in(docker: Engine, container: str) -> list[str]:
    """LLVM's lldb-dap (Debian's lldb 19, as `make lldb-clients` unpacks it) copied into `container`, where VS Code
    attached to the container runs its debug adapter: the command that starts it on stdio."""
    if debian_lldb(19) is None:
        pytest.skip("Debian's lldb 19 is not unpacked (make lldb-clients)")
    root = ROOT / ".cache" / "lldb-19" / "root"
    docker.docker("exec", container, "mkdir", "-p", LLDB_DAP_HOME)
    docker.docker("cp", f"{root}/.", f"{container}:{LLDB_DAP_HOME}")
    llvm = f"{LLDB_DAP_HOME}/usr/lib/llvm-19"
    return ["/usr/bin/docker", "exec", "-i", "--env",
            f"LD_LIBRARY_PATH={llvm}/lib:{LLDB_DAP_HOME}/usr/lib/x86_64-linux-gnu", container, f"{llvm}/bin/lldb-dap"]


def test_lldb_dap_with_the_written_launch_json_verifies_a_breakpoint_and_stops_there(first_up, ada, docker, origins):
    outputs = ada.outputs()
    written = json.loads(Path(outputs["launchJsonFile"]).read_text())
    (configuration,) = [c for c in written["configurations"] if c["type"] == "lldb-dap"]
    source = worker_source(outputs)
    dap = DapClient(lldb_dap_in(docker, outputs["debuggerContainer"]), env=docker.env)
    try:
        dap.request("initialize", {"clientID": "vscode", "clientName": "Visual Studio Code", "adapterID": "lldb-dap",
                                   "pathFormat": "path", "linesStartAt1": True, "columnsStartAt1": True,
                                   "supportsVariableType": True, "supportsRunInTerminalRequest": False})
        attach = dap.send("attach", configuration)
        dap.event("initialized", timeout=300)
        breakpoints = dap.request("setBreakpoints", {"source": {"name": "worker.cc", "path": source},
                                                     "breakpoints": [{"line": origins.worker_line}]})
        (breakpoint,) = breakpoints["body"]["breakpoints"]
        dap.request("configurationDone")
        dap.response(attach, timeout=300)
        if not breakpoint.get("verified"):
            changed = dap.wait_for(lambda m: m.get("event") == "breakpoint"
                                   and m["body"]["breakpoint"].get("id") == breakpoint.get("id")
                                   and m["body"]["breakpoint"].get("verified"), "the breakpoint verified", 120)
            breakpoint = changed["body"]["breakpoint"]
        assert breakpoint["verified"], dap.said()
        stopped = dap.event("stopped", timeout=120)
        assert stopped["body"]["reason"] == "breakpoint", stopped
        trace = dap.request("stackTrace", {"threadId": stopped["body"]["threadId"], "startFrame": 0, "levels": 3})
        top = trace["body"]["stackFrames"][0]
        assert (top["source"]["path"], top["line"]) == (source, origins.worker_line), (top, dap.said())
        dap.request("disconnect", {"terminateDebuggee": False})
    finally:
        dap.close()


# --- 13: progress while the download runs --------------------------------------------------------------------------

PROGRESS = re.compile(r"envoy-debug-[0-9a-f]{40}\.dwp: (\d+) MB of (\d+) MB \((\d+) %\)")


def test_the_held_download_shows_progress_lines_while_it_runs(interrupted, origins):
    """The .dwp's progress lines reach `up`'s output as the download goes (not all at its end): several before the
    fetch is created, the first of them seconds before."""
    progress = [(at, PROGRESS.search(line)) for at, line in interrupted.lines if PROGRESS.search(line)]
    fetched = [at for at, line in interrupted.lines if "envoy-fetch" in line and " created" in line]
    assert progress and fetched, interrupted.output[-5000:]
    during = [(at, match) for at, match in progress if int(match.group(3)) < 100]
    assert len(during) >= 2, [m.group(0) for _, m in progress]
    assert fetched[0] - during[0][0] >= 4, "the first line came seconds before the download's end"
    sizes = [int(match.group(1)) for _, match in progress]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1], sizes


# --- 5: no change, no work -----------------------------------------------------------------------------------------


def registry_catalog(docker: Engine, stack: Stack) -> dict:
    """The stack's registry's repositories and tags, asked from its debugger container (on the node network)."""
    outputs = stack.outputs()
    registry = outputs["registryPullAddress"]
    tags = docker.docker("exec", outputs["debuggerContainer"], "curl", "-fsS",
                         f"http://{registry}/v2/proxyv2/tags/list").stdout
    return json.loads(tags)


def test_a_second_up_changes_nothing_and_runs_nothing(first_up, ada, docker):
    images = docker.docker("images", "--quiet", "--no-trunc").stdout.split()
    catalog = registry_catalog(docker, ada)
    done = ada("up", "--yes", "--skip-preview", "--expect-no-changes", timeout=300)
    assert re.search(r"^Resources:\n +\d+ unchanged\n\n", done.stdout, re.MULTILINE), done.stdout[-3000:]
    assert docker.docker("images", "--quiet", "--no-trunc").stdout.split() == images, "no image was built"
    assert registry_catalog(docker, ada) == catalog


# --- 6: a pull request's preview diff ------------------------------------------------------------------------------

# pulumi/actions inputs, as the CLI flags the action passes for them (its automation API options): the ones the
# preview workflow may use. Inputs that only say where and how to report are left out on purpose.
ACTION_FLAGS = {"diff": "--diff", "refresh": "--refresh", "expect-no-changes": "--expect-no-changes"}
ACTION_REPORTING = {"stack-name", "cloud-url", "comment-on-pr", "edit-pr-comment", "pulumi-version", "github-token",
                    "always-include-summary", "suppress-outputs", "suppress-progress", "color"}


def workflow_preview(stack: Stack, project: Path) -> list[str]:
    """.github/workflows/preview.yml's pulumi/actions step as the CLI command it runs, on `stack`: its policy packs
    (copied into the project, their virtualenv the project's), its flags, and its config-map set on the stack."""
    import yaml

    from tests.test_engine import policy_pack

    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "preview.yml").read_text())
    (step,) = [s for job in workflow["jobs"].values() for s in job["steps"]
               if str(s.get("uses", "")).startswith("pulumi/actions@")]
    inputs = dict(step["with"])
    assert inputs.pop("command") == "preview"
    args = ["preview"]
    for name, value in list(inputs.items()):
        if name in ACTION_FLAGS:
            if str(value).lower() == "true":
                args.append(ACTION_FLAGS[name])
            inputs.pop(name)
        elif name == "policyPacks":
            # The project's one pack, policy/, as the CLI loads it here (its virtualenv the project's).
            assert [pack.strip() for pack in str(inputs.pop(name)).split(",")] == ["policy"], step["with"]
            args += ["--policy-pack", str(policy_pack(project).relative_to(project))]
        elif name == "config-map":
            for key, entry in yaml.safe_load(inputs.pop(name)).items():
                stack("config", "set", key, str(entry["value"]), *(["--secret"] if entry.get("secret") else []))
    unknown = set(inputs) - ACTION_REPORTING
    assert not unknown, f"the preview workflow sets {unknown}: say here what the action does with them"
    return args


def changes(stack: Stack, *args: str) -> dict[str, set[str]]:
    """`pulumi preview --json`'s steps that change something: resource name → the operations on it."""
    done = stack("preview", "--json", *args)
    steps = json.loads(done.stdout)["steps"]
    found: dict[str, set[str]] = {}
    for step in steps:
        if step["op"] != "same":
            found.setdefault(step["urn"].split("::")[-1], set()).add(step["op"])
    return found


def diff_lines(output: str) -> list[str]:
    """The changed properties a `--diff` preview prints (`~ key: old => new`, `+ key`, `- key`), without their
    indentation."""
    return sorted({line.strip() for line in output.splitlines() if re.match(r"^\s+[-+~] \S.*(=>|:)", line)})


def test_a_changed_key_previews_as_exactly_that_change_and_what_it_replaces(first_up, ada, project):
    ada("config", "set", "proxyMemoryLimit", "5Gi")
    try:
        preview = ada("preview", "--diff")
        changed = changes(ada)
        # The sidecar's memory limit is the pod template's annotation: a new template makes a new StatefulSet (whose
        # create waits for its new pod), so lldb-server (in the old pod's namespaces) starts again, and what names
        # its pid changes with it.
        assert changed == {
            "target-statefulset": {"replace"},
            "lldb-server-platform": {"replace"},
            "launch-file-merge": {"update"},
        }, changed
        assert '~ sidecar.istio.io/proxyMemoryLimit: "4Gi" => "5Gi"' in diff_lines(preview.stdout), preview.stdout
        workflow = ada(*workflow_preview(ada, project.project))
        assert "istio-proxy-debug-safety" in workflow.stdout, workflow.stdout[-3000:]
        assert diff_lines(workflow.stdout) == diff_lines(preview.stdout)
    finally:
        ada("config", "set", "proxyMemoryLimit", "4Gi")
    ada("preview", "--expect-no-changes")


# --- 7: drift -------------------------------------------------------------------------------------------------------


def namespace_of(stack: Stack) -> str:
    return stack.config_value("namespace")


def wait_until(condition, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout:.0f} s"
        time.sleep(0.5)


def manifest_served(docker: Engine, stack: Stack) -> bool:
    """Whether the stack's registry still serves the debug image by its digest."""
    outputs = stack.outputs()
    digest = outputs["debugImage"].split("@", 1)[1]
    done = docker.docker("exec", outputs["debuggerContainer"], "curl", "-fsS", "-o", "/dev/null",
                         "-H", "Accept: application/vnd.docker.distribution.manifest.v2+json",
                         "-H", "Accept: application/vnd.oci.image.manifest.v1+json",
                         f"http://{outputs['registryPullAddress']}/v2/proxyv2/manifests/{digest}", check=False)
    return done.returncode == 0


def test_drift_is_reported_by_refresh_and_repaired_by_up_with_the_images_kept(first_up, ada, docker, plane, kubelet,
                                                                               origins):
    namespace, pod = namespace_of(ada), ada.outputs()["podName"]
    plane.kubectl("delete", "statefulset", "fortio-server", "--namespace", namespace, "--wait=true", timeout=120)
    wait_until(lambda: plane.kubectl("get", "pod", pod, "-n", namespace, check=False).returncode != 0,
               f"pod {pod} gone")
    docker.docker("rm", "--force", f"image-registry-{ada.name}")

    refresh = ada("refresh", "--yes")
    deleted = set(re.findall(r"^ +- +\S+ (\S+) deleted\b", refresh.stdout, re.MULTILINE))
    assert deleted == {"target-statefulset", "registry-container"}, refresh.stdout[:3000]

    downloaded = len(origins.downloads())
    up = ada("up", "--yes", "--skip-preview")
    assert "target-statefulset created" in up.stdout and "registry-container created" in up.stdout, up.stdout[-3000:]
    assert "debug-image-build" not in up.stdout, "nothing pushed again: the registry kept its images"
    assert manifest_served(docker, ada)
    assert len(origins.downloads()) == downloaded
    # The pod is new: lldb-server started again in its namespaces, and the attach works as before.
    wait_until(lambda: any(p.name == pod for p in kubelet.pods.values()), "the new pod's sandbox")
    outputs = ada.outputs()
    assert_stopped_in_envoy(stop_in_envoy(docker, outputs, origins), outputs, origins)


# --- 10: two developers --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def grace(machine, project, origins, ada, module_tmp) -> Stack:
    """A second developer's stack, made after the first one's file exists (so its values are its own)."""
    stack = make_stack(project, origins, stack_name("grace"), module_tmp("grace-work"))
    yield stack
    stack.tear_down()


def test_a_second_developers_stack_comes_up_beside_the_first(first_up, ada, grace, docker, origins):
    up = grace.streaming("up", "--yes", "--skip-preview")
    assert up.returncode == 0, up.output[-5000:]
    mine, theirs = ada.outputs(), grace.outputs()
    for key in ("registryPullAddress", "debuggerContainer", "connectUrl"):
        assert mine[key] != theirs[key], key
    # The same pod name, each in its stack's own namespace, on the one node: lldb-server tells them apart.
    assert mine["podName"] == theirs["podName"] and namespace_of(ada) != namespace_of(grace)
    assert_stopped_in_envoy(stop_in_envoy(docker, theirs, origins), theirs, origins)


def test_destroying_the_second_stack_leaves_the_first_working(first_up, ada, grace, docker, origins):
    grace("destroy", "--yes")
    assert containers(docker, grace) == {}
    ada("refresh", "--yes", "--expect-no-changes", timeout=300)
    ada("up", "--yes", "--skip-preview", "--expect-no-changes", timeout=300)
    outputs = ada.outputs()
    assert_stopped_in_envoy(stop_in_envoy(docker, outputs, origins), outputs, origins)


# --- 9: destroy ------------------------------------------------------------------------------------------------------


def test_destroy_takes_everything_away_and_keeps_the_work_dir(first_up, ada, docker, plane, kubelet, origins):
    outputs, namespace = ada.outputs(), namespace_of(ada)
    registry = outputs["registryPullAddress"]
    ada("destroy", "--yes")
    assert containers(docker, ada) == {}
    wait_until(lambda: plane.kubectl("get", "namespace", namespace, check=False).returncode != 0,
               f"namespace {namespace} gone")
    wait_until(lambda: not any(p.name == outputs["podName"] for p in kubelet.pods.values()), "the sandbox stopped")
    assert docker.docker("exec", NODE, "test", "-e", f"{CERTS_DIR}/{registry}", check=False).returncode != 0
    port = outputs["debuggerPorts"][0]
    assert not docker.docker("exec", NODE, "ss", "-Hltn", f"sport = :{port}").stdout.strip()
    leftovers = docker.docker("exec", NODE, "sh", "-c", f"ls {STATE_DIR} 2>/dev/null", check=False).stdout.split()
    assert not [f for f in leftovers if ada.name in f], leftovers
    # What took long to make stays: the checkout, the download, the registry's images.
    work = ada.work_dir
    assert (work / "work" / ".git").is_dir()
    prebuilt = work / "home" / ".cache" / "istio-proxy-debug" / "prebuilt" / origins.sha
    assert (prebuilt / "envoy").is_file() and (prebuilt / "envoy.dwp").is_file()
    assert (work / "registry" / "docker" / "registry" / "v2" / "repositories" / "proxyv2").is_dir()
    assert not (work / "work" / ".vscode" / "launch.json").exists(), "the stack's configurations taken out again"


def test_the_next_up_after_destroy_downloads_nothing(first_up, ada, origins):
    requests = len(origins.bucket.requests)
    up = ada.streaming("up", "--yes", "--skip-preview")
    assert up.returncode == 0, up.output[-5000:]
    assert origins.bucket.requests[requests:] == [], "the bucket was not asked for anything"


# --- 11: secrets -----------------------------------------------------------------------------------------------------


def test_the_secrets_appear_in_plain_text_nowhere(first_up, ada, project):
    """Nowhere in the state (every file the file backend keeps: the stack, its history and backups), `stack export`,
    the outputs, any command's output, or the stack file; the workDir set in plain text is found there, so the
    search reads what it should."""
    import base64

    forbidden = [CODE_SERVER_PASSWORD, base64.b64encode(CODE_SERVER_PASSWORD.encode()).decode(),
                 *[line for line in SSH_KEY.splitlines() if "PRIVATE KEY" not in line],
                 base64.b64encode(SSH_KEY.encode()).decode()[:40]]
    state = Path(urlparse(project.env["PULUMI_BACKEND_URL"]).path)
    texts = {str(p): p.read_bytes().decode(errors="replace") for p in state.rglob("*") if p.is_file()}
    texts["stack export"] = ada("stack", "export").stdout
    texts["stack output"] = ada("stack", "output", "--json").stdout
    texts["stack file"] = (project.project / f"Pulumi.{ada.name}.yaml").read_text()
    texts.update({f"command {i}": t for i, t in enumerate(ada.transcripts)})
    assert any(str(ada.work_dir) in t for name, t in texts.items() if name.startswith(str(state))), (
        "the state files hold the plain config")
    for name, text in texts.items():
        for secret in forbidden:
            assert secret not in text, f"a secret in plain text in {name}"
