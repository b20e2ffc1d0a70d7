"""nodeAccess kubernetes: the nodes reached through the Kubernetes API, as `kubectl debug node/<name>` does,
for clusters where nobody SSHes to a node (GKE, EKS, AKS, shared ones).

Each node the stack touches (`nodes`: the containerd entry's, among them the target pod's, for lldb-server) gets
an agent pod pinned to it by name: privileged, in the node's PID, network and IPC namespaces, the node's root at
/host, tolerating every taint, in a namespace of the stack's own that admits privileged pods and no sidecar. The
node scripts run unchanged in the node's own namespaces, through PID 1:
`kubectl exec -i <agent> -- nsenter -t 1 -m -u -i -n -p -- bash -s`, as they run over SSH or `docker exec`.

The agent's image is the one the debug image is made from (Istio's `proxyv2` of `istioVersion`, which has
bash and nsenter): the nodes must pull the agent before the containerd entry that lets them pull the debug
image is written, and a cluster that runs Istio pulls `proxyv2` already.

Nothing opens on the node for the debugger: lldb-server listens on the node's loopback and the developer
reaches it through `kubectl port-forward` to the agent (a host-network pod, so the forward lands on the node's
loopback), or, with `placement: cluster`, code-server reaches the agent's address (the node's) in the cluster.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from components.kind_cluster import kubectl_command
from components.options import child_options
from components.placement import PART_OF

AGENT_PREFIX = "node-agent-"
AGENT_CONTAINER = "agent"
# The longest node name whose agent's name (AGENT_PREFIX + node) is still a pod name (a DNS-1123 subdomain).
LONGEST_NODE_NAME = 253 - len(AGENT_PREFIX)
COMPONENT_LABEL = "app.kubernetes.io/component"
COMPONENT = "node-agent"
NODE_ROOT = "/host"
# Into the node's mount, UTS, IPC, network and PID namespaces: its root shell, as SSH gives it.
NODE_SHELL = ("nsenter", "--target", "1", "--mount", "--uts", "--ipc", "--net", "--pid", "--", "bash", "-s")
# The agent only waits to be exec'd into; it ends at once when asked to (as PID 1, sleep would ignore SIGTERM).
AGENT_COMMAND = ["/bin/bash", "-c", "trap 'exit 0' TERM; sleep infinity & wait"]
LOOPBACK = "127.0.0.1"


def agent_name(node: str) -> str:
    return AGENT_PREFIX + node


def agent_labels(instance: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": COMPONENT, COMPONENT_LABEL: COMPONENT, "app.kubernetes.io/part-of": PART_OF,
            "app.kubernetes.io/instance": instance}


def agent_namespace_manifest(namespace: str, instance: str) -> dict:
    """Privileged pods admitted (Pod Security's own labels) and none injected with a sidecar."""
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": namespace,
            "labels": {**agent_labels(instance), "pod-security.kubernetes.io/enforce": "privileged",
                       "istio-injection": "disabled"},
        },
    }


def agent_pod_manifest(node: str, namespace: str, image: str, instance: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": agent_name(node),
            "namespace": namespace,
            "labels": agent_labels(instance),
            "annotations": {"sidecar.istio.io/inject": "false"},
        },
        "spec": {
            # Bound to the node by name: no scheduler, no affinity that a taint or a full node could defeat.
            "nodeName": node,
            "hostPID": True,
            "hostNetwork": True,
            "hostIPC": True,
            "tolerations": [{"operator": "Exists"}],
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "terminationGracePeriodSeconds": 5,
            "containers": [{
                "name": AGENT_CONTAINER,
                "image": image,
                "imagePullPolicy": "IfNotPresent",
                "command": AGENT_COMMAND,
                "securityContext": {"privileged": True, "runAsUser": 0, "runAsGroup": 0},
                "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
                "volumeMounts": [{"name": "node-root", "mountPath": NODE_ROOT}],
            }],
            "volumes": [{"name": "node-root", "hostPath": {"path": "/", "type": "Directory"}}],
        },
    }


