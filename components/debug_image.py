"""S5: the debug proxyv2 image — Istio's image with lldb-server and the debug build of Envoy.

Built by commands rather than a docker Image resource: that resource hashes its whole build context on
every preview (here a 1.4 GB ELF) and would show a diff on a machine without the ELF. Here the rebuild is
keyed by what defines the image — the ELF's build-id, the Dockerfile, the base version — all known
without touching a file, so a preview anywhere shows only real changes and never builds.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

import pulumi
from pulumi_command import local

from components.options import child_options
from components.placement import Placement
from components.scripts import dockerfile, key_values, script
from components.workspace import CONTAINER_CACHE_DIR

PLATFORM = "linux/amd64"
DOCKERFILE = "debug-image.Dockerfile"
# The build context lives in the cache folder: the builder (which strips) and the host (which builds) see it.
CONTEXT_SUBDIR = "istio-proxy-debug/proxyv2-debug"


def base_image(istio_version: str) -> str:
    return f"docker.io/istio/proxyv2:{istio_version}"


def image_name(push_address: str, istio_version: str) -> str:
    return f"{push_address}/proxyv2:{istio_version}-debug"


def pull_reference(pushed: str, pull_address: str) -> str:
    """The pushed `localhost:5000/proxyv2@sha256:…` as the nodes name it: `<registryHost>:<port>/…`."""
    _registry, sep, rest = pushed.partition("/")
    if not sep or "@sha256:" not in rest:
        raise ValueError(f"expected a pushed reference by digest, got {pushed!r}")
    return f"{pull_address}/{rest}"


@dataclass
class DebugImageArgs:
    placement: Placement
    # The builder container (host) or pod (cluster), which stages Envoy.
    builder: pulumi.Input[str]
    elf: pulumi.Input[str]
    build_id: pulumi.Input[str]
    istio_version: str
    strip: bool
    push_address: pulumi.Input[str]
    pull_address: pulumi.Input[str]


class DebugImage(pulumi.ComponentResource):
    """Stages Envoy (stripped or not) in the builder, then builds and pushes the image on the host."""

    pushed_reference: pulumi.Output[str]
    pull_reference: pulumi.Output[str]
    shipped_envoy_bytes: pulumi.Output[int]

    def __init__(self, name: str, args: DebugImageArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("istio-proxy-debug:debug_image:DebugImage", name, None, opts)
        context_in_builder = posixpath.join(CONTAINER_CACHE_DIR, CONTEXT_SUBDIR)
        staging_env = {
            "ELF": args.elf,
            "CONTEXT_DIR": context_in_builder,
            "STRIP": "true" if args.strip else "false",
            "BUILD_ID": args.build_id,
        }
        stage = local.Command(
            f"{name}-context",
            create=pulumi.Output.from_input(args.builder).apply(
                lambda builder: args.placement.builder_exec(builder, list(staging_env))
            ),
            stdin=script("prepare-image-context.sh"),
            environment=staging_env,
            opts=child_options(self, opts),
        )
        build = local.Command(
            f"{name}-build",
            create=script("build-debug-image.sh"),
            interpreter=["/bin/bash", "-c"],
            stdin=dockerfile(DOCKERFILE),
            environment={
                "CONTEXT_DIR": args.placement.layout.host_path(context_in_builder),
                "BASE_IMAGE": base_image(args.istio_version),
                "IMAGE": pulumi.Output.from_input(args.push_address).apply(
                    lambda address: image_name(address, args.istio_version)
                ),
                "PLATFORM": PLATFORM,
            },
            # A new Envoy in the context (another build-id, or stripped or not) means a new image.
            triggers=[stage.stdout],
            opts=child_options(self, opts),
        )
        self.shipped_envoy_bytes = stage.stdout.apply(lambda out: int(key_values(out, {"bytes"})["bytes"]))
        self.pushed_reference = build.stdout.apply(lambda out: out.strip().splitlines()[-1])
        self.pull_reference = pulumi.Output.all(self.pushed_reference, args.pull_address).apply(
            lambda pair: pull_reference(*pair)
        )
        self.register_outputs({
            "pushedReference": self.pushed_reference,
            "pullReference": self.pull_reference,
            "shippedEnvoyBytes": self.shipped_envoy_bytes,
        })
