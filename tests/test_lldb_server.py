"""S8 and S10 end to end: the node-side scripts exactly as the program renders them, run by bash in a
stand-in for the node and the pod, then the real lldb client driven by the stack's own launchJson.

The "node" is a network namespace with a firewall that opens only the stack's debuggerPorts; the "pod"
is a process tree in its own UTS, PID and mount namespaces (hostname = the pod name, the debug image's
lldb-server at /opt/lldb-server/bin), running a stripped `envoy`; decoy `envoy`s run in other UTS
namespaces. The node address is loopback (nodes=["127.0.0.1"]), and so is the debugger's (registryHost, the
one peer lldb-server accepts); /run and /home are private mounts.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from components.lldb_server import IMAGE_LLDB_SERVER
from tests.conftest import evaluate, require_tool, resource
from tests.lldb_session import compile_debuggee, lldb_environment, source_line

POD = "fortio-server-0"  # the walkthrough's pod: StatefulSet fortio-server, replica 0
NAMESPACE = "mark"  # the dev stack's namespace, which lldb-server-platform names
ZTUNNEL_POD = "ztunnel-7xk2p"  # ambient mode's node proxy, a DaemonSet pod on every node
ZTUNNEL_NAMESPACE = "istio-system"
WAYPOINT = ("target=waypoint", "istioVersion=1.30.3")
NODE = ["nodes=[\"127.0.0.1\"]", "targetNodeAddress=127.0.0.1", "registryHost=127.0.0.1"]
# A second address of the node's netns, standing for a debugger that is not loopback.
DEBUGGER_ELSEWHERE = "10.213.0.9"
# The first packets of an lldb session: an ack, then QStartNoAckMode, which a platform answers "+$OK#9a".
HANDSHAKE = "+$QStartNoAckMode#b0"


@pytest.fixture(scope="module", autouse=True)
def needs_root_and_tools():
    if os.geteuid() != 0:
        pytest.skip("needs root for network, UTS, PID and mount namespaces")
    for tool in ("ip", "iptables", "unshare", "nsenter", "lldb", "lldb-server", "ss", "objcopy", "setsid"):
        require_tool(tool)


@pytest.fixture(scope="module")
def binaries(module_tmp) -> dict[str, Path]:
    """The unstripped debuggee (the developer's ELF) and its stripped copy named envoy (the image's)."""
    work = module_tmp("binaries")
    elf = compile_debuggee(work)
    (work / "pod").mkdir()
    stripped = work / "pod" / "envoy"
    subprocess.run(["objcopy", "--strip-debug", str(elf), str(stripped)], check=True)
    # The image's lldb-server folder: the real binary and the versioned names Debian's build spawns.
    server = Path(os.path.realpath(shutil.which("lldb-server")))
    image_bin = work / "image-lldb-server"
    image_bin.mkdir()
    shutil.copy2(server, image_bin / "lldb-server")
    for alias in server.parent.glob("lldb-server-*"):
        (image_bin / alias.name).symlink_to("lldb-server")
    # The pod sandbox's process: anything that only waits, under the name ps shows for containerd's.
    pause = work / "pause"
    shutil.copy2(shutil.which("sleep"), pause)
    # ztunnel's process, likewise.
    ztunnel = work / "ztunnel"
    shutil.copy2(shutil.which("sleep"), ztunnel)
    return {"elf": elf, "envoy": stripped, "image_bin": image_bin, "pause": pause, "ztunnel": ztunnel}


@pytest.fixture
def node(tmp_path) -> Iterator[dict]:
    """A network namespace standing for the node, its firewall open only for the debugger ports."""
    name = f"ipd-node-{os.getpid()}-{tmp_path.name[-12:]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        (tmp_path / "run").mkdir()
        (tmp_path / "home").mkdir()
        yield {"netns": name, "run": tmp_path / "run", "home": tmp_path / "home"}
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def firewall(node: dict, ports: list[int]) -> None:
    rules = [
        ["-A", "INPUT", "-i", "lo", "-p", "tcp", "-m", "multiport", "--dports", ",".join(map(str, ports)),
         "-j", "ACCEPT"],
        ["-A", "INPUT", "-i", "lo", "-p", "tcp", "--syn", "-j", "REJECT", "--reject-with", "tcp-reset"],
    ]
    for rule in rules:
        subprocess.run(["ip", "netns", "exec", node["netns"], "iptables", *rule], check=True)


def on_node(node: dict, command: str, stdin: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """Runs a command as root "on the node": in its netns, with a private /run (pidfile, log) and /home."""
    wrapper = f"mount --bind {node['run']} /run && mount --bind {node['home']} /home && exec {command}"
    return subprocess.run(["ip", "netns", "exec", node["netns"], "sh", "-c", wrapper], input=stdin,
                          capture_output=True, text=True, timeout=timeout, env=lldb_environment())


@contextlib.contextmanager
def pod(hostname: str, binaries: dict, *, with_lldb_server: bool = True, process: str = "envoy",
        namespace: str = NAMESPACE) -> Iterator[None]:
    """A process tree in its own UTS, PID and mount namespaces, like istio-proxy's container of the pod: its
    environment names the pod's namespace, as Istio's injector gives it (POD_NAMESPACE)."""
    mount = ""
    if with_lldb_server:
        mount = (f"mount -t tmpfs tmpfs /opt && mkdir -p {os.path.dirname(IMAGE_LLDB_SERVER)} && "
                 f"cp -a {binaries['image_bin']}/. {os.path.dirname(IMAGE_LLDB_SERVER)}/ && ")
    run = str(binaries["envoy"]) if process == "envoy" else "sleep infinity"
    script = f"hostname {hostname} && {mount}{{ POD_NAMESPACE={namespace} {run} & }} && wait"
    name = "envoy" if process == "envoy" else "sleep"
    # Only this pod's own process counts as started: another pod of the same hostname may be running already.
    before = set(pids(name))
    proc = subprocess.Popen(["unshare", "--uts", "--pid", "--mount", "--mount-proc", "--kill-child", "--",
                             "bash", "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not any(in_uts(pid, hostname) for pid in set(pids(name)) - before):
            assert time.monotonic() < deadline, f"the {hostname} sandbox did not start"
            time.sleep(0.05)
        yield
    finally:
        proc.kill()
        proc.wait()


def children(pid: int, name: str) -> list[int]:
    done = subprocess.run(["pgrep", "-P", str(pid), "-x", name], capture_output=True, text=True)
    return [int(p) for p in done.stdout.split()]


# A container: its name, whether its root has the debug image's lldb-server, its processes in start order, and
# whether its environment names the pod's namespace (POD_NAMESPACE: Istio gives it to istio-proxy and ztunnel).
Container = tuple[str, bool, tuple[str, ...], bool]
PROXY: Container = ("istio-proxy", True, ("envoy",), True)
# The app image's own root: no lldb-server in it, whatever the node has at that path; `sleep infinity` and a decoy.
APP: Container = ("main-app", False, ("sleep", "envoy"), False)
# A decoy beside ztunnel, with an lldb-server in its root: only the hostname tells it from the target's.
ZTUNNEL: Container = ("ztunnel", True, ("ztunnel", "envoy"), True)


@contextlib.contextmanager
def sandboxed_pod(hostname: str, binaries: dict, containers: list[Container],
                  namespace: str = NAMESPACE) -> Iterator[dict[str, dict[str, int]]]:
    """The pod as containerd runs it without shareProcessNamespace: a sandbox whose pause process holds the
    pod's UTS namespace (hostname = pod name), and containers, started in the order given, that join it but
    each have their own PID and mount namespaces. A sidecar pod is [APP, PROXY]: only istio-proxy's has the
    debug image's lldb-server, and the pod has two envoys with its hostname; a native sidecar (an init
    container with restartPolicy: Always) starts before the app container: [PROXY, APP]. Yields each
    container's node pids by process name."""
    image = os.path.dirname(IMAGE_LLDB_SERVER)

    def script(lldb_server: bool, processes: tuple[str, ...], knows_namespace: bool) -> str:
        copy = f" && mkdir -p {image} && cp -a {binaries['image_bin']}/. {image}/" if lldb_server else ""
        environment = f"export POD_NAMESPACE={namespace} && " if knows_namespace else ""
        run = [str(binaries["envoy"]) if p == "envoy" else f"{binaries.get(p, p)} infinity" for p in processes]
        return (f"{environment}mount -t tmpfs tmpfs /opt{copy} && " + "".join(f"{{ {r} & }} && " for r in run)
                + "wait")

    started: list[subprocess.Popen] = []
    found: dict[str, dict[str, int]] = {}

    def start(name: str, args: list[str], processes: list[str]) -> None:
        """Runs one unshare and waits for its processes: the children of its bash, the namespace's init."""
        unshared = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started.append(unshared)
        deadline = time.monotonic() + 10
        while True:
            found[name] = {p: pid for init in children(unshared.pid, "bash") for p in processes
                           for pid in children(init, p)}
            if len(found[name]) == len(processes):
                return
            assert unshared.poll() is None and time.monotonic() < deadline, f"the {name} container did not start"
            time.sleep(0.05)

    try:
        start("sandbox", ["unshare", "--uts", "--pid", "--mount", "--mount-proc", "--kill-child", "--", "bash", "-c",
                          f"hostname {hostname} && {{ {binaries['pause']} infinity & }} && wait"], ["pause"])
        for name, lldb_server, processes, knows_namespace in containers:
            start(name, ["nsenter", "-t", str(found["sandbox"]["pause"]), "-u", "--",
                         "unshare", "--pid", "--mount", "--mount-proc", "--kill-child", "--", "bash", "-c",
                         script(lldb_server, processes, knows_namespace)], list(processes))
        yield found
    finally:
        # Killing a PID namespace's init kills the rest of the namespace before the init itself exits; unshare
        # then reaps it and exits, so nothing is left behind, not even a zombie for the node's init to reap.
        for unshared in reversed(started):
            inits = children(unshared.pid, "bash")
            for init in inits:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(init, signal.SIGKILL)
            if not inits:
                unshared.kill()
            try:
                unshared.wait(timeout=10)
            except subprocess.TimeoutExpired:
                unshared.kill()
                unshared.wait()


