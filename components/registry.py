"""S4: the plain-HTTP image registry — a container on the developer host, or a Deployment in the cluster.

docker run -d -p 5000:5000 --restart=always --name image-registry --hostname image-registry registry:2

Deletes are enabled (registry:2 disables them), and the storage is the workspace's registry folder (under
workDir, or on the workspace volume), so `pulumi destroy` removes the registry and keeps every pushed
image. In the cluster, a NodePort Service on registryPort is what the nodes' containerd pulls from, and the
in-cluster image build pushes through the Service's cluster DNS name.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_docker as docker
import pulumi_kubernetes as k8s

from components.options import child_options
from components.placement import WORKSPACE_VOLUME, Placement, bind_mount
from components.stack_names import REGISTRY_CONTAINER

REGISTRY_IMAGE = "registry:2"
# The container (host) or Deployment and Service (cluster): one name, the walkthrough's.
REGISTRY_NAME = REGISTRY_CONTAINER
REGISTRY_CONTAINER_PORT = 5000
REGISTRY_STORAGE = "/var/lib/registry"
REGISTRY_ENV = {"REGISTRY_STORAGE_DELETE_ENABLED": "true"}
LOOPBACK = "127.0.0.1"


def registry_deployment(placement: Placement) -> dict:
    """One registry pod; Recreate, because two pods must never write the same storage."""
    container = {
        "name": "registry",
        "image": REGISTRY_IMAGE,
        "env": [{"name": k, "value": v} for k, v in REGISTRY_ENV.items()],
        "ports": [{"name": "http", "containerPort": REGISTRY_CONTAINER_PORT, "protocol": "TCP"}],
        "readinessProbe": {"httpGet": {"path": "/v2/", "port": REGISTRY_CONTAINER_PORT}},
        "volumeMounts": [{"name": WORKSPACE_VOLUME, "mountPath": REGISTRY_STORAGE,
                          "subPath": placement.layout.registry_dir}],
    }
    return placement.one_pod_workload("Deployment", REGISTRY_NAME, [container], strategy={"type": "Recreate"})


def registry_service(placement: Placement, node_port: int) -> dict:
    return placement.service(REGISTRY_NAME, "NodePort", REGISTRY_CONTAINER_PORT, nodePort=node_port)


def in_cluster_address(namespace: str) -> str:
    return f"{REGISTRY_NAME}.{namespace}.svc.cluster.local:{REGISTRY_CONTAINER_PORT}"


@dataclass
class RegistryArgs:
    placement: Placement
    # Host port, or the Service's NodePort.
    port: int
    # The address the nodes pull from: the developer host, an address of a node (the NodePort), or with
    # nodeAccess docker the registry container's name on the nodes' network.
    pull_host: str
    # registryPort, or with nodeAccess docker the container's own port (REGISTRY_CONTAINER_PORT).
    pull_port: int
    # host only
    container_name: str
    # nodeAccess docker: the nodes' Docker network, which the registry joins; they pull from its own port there.
    node_network: pulumi.Input[str] | None = None


class Registry(pulumi.ComponentResource):
    """`push_address` is where the image build pushes: localhost on the host (Docker allows plain HTTP
    there; any other address would need daemon.json's insecure-registries), the Service in the cluster."""

    push_address: pulumi.Output[str]
    pull_address: pulumi.Output[str]

    def __init__(self, name: str, args: RegistryArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("istio-proxy-debug:registry:Registry", name, None, opts)
        placement = args.placement
        if placement.in_cluster:
            deployment = registry_deployment(placement)
            k8s.apps.v1.Deployment(f"{name}-deployment", metadata=deployment["metadata"], spec=deployment["spec"],
                                   opts=child_options(self, opts))
            service = registry_service(placement, args.port)
            created = k8s.core.v1.Service(f"{name}-service", metadata=service["metadata"], spec=service["spec"],
                                          opts=child_options(self, opts))
            self.push_address = created.metadata.apply(lambda m: in_cluster_address(m.namespace))
        else:
            image = docker.RemoteImage(
                f"{name}-image", name=REGISTRY_IMAGE, keep_locally=True, opts=child_options(self, opts)
            )
            docker.Container(
                f"{name}-container",
                name=args.container_name,
                hostname=args.container_name,
                image=image.image_id,
                restart="always",
                envs=[f"{k}={v}" for k, v in REGISTRY_ENV.items()],
                # The nodes pull from registryHost:registryPort; with nodeAccess docker from the container on their
                # network, so the host port serves this host's pushes only.
                ports=[docker.ContainerPortArgs(internal=REGISTRY_CONTAINER_PORT, external=args.port,
                                                ip=LOOPBACK if args.node_network is not None else None)],
                mounts=[bind_mount(placement.layout.registry_dir, REGISTRY_STORAGE)],
                networks_advanced=[docker.ContainerNetworksAdvancedArgs(name=args.node_network)]
                if args.node_network is not None else None,
                opts=child_options(self, opts, delete_before_replace=True),
            )
            self.push_address = pulumi.Output.from_input(f"localhost:{args.port}")
        self.pull_address = pulumi.Output.from_input(f"{args.pull_host}:{args.pull_port}")
        self.register_outputs({"pushAddress": self.push_address, "pullAddress": self.pull_address})
