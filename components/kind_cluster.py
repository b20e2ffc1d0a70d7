"""The lab's cluster (config `cluster: kind`): a one-node kind cluster on the developer host's Docker.

It is set up for the registry the way kind's own local-registry guide does it: the kind config points the
node's containerd at a `config_path` (hosts.toml per registry, which the containerd mirror writes as on any
other node), and the registry container joins the nodes' Docker network, where the node reaches it by name.
Every Kubernetes resource of the stack goes through `provider`, made from this cluster's own kubeconfig: the
developer's current context is never read or changed.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s
import yaml
from pulumi_command import local

from components.options import child_options
from components.scripts import script

# The kind release `make up` installs (Makefile KIND_VERSION) and its default node image (kind's
# pkg/apis/config/defaults/image.go at that tag), pinned by digest so every developer's lab runs the same
# Kubernetes (Istio 1.30 needs 1.32 or later).
KIND_VERSION = "v0.32.0"
KIND_NODE_IMAGE = "kindest/node:v1.36.1@sha256:3489c7674813ba5d8b1a9977baea8a6e553784dab7b84759d1014dbd78f7ebd5"
# Where containerd looks for hosts.toml files; the containerd mirror writes `<host:port>/hosts.toml` there.
CERTS_DIR = "/etc/containerd/certs.d"
CONTAINERD_REGISTRY_PATCH = f'[plugins."io.containerd.grpc.v1.cri".registry]\n  config_path = "{CERTS_DIR}"\n'


def kind_config() -> str:
    """kind's cluster config: one control-plane node (which also runs the pods), containerd reading hosts.toml."""
    config = {
        "kind": "Cluster",
        "apiVersion": "kind.x-k8s.io/v1alpha4",
        "nodes": [{"role": "control-plane", "image": KIND_NODE_IMAGE}],
        "containerdConfigPatches": [CONTAINERD_REGISTRY_PATCH],
    }
    return yaml.safe_dump(config, sort_keys=False)


def kubectl_command(kubeconfig_file: str | None, *args: str) -> str:
    """A kubectl command line for the stack's cluster: the lab's own kubeconfig (whatever the developer's current
    context is), or the current context."""
    return shlex.join(["kubectl", *(["--kubeconfig", kubeconfig_file] if kubeconfig_file else []), *args])


@dataclass
class KindClusterArgs:
    cluster_name: str
    kubeconfig_file: str
    # The Docker network of the node containers (kind's own `kind` by default).
    node_network: str


class KindCluster(pulumi.ComponentResource):
    """`provider` talks to the cluster; `node_network` is the nodes' Docker network, known once they run."""

    provider: k8s.Provider
    kubeconfig: pulumi.Output[str]
    node_network: pulumi.Output[str]
    # Changes whenever the cluster (and so its node container) is made anew.
    cluster_id: pulumi.Output[str]

    def __init__(self, name: str, args: KindClusterArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("istio-proxy-debug:kind_cluster:KindCluster", name, None, opts)
        config = kind_config()
        cluster = local.Command(
            f"{name}-cluster",
            create=script("kind-cluster-create.sh"),
            delete=script("kind-cluster-delete.sh"),
            interpreter=["/bin/bash", "-c"],
            environment={
                "KIND_CLUSTER": args.cluster_name, "KIND_CONFIG": config, "KUBECONFIG_FILE": args.kubeconfig_file,
                "NODE_NETWORK": args.node_network, "KIND_VERSION": KIND_VERSION,
            },
            # Another node image or containerd patch needs a new cluster: kind cannot change a running one.
            triggers=[config, args.cluster_name, args.node_network],
            # The kubeconfig holds the cluster's admin key.
            # kind's progress (stderr) is shown; stdout, the kubeconfig, is not.
            logging=local.Logging.STDERR,
            opts=child_options(self, opts, delete_before_replace=True, additional_secret_outputs=["stdout"]),
        )
        self.kubeconfig = pulumi.Output.secret(cluster.stdout)
        self.provider = k8s.Provider(
            f"{name}-provider",
            kubeconfig=self.kubeconfig,
            # A cluster deleted by hand (kind delete cluster) must not block `pulumi destroy`.
            delete_unreachable=True,
            opts=child_options(self, opts),
        )
        # Known once the nodes run: the stack's containers join it only then.
        self.cluster_id = cluster.id
        self.node_network = cluster.id.apply(lambda _: args.node_network)
        self.register_outputs({"nodeNetwork": self.node_network})