@contextlib.contextmanager
def ambient_node(binaries: dict) -> Iterator[dict[str, dict[str, dict[str, int]]]]:
    """The rest of an ambient node with a waypoint target: the app's pod without a sidecar (its own process and
    a decoy envoy, no lldb-server), and ztunnel's pod (`ztunnel`, and a decoy envoy with an lldb-server)."""
    with sandboxed_pod(POD, binaries, [APP]) as app, \
            sandboxed_pod(ZTUNNEL_POD, binaries, [ZTUNNEL], ZTUNNEL_NAMESPACE) as ztunnel:
        yield {"app": app, "ztunnel": ztunnel}


def namespace(pid: int, kind: str) -> str:
    return os.readlink(f"/proc/{pid}/ns/{kind}")


def ns_pid(pid: int) -> int:
    """The pid as the process's own PID namespace sees it."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("NSpid:")).split()[-1])


def pids(name: str) -> list[int]:
    done = subprocess.run(["pgrep", "-x", name], capture_output=True, text=True)
    return [int(p) for p in done.stdout.split()]


def in_uts(pid: int, hostname: str) -> bool:
    done = subprocess.run(["nsenter", "-t", str(pid), "-u", "hostname"], capture_output=True, text=True)
    return done.stdout.strip() == hostname


def rendered(*sets: str) -> tuple[dict, dict]:
    """The node command's inputs and the stack outputs, for the dev stack with loopback as the node."""
    evaluation = evaluate("dev", *NODE, *sets)
    return resource(evaluation, "lldb-server-platform")["inputs"], evaluation["outputs"]


