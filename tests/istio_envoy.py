"""A synthetic Envoy made the way Istio's CI makes envoy-debug-<SHA> (istio/proxy scripts/release-binary.sh,
`bazel build -c dbg //:envoy_tar //:envoy.dwp` with envoy.bazelrc's --fission=dbg,opt and -fdebug-types-section),
and the two checkouts the stack makes for it.

Real clang compiles each unit with split DWARF as bazel does (cwd = the execution root, recorded as
/proc/self/cwd; one unit in a bazel sandbox, recorded as that sandbox's absolute execution root), Envoy's files
under external/envoy/ (the http_archive named "envoy" in istio/proxy's WORKSPACE), istio/proxy's under source/.
lld links them; llvm-dwp packs the .dwo files into envoy.dwp. Then the execution root is deleted: what is left is
what the bucket holds (the ELF, with skeleton units and line tables, and the .dwp) and, as git repositories, the
istio/proxy checkout (a WORKSPACE pinning Envoy's commit) and Envoy's.

The running program calls Envoy::handle(request) forever, a few times a second, so a breakpoint set after an
attach is hit.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import git, require_tool

REQUEST_H = """\
#pragma once
namespace Envoy {
struct Request {
  int id;
  const char* path;
};
int handle(const Request& request);
}  // namespace Envoy
"""
# Envoy's unit: the breakpoint goes on the marked line; `request` and `doubled` live only in the .dwp.
WORKER_CC = """\
#include "source/common/request.h"
namespace Envoy {
int handle(const Request& request) {
  int doubled = request.id * 2;  // envoy: stop here
  return doubled;
}
}  // namespace Envoy
"""
# Two files called config.cc, one in each tree, as Envoy and istio/proxy have hundreds: a breakpoint by path
# must land in the one named.
ENVOY_CONFIG_CC = """\
namespace Envoy {
int envoyConfig(int value) {
  return value + 1;  // envoy config
}
}  // namespace Envoy
"""
PROXY_CONFIG_CC = """\
namespace Istio {
int istioConfig(int value) {
  return value + 2;  // istio config
}
}  // namespace Istio
"""
# istio/proxy's unit, compiled in a bazel sandbox: its compilation directory is the sandbox's execution root.
MAIN_CC = """\
#include <unistd.h>
#include "external/envoy/source/common/request.h"
namespace Envoy { int envoyConfig(int); }
namespace Istio { int istioConfig(int); }
int main() {
  Envoy::Request request{21, "/healthz"};
  for (;;) {
    Envoy::handle(request);  // istio: calls envoy
    Istio::istioConfig(Envoy::envoyConfig(request.id));
    usleep(50000);
  }
}
"""
ENVOY_FILES = {"source/common/request.h": REQUEST_H, "source/common/worker.cc": WORKER_CC,
               "source/common/config.cc": ENVOY_CONFIG_CC}
PROXY_FILES = {"source/istio/main.cc": MAIN_CC, "source/istio/config.cc": PROXY_CONFIG_CC}
# The repository name istio/proxy's WORKSPACE gives Envoy: bazel puts its files under external/<name>.
ENVOY_REPOSITORY_NAME = "envoy"
SANDBOX_ROOT = "sandbox/linux-sandbox/7/execroot/io_istio_proxy"
# What istio/proxy's WORKSPACE says about Envoy, in its own words (the pins filled in by `workspace`).
WORKSPACE = """\
workspace(name = "io_istio_proxy")

load("@bazel_tools//tools/build_defs/repo:http.bzl", "http_archive")

# Commit date: 2026-06-30
ENVOY_SHA = "{sha}"

ENVOY_SHA256 = "0c261fd289aa7ff8b3b0691163e83f5ae56010f8827320b3a388b654d8c708ce"

ENVOY_ORG = "envoyproxy"

ENVOY_REPO = "envoy"

http_archive(
    name = "{name}",
    sha256 = ENVOY_SHA256,
    strip_prefix = ENVOY_REPO + "-" + ENVOY_SHA,
    url = "https://github.com/" + ENVOY_ORG + "/" + ENVOY_REPO + "/archive/" + ENVOY_SHA + ".tar.gz",
)

