"""S5: the debug proxyv2 image — Istio's image with lldb-server and the debug build of Envoy.

Built by commands rather than a docker Image resource: that resource hashes its whole build context on
every preview (here a 1.4 GB ELF) and would show a diff on a machine without the ELF. Here the rebuild is
keyed by what defines the image — the ELF's build-id, the Dockerfile, the base version — all known
without touching a file, so a preview anywhere shows only real changes and never builds.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Callable
from dataclasses import dataclass

import pulumi
from pulumi_command import local

from components.options import child_options
from components.placement import WORKSPACE_VOLUME, Placement
from components.scripts import dockerfile, key_values, script
from components.workspace import CONTAINER_CACHE_DIR

PLATFORM = "linux/amd64"
DOCKERFILE = "debug-image.Dockerfile"
# The script the Dockerfile runs to collect lldb-server; staged into the build context with Envoy.
COLLECTOR = "collect-lldb-server.sh"
# The build context lives in the cache folder: the builder (which strips) and the host or the BuildKit pod
# (which builds) see it.
CONTEXT_SUBDIR = "istio-proxy-debug/proxyv2-debug"
CONTEXT_IN_BUILDER = posixpath.join(CONTAINER_CACHE_DIR, CONTEXT_SUBDIR)

# cluster only: the one-off pod that builds and pushes with rootless BuildKit (build-debug-image-in-cluster.sh),
# its image pinned by release tag and digest, since a tag can move.
BUILDKIT_IMAGE = ("docker.io/moby/buildkit:v0.20.2-rootless"
                  "@sha256:cb5bb371545222c430528556acfdf424144b69897f5deaad391bd227187e90df")
# The rootless image's own user: "to change UID/GID, you need to rebuild the image" (examples/kubernetes).
BUILDKIT_UID = 1000
BUILD_POD = "proxyv2-debug-build"
# Where the pod sees the context: the staged folder alone, read-only.
POD_CONTEXT_DIR = "/context"
BUILDKIT_STATE_VOLUME = "buildkit-state"
BUILDKIT_STATE_DIR = "/home/user/.local/share/buildkit"


def base_image(istio_version: str) -> str:
    return f"docker.io/istio/proxyv2:{istio_version}"


def image_name(push_address: str, istio_version: str) -> str:
    return f"{push_address}/proxyv2:{istio_version}-debug"


def buildkit_pod(placement: Placement) -> dict:
    """The BuildKit pod, as `kubectl run --overrides` merges it over the pod kubectl generates (strategic
    merge: containers by name, so its one container is named as the pod, and the command stays kubectl's).

    Not privileged: rootless BuildKit as upstream's examples/kubernetes/*.rootless.yaml run it.
    """
    container = {
        "name": BUILD_POD,
        "image": BUILDKIT_IMAGE,
        # The Dockerfile arrives on stdin (kubectl run -i).
        "stdin": True,
        "stdinOnce": True,
        # Without privileges buildkitd cannot set up the process sandbox of RUN steps (docs/rootless.md).
        "env": [{"name": "BUILDKITD_FLAGS", "value": "--oci-worker-no-process-sandbox"}],
        "securityContext": {
            "runAsUser": BUILDKIT_UID,
            "runAsGroup": BUILDKIT_UID,
            # rootlesskit makes user and mount namespaces, which the default profiles forbid. The fields, not
            # the deprecated AppArmor annotation: Kubernetes >= 1.30 (as buildx does, docker/buildx#4083).
            "seccompProfile": {"type": "Unconfined"},
            "appArmorProfile": {"type": "Unconfined"},
        },
        "volumeMounts": [
            # The builder writes the context as root with world-readable modes: uid 1000 reads it, and no
            # fsGroup (which would chown the whole volume, bazel cache and all).
            {"name": WORKSPACE_VOLUME, "mountPath": POD_CONTEXT_DIR, "readOnly": True,
             "subPath": placement.layout.host_path(CONTEXT_IN_BUILDER)},
            # BuildKit's state in an emptyDir, as upstream's rootless examples have it: the image's VOLUME
            # there does not work everywhere (docs/rootless.md, Container-Optimized OS).
            {"name": BUILDKIT_STATE_VOLUME, "mountPath": BUILDKIT_STATE_DIR},
        ],
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {**placement.metadata(BUILD_POD), "annotations": {"sidecar.istio.io/inject": "false"}},
        "spec": {
            "restartPolicy": "Never",
            "containers": [container],
            "volumes": [placement.workspace_volume(), {"name": BUILDKIT_STATE_VOLUME, "emptyDir": {}}],
        },
    }


def build_step(placement: Placement) -> tuple[str, dict[str, str]]:
    """The script that builds and pushes the image, and its placement's variables: Docker on the host, a
    BuildKit pod in the cluster."""
    if not placement.in_cluster:
        return "build-debug-image.sh", {"CONTEXT_DIR": placement.layout.host_path(CONTEXT_IN_BUILDER)}
    return "build-debug-image-in-cluster.sh", {
        "NAMESPACE": placement.namespace,
        "POD": BUILD_POD,
        "POD_OVERRIDES": json.dumps(buildkit_pod(placement)),
        "BUILDKIT_IMAGE": BUILDKIT_IMAGE,
        "CONTEXT_DIR": POD_CONTEXT_DIR,
    }


def pull_reference(pushed: str, pull_address: str) -> str:
    """The pushed `localhost:5000/proxyv2@sha256:…` as the nodes name it: `<registryHost>:<port>/…`."""
    _registry, sep, rest = pushed.partition("/")
    if not sep or "@sha256:" not in rest:
        raise ValueError(f"expected a pushed reference by digest, got {pushed!r}")
    return f"{pull_address}/{rest}"


@dataclass
class DebugImageArgs:
    placement: Placement
    # How the staging script reaches the workbench, where the ELF is: the builder (Builder.exec_command), or
    # the debugger when Envoy was downloaded (Debugger.exec_command); a container (host) or a pod (cluster).
    workbench_exec: Callable[[list[str]], pulumi.Input[str]]
    elf: pulumi.Input[str]
    build_id: pulumi.Input[str]
    istio_version: str
    strip: bool
    push_address: pulumi.Input[str]
    pull_address: pulumi.Input[str]


class DebugImage(pulumi.ComponentResource):
    """Stages Envoy (stripped or not) in the builder, then builds and pushes the image: on the host with
    Docker, or in the cluster with a BuildKit pod."""

    pushed_reference: pulumi.Output[str]
    pull_reference: pulumi.Output[str]
    shipped_envoy_bytes: pulumi.Output[int]

    def __init__(self, name: str, args: DebugImageArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("istio-proxy-debug:debug_image:DebugImage", name, None, opts)
        staging_env = {
            "ELF": args.elf,
            "CONTEXT_DIR": CONTEXT_IN_BUILDER,
            "STRIP": "true" if args.strip else "false",
            "BUILD_ID": args.build_id,
            "COLLECTOR": dockerfile(COLLECTOR),
        }
        stage = local.Command(
            f"{name}-context",
            create=args.workbench_exec(list(staging_env)),
            stdin=script("prepare-image-context.sh"),
            environment=staging_env,
            opts=child_options(self, opts),
        )
        build_script, where = build_step(args.placement)
        build = local.Command(
            f"{name}-build",
            create=script(build_script),
            interpreter=["/bin/bash", "-c"],
            stdin=dockerfile(DOCKERFILE),
            environment={
                **where,
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
