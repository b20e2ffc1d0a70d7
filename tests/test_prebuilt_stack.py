"""envoySource prebuilt, the program's resource graph under mocks: Istio's published debug Envoy is downloaded
where the builder would have built it, and nothing of the build exists; `build` stays the walkthrough's."""

from __future__ import annotations

import json
import posixpath

import pytest

from components.prebuilt_envoy import ENVOY_CHECKOUT
from tests.conftest import CLUSTER_PLACEMENT, evaluate, resource
from tests.mock_stack import PREBUILT_BUILD_ID, PREBUILT_ENVOY_COMMIT, PREBUILT_SANDBOX_ROOT, WALKTHROUGH_COMMIT

PREBUILT = "envoySource=prebuilt"


@pytest.fixture(scope="module")
def host() -> dict:
    return evaluate("dev", PREBUILT)


@pytest.fixture(scope="module")
def cluster() -> dict:
    return evaluate("dev", *CLUSTER_PLACEMENT, PREBUILT)


def commands(evaluation: dict) -> dict[str, dict]:
    return {r["name"]: r["inputs"] for r in evaluation["resources"] if r["type"].startswith("command:")}


@pytest.mark.parametrize("placement", ["host", "cluster"])
def test_nothing_of_the_build_exists(placement, request):
    evaluation = request.getfixturevalue(placement)
    names = {r["name"] for r in evaluation["resources"]}
    assert not {n for n in names if n.startswith("builder")}, "no builder container, pod, image or component"
    assert "envoy-make" not in names
    everything = json.dumps([r["inputs"] for r in evaluation["resources"]])
    assert "build-tools-proxy" not in everything, "no builder image is pulled"
    assert "BAZEL_" not in everything and "make build" not in everything, "bazel never runs"
    assert evaluation["outputs"]["builderContainer"] is None
    assert evaluation["outputs"]["bazelExecroot"] is None and evaluation["outputs"]["bazelExecrootHostPath"] is None


def test_build_is_the_walkthroughs_and_downloads_nothing():
    names = {r["name"] for r in evaluate("dev")["resources"]}
    assert {"builder-container", "builder-image", "envoy-make"} <= names
    assert not names & {"envoy-fetch", "envoy-source"}


def test_the_download_and_the_checkout_run_in_the_debugger_container(host):
    run = commands(host)
    for name in ("envoy-source", "envoy-fetch", "debug-image-context"):
        create = run[name]["create"]
        assert create.startswith("docker exec -i ") and create.endswith(" lldb-vscode-server bash -s"), create
        for key in run[name]["environment"]:
            assert f"--env {key} " in create, f"{name} passes {key} on"
    # The debugger sees the workspace where the builder would: the checkout and the cache.
    volumes = {(m["source"], m["target"]) for m in resource(host, "debugger-container")["inputs"]["mounts"]}
    assert {("/home/labile/istio-testing/work", "/work"), ("/home/labile/istio-testing/home/.cache", "/home/.cache")} \
        <= volumes
    assert "workspace" in resource(host, "debugger-container")["options"]["dependsOn"]


def test_in_the_cluster_they_run_in_the_code_server_pod(cluster):
    run = commands(cluster)
    for name in ("workspace-prepare", "envoy-source", "envoy-fetch", "debug-image-context"):
        create = run[name]["create"]
        assert create.startswith("kubectl exec -i --namespace istio-proxy-debug code-server-0 --container "
                                 "code-server -- env "), create
        assert create.endswith(" bash -s")
    assert "debugger-image" not in run, "no Docker anywhere in the cluster placement"


def test_the_download_is_of_the_checked_out_commit_into_the_cache_destroy_keeps(host):
    fetch = commands(host)["envoy-fetch"]
    assert fetch["environment"] == {"BASE_URL": "https://storage.googleapis.com/istio-build/proxy",
                                    "SHA": WALKTHROUGH_COMMIT, "DEST_DIR": "/home/.cache/istio-proxy-debug/prebuilt"}
    assert "delete" not in fetch
    source = commands(host)["envoy-source"]
    assert source["environment"] == {"SOURCE_DIR": "/work", "ENVOY_DIR": ENVOY_CHECKOUT, "SOURCE_TAG": "1.17.2"}
    assert source["triggers"] == [WALKTHROUGH_COMMIT], "another istio/proxy commit may pin another Envoy"
    assert "delete" not in source
    timeouts = resource(host, "envoy-fetch")["options"]["customTimeouts"]
    assert timeouts["create"] == timeouts["update"] == "3h"


def test_the_outputs_name_the_elf_its_dwp_beside_it_and_the_envoy_checkout(host):
    out = host["outputs"]
    folder = f"/home/.cache/istio-proxy-debug/prebuilt/{WALKTHROUGH_COMMIT}"
    assert out["envoySource"] == "prebuilt"
    assert out["envoyElf"] == f"{folder}/envoy"
    assert out["envoyDwp"] == f"{folder}/envoy.dwp", "where lldb looks for the package: <ELF>.dwp"
    assert out["envoyElfHostPath"] == f"/home/labile/istio-testing/home/.cache/istio-proxy-debug/prebuilt/" \
                                      f"{WALKTHROUGH_COMMIT}/envoy"
    assert out["envoyBuildId"] == PREBUILT_BUILD_ID
    assert out["envoyCheckout"] == ENVOY_CHECKOUT and out["envoyCommit"] == PREBUILT_ENVOY_COMMIT


