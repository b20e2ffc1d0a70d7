"""envoySource prebuilt: the debug Envoy Istio publishes, in place of S2-S3's hours of building.

For every istio/proxy commit a release pins, istio/proxy's CI (scripts/release-binary.sh) publishes a `-c dbg`
build of Envoy: envoy-debug-<SHA>.tar.gz (usr/local/bin/envoy), its .sha256, and envoy-debug-<SHA>.dwp, the
DWARF package of its split debug info (envoy.bazelrc builds with --fission=dbg,opt: the ELF holds skeleton
units, line tables and symbols; variables, types and functions are in the .dwp). <SHA> is the commit the
istio/proxy checkout is at, so the source lldb shows is S1's checkout. Here:

- the Envoy source the build compiled is checked out too (prepare-envoy-source.sh), at the commit the
  checkout's WORKSPACE pins, so stepping into Envoy's own files works;
- the ELF and the .dwp are downloaded side by side into the cache folder (fetch-prebuilt-envoy.sh: streamed,
  verified, cached by <SHA>, never deleted), and what the debugger needs — the build-id and the source
  prefixes the debug info records — is read from them.

Both scripts run where the workspace is mounted and no builder exists: in the debugger container (host) or
the code-server pod (cluster). Its outputs are EnvoyBuild's: the ELF, its build-id and the source map.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from dataclasses import dataclass

import pulumi
from pulumi_command import local

from components.launch import SourceMap, prebuilt_source_map
from components.options import child_options
from components.placement import Placement
from components.scripts import key_values, script
from components.workspace import CONTAINER_CACHE_DIR, CONTAINER_SOURCE_DIR

# Under the cache folder, which every workload mounts and destroy never touches.
PREBUILT_DIR = posixpath.join(CONTAINER_CACHE_DIR, "istio-proxy-debug", "prebuilt")
SYMBOLS_DIR = posixpath.join(CONTAINER_CACHE_DIR, "istio-proxy-debug", "symbols")
# What release-binary.sh publishes for a commit: the `-c dbg` build, and the unstripped twin of the release build
# (`--config=release-symbol`, the same code as the `envoy-alpha-<SHA>` in Istio's proxyv2 images).
DEBUG_ARTIFACT = "envoy-debug"
SYMBOL_ARTIFACT = "envoy-symbol"
ENVOY_CHECKOUT = posixpath.join(CONTAINER_CACHE_DIR, "istio-proxy-debug", "envoy")
# Downloads of a GB or more on a slow link.
FETCH_TIMEOUT = "3h"


@dataclass(frozen=True)
class PrebuiltArtifact:
    """What fetch-prebuilt-envoy.sh found, as the workbench (and the debugger) sees it."""

    elf: str
    dwp: str
    build_id: str
    # Every source prefix the debug info records, each once: the compilation directories, the one most units
    # record first, then bazel sandbox roots.
    prefixes: tuple[str, ...]
    # The SHA-256 of the ELF's .text: its code, whatever its symbols, debug info or build-id.
    text_digest: str = ""
    # Where the bucket has none (with missing_ok): what was asked for and the answer; the rest is empty.
    missing: str | None = None


def parse_fetch_result(stdout: str) -> PrebuiltArtifact:
    if (missing := key_values(stdout, set()).get("missing")) is not None:
        return PrebuiltArtifact(elf="", dwp="", build_id="", prefixes=(), missing=missing)
    values = key_values(stdout, {"elf", "dwp", "buildId", "compDirs", "sandboxRoots", "textDigest"})
    prefixes = dict.fromkeys([*values["compDirs"].split(), *sorted(values["sandboxRoots"].split())])
    return PrebuiltArtifact(elf=values["elf"], dwp=values["dwp"], build_id=values["buildId"], prefixes=tuple(prefixes),
                            text_digest=values["textDigest"])


@dataclass(frozen=True)
class EnvoyCheckout:
    """What prepare-envoy-source.sh checked out: the pinned commit, where from, and the path prefix bazel
    gave Envoy's files (external/<name of its http_archive>)."""

    commit: str
    repository: str
    external: str


def parse_checkout_result(stdout: str) -> EnvoyCheckout:
    values = key_values(stdout, {"commit", "repository", "external"})
    return EnvoyCheckout(commit=values["commit"], repository=values["repository"], external=values["external"])


