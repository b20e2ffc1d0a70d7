"""The Docker side for real: the stack's registry, debug image build, push and digest, run by a real Docker
engine (tests/docker_engine.py: Debian's docker.io in a network namespace of its own) with exactly what the
stack gives it. Images that would be pulled are stand-ins made here from Debian bookworm (debootstrap):
`docker.io/istio/proxyv2:<version>` and `registry:2` (Debian's docker-registry, which is the same
distribution registry, configured as the official image is).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import shlex
import subprocess
import tarfile
import threading
import time
from pathlib import Path

import pytest

from components.debug_image import pull_reference
from components.lldb_server import IMAGE_LLDB_SERVER
from tests.conftest import evaluate, require_tool, resource
from tests.docker_engine import (
    ENGINE_SIDE,
    Engine,
    base_image,
    build_and_push,
    build_id,
    engine,
    registry_blobs,
    registry_stand_in,
    run_args,
    stage_and_build,
    start_registry,
    wait_for_registry,
)
from tests.lldb_session import compile_debuggee
from tests.test_containerd_mirror import REGISTRY_NAME, node  # noqa: F401 (node: the fixture)


@pytest.fixture(scope="module")
def docker():
    if os.geteuid() != 0:
        pytest.skip("dockerd, network namespaces and debootstrap need root")
    for tool in ("dockerd", "debootstrap", "ip", "nsenter", "readelf", "objcopy"):
        require_tool(tool)
    with engine() as running:
        yield running


@pytest.fixture(scope="module")
def stack(module_tmp) -> dict:
    """The `ci` stack (its own names, ports and subnet: nothing of a developer's stack on a shared engine),
    building Envoy (so with a builder), with its workDir here."""
    work = module_tmp("work")
    return {"work": work, "evaluation": evaluate("ci", f"workDir={work}", "envoySource=build")}


@pytest.fixture(scope="module")
def registry(docker: Engine, stack: dict, module_tmp):
    """The stack's registry container, run from the registry:2 stand-in with the stack's own arguments."""
    assert resource(stack["evaluation"], "registry-image")["inputs"]["name"] == registry_stand_in(
        docker, module_tmp("registry-image"))
    inputs = start_registry(docker, stack["evaluation"])
    yield inputs
    docker.docker("rm", "--force", inputs["name"], check=False)


@pytest.fixture(scope="module")
def debug_image(docker: Engine, stack: dict, registry: dict, module_tmp) -> dict:
    inputs = resource(stack["evaluation"], "debug-image-build")["inputs"]
    base_image(docker, inputs["environment"]["BASE_IMAGE"])
    work = module_tmp("envoy")
    elf = compile_debuggee(work)
    _, pushed = stage_and_build(docker, stack["evaluation"], elf, work / "context")
    return {"elf": elf, "pushed": pushed, "image": inputs["environment"]["IMAGE"], "work": work}


def test_the_registry_runs_with_the_stacks_arguments(docker, registry):
    state = json.loads(docker.docker("inspect", registry["name"]).stdout)[0]
    assert state["State"]["Running"] is True
    assert state["HostConfig"]["RestartPolicy"]["Name"] == "always"
    assert "REGISTRY_STORAGE_DELETE_ENABLED=true" in state["Config"]["Env"]


def test_the_debug_image_is_pushed_by_digest(debug_image):
    repository = debug_image["image"].rsplit(":", 1)[0]
    assert re.fullmatch(rf"{re.escape(repository)}@sha256:[0-9a-f]{{64}}", debug_image["pushed"])


def test_lldb_server_runs_in_the_image_from_the_path_the_node_script_uses(docker, debug_image):
    done = docker.docker("run", "--rm", "--entrypoint", IMAGE_LLDB_SERVER, debug_image["pushed"], "version")
    assert "lldb version" in done.stdout + done.stderr


def layers(docker: Engine, reference: str, tmp: Path) -> list[list[str]]:
    """The files of each layer of an image, in order (docker save's manifest)."""
    archive = tmp / "image.tar"
    docker.docker("save", "--output", str(archive), reference)
    with tarfile.open(archive) as saved:
        manifest = json.load(saved.extractfile("manifest.json"))[0]
        result = []
        for layer in manifest["Layers"]:
            with tarfile.open(fileobj=saved.extractfile(layer)) as inner:
                result.append([m.name for m in inner.getmembers() if not m.isdir()])
    return result


def test_envoy_is_the_last_layer_and_keeps_its_build_id(docker, debug_image, tmp_path):
    assert layers(docker, debug_image["pushed"], tmp_path)[-1] == ["usr/local/bin/envoy"]
    container = docker.docker("create", debug_image["pushed"], "true").stdout.strip()
    try:
        docker.docker("cp", f"{container}:/usr/local/bin/envoy", str(tmp_path / "envoy"))
    finally:
        docker.docker("rm", container)
    assert build_id(tmp_path / "envoy") == build_id(debug_image["elf"])


def test_a_changed_envoy_pushes_only_its_own_layer(docker, stack, registry, debug_image):
    """Measured at the registry: the blobs the second push stored."""
    before = registry_blobs(registry)
    work = debug_image["work"] / "second"
    work.mkdir()
    elf = compile_debuggee(work, extra=("-DSECOND_BUILD=1", "-Wl,--build-id=0x" + "ab" * 20))
    staged, pushed = stage_and_build(docker, stack["evaluation"], elf, work / "context")
    added = {digest: size for digest, size in registry_blobs(registry).items() if digest not in before}
    shipped = int(re.search(r"bytes=(\d+)", staged).group(1))
    # The Envoy layer, the image config and the manifest: nothing of the lldb-server layers again.
    assert len(added) == 3, added
    assert pushed != debug_image["pushed"]
    layer = max(added.values())
    assert layer <= shipped * 1.05, (layer, shipped)


def test_the_registry_keeps_every_image_when_its_container_is_recreated(docker, stack, registry, debug_image):
    assert start_registry(docker, stack["evaluation"]) == registry
    digest = debug_image["pushed"].split("@", 1)[1]
    name = debug_image["pushed"].split("@", 1)[0].split("/", 1)[1]
    port = int(registry["ports"][0]["external"])
    # From the root namespace, over the veth: the engine's namespace is the one the test made.
    done = subprocess.run(["curl", "-fsS", "-o", "/dev/null", "-w", "%{http_code}", "-H",
                           "Accept: application/vnd.docker.distribution.manifest.v2+json",
                           f"http://{docker.address}:{port}/v2/{name}/manifests/{digest}"],
                          capture_output=True, text=True, timeout=60)
    assert done.stdout == "200", done.stderr


@pytest.fixture
def stopped_registry(docker: Engine, registry: dict):
    """The stack's registry container stopped, as just after `docker run` returns and before it listens;
    started again (and answering) afterwards."""
    docker.docker("stop", registry["name"])
    yield registry
    docker.docker("start", registry["name"])
    wait_for_registry(docker, registry)


def test_the_push_waits_for_a_registry_that_does_not_listen_yet(docker, stack, stopped_registry, debug_image):
    """The registry is started only once the push has found it not answering (the script's first "does not
    answer yet" line), however long the build before it took: then the push goes through."""
    inputs = resource(stack["evaluation"], "debug-image-build")["inputs"]
    env = {**docker.env, **inputs["environment"], "CONTEXT_DIR": str(debug_image["work"] / "context")}
    process = subprocess.Popen([*inputs["interpreter"], inputs["create"]], env=env, text=True,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    retrying = threading.Event()
    errors: list[str] = []
    output: list[str] = []

    def read_stderr() -> None:
        for line in process.stderr:
            errors.append(line)
            if "does not answer yet; retrying the push" in line:
                retrying.set()

    def feed_and_read_stdout() -> None:
        with contextlib.suppress(BrokenPipeError):
            process.stdin.write(inputs["stdin"])
            process.stdin.close()
        output.append(process.stdout.read())

    readers = [threading.Thread(target=f, daemon=True) for f in (read_stderr, feed_and_read_stdout)]
    for reader in readers:
        reader.start()
    try:
        deadline = time.monotonic() + 1800
        while not retrying.wait(0.5):
            if process.poll() is not None:
                readers[0].join(timeout=60)
                assert retrying.is_set(), (f"the build and push ended ({process.returncode}) without finding the "
                                           f"registry not answering: {''.join(errors)[-3000:]}")
            assert time.monotonic() < deadline, f"no retried push within 1800 s: {''.join(errors)[-3000:]}"
        docker.docker("start", stopped_registry["name"])
        process.wait(timeout=1800)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for reader in readers:
            reader.join(timeout=60)
    done = subprocess.CompletedProcess(process.args, process.returncode, "".join(output), "".join(errors))
    assert done.returncode == 0, done.stderr[-3000:]
    repository = debug_image["image"].rsplit(":", 1)[0]
    assert re.fullmatch(rf"{re.escape(repository)}@sha256:[0-9a-f]{{64}}", done.stdout.strip().splitlines()[-1])


def test_the_push_gives_up_on_a_registry_that_never_answers(docker, stack, stopped_registry, debug_image):
    done = build_and_push(docker, stack["evaluation"], debug_image["work"] / "context", REGISTRY_WAIT_SECONDS="3")
    assert done.returncode != 0
    assert "did not take the push" in done.stderr and "within 3 s" in done.stderr, done.stderr[-2000:]
    assert "is the registry container running?" in done.stderr


def test_a_node_pulls_exactly_the_pushed_image_by_digest(stack, registry, debug_image, node, tmp_path):  # noqa: F811
    """containerd on a node (the private-mount-namespace node of test_containerd_mirror, with the stack's own
    hosts.toml) pulls the reference the stack outputs, by a name that only /etc/hosts knows (so no loopback
    shortcut to plain HTTP): the digest it stores is the one the push printed."""
    port = int(registry["ports"][0]["external"])
    n = node(REGISTRY_NAME, port)
    n.hosts_file = tmp_path / "hosts"
    n.hosts_file.write_text(f"127.0.0.1 localhost\n{ENGINE_SIDE} {REGISTRY_NAME}\n")
    done = n.run(n.create)
    assert done.returncode == 0, done.stderr
    certs_d = next(n.etc.rglob("hosts.toml")).parent.parent
    reference = pull_reference(debug_image["pushed"], f"{REGISTRY_NAME}:{port}")
    n.start_containerd()
    pulled = n.run(shlex.join(["ctr", "--address", n.env["CONTAINERD_ADDRESS"], "--namespace", "test", "images",
                               "pull", "--hosts-dir", str(certs_d), reference]))
    assert pulled.returncode == 0, pulled.stderr
    listed = n.ctr("--namespace", "test", "images", "ls").stdout
    digest = debug_image["pushed"].split("@", 1)[1]
    assert any(line.split()[0] == reference and digest in line for line in listed.splitlines()[1:]), listed


# --- the network, the builder and the debugger: created as the stack's provider arguments say -------------------


def container_args(inputs: dict, network: str) -> list[str]:
    """The builder's and debugger's docker.Container arguments beyond run_args: init, privileged, working dir,
    entrypoint and network."""
    args = run_args(inputs)
    if inputs.get("init"):
        args.append("--init")
    if inputs.get("privileged"):
        args += PRIVILEGED
    if inputs.get("workingDir"):
        args += ["--workdir", inputs["workingDir"]]
    if inputs.get("entrypoints"):
        args += ["--entrypoint", inputs["entrypoints"][0]]
    assert [n["name"] for n in inputs["networksAdvanced"]] == [network]
    return [*args, "--network", network]


# CAP_SYS_RESOURCE, which this machine's own bounding set lacks.
_SYS_RESOURCE = 1 << 24


def privileged_flags() -> list[str]:
    """--privileged, where the machine can grant it. A sandbox without CAP_SYS_RESOURCE in its bounding set (these
    machines) cannot start a privileged container (runc: "unable to apply caps"), so there the container gets
    everything else privileged gives: every other capability, no seccomp or AppArmor profile."""
    bounding = int(re.search(r"CapBnd:\s*([0-9a-f]+)", Path("/proc/self/status").read_text()).group(1), 16)
    if bounding & _SYS_RESOURCE:
        return ["--privileged"]
    return ["--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE", "--security-opt", "seccomp=unconfined",
            "--security-opt", "apparmor=unconfined"]


PRIVILEGED = privileged_flags()


def command_of(inputs: dict) -> list[str]:
    return [*inputs.get("entrypoints", [])[1:], *inputs["command"]]


@pytest.fixture(scope="module")
def network(docker: Engine, stack: dict):
    inputs = resource(stack["evaluation"], "docker-network")["inputs"]
    docker.docker("network", "rm", inputs["name"], check=False)
    docker.docker("network", "create", "--subnet", inputs["ipamConfigs"][0]["subnet"], inputs["name"])
    yield inputs
    docker.docker("network", "rm", inputs["name"], check=False)


def test_an_overlapping_subnet_is_refused_by_the_engine(docker, network):
    done = docker.docker("network", "create", "--subnet", network["ipamConfigs"][0]["subnet"], "ipd-overlap",
                         check=False)
    assert done.returncode != 0 and "overlap" in done.stderr.lower(), done.stderr


def test_a_registry_port_in_use_is_refused_by_the_engine(docker, stack, registry):
    inputs = {**registry, "name": "ipd-second-registry", "mounts": []}
    done = docker.docker("run", *run_args(inputs), "registry:2", check=False)
    docker.docker("rm", "--force", "ipd-second-registry", check=False)
    assert done.returncode != 0 and "already allocated" in done.stderr, done.stderr


def workspace_folders(stack: dict) -> None:
    """What prepare-workspace.sh leaves before any container mounts them (the checkout itself is not needed)."""
    for folder in ("work", "home/.cache"):
        (stack["work"] / folder).mkdir(parents=True, exist_ok=True)


@pytest.fixture(scope="module")
def builder(docker: Engine, stack: dict, network: dict):
    evaluation = stack["evaluation"]
    image = base_image(docker, resource(evaluation, "builder-image")["inputs"]["name"], include=("binutils",))
    inputs = resource(evaluation, "builder-container")["inputs"]
    workspace_folders(stack)
    docker.docker("rm", "--force", inputs["name"], check=False)
    docker.docker("run", *container_args(inputs, network["name"]), image, *command_of(inputs))
    yield inputs
    docker.docker("rm", "--force", inputs["name"], check=False)


def test_the_builder_runs_with_the_stacks_arguments(docker, builder, network):
    state = json.loads(docker.docker("inspect", builder["name"]).stdout)[0]
    assert state["State"]["Running"] is True
    assert state["HostConfig"]["Privileged"] is True or "SYS_RESOURCE" in state["HostConfig"]["CapDrop"]
    assert state["HostConfig"]["Init"] is True and state["Config"]["WorkingDir"] == builder["workingDir"]
    address = state["NetworkSettings"]["Networks"][network["name"]]["IPAddress"]
    assert ipaddress.ip_address(address) in ipaddress.ip_network(network["ipamConfigs"][0]["subnet"])
    assert {m["Destination"] for m in state["Mounts"]} == {m["target"] for m in builder["mounts"]}


def test_a_missing_workspace_folder_is_refused_by_the_engine(docker, stack, network, tmp_path):
    inputs = resource(evaluate("ci", f"workDir={tmp_path / 'nowhere'}", "envoySource=build"),
                      "builder-container")["inputs"]
    inputs = {**inputs, "name": "ipd-builder-without-workspace"}
    image = resource(stack["evaluation"], "builder-image")["inputs"]["name"]
    done = docker.docker("run", *container_args(inputs, network["name"]), image, *command_of(inputs), check=False)
    docker.docker("rm", "--force", inputs["name"], check=False)
    assert done.returncode != 0 and "does not exist" in done.stderr, done.stderr
    assert not (tmp_path / "nowhere").exists(), "nothing was created, root-owned, in the developer's place"


def test_the_staging_script_runs_in_the_builder_through_docker_exec(docker, stack, builder, tmp_path):
    """debug-image-context as rendered: `docker exec -i --env … <builder> bash -s`, the script on stdin."""
    work = stack["work"] / "work" / "staging-test"
    work.mkdir(parents=True, exist_ok=True)
    elf = compile_debuggee(work)
    inputs = resource(stack["evaluation"], "debug-image-context")["inputs"]
    env = {**docker.env, **inputs["environment"], "ELF": f"/work/staging-test/{elf.name}",
           "BUILD_ID": build_id(elf)}
    done = subprocess.run(["bash", "-c", inputs["create"]], input=inputs["stdin"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"buildId={build_id(elf)}" in done.stdout and "stripped=true" in done.stdout
    context = stack["work"] / "home" / ".cache" / Path(inputs["environment"]["CONTEXT_DIR"]).relative_to(
        "/home/.cache")
    assert build_id(context / "envoy") == build_id(elf)
    assert (context / "collect-lldb-server.sh").read_text() == inputs["environment"]["COLLECTOR"]


@pytest.fixture(scope="module")
def debugger(docker: Engine, stack: dict, network: dict):
    """The debugger image built by the stack's command (its Dockerfile, FROM an ubuntu:22.04 stand-in), and the
    debugger container run from it with the stack's arguments."""
    evaluation = stack["evaluation"]
    base_image(docker, "docker.io/library/ubuntu:22.04")
    build = resource(evaluation, "debugger-image")["inputs"]
    done = subprocess.run([*build["interpreter"], build["create"]], input=build["stdin"],
                          env={**docker.env, **build["environment"]}, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    image_id = done.stdout.strip().splitlines()[-1]
    inputs = resource(evaluation, "debugger-container")["inputs"]
    workspace_folders(stack)
    docker.docker("rm", "--force", inputs["name"], check=False)
    docker.docker("run", *container_args(inputs, network["name"]), image_id, *command_of(inputs))
    yield {"inputs": inputs, "image": image_id, "tag": build["environment"]["IMAGE"]}
    docker.docker("rm", "--force", inputs["name"], check=False)


def test_the_debugger_image_is_what_its_build_printed_and_its_lldb_runs(docker, debugger):
    assert docker.docker("image", "inspect", "--format", "{{.Id}}", debugger["tag"]).stdout.strip() == \
        debugger["image"]
    done = docker.docker("exec", debugger["inputs"]["name"], "lldb", "--version")
    assert done.stdout.startswith("lldb version"), done.stdout
    for tool in ("git", "curl", "pigz", "readelf", "clangd"):
        assert docker.docker("exec", debugger["inputs"]["name"], "sh", "-c", f"command -v {tool}",
                             check=False).returncode == 0, tool
