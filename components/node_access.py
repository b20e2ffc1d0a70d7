"""How the node-side scripts (containerd mirror, lldb-server) reach a node, as root: config `nodeAccess`.

ssh: the node is a machine; the scripts run over SSH (pulumi-command's remote.Command), as the walkthrough's
lab does. docker: the node is a container on this host's Docker (kind's nodes); the same scripts run on stdin
to `docker exec -i <node> bash -s`, from the developer host (local.Command). Either way the scripts see the
node's root shell, its /proc, its containerd and its network.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
from pulumi_command import local, remote

SSH = "ssh"
DOCKER = "docker"


@dataclass(frozen=True)
class NodeAccess:
    method: str
    ssh_user: str = "root"
    # A secret Output with the key's text; None uses the SSH agent (SSH_AUTH_SOCK of the pulumi process).
    ssh_private_key: pulumi.Input[str] | None = None

    @property
    def by_docker(self) -> bool:
        return self.method == DOCKER

    def root_shell(self, node: str) -> str:
        """The command that runs the script on its stdin as root on the node."""
        if self.by_docker:
            return f"docker exec -i {shlex.quote(node)} bash -s"
        return "bash -s" if self.ssh_user == "root" else "sudo -n bash -s"

    def address(self, resource_name: str, node: str, network: pulumi.Input[str] | None,
                node_created: Sequence[pulumi.Input[str]], opts: pulumi.ResourceOptions) -> pulumi.Output[str]:
        """The node's address as the debugger reaches it (connectUrl): over SSH the node itself; with
        docker the container's IPv4 address on `network` (the debugger's too), read when the node runs and again
        whenever `node_created` changes (a new node container)."""
        if not self.by_docker:
            return pulumi.Output.from_input(node)
        lookup = local.Command(
            resource_name,
            create=pulumi.Output.from_input(network).apply(lambda n: container_address_command(node, n)),
            triggers=list(node_created),
            opts=opts,
        )
        return pulumi.Output.all(network, lookup.stdout).apply(lambda v: parse_address(node, *v))

    def command(self, resource_name: str, node: str, *, create: pulumi.Input[str], delete: pulumi.Input[str],
                stdin: pulumi.Input[str] | None, triggers: Sequence[pulumi.Input[str]],
                opts: pulumi.ResourceOptions) -> remote.Command | local.Command:
        """A command resource whose create and delete run on `node` (their text as `root_shell` and
        `with_script` make it)."""
        if self.by_docker:
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
