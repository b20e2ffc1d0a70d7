"""S2: the Docker network and the istio-proxy-builder container, as the walkthrough runs them.

docker network create --subnet=172.18.0.0/16 router
docker run --init --privileged --name istio-proxy-builder --hostname istio-proxy-builder --network router \
    -v /var/run/docker.sock:/var/run/docker.sock:rw -v $WORK/work:/work -v $WORK/home/.cache:/home/.cache \
    -w /work -d gcr.io/istio-testing/build-tools-proxy:release-1.17-latest-amd64 bash -c '/bin/sleep 300d'
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_docker as docker

from components.options import child_options
from components.workspace import CONTAINER_SOURCE_DIR, WorkspaceLayout

DOCKER_SOCKET = "/var/run/docker.sock"
SLEEP_COMMAND = ["bash", "-c", "/bin/sleep 300d"]


def workspace_volumes(layout: WorkspaceLayout) -> list[docker.ContainerVolumeArgs]:
    """docker.sock plus the source and cache folders, at the paths the debug info refers to."""
    pairs = [(DOCKER_SOCKET, DOCKER_SOCKET), *layout.container_mounts()]
    return [docker.ContainerVolumeArgs(host_path=host, container_path=inside) for host, inside in pairs]


@dataclass
class BuilderArgs:
    image: str
    container_name: str
    network_name: str
    network_subnet: str
    layout: WorkspaceLayout


class Builder(pulumi.ComponentResource):
    """The `router` network and the sleeping builder container that `docker exec` builds run in."""

    container_name: pulumi.Output[str]
    network_name: pulumi.Output[str]

    def __init__(self, name: str, args: BuilderArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("istio-proxy-debug:builder:Builder", name, None, opts)
        child = child_options(self, opts)
        network = docker.Network(
            f"{name}-network",
            name=args.network_name,
            ipam_configs=[docker.NetworkIpamConfigArgs(subnet=args.network_subnet)],
            opts=child,
        )
        # The builder image is many GB: keep it on the host when the stack goes away.
        image = docker.RemoteImage(f"{name}-image", name=args.image, keep_locally=True, opts=child)
        container = docker.Container(
            f"{name}-container",
            name=args.container_name,
            hostname=args.container_name,
            image=image.image_id,
            init=True,
            privileged=True,
            networks_advanced=[docker.ContainerNetworksAdvancedArgs(name=network.name)],
            volumes=workspace_volumes(args.layout),
            working_dir=CONTAINER_SOURCE_DIR,
            command=SLEEP_COMMAND,
            # A fixed name: the old container must go before its replacement can take the name.
            opts=child_options(self, opts, delete_before_replace=True),
        )
        self.container_name = container.name
        self.network_name = network.name
        self.register_outputs({"containerName": self.container_name, "networkName": self.network_name})
