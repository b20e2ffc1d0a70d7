"""How the node-side scripts (containerd mirror, lldb-server) reach a node, as root: config `nodeAccess`.

ssh: the node is a machine; the scripts run over SSH (pulumi-command's remote.Command), as the walkthrough's
lab does. docker: the node is a container on this host's Docker (kind's nodes); the same scripts run on stdin
to `docker exec -i <node> bash -s`, from the developer host (local.Command). kubernetes: the node is a
Kubernetes node; they run through its agent pod (components/node_agent.py), `kubectl exec -i <agent> --
nsenter -t 1 … bash -s`, from the developer host. Every way the scripts see the node's root shell, its /proc,
its containerd and its network.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
from pulumi_command import local, remote

from components.node_agent import LOOPBACK, NodeAgents, agent_command, agent_shell

SSH = "ssh"
DOCKER = "docker"
KUBERNETES = "kubernetes"


@dataclass(frozen=True)
class NodeAccess:
    method: str
    ssh_user: str = "root"
    # A secret Output with the key's text; None uses the SSH agent (SSH_AUTH_SOCK of the pulumi process).
    ssh_private_key: pulumi.Input[str] | None = None
    # kubernetes: the nodes' agents and the cluster's kubeconfig (None: the current context); `port_forwarded`:
    # the debugger reaches lldb-server through `kubectl port-forward` on its own loopback (the host placement),
    # not at the node's address (the cluster's).
    agents: NodeAgents | None = None
    kubeconfig_file: str | None = None
    port_forwarded: bool = False

    @property
    def by_docker(self) -> bool:
        return self.method == DOCKER

    @property
    def by_kubernetes(self) -> bool:
        return self.method == KUBERNETES

    @property
    def runs_locally(self) -> bool:
        """Whether the scripts run from the developer host (a local command) rather than over SSH."""
        return self.method != SSH

    def root_shell(self, node: str) -> str:
        """The command that runs the script on its stdin as root on the node."""
        if self.by_docker:
            return f"docker exec -i {shlex.quote(node)} bash -s"
        if self.by_kubernetes:
            return agent_shell(node, self.agents.namespace, self.kubeconfig_file)
        return "bash -s" if self.ssh_user == "root" else "sudo -n bash -s"

    def root_command(self, node: str, script: str) -> str:
        """The command that runs `script` as root on the node, its stdin left to the script (a stream from the
        developer host); docker and kubernetes only: over SSH nothing streams from the host."""
        if self.by_docker:
            return shlex.join(["docker", "exec", "-i", node, "bash", "-c", script])
        if self.by_kubernetes:
            return agent_command(node, self.agents.namespace, self.kubeconfig_file, script)
        raise ValueError("nodeAccess ssh cannot stream from the developer host to a node")

    def address(self, resource_name: str, node: pulumi.Input[str], network: pulumi.Input[str] | None,
                node_created: Sequence[pulumi.Input[str]], opts: pulumi.ResourceOptions) -> pulumi.Output[str]:
        """The node's address as the debugger reaches it (connectUrl): over SSH the node itself; with
        docker the container's IPv4 address on `network` (the debugger's too), read when the node runs and again
        whenever `node_created` changes (a new node container); with kubernetes the loopback the port-forward
        listens on, or in the cluster the node's agent's (the node's own) address."""
        if self.by_kubernetes:
            if self.port_forwarded:
                return pulumi.Output.from_input(LOOPBACK)
            return pulumi.Output.from_input(node).apply(lambda n: self.agents.addresses[n])
        if not self.by_docker:
            return pulumi.Output.from_input(node)
        lookup = local.Command(
            resource_name,
            create=pulumi.Output.from_input(network).apply(lambda n: container_address_command(node, n)),
            triggers=list(node_created),
            opts=opts,
        )
        return pulumi.Output.all(network, lookup.stdout).apply(lambda v: parse_address(node, *v))

    def command(self, resource_name: str, node: pulumi.Input[str], *, create: pulumi.Input[str],
                delete: pulumi.Input[str], stdin: pulumi.Input[str] | None, triggers: Sequence[pulumi.Input[str]],
                opts: pulumi.ResourceOptions) -> remote.Command | local.Command:
        """A command resource whose create and delete run on `node` (their text as `root_shell` and
        `with_script` make it)."""
        if self.by_kubernetes:
            # Through the agents: they are Ready before the command runs, and still there when its delete does.
            opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=self.agents.pods))
        if self.runs_locally:
            return local.Command(resource_name, create=create, delete=delete, stdin=stdin, triggers=list(triggers),
                                 opts=opts)
        return remote.Command(
            resource_name,
            connection=remote.ConnectionArgs(host=node, user=self.ssh_user, private_key=self.ssh_private_key),
            create=create, delete=delete, stdin=stdin, triggers=list(triggers),
            # The provider's PULUMI_COMMAND_* variables need sshd's AcceptEnv; nothing here reads them.
            add_previous_output_in_env=False,
            opts=opts,
        )


def container_address_command(node: str, network: str) -> str:
    """Prints the node container's IPv4 address on `network`: where lldb-server binds and the debugger connects."""
    template = "{{with index .NetworkSettings.Networks " + json.dumps(network) + "}}{{.IPAddress}}{{end}}"
    return f"docker inspect --type container --format {shlex.quote(template)} {shlex.quote(node)}"


def parse_address(node: str, network: str, stdout: str) -> str:
    address = stdout.strip()
    if not address:
        raise ValueError(f"node container {node} has no address on the Docker network {network} (nodeNetwork)")
    return address


def with_script(shell: str, script: str, marker: str = "STOP") -> str:
    """`shell` fed `script` as a here-document: delete commands get no stdin of their own."""
    if f"\n{marker}\n" in f"\n{script}":
        raise ValueError(f"the script contains the here-document's end marker {marker}")
    return f"{shell} <<'{marker}'\n{script}{marker}\n"
