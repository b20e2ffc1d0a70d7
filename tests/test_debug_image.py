"""S5 debug image and S9 debugger: under mocks, and the strip-and-symbolicate path with the real tools."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT, evaluate, require_tool, resource, run_rendered
from tests.lldb_session import build_id, compile_debuggee, platform_server, run_lldb, running, source_line
from tests.mock_stack import FAKE_IMAGE_DIGEST, WALKTHROUGH_BUILD_ID, WALKTHROUGH_EXECROOT

LAB_HOME = "/home/labile/istio-testing"
DOCKERFILE = ROOT / "components" / "docker" / "debug-image.Dockerfile"
COLLECTOR = ROOT / "components" / "docker" / "collect-lldb-server.sh"


@pytest.fixture(scope="module")
def dev() -> dict:
    return evaluate("dev")


def instructions(dockerfile: str) -> list[list[str]]:
    """The Dockerfile's instructions, one list of stages, each a list of instruction lines (heredocs cut)."""
    stages: list[list[str]] = []
    lines = iter(dockerfile.splitlines())
    for line in lines:
        if not line.strip() or line.startswith("#"):
            continue
        heredoc = re.search(r"<<'?(\w+)'?$", line)
        if heredoc:
            for body in lines:
                if body == heredoc.group(1):
                    break
        if line.startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return stages


# --- under mocks --------------------------------------------------------------------------------------------


def test_layers_put_the_debugger_first_and_envoy_last(dev):
    text = resource(dev, "debug-image-build")["inputs"]["stdin"]
    assert text == DOCKERFILE.read_text()
    *build_stages, final = instructions(text)
    assert final[0] == "FROM ${BASE_IMAGE}"
    assert final[-1] == "COPY envoy /usr/local/bin/envoy", "a new Envoy must change only the last layer"
    assert final[1:-1] == ["COPY --from=lldb-server /out/ /"]
    assert not any("apt-get" in line for line in final), "no toolchain in the shipped image"
    assert any(line.startswith("FROM ${BASE_IMAGE} AS lldb-server") for stage in build_stages for line in stage)


def test_image_is_built_from_istio_proxyv2_for_an_explicit_platform_and_pushed_through_localhost(dev):
    env = resource(dev, "debug-image-build")["inputs"]["environment"]
    assert env["BASE_IMAGE"] == "docker.io/istio/proxyv2:1.17.2"
    assert env["IMAGE"] == "localhost:5000/proxyv2:1.17.2-debug"
    assert env["PLATFORM"] == "linux/amd64"
    assert env["CONTEXT_DIR"].startswith(f"{LAB_HOME}/home/.cache/")


def test_context_is_staged_in_the_builder_from_the_build_outputs(dev):
    stage = resource(dev, "debug-image-context")["inputs"]
    assert stage["create"].startswith("docker exec -i ") and stage["create"].endswith(" istio-proxy-builder bash -s")
    env = stage["environment"]
    assert env["ELF"] == f"{WALKTHROUGH_EXECROOT}/bazel-out/k8-dbg/bin/envoy"
    assert env["BUILD_ID"] == WALKTHROUGH_BUILD_ID
    assert env["STRIP"] == "true"
    for key in env:
        assert f"--env {key}" in stage["create"]
    build = resource(dev, "debug-image-build")["inputs"]
    host_context = build["environment"]["CONTEXT_DIR"]
    assert host_context.removeprefix(f"{LAB_HOME}/home/.cache") == env["CONTEXT_DIR"].removeprefix("/home/.cache")


def test_image_rebuilds_when_the_staged_envoy_changes(dev):
    build = resource(dev, "debug-image-build")["inputs"]
    assert len(build["triggers"]) == 1 and f"buildId={WALKTHROUGH_BUILD_ID}" in build["triggers"][0]
    unstripped = evaluate("dev", "stripTargetBinary=false")
    assert resource(unstripped, "debug-image-context")["inputs"]["environment"]["STRIP"] == "false"
    assert resource(unstripped, "debug-image-build")["inputs"]["triggers"] != build["triggers"]


