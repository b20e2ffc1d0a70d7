"""`pulumi preview` on the real engine is the mocks' truth, and a host stack with no Docker stops in one line.

In a copy of the project as a user's clone has it (tests/toolchain.py), with the toolchain's CLI and the command,
docker and kubernetes plugins: every committed stack (the lab with the workDir `make up` gives it) and stacks made
as docs/your-cluster.md says (tools/new_stack.py, `pulumi stack init`, `pulumi config set`), one of each
placement. Each previews with `--diff` and with `--json`, with no Python traceback anywhere; the engine plans
exactly the resources the mock evaluation records (tests/mock_stack.py, `evaluate(stack, preview=True)`): the
same URNs (each parent's type chain in them), types, parents and providers. So the fast mock suites describe
the graph the engine builds. The docker provider pings its daemon even to preview, so these previews run with
the tests' Docker engine; stacks on an existing cluster read KUBECONFIG, which names the tests' API server (the
`ci` stack, as the pull-request workflow runs it, previews with no cluster at all).

With no Docker daemon where the provider would look (DOCKER_HOST at a socket that does not exist, or at a
loopback port nothing listens on; no DOCKER_HOST and the default socket refused), `pulumi preview` and `pulumi up`
of a host stack (the `ci` stack; the kind lab) stop before any resource with the one line
components/docker_daemon.py writes, no traceback, nothing in the state; a cluster-placement stack, which has
no Docker resource, previews as before. The provider's own `docker:disableDockerDaemonCheck` does not let a
preview through (pulumi-docker 5.1.0's native half pings anyway): a one-resource program of its own shows it.
What does: DOCKER_HOST at an ssh:// address, which the provider never pings and dials only for an operation.
A new stack then plans step for step as with a daemon, and a stack with Docker resources in its state previews
as unchanged, with nothing connecting to that address."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from components.docker_daemon import DockerHosts, no_docker_message
from tests.conftest import evaluate, machine_config, require_tool
from tests.mock_stack import FAKE_SECRET
from tests.toolchain import Pulumi, program_project, pulumi_env, toolchain_bin, user_project

PROJECT = "istio-proxy-debug"
COMMITTED = ("ci", "dev", "lab")
# Stacks made as the docs say: a host one (make stack NAME=alice WORK_DIR=…) and a cluster one
# (make stack NAME=carol PLACEMENT=cluster).
# And a host one whose nodes are reached through the Kubernetes API (docs/your-cluster.md, "No SSH to the nodes").
MADE_HOST, MADE_CLUSTER, MADE_KUBERNETES = "alice", "carol", "dave"
# What the docs have a developer set on a made stack (its example's addresses; a preview contacts none).
MADE_SETTINGS = {
    MADE_HOST: (("config", "set", "registryHost", "192.168.122.1"),
                ("config", "set", "--path", "nodes[0]", "192.168.122.55")),
    MADE_CLUSTER: (("config", "set", "registryHost", "192.168.122.55"),),
    MADE_KUBERNETES: (("config", "set", "nodeAccess", "kubernetes"),
                      ("config", "set", "--path", "nodes[0]", "gke-pool-1-abcd"),
                      ("config", "set", "--path", "nodes[1]", "gke-pool-1-efgh"),
                      ("config", "set", "registryHost", "10.128.0.4"), ("config", "rm", "targetNodeAddress")),
}
MADE_SECRETS = {MADE_HOST: {"sshPrivateKey": FAKE_SECRET}, MADE_CLUSTER: {"codeServerPassword": "correct-horse-staple"},
                MADE_KUBERNETES: {}}
ROOT_TYPE = "pulumi:pulumi:Stack"


# --- the project, as a user's clone ----------------------------------------------------------------------------


def make_stack(pulumi: Pulumi, name: str, *new_stack_args: str) -> None:
    """`make stack NAME=name …`: tools/new_stack.py writes the stack file, `pulumi stack init` makes the stack; then
    the settings the docs have the developer add."""
    pulumi.make_stack(name, *new_stack_args)
    for command, verb, *setting in MADE_SETTINGS[name]:
        pulumi(command, verb, "--stack", name, *setting)
    for key, value in MADE_SECRETS[name].items():
        pulumi("config", "set", "--stack", name, "--secret", key, input=value)


def init_stack(pulumi: Pulumi, stack: str, work: Path) -> None:
    """A committed stack as `make preview` selects it (with the lab's workDir), or a made one."""
    if stack in (MADE_HOST, MADE_KUBERNETES):
        make_stack(pulumi, stack, "--work-dir", str(work))
    elif stack == MADE_CLUSTER:
        make_stack(pulumi, stack, "--placement", "cluster")
    else:
        pulumi("stack", "init", stack, "--secrets-provider", "passphrase")
        for setting in machine_config(stack):
            pulumi("config", "set", "--stack", stack, *setting.split("=", 1))


def clone(folder: Path, **env: str) -> Pulumi:
    bin_dir = toolchain_bin()
    return Pulumi(bin_dir, user_project(folder / "clone"), pulumi_env(bin_dir, folder / "state", **env))


@pytest.fixture(scope="module")
def docker():
    """The tests' Docker engine on the default socket (tests/docker_engine.py): the provider pings it."""
    if os.geteuid() != 0:
        pytest.skip("the tests' Docker engine runs as root")
    from tests.docker_engine import engine

    with engine() as running:
        yield running


@pytest.fixture(scope="module")
def project(module_tmp, docker, api_server) -> Pulumi:
    """One clone with every stack of the comparison, its existing cluster the tests' API server."""
    folder = module_tmp("engine-preview")
    pulumi = clone(folder, KUBECONFIG=str(api_server.kubeconfig))
    for stack in (*COMMITTED, MADE_HOST, MADE_CLUSTER, MADE_KUBERNETES):
        init_stack(pulumi, stack, folder / "work")
    return pulumi


# --- the previews ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Preview:
    diff: subprocess.CompletedProcess  # `pulumi preview --diff`, as a user runs it
    plan: dict  # `pulumi preview --json`: every step
    seconds: float  # how long the --diff preview took

    @property
    def outputs(self) -> str:
        return self.diff.stdout + self.diff.stderr


def preview(pulumi: Pulumi, stack: str) -> Preview:
    started = time.monotonic()
    diff = pulumi("preview", "--diff", "--stack", stack)
    seconds = time.monotonic() - started
    plan = pulumi("preview", "--json", "--stack", stack)
    assert "Traceback" not in plan.stdout + plan.stderr, plan.stderr[-3000:]
    return Preview(diff, json.loads(plan.stdout), seconds)


@pytest.fixture(scope="module")
def previews(project) -> dict[str, Preview]:
    """Each stack's previews, run once for the module."""
    return {}


def preview_of(previews: dict[str, Preview], pulumi: Pulumi, stack: str) -> Preview:
    if stack not in previews:
        previews[stack] = preview(pulumi, stack)
    return previews[stack]


# --- the graph, as the engine plans it and as the mocks record it ------------------------------------------------


@dataclass(frozen=True)
class Node:
    type: str
    parent: str
    # The provider's URN (custom resources), or the package of a default provider's ("default docker").
    provider: str | None


def stack_urn(stack: str) -> str:
    return f"urn:pulumi:{stack}::{PROJECT}::{ROOT_TYPE}::{PROJECT}-{stack}"


def engine_graph(plan: dict) -> dict[str, Node]:
    """URN → node for every resource the preview plans but the Stack and the engine's default providers, which the
    program does not register."""
    graph = {}
    for step in plan["steps"]:
        state = step["newState"]
        urn, kind = state["urn"], state["type"]
        if kind == ROOT_TYPE or (kind.startswith("pulumi:providers:") and urn.rsplit("::", 1)[1].startswith("default")):
            continue
        provider = None
        if state.get("custom") and not kind.startswith("pulumi:providers:"):
            provider_urn = state["provider"].rsplit("::", 1)[0]
            name = provider_urn.rsplit("::", 1)[1]
            provider = f"default {provider_urn.split('pulumi:providers:')[1].split('::')[0]}" \
                if name.startswith("default") else provider_urn
        graph[urn] = Node(kind, state["parent"], provider)
    return graph


def mock_graph(evaluation: dict, stack: str) -> dict[str, Node]:
    """URN → node from the mock evaluation's record: each URN built as the engine builds it (the type chain of
    the resource's parents, below the Stack, joined by `$`), from the parent's name the harness records."""
    resources = {r["name"]: r for r in evaluation["resources"]}
    assert len(resources) == len(evaluation["resources"]), "names are unique, so a parent's name identifies it"

    def qualified_type(resource: dict) -> str:
        parent = resource["options"]["parent"]
        return resource["type"] if parent is None else f"{qualified_type(resources[parent])}${resource['type']}"

    def urn(resource: dict) -> str:
        return f"urn:pulumi:{stack}::{PROJECT}::{qualified_type(resource)}::{resource['name']}"

    def provider(resource: dict) -> str | None:
        if not resource["custom"] or resource["type"].startswith("pulumi:providers:"):
            return None
        if not resource["provider"]:
            return f"default {resource['type'].split(':')[0]}"
        # The mocks' reference is `<urn>::<id>`; their URN scheme is not the engine's, its name is the resource's.
        return urn(resources[resource["provider"].rsplit("::", 2)[1]])

    return {urn(r): Node(r["type"], urn(resources[r["options"]["parent"]]) if r["options"]["parent"]
                         else stack_urn(stack), provider(r))
            for r in evaluation["resources"]}


def stack_file_sets(pulumi: Pulumi, stack: str) -> tuple[str, ...]:
    """A made stack's file in the clone as the harness's `key=value` overrides (the CLI's strings; its secrets as
    they were set)."""
    config = yaml.safe_load((pulumi.project / f"Pulumi.{stack}.yaml").read_text())["config"]
    sets = []
    for key, value in config.items():
        key = key.split(":", 1)[1]
        if isinstance(value, dict) and "secure" in value:
            value = MADE_SECRETS[stack][key]
        elif isinstance(value, (list, dict)):
            value = json.dumps(value)
        elif isinstance(value, bool):
            value = str(value).lower()
        sets.append(f"{key}={value}")
    return tuple(sorted(sets))


def mock_evaluation(pulumi: Pulumi, stack: str) -> dict:
    """The fast suites' evaluation of the stack: a committed one as conftest's `evaluate` gives it (the lab with
    `make up`'s workDir), a made one from its file in the clone."""
    if stack in COMMITTED:
        return evaluate(stack, preview=True)
    return evaluate(stack, *stack_file_sets(pulumi, stack), preview=True)


STACKS = (*COMMITTED, MADE_HOST, MADE_CLUSTER, MADE_KUBERNETES)


@pytest.mark.parametrize("stack", STACKS)
def test_the_preview_succeeds_with_no_traceback(project, previews, stack):
    done = preview_of(previews, project, stack)
    assert "Traceback" not in done.outputs, done.outputs[-3000:]
    assert re.search(r"^\s+\+ \d+ to create$", done.diff.stdout, re.M), done.diff.stdout[-3000:]


@pytest.mark.parametrize("stack", STACKS)
def test_the_engine_plans_exactly_the_mocks_resources(project, previews, stack):
    engine = engine_graph(preview_of(previews, project, stack).plan)
    mocks = mock_graph(mock_evaluation(project, stack), stack)
    assert sorted(engine) == sorted(mocks), "the same URNs"
    for urn, node in engine.items():
        assert node == mocks[urn], urn


def test_the_lab_goes_through_its_own_kind_clusters_provider(project, previews):
    """The comparison sees providers: the lab's Kubernetes objects are the kind cluster's, not the default's."""
    engine = engine_graph(preview_of(previews, project, "lab").plan)
    kubernetes = [node for node in engine.values() if node.type.startswith("kubernetes:")]
    assert kubernetes and all(node.provider.endswith("::kind-provider") for node in kubernetes), kubernetes


def test_the_ci_stack_previews_with_no_cluster_as_the_pull_request_workflow_runs_it(tmp_path, docker, project,
                                                                                     previews):
    """The hosted runner has Docker but no cluster: KUBECONFIG names no file, and the plan is the same."""
    pulumi = clone(tmp_path, KUBECONFIG=str(tmp_path / "no-kubeconfig"))
    init_stack(pulumi, "ci", tmp_path / "work")
    alone = preview(pulumi, "ci")
    assert "Traceback" not in alone.outputs
    assert engine_graph(alone.plan) == engine_graph(preview_of(previews, project, "ci").plan)


# --- no Docker -------------------------------------------------------------------------------------------------


def closed_loopback_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def no_docker_at(kind: str, folder: Path) -> tuple[str, str]:
    """DOCKER_HOST where no daemon answers, and the reason the check gives."""
    if kind == "absent-socket":
        return f"unix://{folder / 'absent' / 'docker.sock'}", "no such socket"
    return f"tcp://127.0.0.1:{closed_loopback_port()}", "connection refused"


# The CLI's own last word on any program that exits non-zero, a configuration error's too: the Python SDK's
# runner exits 1 after printing a RunError's message (3.184.0), and the engine then says so.
ENGINE_EXIT_LINE = "error: an unhandled error occurred: program exited with non-zero exit code: 1"


def program_error_lines(output: str) -> list[str]:
    """The errors the program wrote, as the Diagnostics section lists them (`up`'s progress display repeats them
    after the resource's name); the CLI's closing line left out."""
    lines = (line.strip() for line in output.splitlines())
    return [line for line in lines if line.startswith("error:") and line != ENGINE_EXIT_LINE]


@pytest.mark.parametrize("stack", ("ci", "lab"))
@pytest.mark.parametrize("kind", ("absent-socket", "refused-port"))
def test_with_no_docker_preview_and_up_stop_before_any_resource_with_one_line(tmp_path, stack, kind):
    address, reason = no_docker_at(kind, tmp_path)
    pulumi = clone(tmp_path, DOCKER_HOST=address, KUBECONFIG=str(tmp_path / "no-kubeconfig"))
    init_stack(pulumi, stack, tmp_path / "work")
    line = f"error: {no_docker_message(DockerHosts((address,), 'DOCKER_HOST'), reason)}"
    assert address in line and line.startswith("error: Docker does not answer") and "set DOCKER_HOST" in line

    for command in (("preview", "--diff"), ("up", "--yes")):
        done = pulumi(*command, "--stack", stack, check=False)
        output = done.stdout + done.stderr
        assert done.returncode != 0, output[-3000:]
        assert "Traceback" not in output and "failed to connect to any docker daemon" not in output, output[-3000:]
        assert program_error_lines(output) == [line], output[-3000:]
    resources = json.loads(pulumi("stack", "export", "--stack", stack).stdout)["deployment"].get("resources", [])
    assert [r["type"] for r in resources] in ([], [ROOT_TYPE]), resources


def test_with_no_daemon_on_the_default_socket_the_line_names_it_and_docker_desktops(tmp_path):
    """No DOCKER_HOST: the default socket, hidden in a mount namespace of the command's own (a file bound over it,
    so connecting is refused; the machine's socket is untouched), then Docker Desktop's under HOME."""
    if os.geteuid() != 0:
        pytest.skip("a mount namespace needs root")
    unshare = require_tool("unshare")
    home = tmp_path / "home"
    home.mkdir()
    pulumi = clone(tmp_path, HOME=str(home), KUBECONFIG=str(tmp_path / "no-kubeconfig"))
    pulumi.env.pop("DOCKER_HOST", None)
    init_stack(pulumi, "ci", tmp_path / "work")
    (tmp_path / "not-a-socket").touch()
    hidden = (f"mount --bind {tmp_path / 'not-a-socket'} /var/run/docker.sock && "
              f"exec {pulumi.bin_dir / 'pulumi'} preview --diff --non-interactive")
    done = subprocess.run([unshare, "--mount", "--propagation", "private", "sh", "-c", hidden], cwd=pulumi.project,
                          env=pulumi.env, capture_output=True, text=True, timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode != 0 and "Traceback" not in output, output[-3000:]
    assert program_error_lines(output) == [
        f"error: Docker does not answer at unix:///var/run/docker.sock (the default socket; also tried "
        f"unix://{home}/.docker/run/docker.sock, unix://{home}/.docker/desktop/docker.sock): connection refused. "
        "Start Docker, or set DOCKER_HOST (or docker:host) to the address of a running one; a stack with placement "
        "host needs it even to preview."], output[-3000:]


def test_a_cluster_placement_stack_previews_with_no_docker(tmp_path, api_server):
    """No Docker resource, no check: with DOCKER_HOST at nothing, it plans exactly what the mocks record."""
    address, _ = no_docker_at("absent-socket", tmp_path)
    pulumi = clone(tmp_path, DOCKER_HOST=address, KUBECONFIG=str(api_server.kubeconfig))
    init_stack(pulumi, MADE_CLUSTER, tmp_path / "work")
    done = preview(pulumi, MADE_CLUSTER)
    assert "Traceback" not in done.outputs and not program_error_lines(done.outputs)
    assert engine_graph(done.plan) == mock_graph(mock_evaluation(pulumi, MADE_CLUSTER), MADE_CLUSTER)


def provider_program(folder: Path, **env: str) -> Pulumi:
    """tests/data/docker_network: one docker.Network through the default provider, none of the project's code."""
    return program_project("docker_network", toolchain_bin(), folder, **env)


# tests/data/docker_network's network, and the label it carries.
NETWORK = "ipd-provider-check"
NETWORK_LABEL = "istio-proxy-debug.test=engine-preview"


def remove_leftover_network(docker) -> None:
    """An earlier run's network, left by a run killed before its destroy (the `up` would fail on the name): removed.
    One of that name without the label is not this test's: the test stops, leaving it alone."""
    from tests.docker_engine import made_by

    made = made_by(docker, "network", NETWORK, NETWORK_LABEL)
    if made is False:
        pytest.fail(f"a Docker network named {NETWORK} that this test did not make ({NETWORK_LABEL}) exists on the "
                    "tests' engine: remove it, or find who made it")
    if made:
        docker.docker("network", "rm", NETWORK)


def test_disable_docker_daemon_check_does_not_let_the_providers_preview_through(tmp_path):
    """Why the program asks first: pulumi-docker 5.1.0 pings in its native half's Configure whatever the setting
    says (and the Python SDK then prints a traceback). If a release ever previews here, the check can go."""
    pulumi = provider_program(tmp_path, DOCKER_HOST=f"unix://{tmp_path / 'absent' / 'docker.sock'}")
    pulumi("config", "set", "docker:disableDockerDaemonCheck", "true")
    done = pulumi("preview", "--diff", check=False)
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert "failed to connect to any docker daemon" in output, output[-3000:]


# --- a preview without a daemon: an ssh:// DOCKER_HOST ---------------------------------------------------------
# The provider pings only in its native half's Configure, and never an ssh:// host (it dials one lazily, through
# the ssh client, when an operation needs the daemon); its bridged half creates its client only for an operation
# too, and no resource of this program asks the daemon anything to be planned. DOCKER_HOST is no input of the
# provider's (its state holds only its version), so the plan does not change with it.
PREVIEW_ONLY_USER = "preview-only"


def normalized_steps(plan: dict) -> dict[str, dict]:
    """Each step by URN, without where in the program it was registered, and with lists of URNs (dependencies,
    in the order the event loop registered them) sorted."""
    def normalized(value):
        if isinstance(value, dict):
            return {k: normalized(v) for k, v in value.items() if k not in ("sourcePosition", "stackTrace")}
        if isinstance(value, list):
            items = [normalized(v) for v in value]
            return sorted(items) if all(isinstance(v, str) and v.startswith("urn:") for v in items) else items
        return value

    return {step["urn"]: normalized(step) for step in plan["steps"]}


@pytest.fixture
def unused_listener() -> Iterator[socket.socket]:
    """A loopback port that listens, to show nothing connects to it."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        yield listener


def assert_nothing_connected(listener: socket.socket) -> None:
    with pytest.raises(BlockingIOError):
        listener.accept()


def test_an_ssh_docker_host_previews_a_new_stack_with_no_daemon_and_the_same_plan(tmp_path, docker,
                                                                                 unused_listener):
    pulumi = clone(tmp_path, KUBECONFIG=str(tmp_path / "no-kubeconfig"))
    init_stack(pulumi, "ci", tmp_path / "work")
    with_daemon = pulumi("preview", "--json")
    pulumi.env["DOCKER_HOST"] = f"ssh://{PREVIEW_ONLY_USER}@127.0.0.1:{unused_listener.getsockname()[1]}"
    without = pulumi("preview", "--json")
    diff = pulumi("preview", "--diff")
    assert "Traceback" not in diff.stdout + diff.stderr + without.stderr
    assert_nothing_connected(unused_listener)
    assert normalized_steps(json.loads(without.stdout)) == normalized_steps(json.loads(with_daemon.stdout))


def test_an_ssh_docker_host_previews_a_stack_with_docker_resources_as_unchanged(tmp_path, docker, unused_listener):
    """Docker resources in the state (one network, made and removed on the tests' engine): no daemon, no change."""
    pulumi = provider_program(tmp_path)
    remove_leftover_network(docker)
    pulumi("up", "--yes", "--skip-preview")
    daemon_env = pulumi.env
    try:
        pulumi.env = {**daemon_env, "DOCKER_HOST": f"ssh://{PREVIEW_ONLY_USER}@127.0.0.1:"
                                                   f"{unused_listener.getsockname()[1]}"}
        pulumi("preview", "--diff", "--expect-no-changes")
        assert_nothing_connected(unused_listener)
    finally:
        pulumi.env = daemon_env
        pulumi("destroy", "--yes")