def agent_shell(node: str, namespace: str, kubeconfig_file: str | None) -> str:
    """The command that runs the script on its stdin as root in the node's namespaces, through its agent."""
    return kubectl_command(kubeconfig_file, "exec", "-i", "-n", namespace, agent_name(node), "-c", AGENT_CONTAINER,
                           "--", *NODE_SHELL)


def agent_command(node: str, namespace: str, kubeconfig_file: str | None, script: str) -> str:
    """The command that runs `script` as root in the node's namespaces, through its agent, its stdin left to the
    script (a stream to the node)."""
    return kubectl_command(kubeconfig_file, "exec", "-i", "-n", namespace, agent_name(node), "-c", AGENT_CONTAINER,
                           "--", *NODE_SHELL[:-1], "-c", script)


def lldb_server_port_forward(node: str, namespace: str, ports: Sequence[int], kubeconfig_file: str | None) -> str:
    """The developer's way to the node's loopback, where lldb-server listens: the platform port and its gdbserver
    ports, each on the same port of this host's loopback."""
    return kubectl_command(kubeconfig_file, "port-forward", "-n", namespace, "--address", LOOPBACK,
                           f"pod/{agent_name(node)}", *map(str, ports))


def pod_node_environment(pod: str, namespace: str, nodes: Sequence[str], wait_seconds: int,
                         kubeconfig_file: str | None) -> dict[str, str]:
    return {
        "POD_NAME": pod,
        "POD_NAMESPACE": namespace,
        "NODES": " ".join(nodes),
        "WAIT_SECONDS": str(wait_seconds),
        **({"KUBECONFIG": kubeconfig_file} if kubeconfig_file else {}),
    }


@dataclass
class NodeAgentsArgs:
    nodes: Sequence[str]
    namespace: str
    image: str
    # The stack's project and stack: which agents are whose on a shared cluster.
    instance: str
    # attachTo: the node the pod runs on, known once the pod is read; its agent's resource is `<name>-attached`.
    attached_node: pulumi.Input[str] | None = None


class NodeAgents(pulumi.ComponentResource):
    """The agents' namespace and one agent per node, each Ready (the provider waits for it) before any command
    that runs through it; they go after those commands' deletes have run, and take nothing with them."""

    # The agents' namespace and the nodes that have one, as configured.
    namespace: str
    nodes: tuple[str, ...]
    # node → the agent pod's address: the node's own (host network), where code-server reaches lldb-server.
    addresses: dict[str, pulumi.Output[str]]

    def __init__(self, name: str, args: NodeAgentsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("istio-proxy-debug:node_agent:NodeAgents", name, None, opts)
        manifest = agent_namespace_manifest(args.namespace, args.instance)
        namespace = k8s.core.v1.Namespace(f"{name}-namespace", metadata=manifest["metadata"],
                                          opts=child_options(self, opts))
        self.namespace, self.nodes = args.namespace, tuple(args.nodes)
        self.pods: list[k8s.core.v1.Pod] = []
        self.addresses = {}
        nodes = {node: node for node in args.nodes}
        if args.attached_node is not None:
            nodes["attached"] = args.attached_node
        for suffix, node in nodes.items():
            pod = pulumi.Output.from_input(node).apply(
                lambda n: agent_pod_manifest(n, args.namespace, args.image, args.instance))
            created = k8s.core.v1.Pod(
                f"{name}-{suffix}", metadata=pod["metadata"], spec=pod["spec"],
                # A pod's spec cannot change in place: a new image or node is a new pod, under the same name.
                opts=pulumi.ResourceOptions.merge(child_options(self, opts, delete_before_replace=True),
                                                  pulumi.ResourceOptions(depends_on=[namespace])),
            )
            self.pods.append(created)
            if isinstance(node, str):
                self.addresses[node] = created.status.apply(lambda status: status.pod_ip)
        self.register_outputs({"namespace": namespace.metadata.apply(lambda m: m.name)})
