"""Several developers, one Docker host, one cluster: per-developer stacks, deterministic previews, secrets
kept secret, and a destroy that keeps what took hours to make."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from components.launch_file import launch_file_command
from components.scripts import script
from tests.conftest import CLUSTER_PASSWORD, CLUSTER_PLACEMENT, MAKE_UP_WORK_DIR, ROOT, evaluate, require_tool, resource

sys.path.insert(0, str(ROOT / "tools"))
import new_stack  # noqa: E402

# Shared by design: the Docker host's socket and the images every stack pulls or builds alike.
SHARED_BY_DESIGN_KINDS = {"image"}
SHARED_BY_DESIGN = {("host-path", "/var/run/docker.sock")}
NODE_COMMAND_TYPES = ("command:local:Command", "command:remote:Command")


def developer_stack(tmp_path: Path, *names: str) -> dict[str, dict]:
    """Stack files for new developers, made by the project's own tool next to the committed ones."""
    project = tmp_path / "project"
    project.mkdir(exist_ok=True)
    for path in [ROOT / "Pulumi.yaml", *ROOT.glob("Pulumi.*.yaml")]:
        shutil.copy(path, project)
    made = {}
    for name in names:
        config = new_stack.allocate(name, f"/home/{name}/istio-testing", new_stack.stack_files(project),
                                    new_stack.defaults(project))
        new_stack.write(name, config, project)
        made[name] = config
    return made


def overrides(config: dict) -> list[str]:
    return [f"{k}={json.dumps(v) if isinstance(v, list) else v}" for k, v in config.items()]


def assignments(script: str) -> dict[str, str]:
    return dict(re.findall(r"^([A-Z_]+)='([^']*)'$", script, flags=re.MULTILINE))


def physical(evaluation: dict) -> set[tuple]:
    """Everything of a stack that exists outside Pulumi's state under a name, port, address or path."""
    found: set[tuple] = set()
    for r in evaluation["resources"]:
        kind, inputs = r["type"], r["inputs"]
        if kind == "docker:index/container:Container":
            found.add(("container", inputs["name"]))
            found |= {("host-path", m["source"]) for m in inputs.get("mounts", [])}
            found |= {("host-port", p["external"]) for p in inputs.get("ports", [])}
        elif kind == "docker:index/network:Network":
            found.add(("network", inputs["name"]))
            found |= {("subnet", c["subnet"]) for c in inputs["ipamConfigs"]}
        elif kind == "docker:index/remoteImage:RemoteImage":
            found.add(("image", inputs["name"]))
        elif kind.startswith("kubernetes:") and kind != "kubernetes:helm.sh/v3:Release":
            metadata = inputs["metadata"]
            # Objects in a cluster of the stack's own (its provider) share nothing with the current context's.
            found.add(("kubernetes", r["provider"] or "current context", kind, metadata.get("namespace"),
                       metadata["name"]))
        elif kind == "command:local:Command" and "KIND_CLUSTER" in inputs.get("environment", {}):
            environment = inputs["environment"]
            found |= {("kind-cluster", environment["KIND_CLUSTER"]), ("host-path", environment["KUBECONFIG_FILE"])}
        elif kind in NODE_COMMAND_TYPES and r["name"].startswith("containerd-mirror-"):
            registry = assignments(node_script(r, "create"))["REGISTRY"]
            found.add(("node-registry-entry", node_of(r), registry))
        elif kind in NODE_COMMAND_TYPES and "LISTEN_ADDRESS" in inputs.get("stdin", ""):
            params = assignments(inputs["stdin"])
            node = node_of(r)
            first = int(params["PLATFORM_PORT"])
            found |= {("node-port", node, port) for port in range(first, first + 5)}
            for suffix in ("pid", "log"):
                found.add(("node-file", node, f"{params['STATE_DIR']}/lldb-server-{params['INSTANCE']}.{suffix}"))
        elif kind == "command:local:Command" and not inputs["create"].startswith("docker exec"):
            environment = inputs.get("environment", {})
            found |= {("host-path", v) for k, v in environment.items() if k.endswith("_DIR") and v.startswith("/")}
            if "IMAGE" in environment and r["name"] == "debugger-image":
                found.add(("image", environment["IMAGE"]))
            elif "IMAGE" in environment:
                found.add(("image-tag", environment["IMAGE"]))
    return found


def node_of(command: dict) -> str:
    """The node a node command runs on: its SSH host, or the container `docker exec` enters."""
    if command["type"] == "command:remote:Command":
        return command["inputs"]["connection"]["secret"]["host"]
    words = shlex.split(command["inputs"]["create"])
    assert words[:3] == ["docker", "exec", "-i"], words
    return words[3]


def node_script(command: dict, step: str) -> str:
    """The script a node command runs: `bash -c '<script>'` over SSH, on stdin to docker exec."""
    if command["type"] == "command:remote:Command":
        return shlex.split(command["inputs"][step])[-1]
    return command["inputs"]["stdin"]


def keys_in_use(stack: dict) -> tuple[str, ...]:
    """The keys whose values two stacks must not share: a kind stack has its own cluster, node and network."""
    if stack.get("cluster") == "kind":
        return ("registryPort",)
    return ("registryPort", "lldbServerPort", "dockerNetworkSubnet", "namespace")