def create(node: dict, inputs: dict) -> subprocess.CompletedProcess:
    return on_node(node, inputs["create"], stdin=inputs["stdin"])


def delete(node: dict, inputs: dict) -> subprocess.CompletedProcess:
    return on_node(node, f"sh -c {shlex.quote(inputs['delete'])}")


def server_groups(port: int) -> set[int]:
    """Process groups of lldb-server platforms listening on the port (nsenter and the server share one)."""
    done = subprocess.run(["pgrep", "-f", f"lldb-server platform --server --listen 127.0.0.1:{port}"],
                          capture_output=True, text=True)
    return {os.getpgid(int(pid)) for pid in done.stdout.split() if Path(f"/proc/{pid}").exists()}


def init_commands(outputs: dict) -> list[str]:
    launch = json.loads(outputs["launchJson"])
    codelldb = next(c for c in launch["configurations"] if c["type"] == "lldb")
    return codelldb["initCommands"]


def lldb_on_node(node: dict, commands: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    args = " ".join(f"-o {shlex.quote(c)}" for c in commands)
    return on_node(node, f"lldb --batch --no-lldbinit {args}", timeout=timeout)


def attach_and_backtrace(node: dict, outputs: dict, binaries: dict, nspid: int) -> str:
    """The real lldb on the node, with the stack's init commands: attach to the pid, backtrace, detach."""
    transcript = lldb_on_node(node, [
        *init_commands(outputs),
        f"target create {binaries['elf']}",
        f"process attach --pid {nspid}",
        "bt",
        "detach",
    ])
    text = transcript.stdout + transcript.stderr
    assert "error:" not in text, text
    return text


def create_and_attach(node: dict, inputs: dict, outputs: dict, binaries: dict, envoy: int) -> None:
    """The rendered create picks `envoy` (a node pid) in the stack's pod and prints its pid as its own PID
    namespace sees it; the real lldb attaches there and stops in the debuggee; delete stops the server."""
    done = create(node, inputs)
    assert done.returncode == 0, done.stderr
    assert f"in the namespaces of {outputs['podName']}'s envoy (node pid {envoy})" in done.stderr, done.stderr
    nspid = int(done.stdout.strip())
    assert nspid == ns_pid(envoy) != envoy, "the pid as istio-proxy sees it, not as the node does"
    text = attach_and_backtrace(node, outputs, binaries, nspid)
    assert f"Process {nspid} stopped" in text, text
    assert f"demo::wait_for_debugger() at prog.cc:{source_line('parked here')}" in text, text
    assert f"demo::handle_request(n=1) at prog.cc:{source_line('called here')}" in text, text
    assert delete(node, inputs).returncode == 0


# --- attach mode -----------------------------------------------------------------------------------------


def test_create_then_lldb_attaches_through_the_firewall_with_the_stacks_own_init_commands(node, binaries):
    inputs, outputs = rendered()
    firewall(node, outputs["debuggerPorts"])
    with pod(POD, binaries), pod("other-pod-0", binaries), pod("decoy-1", binaries, with_lldb_server=False):
        done = create(node, inputs)
        assert done.returncode == 0, done.stderr
        nspid = int(done.stdout.strip())
        host_pids = [pid for pid in pids("envoy") if in_uts(pid, POD)]
        assert nspid not in host_pids, "the pid as the pod sees it, not as the node does"
        text = attach_and_backtrace(node, outputs, binaries, nspid)
        assert f"connect://127.0.0.1:{outputs['debuggerPorts'][0]}" in text
        assert f"demo::wait_for_debugger() at prog.cc:{source_line('parked here')}" in text, text
        assert f"demo::handle_request(n=1) at prog.cc:{source_line('called here')}" in text, text
        assert delete(node, inputs).returncode == 0
    assert server_groups(outputs["debuggerPorts"][0]) == set()
    assert not (node["run"] / "istio-proxy-debug").exists(), "delete leaves no pidfile, log or folder"


@pytest.mark.parametrize("native_sidecar", [False, True], ids=["sidecar", "native-sidecar"])
def test_create_picks_the_proxys_envoy_among_the_pods_containers_and_lldb_attaches(node, binaries, native_sidecar):
    """Whichever container starts first, the envoy is the one beside the debug image's lldb-server: the app
    container's envoy has the pod's hostname too, and only istio-proxy's PID namespace has the real one."""
    inputs, outputs = rendered()
    firewall(node, outputs["debuggerPorts"])
    with sandboxed_pod(POD, binaries, [PROXY, APP] if native_sidecar else [APP, PROXY]) as containers:
        envoy, decoy = containers["istio-proxy"]["envoy"], containers["main-app"]["envoy"]
        assert namespace(envoy, "uts") == namespace(decoy, "uts") == namespace(containers["sandbox"]["pause"], "uts")
        assert namespace(envoy, "pid") != namespace(decoy, "pid") and namespace(envoy, "mnt") != namespace(decoy, "mnt")
        create_and_attach(node, inputs, outputs, binaries, envoy)
    assert server_groups(outputs["debuggerPorts"][0]) == set()
    assert not [pid for c in containers.values() for pid in c.values() if Path(f"/proc/{pid}").exists()], (
        "the pod's processes are all gone, none left as a zombie")


def test_waypoint_target_names_the_waypoints_pod_not_the_ambient_apps():
    evaluation = evaluate("dev", *NODE, *WAYPOINT)
    inputs, outputs = resource(evaluation, "lldb-server-platform")["inputs"], evaluation["outputs"]
    (gateway,), (app,) = ([r["inputs"] for r in evaluation["resources"] if r["custom"] and r["inputs"].get("kind") == k]
                          for k in ("Gateway", "StatefulSet"))
    lines = inputs["stdin"].splitlines()
    assert [line for line in lines if line.startswith("POD_NAME=")] == [f"POD_NAME='{outputs['podName']}'"]
    assert "PROCESS_NAME='envoy'" in lines
    # A pod of the Deployment istiod renders for the waypoint's Gateway (named as the Gateway), not the app's.
    assert gateway["spec"]["gatewayClassName"] == "istio-waypoint"
    assert outputs["podName"].startswith(f"{gateway['metadata']['name']}-"), outputs["podName"]
    assert outputs["podName"] != f"{app['metadata']['name']}-0" == POD
    labels = app["spec"]["template"]["metadata"]["labels"]
    assert labels["sidecar.istio.io/inject"] == "false" and labels["istio.io/dataplane-mode"] == "ambient"


def test_waypoint_create_picks_the_waypoints_envoy_not_the_apps_or_ztunnels_and_lldb_attaches(node, binaries):
    """Ambient: the app pod has no sidecar and ztunnel runs on the node; the Envoy under debug is in the waypoint's
    own pod. The app's decoy envoy has no lldb-server, ztunnel's has one: only the hostname tells it apart."""
    inputs, outputs = rendered(*WAYPOINT)
    firewall(node, outputs["debuggerPorts"])
    with sandboxed_pod(outputs["podName"], binaries, [PROXY]) as waypoint, ambient_node(binaries) as others:
        envoy = waypoint["istio-proxy"]["envoy"]
        app, ztunnel = others["app"]["main-app"]["envoy"], others["ztunnel"]["ztunnel"]["envoy"]
        assert {envoy, app, ztunnel} <= set(pids("envoy")), "every one a candidate by name"
        assert in_uts(others["ztunnel"]["ztunnel"]["ztunnel"], ZTUNNEL_POD)
        assert [Path(f"/proc/{pid}/root{IMAGE_LLDB_SERVER}").exists() for pid in (envoy, app, ztunnel)] == [
            True, False, True]
        create_and_attach(node, inputs, outputs, binaries, envoy)
    assert server_groups(outputs["debuggerPorts"][0]) == set()
    assert not (node["run"] / "istio-proxy-debug").exists(), "delete leaves no pidfile, log or folder"


def test_the_firewall_really_closes_other_ports(node):
    _, outputs = rendered()
    firewall(node, outputs["debuggerPorts"])
    probe = ("python3 -c \"import socket,sys; s=socket.socket(); s.bind(('127.0.0.1', {p})); s.listen();"
             " c=socket.socket(); c.settimeout(2); sys.exit(c.connect_ex(('127.0.0.1', {p})))\"")
    closed = on_node(node, probe.format(p=outputs["debuggerPorts"][-1] + 1))
    opened = on_node(node, probe.format(p=outputs["debuggerPorts"][-1]))
    assert closed.returncode != 0 and opened.returncode == 0


def test_create_twice_leaves_one_server_and_delete_leaves_none(node, binaries):
    inputs, outputs = rendered()
    port = outputs["debuggerPorts"][0]
    with pod(POD, binaries):
        first = create(node, inputs)
        assert first.returncode == 0, first.stderr
        groups = server_groups(port)
        assert len(groups) == 1
        second = create(node, inputs)
        assert second.returncode == 0, second.stderr
        assert "stopped lldb-server" in second.stderr
        again = server_groups(port)
        assert len(again) == 1 and again != groups, "the old server is gone, a new one runs"
        assert (node["run"] / "istio-proxy-debug" / "lldb-server-istio-proxy-debug-dev.pid").read_text().strip() == (
            str(next(iter(again))))
        assert delete(node, inputs).returncode == 0
        assert server_groups(port) == set()
        assert not (node["run"] / "istio-proxy-debug").exists()


def handshake_from(node: dict, source: str, port: int) -> str:
    """What lldb-server answers a session's first packets sent from `source` (empty: it closed the connection)."""
    client = ("import socket,sys; c=socket.socket(); c.settimeout(5); c.bind((sys.argv[1], 0));"
              " c.connect((sys.argv[1], int(sys.argv[2]))); c.sendall(sys.argv[3].encode()); d=b''\n"
              "try:\n while b'#' not in d:\n  b=c.recv(64)\n  d+=b\n  if not b: break\n"
              "except OSError: pass\nprint(d.decode())")
    done = on_node(node, f"python3 -c {shlex.quote(client)} {source} {port} {shlex.quote(HANDSHAKE)}")
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_server_takes_the_debuggers_address_only_on_the_declared_ports(node, binaries):
    inputs, outputs = rendered()
    with pod(POD, binaries):
        assert create(node, inputs).returncode == 0
        listening = {line.split()[3] for line in on_node(node, "ss -Hltn").stdout.splitlines()}
        assert listening == {f"127.0.0.1:{outputs['debuggerPorts'][0]}"}, "loopback's peer is bound as it is"
        process = subprocess.run(["pgrep", "-a", "-f", "lldb-server platform --server"], capture_output=True,
                                 text=True).stdout
        gdb = outputs["debuggerPorts"][1:]
        assert f"--min-gdbserver-port {gdb[0]} --max-gdbserver-port {gdb[-1] + 1}" in process, process
        assert delete(node, inputs).returncode == 0


def test_another_peer_than_the_debugger_is_turned_away(node, binaries):
    """For a debugger address other than loopback LLDB listens everywhere and checks the peer: the debugger's
    session is answered, the same packets from another address of the node are not."""
    subprocess.run(["ip", "-n", node["netns"], "address", "add", f"{DEBUGGER_ELSEWHERE}/32", "dev", "lo"], check=True)
    inputs, outputs = rendered(f"registryHost={DEBUGGER_ELSEWHERE}")
    port = outputs["debuggerPorts"][0]
    assert f"LISTEN_ADDRESS='{DEBUGGER_ELSEWHERE}'" in inputs["stdin"]
    with pod(POD, binaries):
        assert create(node, inputs).returncode == 0
        listening = {line.split()[3] for line in on_node(node, "ss -Hltn").stdout.splitlines()}
        assert listening == {f"0.0.0.0:{port}"}, "not a bind address: LLDB listens on every address"
        assert handshake_from(node, DEBUGGER_ELSEWHERE, port) == "+$OK#9a"
        assert handshake_from(node, "127.0.0.1", port) == "", "another peer is turned away"
        log = on_node(node, "cat /run/istio-proxy-debug/lldb-server-istio-proxy-debug-dev.log").stdout
        assert f"rejecting incoming connection from 127.0.0.1 (expecting {DEBUGGER_ELSEWHERE})" in log, log
        assert delete(node, inputs).returncode == 0


def test_listen_all_binds_every_address_only_when_set(node, binaries):
    inputs, outputs = rendered("lldbServerListenAll=true")
    assert outputs["connectUrl"] == f"connect://127.0.0.1:{outputs['debuggerPorts'][0]}"
    with pod(POD, binaries):
        assert create(node, inputs).returncode == 0
        listening = {line.split()[3] for line in on_node(node, "ss -Hltn").stdout.splitlines()}
        assert listening == {f"0.0.0.0:{outputs['debuggerPorts'][0]}"}
        assert delete(node, inputs).returncode == 0
        # The same address without the setting (a hand-edited or stale script) is refused.
        tampered = {**inputs, "stdin": inputs["stdin"].replace("LISTEN_ALL='true'", "LISTEN_ALL='false'")}
        refused = create(node, tampered)
    assert refused.returncode == 1
    assert "refusing to serve every peer (0.0.0.0) without lldbServerListenAll" in refused.stderr


# --- the cases that must fail clearly ----------------------------------------------------------------------


def test_no_envoy_in_the_pod_is_named(node, binaries):
    inputs, _ = rendered()
    with pod("other-pod-0", binaries):
        done = create(node, inputs)
    assert done.returncode == 1
    assert f"no envoy process of pod {NAMESPACE}/{POD} on this node" in done.stderr
    assert f"({NAMESPACE}/other-pod-0)" in done.stderr, "says what it found instead"


def test_a_pod_of_the_same_name_in_another_namespace_is_left_alone(node, binaries):
    """Two developers' stacks, each with its fortio-server-0 in its own namespace, on one node: the server
    attaches to the stack's own pod's envoy, and with only the other's running it says what it found."""
    inputs, outputs = rendered()
    with pod(POD, binaries, namespace="grace"):
        done = create(node, inputs)
        assert done.returncode == 1
        assert f"no envoy process of pod {NAMESPACE}/{POD} on this node" in done.stderr, done.stderr
        assert f"(grace/{POD})" in done.stderr, "says what it found instead"
        with pod(POD, binaries):
            ours = [pid for pid in pids("envoy") if in_uts(pid, POD) and f"POD_NAMESPACE={NAMESPACE}".encode()
                    in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")]
            assert len(ours) == 1
            create_and_attach(node, inputs, outputs, binaries, ours[0])


def test_two_envoys_with_the_pods_hostname_are_refused(node, binaries):
    inputs, _ = rendered()
    with pod(POD, binaries), pod(POD, binaries):
        done = create(node, inputs)
    assert done.returncode == 1
    assert f"several envoy processes of pod {NAMESPACE}/{POD}" in done.stderr


def test_a_pod_without_the_debug_images_lldb_server_is_named(node, binaries):
    inputs, _ = rendered()
    with pod(POD, binaries, with_lldb_server=False):
        done = create(node, inputs)
    assert done.returncode == 1
    assert f"has no {IMAGE_LLDB_SERVER}: does the pod run the debug image?" in done.stderr


# --- startup mode ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", [(), WAYPOINT], ids=["sidecar", "waypoint"])
def test_startup_mode_waits_for_envoy_by_name_and_catches_its_start(node, binaries, target, tmp_path):
    """The waiting istio-proxy, the sidecar's or the waypoint's; beside a waypoint, the ambient app's pod runs a
    `sleep` too, with another hostname."""
    inputs, outputs = rendered("mode=startup", *target)
    firewall(node, outputs["debuggerPorts"])
    launch = json.loads(outputs["launchJson"])
    codelldb = next(c for c in launch["configurations"] if c["type"] == "lldb")
    assert "pid" not in codelldb
    others = ambient_node(binaries) if target else contextlib.nullcontext()
    with pod(outputs["podName"], binaries, process="sleep"), others:
        done = create(node, inputs)
        assert done.returncode == 0, done.stderr
        waiting = next(pid for pid in pids("sleep") if in_uts(pid, outputs["podName"]))
        assert f"(node pid {waiting})" in done.stderr, done.stderr
        packets = tmp_path / "lldb-packets.log"
        args = " ".join(f"-o {shlex.quote(c)}" for c in [
            f"log enable -f {packets} gdb-remote packets",
            *codelldb["initCommands"], f"target create {binaries['elf']}", *codelldb["processCreateCommands"],
            "process status", "detach",
        ])
        wrapper = f"mount --bind {node['run']} /run && mount --bind {node['home']} /home && exec lldb --batch {args}"
        client = subprocess.Popen(["ip", "netns", "exec", node["netns"], "sh", "-c", wrapper], text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=lldb_environment())
        try:
            # lldb is waiting only once its gdbserver has listed the envoys already there (which it ignores):
            # start Envoy as pilot-agent would, in the waiting container, only then.
            wait_for_attach_wait(client, packets, waiting)
            started = subprocess.Popen(["nsenter", "-t", str(waiting), "-u", "-p", "-m", "--",
                                        str(binaries["envoy"])])
            try:
                transcript, _ = client.communicate(timeout=60)
                caught = ns_pid(children(started.pid, "envoy")[0])
            finally:
                started.kill()
                started.wait()
        finally:
            if client.poll() is None:
                client.kill()
                client.wait()
        assert delete(node, inputs).returncode == 0
    assert "error:" not in transcript, transcript
    assert "process attach --name envoy --waitfor" in transcript
    assert "stopped" in transcript and "envoy" in transcript.split("process status", 1)[1], transcript
    assert f"Process {caught} stopped" in transcript, "the envoy started in the waiting container"


def wait_for_attach_wait(client: subprocess.Popen, packets: Path, in_pod: int, timeout: float = 60) -> None:
    """Until lldb's `process attach --waitfor` is in place: lldb has sent vAttachWait (its packet log says so)
    and the pod's gdbserver, past listing the processes of that name it will ignore, polls for a new one
    (sleeps between rounds, which its wchan shows where the kernel names waits: the pod's `sleep infinity`,
    waiting, tells)."""
    deadline = time.monotonic() + timeout
    pod_pids = namespace(in_pod, "pid")
    names_waits = Path(f"/proc/{in_pod}/wchan").read_text() not in ("", "0")
    seen = ""
    while True:
        if client.poll() is not None:
            pytest.fail(f"lldb exited ({client.returncode}) before its attach-wait was in place:\n"
                        f"{client.stdout.read()}")
        sent = packets.exists() and "vAttachWait" in packets.read_text(errors="replace")
        if sent and not names_waits:
            return
        if sent:
            seen = ""
            for pid in [int(p) for p in os.listdir("/proc") if p.isdigit()]:
                with contextlib.suppress(OSError):
                    if (b"gdbserver" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                            and namespace(pid, "pid") == pod_pids):
                        seen = Path(f"/proc/{pid}/wchan").read_text()
                        if "nanosleep" in seen:
                            return
        if time.monotonic() > deadline:
            client.kill()
            pytest.fail(f"lldb's attach-wait was not in place within {timeout:.0f} s: " + (
                f"the pod's gdbserver is in {seen or 'no wait'} after vAttachWait, not polling" if sent else
                f"no vAttachWait in its packet log {packets}") + f"\n{client.communicate()[0]}")
        time.sleep(0.05)
