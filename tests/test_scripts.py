"""The components' shell scripts: checked by shellcheck, and run for real by bash, exactly as the program
renders them (script text and environment taken from the program evaluated under mocks)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path

import pytest

from components.envoy_build import parse_build_result
from tests.conftest import ROOT, evaluate, git, require_tool, resource

SCRIPTS = sorted((ROOT / "components" / "scripts").glob("*.sh"))
# The walkthrough's build command, as typed in the builder (S3), with what the stack adds for lldb: --fission=no,
# the name index's two --copt and the dead-code marks' two --linkopt.
WALKTHROUGH_MAKE = (
    "make build BAZEL_STARTUP_ARGS='' BAZEL_BUILD_ARGS='-s  --explain=explain.txt --config=debug --fission=no"
    " --copt=-gdwarf-5 --copt=-gpubnames --linkopt=-fuse-ld=lld"
    " --linkopt=-Wl,-z,dead-reloc-in-nonalloc=.debug_addr=0xffffffffffffffff' BAZEL_TARGETS=':envoy'"
)
BUILD_ID = "0123456789abcdef0123456789abcdef01234567"


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.name)
def test_script_passes_shellcheck(path):
    shellcheck = require_tool("shellcheck")
    done = subprocess.run([shellcheck, "--severity=style", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout


@pytest.mark.parametrize(("mode", "source", "steps"), [
    ("attach", "build", {"envoy-make"}),
    ("startup", "build", {"envoy-make"}),
    ("attach", "prebuilt", {"envoy-source", "envoy-fetch"}),
])
def test_every_script_the_program_renders_passes_shellcheck(mode, source, steps):
    """What a command runs, as rendered: bash -c texts, scripts fed on stdin, delete heredocs."""
    shellcheck = require_tool("shellcheck")
    evaluation = evaluate("dev", f"mode={mode}", f"envoySource={source}")
    texts = []
    for r in evaluation["resources"]:
        inputs = r["inputs"]
        if not r["type"].startswith("command:"):
            continue
        if inputs.get("interpreter", [""])[0] == "/bin/bash":
            texts.append((r["name"], "create", inputs["create"]))
        if inputs.get("create", "").endswith("bash -s"):
            texts.append((r["name"], "stdin", inputs["stdin"]))
        if "<<'STOP'\n" in inputs.get("delete", ""):
            texts.append((r["name"], "delete", inputs["delete"].split("<<'STOP'\n", 1)[1].rsplit("STOP\n", 1)[0]))
    assert {name for name, _, _ in texts} >= {"workspace-prepare", "lldb-server-platform", "debug-image-context",
                                              *steps}
    for name, part, text in texts:
        done = subprocess.run([shellcheck, "--severity=style", "-s", "bash", "-"], input=text, capture_output=True,
                              text=True)
        assert done.returncode == 0, f"{name} {part}:\n{done.stdout}"


@pytest.fixture
def origin(tmp_path: Path) -> Path:
    """A stand-in for istio/proxy with two release tags that change the same file."""
    require_tool("git")
    repo = tmp_path / "origin"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "master")
    (repo / "BUILD").write_text("envoy 1.17.2\n")
    (repo / "README").write_text("proxy\n")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "one")
    git(repo, "tag", "1.17.2")
    (repo / "BUILD").write_text("envoy 1.17.3\n")
    git(repo, "commit", "-qam", "two")
    git(repo, "tag", "1.17.3")
    return repo


def prepare(tmp_path: Path, origin: Path, tag: str = "1.17.2") -> subprocess.CompletedProcess:
    """Runs the workspace command as local.Command would: its interpreter, its create text, its env."""
    work_dir = tmp_path / "istio-testing"
    evaluation = evaluate("dev", f"workDir={work_dir}", f"sourceRepository=file://{origin}", f"istioVersion={tag}")
    inputs = resource(evaluation, "workspace-prepare")["inputs"]
    return subprocess.run([*inputs["interpreter"], inputs["create"]], env={**os.environ, **inputs["environment"]},
                          capture_output=True, text=True, timeout=60)


def test_prepare_clones_at_the_tag_on_a_branch_named_after_it(tmp_path, origin):
    done = prepare(tmp_path, origin)
    assert done.returncode == 0, done.stderr
    source = tmp_path / "istio-testing" / "work"
    assert done.stdout == git(origin, "rev-parse", "1.17.2^{commit}") + "\n\n", "and no builder image pinned"
    assert git(source, "symbolic-ref", "HEAD") == "refs/heads/1.17.2"
    assert (tmp_path / "istio-testing" / "home" / ".cache").is_dir()
    assert (tmp_path / "istio-testing" / "registry").is_dir()


def test_prepare_again_changes_nothing_and_keeps_local_work(tmp_path, origin):
    assert prepare(tmp_path, origin).returncode == 0
    source = tmp_path / "istio-testing" / "work"
    (source / "README").write_text("my notes\n")
    (source / "scratch.cc").write_text("// mine\n")
    again = prepare(tmp_path, origin)
    assert again.returncode == 0, again.stderr
    assert "checking out" not in again.stderr and "cloning" not in again.stderr
    assert (source / "README").read_text() == "my notes\n"
    assert (source / "scratch.cc").read_text() == "// mine\n"


def test_prepare_checks_out_a_new_tag_and_keeps_the_old_branch(tmp_path, origin):
    assert prepare(tmp_path, origin).returncode == 0
    source = tmp_path / "istio-testing" / "work"
    git(source, "commit", "-q", "--allow-empty", "-m", "my patch on 1.17.2")
    patched = git(source, "rev-parse", "HEAD")
    done = prepare(tmp_path, origin, tag="1.17.3")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == git(origin, "rev-parse", "1.17.3^{commit}")
    assert (source / "BUILD").read_text() == "envoy 1.17.3\n"
    assert git(source, "rev-parse", "refs/heads/1.17.2") == patched, "the old branch and its commits are kept"
    back = prepare(tmp_path, origin, tag="1.17.2")
    assert back.returncode == 0, back.stderr
    assert back.stdout.splitlines()[0] == patched


# The two ways istio/proxy's common/scripts/setup_env.sh has named the builder image (the lines as the source
# writes them: 1.17 names gcr.io itself, 1.30 its TOOLS_REGISTRY_PROVIDER and PROJECT_ID), with each release's
# pinned IMAGE_VERSION from tests/data/istio-releases, and lines that must never be evaluated.
SETUP_ENV_1_17 = """#!/bin/bash
if [[ "${IMAGE_VERSION:-}" == "" ]]; then
  IMAGE_VERSION=release-1.17-80e042c2d3016b759c6c5ebe4e77564a7f43bf2c