def test_nodes_pull_the_pushed_image_by_digest(dev):
    assert dev["outputs"]["debugImagePushed"] == f"localhost:5000/proxyv2@{FAKE_IMAGE_DIGEST}"
    assert dev["outputs"]["debugImage"] == f"192.168.122.1:5000/proxyv2@{FAKE_IMAGE_DIGEST}"


def test_preview_builds_nothing_and_reads_no_file(dev):
    preview = evaluate("dev", preview=True)
    build = resource(preview, "debug-image-build")["inputs"]
    up = resource(dev, "debug-image-build")["inputs"]
    assert build["stdin"] == up["stdin"] and build["create"] == up["create"]
    assert build["environment"] == up["environment"], "known without the ELF, the same on any machine"
    assert "debugImage" not in preview["outputs"]


def test_debugger_container_as_the_walkthrough_runs_it(dev):
    container = resource(dev, "debugger-container")
    inputs = container["inputs"]
    assert inputs["name"] == "lldb-vscode-server" and inputs["hostname"] == "lldb-vscode-server"
    assert inputs["privileged"] is True and inputs["init"] is True
    assert inputs["networksAdvanced"] == [{"name": "router"}]
    assert {(m["source"], m["target"]) for m in inputs["mounts"]} == {
        ("/var/run/docker.sock", "/var/run/docker.sock"),
        (f"{LAB_HOME}/work", "/work"),
        (f"{LAB_HOME}/home/.cache", "/home/.cache"),
    }
    assert inputs["workingDir"] == "/work"
    assert inputs["entrypoints"] == ["/bin/bash"] and inputs["command"] == ["-c", "/bin/sleep 300d"]
    image = resource(dev, "debugger-image")["inputs"]
    assert inputs["image"].startswith("sha256:"), "runs the built image by id, so it rolls with the image"
    assert "lldb" in image["stdin"] and "clangd" in image["stdin"]
    assert container["options"]["deleteBeforeReplace"] is True


def test_vs_code_attach_config_opens_work_with_codelldb_and_clangd(dev):
    config = json.loads(dev["outputs"]["debuggerAttachConfig"])
    assert config["workspaceFolder"] == "/work"
    assert set(config["extensions"]) == {"vadimcn.vscode-lldb", "llvm-vs-code-extensions.vscode-clangd"}
    assert dev["outputs"]["debuggerAttachConfigPath"] == (
        "globalStorage/ms-vscode-remote.remote-containers/nameConfigs/lldb-vscode-server.json"
    )


FAKE_DOCKER = r"""#!/usr/bin/env bash
# Stands in for the docker CLI: records each call (and the Dockerfile it is fed), answers `image inspect`.
printf '%s\n' "$*" >> "$FAKE_DOCKER_LOG"
case "$1" in
  build) cat > "$FAKE_DOCKER_DOCKERFILE"; echo "#1 building" ;;
  push) [ -z "${FAKE_PUSH_FAIL:-}" ] || exit 1; echo "pushed" ;;
  image) printf '%s\n' "elsewhere:5000/proxyv2@sha256:$(printf 'e%.0s' {1..64})" \
           "localhost:5000/proxyv2@sha256:$(printf 'a%.0s' {1..64})" ;;
esac
"""


def run_image_build(dev: dict, tmp_path: Path, **extra: str) -> subprocess.CompletedProcess:
    """build-debug-image.sh as rendered, against a fake docker, with a context holding an envoy."""
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "docker").write_text(FAKE_DOCKER)
    (tmp_path / "bin" / "docker").chmod(0o755)
    (tmp_path / "context").mkdir()
    (tmp_path / "context" / "envoy").write_bytes(b"\x7fELF")
    build = resource(dev, "debug-image-build")["inputs"]
    env = {**os.environ, **build["environment"], "CONTEXT_DIR": str(tmp_path / "context"),
           "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}", "FAKE_DOCKER_LOG": str(tmp_path / "calls"),
           "FAKE_DOCKER_DOCKERFILE": str(tmp_path / "Dockerfile"), **extra}
    return subprocess.run([*build["interpreter"], build["create"]], input=build["stdin"], env=env,
                          capture_output=True, text=True, timeout=60)


