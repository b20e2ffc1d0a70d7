"""The real program under Pulumi mocks, once per stack file, checked against the walkthrough (S1–S4).

The expected values below are the walkthrough's own commands (../shared/seed/OUTLINE.md), not copies
of the program's constants.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.conftest import ROOT, evaluate, resource
from tests.mock_stack import WALKTHROUGH_BUILD_ID, WALKTHROUGH_BUILDER_IMAGE, WALKTHROUGH_COMMIT, WALKTHROUGH_EXECROOT

STACK_FILES = sorted(p.name.split(".")[1] for p in ROOT.glob("Pulumi.*.yaml"))
LAB_HOME = "/home/labile/istio-testing"  # the walkthrough's $HOME/istio-testing


@pytest.fixture(scope="module")
def dev() -> dict:
    return evaluate("dev")


def volumes(container: dict) -> set[tuple[str, str]]:
    return {(m["source"], m["target"]) for m in container["inputs"]["mounts"]}


def test_there_is_a_stack_file_for_the_walkthrough():
    assert "dev" in STACK_FILES


@pytest.mark.parametrize("stack", STACK_FILES)
def test_every_stack_file_evaluates_with_every_resource_in_a_component(stack):
    evaluation = evaluate(stack)
    names = {r["name"] for r in evaluation["resources"]}
    for r in evaluation["resources"]:
        if r["custom"]:
            assert r["options"]["parent"] in names, f"{r['name']} is not parented to a component"
        else:
            assert r["type"].startswith("istio-proxy-debug:"), r["type"]
            module, cls = r["type"].split(":")[1:]
            assert (ROOT / "components" / f"{module}.py").exists(), f"{r['type']} has no module {module}.py"
            assert cls[0].isupper()


def test_s1_source_is_cloned_and_checked_out_at_the_tag(dev):
    prepare = resource(dev, "workspace-prepare")
    env = prepare["inputs"]["environment"]
    assert env["SOURCE_REPOSITORY"] == "https://github.com/istio/proxy.git"
    assert env["SOURCE_TAG"] == "1.17.2"
    assert env["SOURCE_DIR"] == f"{LAB_HOME}/work"
    assert env["CACHE_DIR"] == f"{LAB_HOME}/home/.cache"
    assert "delete" not in prepare["inputs"], "destroy must never touch the source tree"
    assert prepare["inputs"]["create"] == (ROOT / "components/scripts/prepare-workspace.sh").read_text()
    assert dev["outputs"]["sourceCommit"] == WALKTHROUGH_COMMIT


def test_s2_router_network_with_the_walkthrough_subnet(dev):
    network = resource(dev, "docker-network")["inputs"]
    assert network["name"] == "router"
    assert network["ipamConfigs"] == [{"subnet": "172.18.0.0/16"}]


def test_s2_builder_container_as_the_walkthrough_runs_it(dev):
    image = resource(dev, "builder-image")["inputs"]
    # The image 1.17.2's checkout pins (prepare-workspace.sh reads it; the mocks answer for the walkthrough).
    assert image["name"] == WALKTHROUGH_BUILDER_IMAGE
    assert image["keepLocally"] is True
    builder = resource(dev, "builder-container")
    inputs = builder["inputs"]
    assert inputs["name"] == "istio-proxy-builder"
    assert inputs["hostname"] == "istio-proxy-builder"
    assert inputs["init"] is True
    assert inputs["privileged"] is True
    assert inputs["networksAdvanced"] == [{"name": "router"}]
    assert volumes(builder) == {
        ("/var/run/docker.sock", "/var/run/docker.sock"),
        (f"{LAB_HOME}/work", "/work"),
        (f"{LAB_HOME}/home/.cache", "/home/.cache"),
    }
    assert inputs["workingDir"] == "/work"
    assert inputs["command"] == ["bash", "-c", "/bin/sleep 300d"]
    assert inputs["image"].startswith("sha256:"), "the container runs the pulled image by id"
    assert builder["options"]["deleteBeforeReplace"] is True
    for child in ("builder-container", "registry-container", "debugger-container"):
        assert "workspace" in resource(dev, child)["options"]["dependsOn"], f"{child}: the folders come first"
    assert "registry" in resource(dev, "debug-image-build")["options"]["dependsOn"], "the push needs the registry"
    assert "containerd-mirror" in resource(dev, "target-statefulset")["options"]["dependsOn"], "nodes can pull first"


def test_s3_build_runs_make_in_the_builder_only_when_source_or_args_change(dev):
    make = resource(dev, "envoy-make")
    inputs = make["inputs"]
    assert inputs["create"].startswith("docker exec -i ")
    assert inputs["create"].endswith(" istio-proxy-builder bash -s")
    assert inputs["stdin"] == (ROOT / "components/scripts/build-envoy.sh").read_text()
    env = inputs["environment"]
    # The walkthrough's args, plus the ELF's DWARF whole (test_split_dwarf.py), a name index that spares lldb
    # indexing it (test_name_index.py) and dead code marked dead (test_dead_code_addresses.py).
    assert env["BAZEL_BUILD_ARGS"] == (
        "-s --explain=explain.txt --config=debug --fission=no --copt=-gdwarf-5 --copt=-gpubnames"
        " --linkopt=-fuse-ld=lld --linkopt=-Wl,-z,dead-reloc-in-nonalloc=.debug_addr=0xffffffffffffffff"
    )
    assert env["BAZEL_TARGET"] == ":envoy"
    assert env["ENVOY_OUTPUT"] == "k8-dbg/bin/envoy"
    assert env["BUILD_ENVOY"] == "true"
    for key in env:
        assert f"--env {key}" in inputs["create"], f"{key} is not passed into the container"
    assert inputs["triggers"] == [WALKTHROUGH_COMMIT]
    assert make["options"]["customTimeouts"]["create"] == "12h", "a debug build takes hours"


def test_s3_outputs_locate_the_elf_on_host_and_in_container(dev):
    out = dev["outputs"]
    elf = f"{WALKTHROUGH_EXECROOT}/bazel-out/k8-dbg/bin/envoy"
    assert out["envoyElf"] == elf
    assert out["bazelExecroot"] == WALKTHROUGH_EXECROOT
    # The walkthrough's `sudo ln` source: the same file seen from the host.
    assert out["envoyElfHostPath"] == (
        f"{LAB_HOME}/home/.cache/bazel/_bazel_root/1e0bb3bee2d09d2e4ad3523530d3b40c"
        "/execroot/io_istio_proxy/bazel-out/k8-dbg/bin/envoy"
    )
    assert out["bazelExecrootHostPath"] == (
        f"{LAB_HOME}/home/.cache/bazel/_bazel_root/1e0bb3bee2d09d2e4ad3523530d3b40c/execroot/io_istio_proxy"
    )
    assert out["envoyBuildId"] == WALKTHROUGH_BUILD_ID


def test_s3_build_envoy_false_only_locates(dev):
    evaluation = evaluate("dev", "buildEnvoy=false")
    assert resource(evaluation, "envoy-make")["inputs"]["environment"]["BUILD_ENVOY"] == "false"


def test_s4_registry_as_the_walkthrough_runs_it_with_deletes_and_kept_storage(dev):
    assert resource(dev, "registry-image")["inputs"]["name"] == "registry:2"
    registry = resource(dev, "registry-container")
    inputs = registry["inputs"]
    assert inputs["name"] == "image-registry"
    assert inputs["hostname"] == "image-registry"
    assert inputs["restart"] == "always"
    assert inputs["ports"] == [{"internal": 5000, "external": 5000}]
    assert "REGISTRY_STORAGE_DELETE_ENABLED=true" in inputs["envs"]
    assert volumes(registry) == {(f"{LAB_HOME}/registry", "/var/lib/registry")}
    assert dev["outputs"]["registryPushAddress"] == "localhost:5000"
    assert dev["outputs"]["registryPullAddress"] == "192.168.122.1:5000"


def test_another_developers_stack_gets_its_own_physical_names():
    alice = evaluate("alice", "workDir=/home/alice/istio", "registryHost=10.1.0.1", 'nodes=["10.1.0.55"]',
                     "registryPort=5001")
    assert resource(alice, "debugger-container")["inputs"]["name"] == "lldb-vscode-server-alice"
    assert resource(alice, "docker-network")["inputs"]["name"] == "router-alice"
    assert resource(alice, "registry-container")["inputs"]["name"] == "image-registry-alice"
    assert resource(alice, "registry-container")["inputs"]["ports"] == [{"internal": 5000, "external": 5001}]
    assert alice["outputs"]["registryPullAddress"] == "10.1.0.1:5001"


def test_builder_image_set_in_the_stack_wins_over_the_checkouts_pin():
    pinned = resource(evaluate("dev"), "builder-image")["inputs"]["name"]
    chosen = "registry.example/build-tools-proxy:mine"
    assert pinned != chosen
    assert resource(evaluate("dev", f"builderImage={chosen}"), "builder-image")["inputs"]["name"] == chosen


def test_preview_of_a_new_stack_needs_nothing_built(dev):
    preview = evaluate("dev", preview=True)
    assert {r["name"] for r in preview["resources"]} == {r["name"] for r in dev["resources"]}
    assert preview["outputs"] == {}, "outputs computed by commands are unknown until up"


def test_no_resource_input_holds_a_path_of_the_machine_running_the_program(dev):
    text = json.dumps(dev["resources"])
    for machine_path in {str(ROOT), str(Path.home()), str(Path.cwd())} - {"/"}:
        # As a path of its own, not a part of one (the node script's /proc/$pid/root is no $HOME).
        assert not re.search(rf"(?<![\w$}}]){re.escape(machine_path)}(?![\w.-])", text), machine_path
