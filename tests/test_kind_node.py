"""The lab's node scripts on a kind node stand-in, with the real Docker engine (tests/docker_engine.py).

The `lab` stack (cluster: kind, nodeAccess docker) is evaluated under mocks, and every command it renders
runs as rendered: nothing here re-renders a script. The node is tests/kind_node.py's stand-in of a kind node;
its firewall drops inbound TCP except on the stack's `debuggerPorts`. On the same network: the stack's registry
container and its debugger container, each named as the stack names them.

What it proves:
- the debug image, staged through `docker exec` into the debugger and built and pushed by the stack's own
  commands, is pulled by the node by digest, from the registry's container name over plain HTTP, once the
  stack's containerd-mirror command has run (and not before it, nor after its delete);
- `lldb-server-node-address` prints the node's address on the network, the one the stack connects to;
- lldb-server starts in a pod stand-in running that pulled image (a pause process holding the pod's UTS
  namespace, istio-proxy's envoy in its own PID and mount namespaces, its root the image's), and the real
  lldb in the debugger container attaches with the stack's `lldbCommands`, through `debuggerPorts` only, and
  the platform turns away the same packets from any other peer than the debugger's address;
- the stack's delete stops the server.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shlex
import subprocess
from pathlib import Path
from urllib.parse import urlparse

import pytest

from components.debug_image import pull_reference
from components.kind_cluster import CERTS_DIR
from components.lldb_server import IMAGE_LLDB_SERVER, STATE_DIR
from tests.conftest import evaluate, require_tool, resource
from tests.docker_engine import Engine, base_image, build_id, engine, made_by, registry_stand_in, run_args
from tests.kind_node import Pod, firewall, lldb_in, pull, start_node, start_pod
from tests.lldb_session import compile_debuggee, source_line
from tests.mock_stack import FAKE_IMAGE_DIGEST, PREBUILT_BUILD_ID, WALKTHROUGH_ENVOY_PID
from tests.test_docker_engine import command_of, container_args, workspace_folders

# The stack's Docker network for its node, registry and debugger (nodeNetwork): the test's own, not `kind`.
NETWORK = "ipd-kind-test"
# Every container and network the test makes carries it: one without it is someone else's, and left alone.
LABEL = "istio-proxy-debug.test=kind-node"
# --- the engine, the stack and its containers ---------------------------------------------------------------


@pytest.fixture(scope="module")
def docker():
    if os.geteuid() != 0:
        pytest.skip("dockerd, network namespaces and debootstrap need root")
    for tool in ("dockerd", "debootstrap", "ip", "nsenter", "readelf", "objcopy", "g++"):
        require_tool(tool)
    with engine() as running:
        yield running


@pytest.fixture(scope="module")
def lab(module_tmp) -> dict:
    """The `lab` stack with its workDir here and its network the test's own."""
    work = module_tmp("lab")
    evaluation = evaluate("lab", f"workDir={work}", f"nodeNetwork={NETWORK}")
    return {"work": work, "evaluation": evaluation, "outputs": evaluation["outputs"]}


def inputs_of(lab: dict, name: str) -> dict:
    return resource(lab["evaluation"], name)["inputs"]


def node_name(lab: dict) -> str:
    """The node container the stack's commands name (`docker exec -i <node> bash -s`)."""
    words = shlex.split(inputs_of(lab, "lldb-server-platform")["create"])
    assert words[:3] == ["docker", "exec", "-i"] and words[4:] == ["bash", "-s"], words
    return words[3]


def node_address(lab: dict) -> str:
    """Where the stack says the debugger connects: the address in connectUrl (the mocks' `docker inspect`)."""
    return urlparse(lab["outputs"]["connectUrl"]).hostname


def debugger_address(lab: dict) -> str:
    """The one peer the stack's lldb-server takes: its LISTEN_ADDRESS, the debugger container's address (the
    mocks' networkData)."""
    [address] = re.findall(r"^LISTEN_ADDRESS='([^']*)'$", inputs_of(lab, "lldb-server-platform")["stdin"],
                           flags=re.MULTILINE)
    return address