load("@envoy//bazel:api_binding.bzl", "envoy_api_binding")
"""
def line_of(text: str, marker: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if marker in line)


@dataclass(frozen=True)
class PublishedEnvoy:
    elf: Path
    dwp: Path
    # The absolute execution root of the bazel sandbox the istio/proxy unit was compiled in.
    sandbox_root: str
    # release: the same objects linked again, stripped: `envoy-alpha-<SHA>`, which Istio's proxyv2 images run.
    stripped: Path | None = None


def build(work: Path, clang: str = "clang++", dwp_tool: str = "llvm-dwp", release: bool = False,
          optimize: str = "-O0") -> PublishedEnvoy:
    """Compiles, links and packs the synthetic Envoy with these tools; returns the ELF and its .dwp, the build
    tree gone. `release`: linked as istio/proxy's release-binary.sh links a release and its symbols, twice from the
    same objects with lld's --build-id=md5 (a hash of the output, so the two build-ids differ), the second with
    -s (envoy-alpha); the first and its .dwp are envoy-symbol. `optimize`: another one makes another build of the
    same source (other code)."""
    clang = require_tool(clang)
    dwp_tool = require_tool(dwp_tool)
    execroot = work / "execroot"
    sandbox = work / SANDBOX_ROOT
    for root in (execroot, sandbox):
        for relative, text in ENVOY_FILES.items():
            (root / "external" / ENVOY_REPOSITORY_NAME / relative).parent.mkdir(parents=True, exist_ok=True)
            (root / "external" / ENVOY_REPOSITORY_NAME / relative).write_text(text)
        for relative, text in PROXY_FILES.items():
            (root / relative).parent.mkdir(parents=True, exist_ok=True)
            (root / relative).write_text(text)
    flags = ["-g", optimize, "-gdwarf-5", "-gsplit-dwarf", "-fdebug-types-section", "-I.",
             f"-Iexternal/{ENVOY_REPOSITORY_NAME}"]
    at_cwd = ["-fdebug-compilation-dir=/proc/self/cwd"]
    objects = []
    for root, source, recorded in (
        (execroot, f"external/{ENVOY_REPOSITORY_NAME}/source/common/worker.cc", at_cwd),
        (execroot, f"external/{ENVOY_REPOSITORY_NAME}/source/common/config.cc", at_cwd),
        (execroot, "source/istio/config.cc", at_cwd),
        # No -fdebug-compilation-dir: clang records the cwd, the sandbox's own execution root.
        (sandbox, "source/istio/main.cc", []),
    ):
        # Relative to the execution root, as bazel names outputs: the skeleton names its .dwo the same way.
        out = f"bazel-out/k8-dbg/bin/{source.removesuffix('.cc')}.o"
        (root / out).parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([clang, *flags, *recorded, "-c", source, "-o", out], cwd=root, check=True)
        objects.append(root / out)
    published = work / "published"
    published.mkdir()
    elf = published / "envoy"
    build_id = ["-Wl,--build-id=md5"] if release else []
    subprocess.run([clang, "-fuse-ld=lld", *build_id, "-o", str(elf), *map(str, objects)], check=True)
    stripped = published / "envoy-alpha" if release else None
    if stripped is not None:
        subprocess.run([clang, "-fuse-ld=lld", *build_id, "-s", "-o", str(stripped), *map(str, objects)], check=True)
    # The .dwo files are named relative to each unit's compilation directory: llvm-dwp reads them from there.
    dwos = [o.with_suffix(".dwo") for o in objects]
    subprocess.run([dwp_tool, "-o", str(published / "envoy.dwp"), *map(str, dwos)], check=True)
    shutil.rmtree(execroot)
    shutil.rmtree(work / "sandbox")
    return PublishedEnvoy(elf=elf, dwp=published / "envoy.dwp", sandbox_root=str(sandbox), stripped=stripped)


def envoy_origin(root: Path) -> tuple[Path, str]:
    """Envoy's repository with the sources, and the commit istio/proxy pins."""
    root.mkdir(parents=True)
    git(root, "init", "-q", "-b", "main")
    for relative, text in ENVOY_FILES.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(text)
    git(root, "add", ".")
    git(root, "commit", "-qm", "envoy")
    pinned = git(root, "rev-parse", "HEAD")
    # Later history the fetch must not need.
    (root / "NEWER").write_text("later\n")
    git(root, "add", ".")
    git(root, "commit", "-qm", "later")
    return root, pinned


def proxy_checkout(root: Path, envoy_commit: str, tag: str = "1.30.3") -> Path:
    """The istio/proxy checkout at the tag: its sources and a WORKSPACE pinning Envoy's commit."""
    root.mkdir(parents=True)
    git(root, "init", "-q", "-b", "master")
    (root / "WORKSPACE").write_text(WORKSPACE.format(sha=envoy_commit, name=ENVOY_REPOSITORY_NAME))
    for relative, text in PROXY_FILES.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(text)
    git(root, "add", ".")
    git(root, "commit", "-qm", "proxy")
    git(root, "tag", tag)
    return root
