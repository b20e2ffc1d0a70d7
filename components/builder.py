"""S2: the builder — the walkthrough's container on the developer host, or a pod in the cluster.

On the host, the istio-proxy-builder container on the router network (components/network.py), as the
walkthrough runs it:

docker run --init --privileged --name istio-proxy-builder --hostname istio-proxy-builder --network router \
    -v /var/run/docker.sock:/var/run/docker.sock:rw -v $WORK/work:/work -v $WORK/home/.cache:/home/.cache \
    -w /work -d gcr.io/istio-testing/build-tools-proxy:release-1.17-latest-amd64 bash -c '/bin/sleep 300d'

Its image is the one the istio/proxy checkout pins (common/scripts/setup_env.sh), unless builderImage names one.

In the cluster, a one-pod StatefulSet of the same image, privileged like the container (bazel's sandbox),
mounting the workspace volume at /work and /home/.cache. It has no docker.sock: nothing it runs needs one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_docker as docker
import pulumi_kubernetes as k8s

from components.options import child_options
from components.placement import BUILDER_CONTAINER, Placement, bind_mount
from components.workspace import CONTAINER_SOURCE_DIR, WorkspaceLayout

DOCKER_SOCKET = "/var/run/docker.sock"
SLEEP_COMMAND = ["bash", "-c", "/bin/sleep 300d"]
BUILDER_NAME = "istio-proxy-builder"


def workspace_mounts(layout: WorkspaceLayout) -> list[docker.ContainerMountArgs]:
    """docker.sock plus the source and cache folders, at the paths the debug info refers to."""
    return [bind_mount(host, inside) for host, inside in [(DOCKER_SOCKET, DOCKER_SOCKET), *layout.container_mounts()]]


def builder_statefulset(placement: Placement, image: str) -> dict:
    """The builder pod: the builder image sleeping, with the workspace where the host container has it."""
    container = {
        "name": BUILDER_CONTAINER,
        "image": image,
        "command": list(SLEEP_COMMAND),
        "workingDir": CONTAINER_SOURCE_DIR,
        "securityContext": {"privileged": True},
        "volumeMounts": placement.workspace_mounts(),
    }
    return placement.one_pod_workload("StatefulSet", BUILDER_NAME, [container], serviceName=BUILDER_NAME)


def pinned_builder_image(pinned: str | None) -> str:
    """The image the istio/proxy checkout pins: the builder's when builderImage is not set."""
    if not pinned:
        raise pulumi.RunError("builder: the istio/proxy checkout pins no builder image (common/scripts/setup_env.sh "
                              "has no IMAGE_VERSION); set builderImage")
    return pinned


@dataclass
class BuilderArgs:
    placement: Placement
    # The image: builderImage, or the one the checkout pins (Workspace.builder_image).
    image: pulumi.Input[str]
    # host only
    container_name: str
    network_name: pulumi.Input[str] | None


class Builder(pulumi.ComponentResource):
    """Where builds run: the sleeping builder container, or the builder pod.

    `target` is the container, or the pod; `exec_command` the command that runs a script in it.
    """

    target: pulumi.Output[str]

    def __init__(self, name: str, args: BuilderArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("istio-proxy-debug:builder:Builder", name, None, opts)
        self._placement = args.placement
        if args.placement.in_cluster:
            manifest = builder_statefulset(args.placement, args.image)
            statefulset = k8s.apps.v1.StatefulSet(
                f"{name}-statefulset", metadata=manifest["metadata"], spec=manifest["spec"],
                opts=child_options(self, opts),
            )
            # The StatefulSet's only pod; the provider waits for it to be ready before anything execs in it.
            self.target = statefulset.metadata.apply(lambda m: f"{m.name}-0")
            self.register_outputs({"target": self.target})
            return
        child = child_options(self, opts)
        # The builder image is many GB: keep it on the host when the stack goes away.
        image = docker.RemoteImage(f"{name}-image", name=args.image, keep_locally=True, opts=child)
        container = docker.Container(
            f"{name}-container",
            name=args.container_name,
            hostname=args.container_name,
            image=image.image_id,
            init=True,
            privileged=True,
            networks_advanced=[docker.ContainerNetworksAdvancedArgs(name=args.network_name)],
            mounts=workspace_mounts(args.placement.layout),
            working_dir=CONTAINER_SOURCE_DIR,
            command=SLEEP_COMMAND,
            # A fixed name: the old container must go before its replacement can take the name.
            opts=child_options(self, opts, delete_before_replace=True),
        )
        self.target = container.name
        self.register_outputs({"target": self.target})

    def exec_command(self, env_keys: Sequence[str]) -> pulumi.Output[str]:
        """The command that runs a script on stdin in the builder, passing on these variables of its own
        environment (`Placement.script_exec`); it waits for the builder to exist."""
        return self.target.apply(lambda target: self._placement.script_exec(target, list(env_keys)))