def test_the_debug_image_is_made_from_the_downloaded_elf_as_from_a_built_one(host):
    run = commands(host)
    staging = dict(run["debug-image-context"]["environment"])
    assert staging.pop("COLLECTOR") == commands(evaluate("dev"))["debug-image-context"]["environment"]["COLLECTOR"]
    assert staging == {
        "ELF": host["outputs"]["envoyElf"], "CONTEXT_DIR": "/home/.cache/istio-proxy-debug/proxyv2-debug",
        "STRIP": "true", "BUILD_ID": PREBUILT_BUILD_ID}
    build = run["debug-image-build"]
    built = commands(evaluate("dev"))["debug-image-build"]
    assert build["stdin"] == built["stdin"], "the same Dockerfile: the debugger part first, Envoy last"
    assert build["create"] == built["create"] and build["environment"] == built["environment"]
    assert host["outputs"]["debugImage"].startswith("192.168.122.1:5000/proxyv2@sha256:")


def test_the_source_map_comes_from_what_the_download_records_and_lands_in_the_checkouts(host):
    config = json.loads(host["outputs"]["launchJson"])["configurations"]
    codelldb = next(c for c in config if c["type"] == "lldb")
    dap = next(c for c in config if c["type"] == "lldb-dap")
    expected = []
    # The compilation directory first, then the sandbox root; for each, Envoy's files (external/envoy, as the
    # checkout's WORKSPACE names it) before the prefix itself: lldb takes the first pair that matches.
    for prefix in ["/proc/self/cwd", PREBUILT_SANDBOX_ROOT]:
        expected += [[f"{prefix}/external/envoy", ENVOY_CHECKOUT], [prefix, "/work"]]
    assert dap["sourceMap"] == expected
    assert list(codelldb["sourceMap"].items()) == [tuple(pair) for pair in expected], "CodeLLDB keeps the order"
    assert codelldb["program"] == dap["program"] == host["outputs"]["envoyElf"]
    lines = host["outputs"]["lldbCommands"].splitlines()
    assert [line.split()[-2:] for line in lines if line.startswith("settings append target.source-map")] == expected
    # Every target is a folder the debugger container mounts.
    mounts = [m["target"] for m in resource(host, "debugger-container")["inputs"]["mounts"]]
    for _, target in expected:
        assert any(target == m or target.startswith(m + "/") for m in mounts), target


def test_a_file_url_is_mounted_read_only_into_the_debugger_where_the_download_reads_it():
    evaluation = evaluate("dev", PREBUILT, "prebuiltBaseUrl=file:///srv/istio-build/proxy/")
    assert commands(evaluation)["envoy-fetch"]["environment"]["BASE_URL"] == "file:///srv/istio-build/proxy"
    mounts = resource(evaluation, "debugger-container")["inputs"]["mounts"]
    assert {"type": "bind", "source": "/srv/istio-build/proxy", "target": "/srv/istio-build/proxy", "readOnly": True} \
        in mounts


def test_a_mirror_and_an_envoy_repository_are_passed_on():
    evaluation = evaluate("dev", PREBUILT, "prebuiltBaseUrl=https://mirror.example/istio",
                          "envoyRepository=https://git.example/envoy.git")
    run = commands(evaluation)
    assert run["envoy-fetch"]["environment"]["BASE_URL"] == "https://mirror.example/istio"
    assert run["envoy-source"]["environment"]["ENVOY_REPOSITORY"] == "https://git.example/envoy.git"
    assert "--env ENVOY_REPOSITORY " in run["envoy-source"]["create"]


def test_the_lldb_server_and_the_pod_are_those_of_a_built_envoy(host):
    built = evaluate("dev")
    for name in ("lldb-server-platform", "target-statefulset", "containerd-mirror-192.168.122.55"):
        assert resource(host, name)["inputs"] == resource(built, name)["inputs"], name


def test_in_the_cluster_nothing_is_privileged_at_all(cluster):
    for r in cluster["resources"]:
        if r["type"].startswith("kubernetes:apps/"):
            spec = r["inputs"]["spec"]["template"]["spec"]
            for container in spec.get("containers", []) + spec.get("initContainers", []):
                assert not container.get("securityContext", {}).get("privileged"), (r["name"], container["name"])


def test_the_envoy_checkout_is_visible_where_the_debugger_looks(cluster):
    mounts = {m["mountPath"] for m in resource(cluster, "debugger-statefulset")["inputs"]["spec"]["template"]["spec"]
              ["containers"][0]["volumeMounts"]}
    assert posixpath.dirname(posixpath.dirname(ENVOY_CHECKOUT)) in mounts