fi
if [[ "${IMAGE_NAME:-}" == "" ]]; then
  IMAGE_NAME=build-tools
fi
DOCKER_GID="${DOCKER_GID:-$(grep '^docker:' /etc/group | cut -f3 -d:)}"
IMG="${IMG:-gcr.io/istio-testing/${IMAGE_NAME}:${IMAGE_VERSION}}"
"""
SETUP_ENV_1_30 = """#!/bin/bash
TOOLS_REGISTRY_PROVIDER=${TOOLS_REGISTRY_PROVIDER:-registry.istio.io}
PROJECT_ID=${PROJECT_ID:-testing}
if [[ "${IMAGE_VERSION:-}" == "" ]]; then
  IMAGE_VERSION=release-1.30-ad8991a47cf3c61799caa5569b9458d95eb612f2
fi
IMG="${IMG:-${TOOLS_REGISTRY_PROVIDER}/${PROJECT_ID}/${IMAGE_NAME}:${IMAGE_VERSION}}"
if [[ "${LATEST_CACHED_IMAGE:-}" != "" ]]; then
  IMG="$(<<<"$latest" cut -d~ -f2)"
fi
"""


@pytest.mark.parametrize(("setup_env", "expected"), [
    (SETUP_ENV_1_17, "gcr.io/istio-testing/build-tools-proxy:release-1.17-80e042c2d3016b759c6c5ebe4e77564a7f43bf2c"),
    (SETUP_ENV_1_30,
     "registry.istio.io/testing/build-tools-proxy:release-1.30-ad8991a47cf3c61799caa5569b9458d95eb612f2"),
])
def test_prepare_reports_the_builder_image_the_checkout_pins(tmp_path, origin, setup_env, expected):
    (origin / "common" / "scripts").mkdir(parents=True)
    (origin / "common" / "scripts" / "setup_env.sh").write_text(setup_env)
    (origin / "Makefile.overrides.mk").write_text("BUILD_WITH_CONTAINER ?= 0\nIMAGE_NAME ?= build-tools-proxy\n")
    git(origin, "add", ".")
    git(origin, "commit", "-qm", "pin the builder")
    git(origin, "tag", "1.99.0")
    done = prepare(tmp_path, origin, tag="1.99.0")
    assert done.returncode == 0, done.stderr
    commit, image = done.stdout.splitlines()
    assert commit == git(origin, "rev-parse", "1.99.0^{commit}")
    assert image == expected
    # The tag is the one the release's own facts name (../shared/istio-releases manifest.json).
    release = expected.split(":release-")[1].split("-")[0]
    facts = ROOT / "tests" / "data" / "istio-releases"
    manifests = [json.loads(m.read_text()) for m in facts.glob("*/manifest.json")]
    assert any(m["builderImage"].endswith(":" + image.split(":", 1)[1]) and m["istioVersion"].startswith(release)
               for m in manifests)


def test_prepare_refuses_a_checkout_that_would_lose_changes(tmp_path, origin):
    assert prepare(tmp_path, origin).returncode == 0
    source = tmp_path / "istio-testing" / "work"
    (source / "BUILD").write_text("my uncommitted change\n")
    done = prepare(tmp_path, origin, tag="1.17.3")
    assert done.returncode != 0
    assert "cannot check out 1.17.3 without losing local changes" in done.stderr
    assert (source / "BUILD").read_text() == "my uncommitted change\n"
    assert git(source, "symbolic-ref", "HEAD") == "refs/heads/1.17.2"


def test_prepare_refuses_a_folder_that_is_not_a_checkout(tmp_path, origin):
    source = tmp_path / "istio-testing" / "work"
    source.mkdir(parents=True)
    (source / "precious.txt").write_text("keep me\n")
    done = prepare(tmp_path, origin)
    assert done.returncode != 0
    assert "is not empty and is not a git checkout" in done.stderr
    assert [p.name for p in source.iterdir()] == ["precious.txt"]


def test_prepare_names_an_unknown_tag(tmp_path, origin):
    done = prepare(tmp_path, origin, tag="9.9.9")
    assert done.returncode != 0
    assert "tag 9.9.9 is not in" in done.stderr


# --- build-envoy.sh, inside a stand-in for the builder container ---------------------------------

FAKE_MAKE = r"""#!/usr/bin/env bash
# Stands in for istio/proxy's `make build`: records its arguments, reads stdin as a careless tool
# would, and leaves the bazel output layout behind, with a real ELF linked with a known build-id.
printf '%s\n' "$@" > "$FAKE_MAKE_LOG"
cat > /dev/null
echo "INFO: Build completed successfully"
[ -n "${FAKE_MAKE_FAIL:-}" ] && exit 2
execroot="$FAKE_OUTPUT_BASE/execroot/io_istio_proxy"
mkdir -p "$execroot/bazel-out/k8-dbg/bin"
# One object compiled in a bazel sandbox, so its debug info records that sandbox's execroot.
sandbox="$FAKE_OUTPUT_BASE/sandbox/linux-sandbox/263/execroot/io_istio_proxy"
mkdir -p "$sandbox"
printf 'int main(void) { return 0; }\n' > "$sandbox/main.c"
(cd "$sandbox" && cc -g "-Wl,--build-id=$FAKE_BUILD_ID" -o "$execroot/bazel-out/k8-dbg/bin/envoy" main.c)
ln -sfn "$execroot/bazel-out" "$PWD/bazel-out"
"""


@pytest.fixture
def builder(tmp_path: Path) -> dict:
    """A workspace, a bazel output base, and `make` on PATH — what the builder container holds."""
    require_tool("cc")
    require_tool("readelf")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "make").write_text(FAKE_MAKE)
    (bin_dir / "make").chmod(0o755)
    workspace = tmp_path / "work"
    workspace.mkdir()
    return {
        "workspace": workspace,
        "output_base": tmp_path / "cache" / "bazel" / "_bazel_root" / "1e0bb3bee2d09d2e4ad3523530d3b40c",
        "env": {
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "FAKE_MAKE_LOG": str(tmp_path / "make.args"),
        },
        "log": tmp_path / "make.args",
    }


def build(builder: dict, *sets: str, build_id: str = BUILD_ID, **extra_env: str) -> subprocess.CompletedProcess:
    """Feeds the script on stdin to `bash -s` with the environment the program passes to docker exec."""
    make = resource(evaluate("dev", *sets), "envoy-make")["inputs"]
    assert make["create"].endswith(" bash -s")
    env = {
        **os.environ, **builder["env"], **make["environment"],
        # The one difference from the container: the workspace is not at /work here.
        "WORKSPACE_DIR": str(builder["workspace"]),
        "FAKE_OUTPUT_BASE": str(builder["output_base"]), "FAKE_BUILD_ID": "0x" + build_id, **extra_env,
    }
    return subprocess.run(["bash", "-s"], input=make["stdin"], env=env, capture_output=True, text=True, timeout=60)


def test_build_runs_the_walkthrough_make_and_reports_elf_execroot_and_build_id(builder):
    done = build(builder)
    assert done.returncode == 0, done.stderr
    recorded = builder["log"].read_text().splitlines()
    expected = shlex.split(WALKTHROUGH_MAKE)[1:]
    assert [a.split("=")[0] for a in recorded] == [a.split("=")[0] for a in expected]
    assert [shlex.split(a.partition("=")[2]) for a in recorded] == [shlex.split(a.partition("=")[2]) for a in expected]
    artifact = parse_build_result(done.stdout)
    execroot = builder["output_base"] / "execroot" / "io_istio_proxy"
    assert artifact.execroot == str(execroot)
    assert artifact.elf == str(execroot / "bazel-out" / "k8-dbg" / "bin" / "envoy")
    assert artifact.build_id == BUILD_ID
    assert artifact.sandbox_roots == (
        str(builder["output_base"] / "sandbox" / "linux-sandbox" / "263" / "execroot" / "io_istio_proxy"),
    )
    assert done.stdout.count("\n") == 4, "only the result is on stdout"
    assert "Build completed successfully" in done.stderr, "the build's output is streamed to the log"


def test_build_envoy_false_only_locates_an_existing_build(builder):
    assert build(builder).returncode == 0
    builder["log"].unlink()
    done = build(builder, "buildEnvoy=false", build_id="ffffffffffffffffffffffffffffffffffffffff")
    assert done.returncode == 0, done.stderr
    assert not builder["log"].exists(), "make must not run"
    assert parse_build_result(done.stdout).build_id == BUILD_ID


def test_build_envoy_false_without_a_build_says_what_to_do(builder):
    done = build(builder, "buildEnvoy=false")
    assert done.returncode == 1
    assert "no Envoy build in" in done.stderr and "set buildEnvoy to true" in done.stderr
    assert done.stdout == ""


def test_failed_make_fails_the_command(builder):
    done = build(builder, FAKE_MAKE_FAIL="1")
    assert done.returncode == 1
    assert "make build failed" in done.stderr


def test_missing_elf_is_named(builder):
    assert build(builder).returncode == 0
    elf = builder["output_base"] / "execroot" / "io_istio_proxy" / "bazel-out" / "k8-dbg" / "bin" / "envoy"
    elf.unlink()
    done = build(builder, "buildEnvoy=false")
    assert done.returncode == 1
    assert f"the debug ELF {elf} is missing" in done.stderr


def test_elf_without_build_id_is_refused(builder):
    done = build(builder, build_id="none")
    assert done.returncode == 1
    assert "has no GNU build-id note" in done.stderr


def test_build_tries_the_link_options_on_the_builders_compiler_first(builder):
    # The default args link with lld; the real gcc and clang of this machine must take them.
    require_tool("ld.lld")
    for compiler in ("gcc", "clang"):
        require_tool(compiler)
        builder["log"].unlink(missing_ok=True)
        done = build(builder, CC=compiler)
        assert done.returncode == 0, done.stderr
        assert builder["log"].exists(), "make runs once the link options link"


def test_link_options_the_linker_refuses_stop_the_build_before_make(builder):
    require_tool("ld.lld")
    args = "-s --config=debug --fission=no --linkopt=-fuse-ld=lld --linkopt=-Wl,--no-such-linker-option"
    done = build(builder, f"bazelBuildArgs={args}", CC="gcc")
    assert done.returncode == 1
    assert not builder["log"].exists(), "make must not start"
    assert "gcc cannot link with bazelBuildArgs' --linkopt -fuse-ld=lld -Wl,--no-such-linker-option" in done.stderr
    assert "no-such-linker-option" in done.stderr.split("--linkopt", 1)[1].split("\n", 1)[1], "the linker's own words"
    assert "change those --linkopt in bazelBuildArgs" in done.stderr