def claim(docker: Engine, kind: str, name: str) -> None:
    """Removes a leftover of this test by `name`; one that is not the test's (a developer's lab running on this
    engine) is left alone and the test does not run."""
    made = made_by(docker, kind, name, LABEL)
    if made is None:
        return
    if not made:
        pytest.skip(f"a {kind} named {name} that this test did not make exists on this Docker engine")
    if kind == "container":
        docker.docker("rm", "--force", "--volumes", name)
    else:
        docker.docker("network", "rm", name)


def sh(docker: Engine, command: str, stdin: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """A command of the stack as local.Command runs it: `/bin/sh -c <create>`, its stdin given, on this engine."""
    return subprocess.run(["/bin/sh", "-c", command], input=stdin, env=docker.env, capture_output=True, text=True,
                          timeout=timeout)


def on_node(docker: Engine, lab: dict, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return docker.docker("exec", node_name(lab), *args, check=check)


@pytest.fixture(scope="module")
def network(docker: Engine, lab: dict):
    """The stack's node network, with the subnet that gives the node and the debugger the addresses the mocks'
    inspect and networkData printed."""
    address = ipaddress.ip_address(node_address(lab))
    subnet = ipaddress.ip_network(f"{address}/16", strict=False)
    claim(docker, "network", NETWORK)
    # Containers without a fixed address take theirs from the upper half: the node's stays free.
    done = docker.docker("network", "create", "--label", LABEL, "--subnet", str(subnet),
                         "--ip-range", str(list(subnet.subnets())[1]), NETWORK, check=False)
    if done.returncode != 0 and "overlap" in done.stderr:
        # Only on an engine of the developer's (kind's own network often has it): the test's own engine has
        # no other network. The rendered commands name this address, so no other would do.
        pytest.skip(f"{subnet}, where the stack's node address is, is in use on this Docker engine")
    assert done.returncode == 0, done.stderr
    yield {"name": NETWORK, "subnet": subnet}
    docker.docker("network", "rm", NETWORK, check=False)


@pytest.fixture(scope="module")
def registry(docker: Engine, lab: dict, network: dict, module_tmp):
    """The stack's registry container (registry:2 stand-in) with the stack's arguments, on the network."""
    inputs = inputs_of(lab, "registry-container")
    assert inputs["networksAdvanced"] == [{"name": NETWORK}]
    image = registry_stand_in(docker, module_tmp("registry-image"))
    assert inputs_of(lab, "registry-image")["name"] == image
    Path(inputs["mounts"][0]["source"]).mkdir(parents=True, exist_ok=True)
    claim(docker, "container", inputs["name"])
    docker.docker("run", *run_args(inputs), "--label", LABEL, "--network", NETWORK, image)
    yield inputs
    docker.docker("rm", "--force", inputs["name"], check=False)


@pytest.fixture(scope="module")
def node(docker: Engine, lab: dict, network: dict, module_tmp):
    """The kind node stand-in, named as the stack names it, at the address the stack connects to, its firewall up:
    inbound TCP only on the stack's debuggerPorts, so the attach proves that lldb needs no other port."""
    name = node_name(lab)
    claim(docker, "container", name)
    try:
        start_node(docker, name, NETWORK, module_tmp("node-image"), "--label", LABEL,
                   "--ip", node_address(lab))
        firewall(docker, name, lab["outputs"]["debuggerPorts"])
        yield name
    finally:
        docker.docker("rm", "--force", "--volumes", name, check=False)


def host_path(container: dict, path: str) -> Path:
    """Where a path of the debugger container is on this machine, through its bind mounts."""
    for mount in container["mounts"]:
        if Path(path).is_relative_to(mount["target"]):
            return Path(mount["source"]) / Path(path).relative_to(mount["target"])
    raise AssertionError(f"{path} is in no mount of {container['name']}")


@pytest.fixture(scope="module")
def debugger(docker: Engine, lab: dict, network: dict):
    """The debugger image, built by the stack's command (FROM an ubuntu:22.04 stand-in), and the debugger
    container run from it with the stack's arguments, on the network."""
    base_image(docker, "docker.io/library/ubuntu:22.04")
    build = inputs_of(lab, "debugger-image")
    done = subprocess.run([*build["interpreter"], build["create"]], input=build["stdin"],
                          env={**docker.env, **build["environment"]}, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    inputs = inputs_of(lab, "debugger-container")
    workspace_folders(lab)
    # What envoy-source leaves: the Envoy checkout that lldbCommands' source maps point at.
    host_path(inputs, lab["outputs"]["envoyCheckout"]).mkdir(parents=True, exist_ok=True)
    claim(docker, "container", inputs["name"])
    assert ipaddress.ip_address(debugger_address(lab)) in network["subnet"]
    docker.docker("run", *container_args(inputs, NETWORK), "--ip", debugger_address(lab), "--label", LABEL,
                  done.stdout.strip().splitlines()[-1], *command_of(inputs))
    yield inputs
    docker.docker("rm", "--force", inputs["name"], check=False)


@pytest.fixture(scope="module")
def debug_image(docker: Engine, lab: dict, registry: dict, debugger: dict) -> dict:
    """The debug image as the stack makes it: the downloaded Envoy (a debuggee with the build-id the mocks'
    download reported, where the download puts it) staged in the debugger through `docker exec`, then built
    FROM the proxyv2 stand-in and pushed by the stack's build command. Returns the pushed reference and the
    reference the node pulls (the stack's debugImage, with the digest the push printed)."""
    elf_path = Path(lab["outputs"]["envoyElfHostPath"])
    elf_path.parent.mkdir(parents=True, exist_ok=True)
    elf = compile_debuggee(elf_path.parent, name=elf_path.name, extra=(f"-Wl,--build-id=0x{PREBUILT_BUILD_ID}",))
    assert build_id(elf) == lab["outputs"]["envoyBuildId"]
    staging = inputs_of(lab, "debug-image-context")
    staged = subprocess.run(["/bin/sh", "-c", staging["create"]], input=staging["stdin"],
                            env={**docker.env, **staging["environment"]}, capture_output=True, text=True, timeout=300)
    assert staged.returncode == 0, staged.stderr
    build = inputs_of(lab, "debug-image-build")
    base_image(docker, build["environment"]["BASE_IMAGE"])
    built = subprocess.run([*build["interpreter"], build["create"]], input=build["stdin"],
                           env={**docker.env, **build["environment"]}, capture_output=True, text=True, timeout=1800)
    assert built.returncode == 0, built.stderr[-3000:]
    pushed = built.stdout.strip().splitlines()[-1]
    reference = pull_reference(pushed, lab["outputs"]["registryPullAddress"])
    assert reference.split("@")[0] == lab["outputs"]["debugImage"].split("@")[0]
    assert lab["outputs"]["debugImage"].endswith(FAKE_IMAGE_DIGEST)
    return {"pushed": pushed, "reference": reference, "elf": elf}


# --- the containerd mirror ----------------------------------------------------------------------------------


def hosts_toml(lab: dict) -> str:
    return f"{CERTS_DIR}/{lab['outputs']['registryPullAddress']}/hosts.toml"


@pytest.fixture(scope="module")
def mirrored(docker: Engine, lab: dict, node: str, registry: dict, debug_image: dict) -> dict:
    """A pull before the stack's containerd-mirror command, the command as rendered, and the pull after it."""
    inputs = inputs_of(lab, f"containerd-mirror-{node}")
    before = pull(docker, node, debug_image["reference"])
    created = sh(docker, inputs["create"], inputs["stdin"])
    after = pull(docker, node, debug_image["reference"]) if created.returncode == 0 else None
    return {"inputs": inputs, "before": before, "created": created, "after": after}


def test_the_node_runs_containerd_on_kinds_config_with_the_stacks_patch(docker, lab, node):
    dumped = on_node(docker, lab, "containerd", "config", "dump").stdout
    assert f'config_path = "{CERTS_DIR}"' in dumped, dumped
    plugins = on_node(docker, lab, "ctr", "plugins", "ls").stdout
    assert any(line.split()[:2] == ["io.containerd.grpc.v1", "cri"] and line.split()[-1] == "ok"
               for line in plugins.splitlines()), plugins


def test_the_node_pulls_the_debug_image_by_digest_from_the_registrys_name_once_mirrored(docker, lab, mirrored,
                                                                                        debug_image):
    assert mirrored["before"].returncode != 0, "without the mirror the pull must fail, or this test proves nothing"
    assert "server gave HTTP response to HTTPS client" in mirrored["before"].stderr, mirrored["before"].stderr
    assert mirrored["created"].returncode == 0, mirrored["created"].stderr
    registry = lab["outputs"]["registryPullAddress"]
    summary = mirrored["created"].stdout
    assert f"through {hosts_toml(lab)} (config_path is set); no restart needed" in summary, summary
    assert registry == f"{inputs_of(lab, 'registry-container')['name']}:5000", "the registry by its container name"
    assert mirrored["after"].returncode == 0, mirrored["after"].stderr
    listed = on_node(docker, lab, "ctr", "--namespace", "k8s.io", "images", "ls").stdout
    digest = debug_image["pushed"].split("@", 1)[1]
    assert any(line.split()[0] == debug_image["reference"] and digest in line for line in listed.splitlines()), listed


def test_the_mirror_delete_as_rendered_removes_hosts_toml_and_the_pull_fails_again(docker, lab, mirrored,
                                                                                   debug_image):
    assert mirrored["created"].returncode == 0, mirrored["created"].stderr
    assert on_node(docker, lab, "test", "-f", hosts_toml(lab), check=False).returncode == 0
    deleted = sh(docker, mirrored["inputs"]["delete"])
    assert deleted.returncode == 0, deleted.stderr
    assert on_node(docker, lab, "test", "-e", hosts_toml(lab), check=False).returncode != 0, "hosts.toml is gone"
    assert pull(docker, node_name(lab), debug_image["reference"]).returncode != 0
    # Put back for the tests after this one (the pod runs from what the node pulled; nothing pulls again).
    again = sh(docker, mirrored["inputs"]["create"], mirrored["inputs"]["stdin"])
    assert again.returncode == 0, again.stderr


# --- lldb-server in a pod on the node, lldb in the debugger ----------------------------------------------


def test_the_node_address_command_prints_the_address_the_stack_connects_to(docker, lab, node):
    done = sh(docker, inputs_of(lab, "lldb-server-node-address")["create"])
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == node_address(lab)


@pytest.fixture(scope="module")
def pod(docker: Engine, lab: dict, node: str, mirrored: dict, debug_image: dict) -> Pod:
    """The pod as containerd runs it, on the node (tests/kind_node.py), from the image the node pulled; its envoy
    gets the pid the stack's mocks reported for the walkthrough's (the platform command must print it)."""
    assert mirrored["after"] is not None and mirrored["after"].returncode == 0, "the node has not pulled the image"
    [namespace] = re.findall(r"^POD_NAMESPACE='([^']*)'$", inputs_of(lab, "lldb-server-platform")["stdin"],
                             flags=re.MULTILINE)
    return start_pod(docker, node, namespace, lab["outputs"]["podName"], debug_image["reference"],
                     WALKTHROUGH_ENVOY_PID)


def test_the_pods_envoy_runs_from_the_pulled_image_in_its_own_namespaces(docker, lab, pod):
    def ns(pid: int, kind: str) -> str:
        return on_node(docker, lab, "readlink", f"/proc/{pid}/ns/{kind}").stdout.strip()

    assert ns(pod.envoy, "uts") == ns(pod.pause, "uts") != ns(1, "uts")
    for kind in ("pid", "mnt"):
        assert len({ns(pod.envoy, kind), ns(pod.pause, kind), ns(1, kind)}) == 3, kind
    status = on_node(docker, lab, "cat", f"/proc/{pod.envoy}/status").stdout
    assert next(line for line in status.splitlines() if line.startswith("NSpid:")).split()[-1] == str(
        WALKTHROUGH_ENVOY_PID)
    assert on_node(docker, lab, "test", "-x", f"/proc/{pod.envoy}/root{IMAGE_LLDB_SERVER}",
                   check=False).returncode == 0
    assert on_node(docker, lab, "test", "-e", IMAGE_LLDB_SERVER, check=False).returncode != 0, (
        "the node itself has no lldb-server: the one that runs is the image's")


def server_log(docker: Engine, lab: dict) -> str:
    """What lldb-server printed on the node (the start script's log, until the delete removes it)."""
    done = on_node(docker, lab, "sh", "-c", f"cat {STATE_DIR}/lldb-server-*.log", check=False)
    return f"lldb-server's log on the node:\n{done.stdout}{done.stderr}"


def handshake(docker: Engine, container: str, address: str, port: int) -> str:
    """An lldb session's first packets sent from `container`: what comes back ("+$OK#9a" from a platform that
    takes the peer; nothing when it turns the peer away)."""
    script = (f"exec 3<>/dev/tcp/{address}/{port} || exit 1; printf '+$QStartNoAckMode#b0' >&3; "
              "timeout 3 head -c 7 <&3; true")
    return docker.docker("exec", container, "bash", "-c", script, check=False).stdout


def tcp_probe(docker: Engine, debugger: dict, address: str, port: int) -> int:
    """From the debugger: 0 connected, 1 refused, 124 no answer within 3 s (dropped)."""
    return docker.docker("exec", debugger["name"], "timeout", "3", "bash", "-c",
                         f"exec 3<>/dev/tcp/{address}/{port}", check=False).returncode


def test_lldb_attaches_with_the_stacks_commands_through_only_the_debugger_ports(docker, lab, pod, debugger):
    outputs = lab["outputs"]
    platform = inputs_of(lab, "lldb-server-platform")
    started = sh(docker, platform["create"], platform["stdin"])
    assert started.returncode == 0, f"exit {started.returncode}: {started.stderr}"
    try:
        assert started.stdout.strip().splitlines()[-1] == str(WALKTHROUGH_ENVOY_PID), started.stdout
        assert f"(node pid {pod.envoy})" in started.stderr, started.stderr
        commands = outputs["lldbCommands"].splitlines()
        assert f"process attach --pid {WALKTHROUGH_ENVOY_PID}" in commands
        transcript = lldb_in(docker, debugger["name"], [*commands, "bt", "detach"])
        explained = f"{transcript}\n{server_log(docker, lab)}"
        assert "error:" not in transcript, explained
        assert f"Process {WALKTHROUGH_ENVOY_PID} stopped" in transcript, explained
        assert f"demo::wait_for_debugger() at prog.cc:{source_line('parked here')}" in transcript, explained
        # The firewall is up: a port beyond debuggerPorts gets no answer at all (a closed port among them is
        # refused: checked after the delete).
        beyond = max(outputs["debuggerPorts"]) + 1
        assert tcp_probe(docker, debugger, node_address(lab), beyond) == 124
        # The platform takes the debugger's connections only (--listen is LLDB's peer filter): the same packets
        # from the node's own address are turned away.
        port = outputs["debuggerPorts"][0]
        assert handshake(docker, debugger["name"], node_address(lab), port) == "+$OK#9a"
        assert handshake(docker, node_name(lab), node_address(lab), port) == "", server_log(docker, lab)
        assert f"rejecting incoming connection from {node_address(lab)}" in server_log(docker, lab)
    finally:
        stopped = sh(docker, platform["delete"])
    assert stopped.returncode == 0, stopped.stderr
    assert "stopped lldb-server" in stopped.stderr, stopped.stderr
    port = outputs["debuggerPorts"][0]
    assert not on_node(docker, lab, "ss", "-Hltn", f"sport = :{port}").stdout.strip(), "the server is gone"
    assert on_node(docker, lab, "test", "-e", STATE_DIR, check=False).returncode != 0, (
        "no pidfile, log or folder left on the node")
    assert tcp_probe(docker, debugger, node_address(lab), outputs["debuggerPorts"][0]) == 1


