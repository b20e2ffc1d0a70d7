"""S4: the plain-HTTP image registry on the developer host.

docker run -d -p 5000:5000 --restart=always --name image-registry --hostname image-registry registry:2

Deletes are enabled (registry:2 disables them), and the storage is a folder under workDir, so
`pulumi destroy` removes the container and keeps every pushed image.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_docker as docker

from components.options import child_options

REGISTRY_IMAGE = "registry:2"
REGISTRY_CONTAINER_PORT = 5000
REGISTRY_STORAGE = "/var/lib/registry"
REGISTRY_ENV = ["REGISTRY_STORAGE_DELETE_ENABLED=true"]


@dataclass
class RegistryArgs:
    container_name: str
    port: int
    data_dir: str
    # The address the nodes pull from (the developer host pushes through localhost, which Docker
    # treats as insecure-allowed; any other address would need daemon.json's insecure-registries).
    pull_host: str


class Registry(pulumi.ComponentResource):
    push_address: pulumi.Output[str]
    pull_address: pulumi.Output[str]

    def __init__(self, name: str, args: RegistryArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("istio-proxy-debug:registry:Registry", name, None, opts)
        image = docker.RemoteImage(
            f"{name}-image", name=REGISTRY_IMAGE, keep_locally=True, opts=child_options(self, opts)
        )
        docker.Container(
            f"{name}-container",
            name=args.container_name,
            hostname=args.container_name,
            image=image.image_id,
            restart="always",
            envs=REGISTRY_ENV,
            ports=[docker.ContainerPortArgs(internal=REGISTRY_CONTAINER_PORT, external=args.port)],
            volumes=[docker.ContainerVolumeArgs(host_path=args.data_dir, container_path=REGISTRY_STORAGE)],
            opts=child_options(self, opts, delete_before_replace=True),
        )
        self.push_address = pulumi.Output.from_input(f"localhost:{args.port}")
        self.pull_address = pulumi.Output.from_input(f"{args.pull_host}:{args.port}")
        self.register_outputs({"pushAddress": self.push_address, "pullAddress": self.pull_address})
