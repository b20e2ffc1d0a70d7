"""Names of what a stack makes on hosts it shares with other stacks: its containers, its kind cluster and node."""

from __future__ import annotations

import posixpath

# The stack that reproduces the walkthrough: it keeps the walkthrough's container and network names.
WALKTHROUGH_STACK = "dev"
# The kind cluster a `cluster: kind` stack creates (suffixed with the stack off dev), its one node container
# (kind names the node `<cluster>-control-plane`, in Docker and in Kubernetes alike) and its kubeconfig.
KIND_CLUSTER_BASE_NAME = "istio-proxy-debug"
REGISTRY_CONTAINER = "image-registry"


def physical_name(stack: str, base: str) -> str:
    """A name for an object on a shared Docker host: the walkthrough's own for `dev`, suffixed otherwise."""
    return base if stack == WALKTHROUGH_STACK else f"{base}-{stack}"


def kind_cluster_name(stack: str) -> str:
    return physical_name(stack, KIND_CLUSTER_BASE_NAME)


def kind_node_name(cluster_name: str) -> str:
    return f"{cluster_name}-control-plane"


def kind_kubeconfig_file(work_dir: str, cluster_name: str) -> str:
    return posixpath.join(work_dir, "kind", f"{cluster_name}.kubeconfig")
