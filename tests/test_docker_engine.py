"""The Docker side for real: the stack's registry, debug image build, push and digest, run by a real Docker
engine (tests/docker_engine.py: Debian's docker.io in a network namespace of its own) with exactly what the
stack gives it. Images that would be pulled are stand-ins made here from Debian bookworm (debootstrap):
`docker.io/istio/proxyv2:<version>` and `registry:2` (Debian's docker-registry, which is the same
distribution registry, configured as the official image is).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import tarfile
from pathlib import Path

import pytest

from components.debug_image import pull_reference
from components.lldb_server import IMAGE_LLDB_SERVER
from tests.conftest import evaluate, require_tool, resource, run_rendered
from tests.docker_engine import ENGINE_SIDE, Engine, base_image, engine
from tests.lldb_session import compile_debuggee
from tests.test_containerd_mirror import REGISTRY_NAME, node  # noqa: F401 (node: the fixture)

BOOKWORM = "istio-proxy-debug-stand-in/bookworm:latest"
# The official registry:2 image's own configuration (distribution's cmd/registry/config-example.yml).
REGISTRY_CONFIG = """version: 0.1
log:
  fields:
    service: registry
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: /var/lib/registry
http:
  addr: :5000
  headers:
    X-Content-Type-Options: [nosniff]
"""
REGISTRY_STAND_IN = f"""FROM {BOOKWORM}
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends docker-registry \\
 && rm -rf /var/lib/apt/lists/*
COPY config.yml /etc/docker/registry/config.yml
EXPOSE 5000
ENTRYPOINT ["/usr/bin/docker-registry", "serve", "/etc/docker/registry/config.yml"]
"""


@pytest.fixture(scope="module")
def docker():
    if os.geteuid() != 0:
        pytest.skip("dockerd, network namespaces and debootstrap need root")
    for tool in ("dockerd", "debootstrap", "ip", "nsenter", "readelf", "objcopy"):
        require_tool(tool)
    with engine() as running:
        yield running


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> dict:
    """The dev stack with its workDir here (the registry's storage under it)."""
    work = tmp_path_factory.mktemp("work")
    return {"work": work, "evaluation": evaluate("dev", f"workDir={work}")}


def run_args(inputs: dict) -> list[str]:
    """`docker run` arguments for a docker.Container's inputs: each provider argument the stack sets, as the
    CLI spells it, so the engine itself judges them."""
    args = ["--detach", "--name", inputs["name"]]
    if inputs.get("hostname"):
        args += ["--hostname", inputs["hostname"]]
    if inputs.get("restart"):
        args += ["--restart", inputs["restart"]]
    for env in inputs.get("envs", []):
        args += ["--env", env]
    for port in inputs.get("ports", []):
        args += ["--publish", f"{int(port['external'])}:{int(port['internal'])}"]
    for volume in inputs.get("volumes", []):
        args += ["--volume", f"{volume['hostPath']}:{volume['containerPath']}"]
    return args


@pytest.fixture(scope="module")
def registry(docker: Engine, stack: dict, tmp_path_factory):
    """The stack's registry container, run from the registry:2 stand-in with the stack's own arguments."""
    base_image(docker, BOOKWORM)
    context = tmp_path_factory.mktemp("registry-image")
    (context / "config.yml").write_text(REGISTRY_CONFIG)
    (context / "Dockerfile").write_text(REGISTRY_STAND_IN)
    docker.docker("build", "--tag", "registry:2", str(context))
    inputs = resource(stack["evaluation"], "registry-container")["inputs"]
    image = resource(stack["evaluation"], "registry-image")["inputs"]["name"]
    assert image == "registry:2"
    (stack["work"] / "registry").mkdir(exist_ok=True)
    docker.docker("rm", "--force", inputs["name"], check=False)
    docker.docker("run", *run_args(inputs), image)
    yield inputs
    docker.docker("rm", "--force", inputs["name"], check=False)


def build_id(path: Path) -> str:
    out = subprocess.run(["readelf", "-n", str(path)], check=True, capture_output=True, text=True).stdout
    return re.search(r"Build ID: (\w+)", out).group(1)


def stage_and_build(docker: Engine, stack: dict, elf: Path, context: Path) -> tuple[str, str]:
    """The stack's staging script, then its build command, exactly as rendered: (staged report, pushed ref)."""
    evaluation = stack["evaluation"]
    staged = run_rendered(resource(evaluation, "debug-image-context")["inputs"], ELF=str(elf),
                          CONTEXT_DIR=str(context), BUILD_ID=build_id(elf))
    assert staged.returncode == 0, staged.stderr
    inputs = resource(evaluation, "debug-image-build")["inputs"]
    env = {**docker.env, **inputs["environment"], "CONTEXT_DIR": str(context)}
    done = subprocess.run([*inputs["interpreter"], inputs["create"]], input=inputs["stdin"], env=env,
                          capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    return staged.stdout, done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def debug_image(docker: Engine, stack: dict, registry: dict, tmp_path_factory) -> dict:
    inputs = resource(stack["evaluation"], "debug-image-build")["inputs"]
    base_image(docker, inputs["environment"]["BASE_IMAGE"])
    work = tmp_path_factory.mktemp("envoy")
    elf = compile_debuggee(work)
    _, pushed = stage_and_build(docker, stack, elf, work / "context")
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


def registry_blobs(stack: dict) -> dict[str, int]:
    blobs = stack["work"] / "registry" / "docker" / "registry" / "v2" / "blobs"
    return {p.parent.name: p.stat().st_size for p in blobs.rglob("data")}


def test_a_changed_envoy_pushes_only_its_own_layer(docker, stack, debug_image):
    """Measured at the registry: the blobs the second push stored."""
    before = registry_blobs(stack)
    work = debug_image["work"] / "second"
    work.mkdir()
    elf = compile_debuggee(work, extra=("-DSECOND_BUILD=1", "-Wl,--build-id=0x" + "ab" * 20))
    staged, pushed = stage_and_build(docker, stack, elf, work / "context")
    added = {digest: size for digest, size in registry_blobs(stack).items() if digest not in before}
    shipped = int(re.search(r"bytes=(\d+)", staged).group(1))
    # The Envoy layer, the image config and the manifest: nothing of the lldb-server layers again.
    assert len(added) == 3, added
    assert pushed != debug_image["pushed"]
    layer = max(added.values())
    assert layer <= shipped * 1.05, (layer, shipped)


def test_the_registry_keeps_every_image_when_its_container_is_recreated(docker, stack, registry, debug_image):
    docker.docker("rm", "--force", registry["name"])
    docker.docker("run", *run_args(registry), "registry:2")
    digest = debug_image["pushed"].split("@", 1)[1]
    name = debug_image["pushed"].split("@", 1)[0].split("/", 1)[1]
    port = int(registry["ports"][0]["external"])
    # From the root namespace, over the veth: the engine's namespace is the one the test made.
    done = subprocess.run(["curl", "-fsS", "-o", "/dev/null", "-w", "%{http_code}", "-H",
                           "Accept: application/vnd.docker.distribution.manifest.v2+json",
                           f"http://{ENGINE_SIDE}:{port}/v2/{name}/manifests/{digest}"],
                          capture_output=True, text=True, timeout=60)
    assert done.stdout == "200", done.stderr


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