def test_new_stacks_download_envoy_whatever_the_walkthroughs_stack_does(tmp_path):
    made = developer_stack(tmp_path, "alice")
    assert new_stack.stack_files(ROOT)["dev"]["envoySource"] == "build"
    assert "envoySource" not in made["alice"]
    assert evaluate("alice", *overrides(made["alice"]))["outputs"]["envoySource"] == "prebuilt"


def test_new_stacks_get_values_no_other_stack_file_uses(tmp_path):
    made = developer_stack(tmp_path, "alice", "bob")
    committed = new_stack.stack_files(ROOT)
    for key in ("registryPort", "lldbServerPort", "dockerNetworkSubnet", "namespace"):
        values = [str(c[key]) for c in made.values()]
        values += [str(s.get(key, new_stack.defaults(ROOT)[key])) for s in committed.values() if key in keys_in_use(s)]
        assert len(values) == len(set(values)), f"{key} collides: {values}"


def test_a_cluster_stack_gets_a_free_node_port_and_its_own_namespaces(tmp_path):
    project = tmp_path / "project"
    developer_stack(tmp_path, "alice")
    existing = new_stack.stack_files(project)
    carol = new_stack.allocate("carol", None, existing, new_stack.defaults(project), placement="cluster")
    assert carol["placement"] == "cluster" and "workDir" not in carol
    assert 30000 <= carol["registryPort"] <= 32767
    new_stack.write("carol", carol, project)
    dave = new_stack.allocate("dave", None, new_stack.stack_files(project), new_stack.defaults(project),
                              placement="cluster")
    assert dave["registryPort"] != carol["registryPort"], "NodePorts are unique in the cluster"
    evaluation = evaluate("carol", *overrides(carol), f"codeServerPassword={CLUSTER_PASSWORD}")
    namespaces = {r["inputs"]["metadata"]["name"] for r in evaluation["resources"]
                  if r["type"] == "kubernetes:core/v1:Namespace"}
    assert namespaces == {"istio-proxy-debug-carol", carol["namespace"]}
    with pytest.raises(ValueError, match="needs --work-dir"):
        new_stack.allocate("erin", None, existing, new_stack.defaults(project))


def test_a_stack_name_that_is_taken_or_unusable_is_refused(tmp_path):
    developer_stack(tmp_path, "alice")
    project = tmp_path / "project"
    for name, reason in [("alice", "exists already"), ("dev", "other than dev"), ("Alice", "lowercase")]:
        with pytest.raises(ValueError, match=reason):
            new_stack.allocate(name, "/home/x", new_stack.stack_files(project), new_stack.defaults(project))


def test_two_developer_stacks_share_nothing_that_is_not_shared_by_design(tmp_path):
    made = developer_stack(tmp_path, "alice", "bob")
    alice = physical(evaluate("alice", *overrides(made["alice"])))
    bob = physical(evaluate("bob", *overrides(made["bob"])))
    dev = physical(evaluate("dev"))
    assert {k[0] for k in alice} >= {"container", "network", "subnet", "host-port", "host-path", "kubernetes",
                                     "node-port", "node-file", "image-tag", "node-registry-entry"}, \
        "every kind of thing is compared"
    for one, other in [(alice, bob), (alice, dev), (bob, dev)]:
        shared = {thing for thing in one & other if thing[0] not in SHARED_BY_DESIGN_KINDS} - SHARED_BY_DESIGN
        assert shared == set()


def test_committed_stack_files_collide_nowhere():
    stacks = new_stack.stack_files(ROOT)
    found = {name: physical(evaluate(name)) for name in stacks}
    names = sorted(found)
    for i, one in enumerate(names):
        for other in names[i + 1:]:
            shared = {t for t in found[one] & found[other] if t[0] not in SHARED_BY_DESIGN_KINDS} - SHARED_BY_DESIGN
            assert shared == set(), f"{one} and {other} share {shared}"


# --- determinism ---------------------------------------------------------------------------------------------