@dataclass
class PrebuiltEnvoyArgs:
    placement: Placement
    # How a script reaches the workbench: the debugger container (host) or the code-server pod (cluster).
    workbench_exec: Callable[[list[str]], pulumi.Input[str]]
    istio_version: str
    # The istio/proxy commit the checkout is at: the <SHA> of the published files.
    source_commit: pulumi.Input[str]
    base_url: str
    envoy_repository: str | None
    # Which build: the debug one, or (attachTo) the release's symbols, which a bucket may not have.
    artifact: str = DEBUG_ARTIFACT
    dest_dir: str = PREBUILT_DIR
    missing_ok: bool = False


class PrebuiltEnvoy(pulumi.ComponentResource):
    """The Envoy checkout and the downloaded ELF with its .dwp: the debug build, or a release's symbols."""

    elf: pulumi.Output[str]
    elf_host_path: pulumi.Output[str]
    dwp: pulumi.Output[str]
    build_id: pulumi.Output[str]
    source_map: pulumi.Output[SourceMap]
    envoy_checkout: pulumi.Output[str]
    envoy_commit: pulumi.Output[str]
    text_digest: pulumi.Output[str]
    # With missing_ok: why there is no ELF (None when there is one).
    missing: pulumi.Output[str | None]

    def __init__(self, name: str, args: PrebuiltEnvoyArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("istio-proxy-debug:prebuilt_envoy:PrebuiltEnvoy", name, None, opts)
        source_env = {"SOURCE_DIR": CONTAINER_SOURCE_DIR, "ENVOY_DIR": ENVOY_CHECKOUT, "SOURCE_TAG": args.istio_version}
        if args.envoy_repository is not None:
            source_env["ENVOY_REPOSITORY"] = args.envoy_repository
        source = local.Command(
            f"{name}-source",
            create=args.workbench_exec(list(source_env)),
            stdin=script("prepare-envoy-source.sh"),
            environment=source_env,
            # Another istio/proxy commit may pin another Envoy.
            triggers=[args.source_commit],
            opts=child_options(self, opts),
        )
        fetch_env = {"BASE_URL": args.base_url, "SHA": args.source_commit, "DEST_DIR": args.dest_dir}
        if args.artifact != DEBUG_ARTIFACT or args.missing_ok:
            fetch_env.update(ARTIFACT=args.artifact, MISSING_OK="true" if args.missing_ok else "false")
        fetch = local.Command(
            f"{name}-fetch",
            create=args.workbench_exec(list(fetch_env)),
            stdin=script("elf-facts.sh") + script("fetch-prebuilt-envoy.sh"),
            environment=fetch_env,
            opts=child_options(self, opts, custom_timeouts=pulumi.CustomTimeouts(create=FETCH_TIMEOUT,
                                                                                update=FETCH_TIMEOUT)),
        )
        checkout = source.stdout.apply(parse_checkout_result)
        artifact = fetch.stdout.apply(parse_fetch_result)
        self.elf = artifact.apply(lambda a: a.elf)
        self.dwp = artifact.apply(lambda a: a.dwp)
        self.build_id = artifact.apply(lambda a: a.build_id)
        self.text_digest = artifact.apply(lambda a: a.text_digest)
        self.missing = artifact.apply(lambda a: a.missing)
        self.elf_host_path = self.elf.apply(lambda elf: args.placement.layout.host_path(elf) if elf else "")
        self.envoy_checkout = checkout.apply(lambda _: ENVOY_CHECKOUT)
        self.envoy_commit = checkout.apply(lambda c: c.commit)
        self.source_map = pulumi.Output.all(artifact, checkout).apply(
            lambda pair: prebuilt_source_map(list(pair[0].prefixes), CONTAINER_SOURCE_DIR, pair[1].external,
                                             ENVOY_CHECKOUT)
        )
        self.register_outputs({
            "elf": self.elf, "elfHostPath": self.elf_host_path, "dwp": self.dwp, "buildId": self.build_id,
            "sourceMap": self.source_map, "envoyCheckout": self.envoy_checkout, "envoyCommit": self.envoy_commit,
        })