def test_build_script_builds_for_the_platform_pushes_and_prints_this_repositorys_digest(dev, tmp_path):
    done = run_image_build(dev, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "localhost:5000/proxyv2@sha256:" + "a" * 64 + "\n", "only the digest on stdout"
    calls = (tmp_path / "calls").read_text().splitlines()
    assert calls[0] == (
        "build --platform linux/amd64 --build-arg BASE_IMAGE=docker.io/istio/proxyv2:1.17.2 "
        f"--tag localhost:5000/proxyv2:1.17.2-debug --file - {tmp_path / 'context'}"
    )
    assert calls[1] == "push localhost:5000/proxyv2:1.17.2-debug"
    assert (tmp_path / "Dockerfile").read_text() == DOCKERFILE.read_text()


def test_build_script_fails_clearly_when_the_push_fails(dev, tmp_path):
    done = run_image_build(dev, tmp_path, FAKE_PUSH_FAIL="1")
    assert done.returncode == 1
    assert "docker push of localhost:5000/proxyv2:1.17.2-debug failed" in done.stderr
    assert done.stdout == ""


# --- the collector of lldb-server, run for real --------------------------------------------------------------


def test_collector_passes_shellcheck_and_is_staged_beside_envoy(dev, tmp_path):
    shellcheck = require_tool("shellcheck")
    done = subprocess.run([shellcheck, "--severity=style", str(COLLECTOR)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout
    assert resource(dev, "debug-image-context")["inputs"]["environment"]["COLLECTOR"] == COLLECTOR.read_text()


def ldd(path: Path) -> dict[str, str]:
    out = subprocess.run(["ldd", str(path)], check=True, capture_output=True, text=True).stdout
    return {m.group(1): m.group(2) for m in re.finditer(r"^\s*(\S+) => (\S+)", out, flags=re.MULTILINE)}


def test_collected_lldb_server_carries_exactly_the_libraries_the_base_lacks(tmp_path):
    require_tool("patchelf")
    server = require_tool("lldb-server")
    base = {"libc.so.6", "libm.so.6", "libgcc_s.so.1", "libstdc++.so.6", "libz.so.1"}
    (tmp_path / "base-libs").write_text("".join(f"{name}\n" for name in sorted(base)))
    out = tmp_path / "out"
    done = subprocess.run(
        ["bash", "-euo", "pipefail"], input=COLLECTOR.read_text(),
        env={**os.environ, "OUT": str(out), "BASE_LIBS": str(tmp_path / "base-libs"), "LLDB_SERVER": server},
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "lldb version" in done.stdout + done.stderr, "the copy runs from its own folder"
    copy = out / "opt" / "lldb-server" / "bin" / "lldb-server"
    wrapper = (out / "usr" / "local" / "bin" / "lldb-server").read_text()
    assert wrapper.startswith("#!/bin/sh\n") and 'exec /opt/lldb-server/bin/lldb-server "$@"' in wrapper
    resolved = ldd(copy)
    own = out / "opt" / "lldb-server" / "lib"
    shipped = {p.name for p in own.iterdir()}
    assert shipped == set(resolved) - base, "every library the base lacks, and nothing else"
    for name, path in resolved.items():
        if name not in base:
            assert os.path.realpath(path).startswith(str(own)), f"{name} resolves to {path}, not to the shipped copy"


def test_collected_lldb_server_serves_a_whole_attach_from_its_own_folder(tmp_path):
    """The copy, not Debian's, is the platform: it must find the gdbserver it spawns beside itself."""
    require_tool("patchelf")
    out = tmp_path / "out"
    (tmp_path / "base-libs").write_text("libc.so.6\n")
    subprocess.run(["bash", "-euo", "pipefail"], input=COLLECTOR.read_text(),
                   env={**os.environ, "OUT": str(out), "BASE_LIBS": str(tmp_path / "base-libs"),
                        "LLDB_SERVER": require_tool("lldb-server")}, check=True, capture_output=True, text=True)
    elf = compile_debuggee(tmp_path)
    with running([str(elf)]) as debuggee, platform_server(str(out / "opt/lldb-server/bin/lldb-server")) as ports:
        transcript = run_lldb([
            "platform select remote-linux", f"platform connect connect://127.0.0.1:{ports.platform}",
            f"target create {elf}", f"process attach --pid {debuggee.pid}", "bt", "detach",
        ])
    assert f"demo::wait_for_debugger() at prog.cc:{source_line('parked here')}" in transcript, transcript


# --- strip, then symbolicate through lldb-server with the unstripped ELF --------------------------------------


def stage_envoy(dev: dict, elf: Path, context: Path, expected_build_id: str, strip: str = "true"):
    """prepare-image-context.sh exactly as rendered, with the files of this test instead of the lab's."""
    return run_rendered(resource(dev, "debug-image-context")["inputs"], ELF=str(elf), CONTEXT_DIR=str(context),
                        BUILD_ID=expected_build_id, STRIP=strip)


def sections(path: Path) -> set[str]:
    out = subprocess.run(["readelf", "-S", "-W", str(path)], check=True, capture_output=True, text=True).stdout
    return set(re.findall(r"\]\s+(\.\S+)", out))


def test_strip_keeps_the_build_id_and_drops_the_debug_info(dev, tmp_path):
    require_tool("objcopy")
    elf = compile_debuggee(tmp_path)
    done = stage_envoy(dev, elf, tmp_path / "context", build_id(elf))
    assert done.returncode == 0, done.stderr
    stripped = tmp_path / "context" / "envoy"
    assert build_id(stripped) == build_id(elf)
    assert ".debug_info" in sections(elf) and ".debug_info" not in sections(stripped)
    assert ".note.gnu.build-id" in sections(stripped)
    assert f"bytes={stripped.stat().st_size}\n" in done.stdout and stripped.stat().st_size < elf.stat().st_size


def test_unstripped_staging_hard_links_the_elf(dev, tmp_path):
    elf = compile_debuggee(tmp_path)
    done = stage_envoy(dev, elf, tmp_path / "context", build_id(elf), strip="false")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "context" / "envoy").stat().st_ino == elf.stat().st_ino


def test_staging_refuses_an_elf_whose_build_id_is_not_the_builds(dev, tmp_path):
    elf = compile_debuggee(tmp_path)
    done = stage_envoy(dev, elf, tmp_path / "context", "0" * 40)
    assert done.returncode == 1
    assert f"has build-id '{build_id(elf)}', not {'0' * 40}" in done.stderr
    assert not (tmp_path / "context" / "envoy").exists()


def backtrace_through_platform(target: Path, running_binary: Path) -> str:
    with running([str(running_binary)]) as debuggee, platform_server() as ports:
        return run_lldb([
            "platform select remote-linux",
            f"platform connect connect://127.0.0.1:{ports.platform}",
            f"target create {target}",
            f"process attach --pid {debuggee.pid}",
            "bt",
            "detach",
        ])


@pytest.mark.parametrize("matching", [True, False], ids=["same-build-id", "other-build-id"])
def test_stripped_process_is_symbolicated_from_the_unstripped_elf_only_when_build_ids_match(dev, tmp_path, matching):
    elf = compile_debuggee(tmp_path)
    assert stage_envoy(dev, elf, tmp_path / "context", build_id(elf)).returncode == 0
    target = elf
    if not matching:  # the same source, linked with another build-id: lldb must not take it for the process
        (tmp_path / "other").mkdir()
        target = compile_debuggee(tmp_path / "other", extra=("-Wl,--build-id=0x" + "ab" * 20,))
    transcript = backtrace_through_platform(target, tmp_path / "context" / "envoy")
    parked = f"demo::wait_for_debugger() at prog.cc:{source_line('parked here')}"
    caller = f"demo::handle_request(n=1) at prog.cc:{source_line('called here')}"
    if matching:
        assert parked in transcript, transcript
        assert caller in transcript, transcript
    else:
        assert "Process" in transcript and "stopped" in transcript, transcript
        assert "prog.cc:" not in transcript, "a build-id mismatch must not borrow the other file's lines"
