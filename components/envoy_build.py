"""S3: the debug build of Envoy inside the builder, and what it produced.

The build runs only when the tag, the build args or the build script change (bazel's cache under
workDir makes a re-run incremental anyway). Its outputs — the debug ELF, the bazel execution root and
the ELF's build-id — are read from the build itself, not from a hard-coded per-machine hash path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pulumi
from pulumi_command import local

from components.bazel_args import bazel_option_values
from components.launch import SourceMap, built_source_map
from components.placement import Placement
from components.scripts import key_values, script
from components.workspace import CONTAINER_SOURCE_DIR

# Every supported release (1.17 on, settings.OLDEST_ISTIO) builds Envoy as the root //:envoy (istio/proxy#4237).
ENVOY_BAZEL_TARGET = ":envoy"
# A debug build of Envoy takes hours on a small machine.
BUILD_TIMEOUT = "12h"


def envoy_output_path(compilation_mode: str) -> str:
    """The ELF's path below bazel-out, e.g. k8-dbg/bin/envoy."""
    return f"k8-{compilation_mode}/bin/envoy"


@dataclass(frozen=True)
class EnvoyArtifact:
    """What the build produced, as seen inside the builder (and the debugger, which has the same mounts)."""

    elf: str
    execroot: str
    build_id: str
    # Sandboxed execroots recorded in the debug info, which the source map must also cover.
    sandbox_roots: tuple[str, ...]


def parse_build_result(stdout: str) -> EnvoyArtifact:
    """Reads the key=value lines build-envoy.sh prints."""
    values = key_values(stdout, {"elf", "execroot", "buildId", "sandboxRoots"})
    return EnvoyArtifact(elf=values["elf"], execroot=values["execroot"], build_id=values["buildId"],
                         sandbox_roots=tuple(values["sandboxRoots"].split()))


@dataclass
class EnvoyBuildArgs:
    placement: Placement
    # Builder.exec_command: how the build script reaches the builder container (host) or pod (cluster).
    builder_exec: Callable[[list[str]], pulumi.Input[str]]
    bazel_build_args: str
    compilation_mode: str
    build_envoy: bool
    source_commit: pulumi.Input[str]


class EnvoyBuild(pulumi.ComponentResource):
    """`make build` in the builder (or, with buildEnvoy false, only the lookup of an existing ELF)."""

    elf: pulumi.Output[str]
    elf_host_path: pulumi.Output[str]
    execroot: pulumi.Output[str]
    execroot_host_path: pulumi.Output[str]
    build_id: pulumi.Output[str]
    source_map: pulumi.Output[SourceMap]

    def __init__(self, name: str, args: EnvoyBuildArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("istio-proxy-debug:envoy_build:EnvoyBuild", name, None, opts)
        environment = {
            "BUILD_ENVOY": "true" if args.build_envoy else "false",
            "BAZEL_BUILD_ARGS": args.bazel_build_args,
            # What the final link will get (one per line): the script tries them before hours of compiling.
            "LINK_CHECK_OPTIONS": "\n".join(bazel_option_values(args.bazel_build_args, "linkopt")),
            "BAZEL_TARGET": ENVOY_BAZEL_TARGET,
            "ENVOY_OUTPUT": envoy_output_path(args.compilation_mode),
            "WORKSPACE_DIR": CONTAINER_SOURCE_DIR,
        }
        build = local.Command(
            f"{name}-make",
            create=args.builder_exec(list(environment)),
            stdin=script("build-envoy.sh"),
            environment=environment,
            # A new checkout (another tag) means a new build; so do other build args (they are in `environment`).
            triggers=[args.source_commit],
            opts=pulumi.ResourceOptions(
                parent=self, custom_timeouts=pulumi.CustomTimeouts(create=BUILD_TIMEOUT, update=BUILD_TIMEOUT)
            ),
        )
        artifact = build.stdout.apply(parse_build_result)
        self.elf = artifact.apply(lambda a: a.elf)
        self.execroot = artifact.apply(lambda a: a.execroot)
        self.build_id = artifact.apply(lambda a: a.build_id)
        self.source_map = artifact.apply(lambda a: built_source_map(a.execroot, list(a.sandbox_roots)))
        self.elf_host_path = self.elf.apply(args.placement.layout.host_path)
        self.execroot_host_path = self.execroot.apply(args.placement.layout.host_path)
        self.register_outputs({
            "elf": self.elf, "elfHostPath": self.elf_host_path, "execroot": self.execroot,
            "execrootHostPath": self.execroot_host_path, "buildId": self.build_id,
            "sourceMap": self.source_map,
        })
