"""The Docker network the builder and the debugger containers share (host placement), as the walkthrough
makes it: docker network create --subnet=172.18.0.0/16 router."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_docker as docker

from components.options import child_options

# Where the network lived before it was a component of its own: an alias keeps existing stacks' network.
_FORMER_PARENT = ("builder", "istio-proxy-debug:builder:Builder")


@dataclass
class DockerNetworkArgs:
    name: str
    subnet: str


class DockerNetwork(pulumi.ComponentResource):
    name: pulumi.Output[str]

    def __init__(self, name: str, args: DockerNetworkArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("istio-proxy-debug:network:DockerNetwork", name, None, opts)
        network = docker.Network(
            f"{name}-network",
            name=args.name,
            ipam_configs=[docker.NetworkIpamConfigArgs(subnet=args.subnet)],
            opts=child_options(self, opts, aliases=[
                pulumi.Alias(name="builder-network", parent=pulumi.create_urn(*_FORMER_PARENT)),
            ]),
        )
        self.name = network.name
        self.register_outputs({"name": self.name})