def evaluation_bytes(tmp_path: Path, *, env: dict[str, str], prefix: list[str], preview: bool = False,
                     sets: tuple[str, ...] = ()) -> bytes:
    """The harness's JSON for the dev stack, run from another folder with another environment."""
    args = [*prefix, sys.executable, "-m", "tests.mock_stack", "dev", *(["--preview"] if preview else []),
            *(f"--set={s}" for s in sets)]
    done = subprocess.run(args, cwd=tmp_path, env={"PYTHONPATH": str(ROOT), **env}, capture_output=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout


PLACEMENTS = {"host": (), "cluster": CLUSTER_PLACEMENT, "host, prebuilt": ("envoySource=prebuilt",),
              "cluster, prebuilt": (*CLUSTER_PLACEMENT, "envoySource=prebuilt"),
              # The lab's shape on the dev stack: a kind cluster, its nodes reached through docker exec.
              "kind": ("cluster=kind", "nodes=", "registryHost=", "targetNodeAddress=")}


@pytest.mark.parametrize("placement", sorted(PLACEMENTS))
@pytest.mark.parametrize("preview", [False, True], ids=["up", "preview"])
def test_the_same_stack_evaluates_byte_for_byte_alike_on_another_machine(tmp_path, preview, placement):
    """Another HOME, working folder, hostname, clock, hash seed, locale, time zone and environment."""
    if os.geteuid() != 0:
        pytest.skip("needs root for a UTS namespace with another hostname")
    faketime = require_tool("faketime")
    require_tool("unshare")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = evaluation_bytes(
        tmp_path / "a", preview=preview, prefix=[], sets=PLACEMENTS[placement],
        env={"PATH": os.environ["PATH"], "HOME": str(tmp_path / "a"), "PYTHONHASHSEED": "1", "TZ": "UTC",
             "LANG": "C.UTF-8"},
    )
    second = evaluation_bytes(
        tmp_path / "b", preview=preview, sets=PLACEMENTS[placement],
        prefix=["unshare", "--uts", "sh", "-c", 'hostname elsewhere-build-host && exec "$@"', "sh",
                faketime, "2031-07-04 03:02:01"],
        env={"PATH": os.environ["PATH"], "HOME": str(tmp_path / "b"), "PYTHONHASHSEED": "4242",
             "TZ": "Asia/Kolkata", "LANG": "de_DE.UTF-8", "USER": "someone-else", "CI": "true",
             "SOME_RANDOM_VARIABLE": os.urandom(8).hex()},
    )
    assert first == second
    assert b"elsewhere-build-host" not in second and str(tmp_path).encode() not in second


@pytest.mark.parametrize("envoy_source", ["build", "prebuilt"])
def test_a_preview_needs_no_elf_no_docker_no_cluster_and_no_network(tmp_path, envoy_source):
    """A bare environment: no docker or kubectl on PATH, no kubeconfig, no ELF anywhere, and a network namespace
    of its own with nothing in it (loopback down): the preview neither downloads nor asks anything."""
    if os.geteuid() != 0:
        pytest.skip("needs root for a network namespace")
    require_tool("unshare")
    out = evaluation_bytes(tmp_path, preview=True, prefix=["unshare", "--net"], sets=(f"envoySource={envoy_source}",),
                           env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    evaluation = json.loads(out)
    assert any(r["type"] == "kubernetes:apps/v1:StatefulSet" for r in evaluation["resources"])


# --- secrets and destroy -------------------------------------------------------------------------------------

KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAAtest-only\n-----END OPENSSH PRIVATE KEY-----\n"


def test_the_ssh_key_is_only_ever_a_secret():
    evaluation = evaluate("dev", f"sshPrivateKey={KEY}")
    assert "test-only" not in json.dumps(evaluation["outputs"])
    server = resource(evaluation, "lldb-server-platform")["inputs"]
    assert "test-only" in json.dumps(server["connection"]["secret"]), "the key reaches the SSH connection"
    for r in evaluation["resources"]:
        plain = json.dumps(r["inputs"], sort_keys=True)
        masked = re.sub(r'\{"secret": (?:[^{}]|\{[^{}]*\})*\}', '"<secret>"', plain)
        assert "test-only" not in masked, f"{r['name']} holds the key outside a secret"


@pytest.mark.parametrize("stack, envoy_source", [("dev", "build"), ("dev", "prebuilt"), ("lab", "prebuilt")])
def test_destroy_keeps_the_source_the_cache_and_the_registry_data(stack, envoy_source):
    evaluation = evaluate(stack, f"envoySource={envoy_source}")
    work_dir = "/home/labile/istio-testing" if stack == "dev" else MAKE_UP_WORK_DIR
    for r in evaluation["resources"]:
        if r["type"].startswith("command:"):
            assert work_dir not in r["inputs"].get("delete", ""), f"{r['name']} deletes under workDir"
            if r["type"] == "command:local:Command" and r["name"] == "launch-file-merge":
                # The one exception: it puts the developer's launch.json back (tests/test_launch_file.py).
                assert r["inputs"]["delete"] == launch_file_command("restore")
            elif r["type"] == "command:local:Command" and r["name"] == "kind-cluster":
                # The lab's cluster goes; kind touches only its own kubeconfig file (tests/test_lab.py).
                assert r["inputs"]["delete"] == script("kind-cluster-delete.sh")
            elif r["type"] == "command:local:Command" and "delete" in r["inputs"]:
                # nodeAccess docker: a node script's delete runs in the node container, not on the developer host.
                assert r["name"].startswith(("containerd-mirror-", "lldb-server-")), r["name"]
                assert r["inputs"]["delete"].startswith(f"{r['inputs']['create']} <<'STOP'\n")
            elif r["type"] == "command:local:Command":
                assert "delete" not in r["inputs"], f"{r['name']} has a delete step on the developer host"
        if r["type"] == "docker:index/remoteImage:RemoteImage":
            assert r["inputs"]["keepLocally"] is True, f"{r['name']} would be removed from the host"
    registry = resource(evaluation, "registry-container")["inputs"]
    assert [m["source"] for m in registry["mounts"]] == [f"{work_dir}/registry"], "images live under workDir"
