"""S6: every node's containerd pulls from the plain-HTTP registry, in the form the node already uses.

The walkthrough adds a `registry.mirrors` entry to /etc/containerd/config.toml by hand. On a node whose
config already sets `config_path` (current kind images, most new installs), that form stops the CRI plugin
from loading, and the node stops running pods. The node script decides on the node instead. It writes
hosts.toml where config_path points, sets config_path first when neither form is in use, adds a mirror
entry when mirrors are already in use, or edits registries.yaml on k3s. It backs up every file it changes,
and `pulumi destroy` puts them back. Several stacks may share a node: each takes out only its own entry,
and the last one restores the original configuration file.

The scripts run over SSH as `bash -c '<parameters><script>'`, or with nodeAccess docker or kubernetes on stdin
to `docker exec -i <node> bash -s` or the node agent's `kubectl exec` (components/node_agent.py). The
parameters are rendered into the text with single quotes, not passed as environment variables: those only
reach the node if its sshd's AcceptEnv lets them through. The text also makes every change visible in
`pulumi preview --diff`.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi

from components.node_access import NodeAccess, with_script
from components.scripts import script, shell_assignments

COMMON_SCRIPT = "containerd-mirror-common.sh"
CREATE_SCRIPT = "containerd-mirror-create.sh"
DELETE_SCRIPT = "containerd-mirror-delete.sh"


def registry_address(host: str, port: int) -> str:
    """host:port as image references and containerd's certs.d folder names write it (IPv6 in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def registry_endpoint(host: str, port: int) -> str:
    """The plain-HTTP endpoint; the http:// scheme alone is what makes containerd skip TLS."""
    return f"http://{registry_address(host, port)}"


def hosts_toml(host: str, port: int) -> str:
    """<config_path>/<host:port>/hosts.toml: pull and resolve from the registry itself, over HTTP."""
    endpoint = registry_endpoint(host, port)
    return (
        f"# Written by istio-proxy-debug (S6): pull {registry_address(host, port)} over plain HTTP.\n"
        f'server = "{endpoint}"\n'
        "\n"
        f'[host."{endpoint}"]\n'
        '  capabilities = ["pull", "resolve"]\n'
    )


def mirror_entry(host: str, port: int) -> str:
    """The body of a `registry.mirrors."host:port"` table. The node script adds the header, which depends on
    the config version it finds there."""
    return f'endpoint = ["{registry_endpoint(host, port)}"]'


def script_parameters(host: str, port: int) -> dict[str, str]:
    return {
        "REGISTRY": registry_address(host, port),
        "ENDPOINT": registry_endpoint(host, port),
        "HOSTS_TOML": hosts_toml(host, port),
        "MIRROR_TOML": mirror_entry(host, port),
    }


def render_script(name: str, parameters: Mapping[str, str]) -> str:
    """The parameters assigned (each quoted for the shell), then the code create and delete share, then
    the script itself."""
    preamble = shell_assignments(parameters)
    return (f"# Parameters, rendered by components/containerd_mirror.py\n{preamble}"
            f"{script(COMMON_SCRIPT)}{script(name)}")


def render_command(name: str, parameters: Mapping[str, str]) -> str:
    """The command line for the node's login shell (any POSIX sh). The script runs itself again through
    `sudo -n` when the SSH user is not root."""
    return "bash -c " + shlex.quote(render_script(name, parameters))


def create_script(host: str, port: int) -> str:
    return render_script(CREATE_SCRIPT, script_parameters(host, port))


def delete_script(host: str, port: int) -> str:
    return render_script(DELETE_SCRIPT, {"REGISTRY": registry_address(host, port)})


def render_create(host: str, port: int) -> str:
    return render_command(CREATE_SCRIPT, script_parameters(host, port))


def render_delete(host: str, port: int) -> str:
    return render_command(DELETE_SCRIPT, {"REGISTRY": registry_address(host, port)})


def node_commands(access: NodeAccess, node: str, host: str, port: int) -> dict[str, str | None]:
    """create, stdin and delete for one node: `bash -c '<script>'` over SSH, the script on stdin to docker exec
    or kubectl exec."""
    if access.runs_locally:
        shell = access.root_shell(node)
        return {"create": shell, "stdin": create_script(host, port),
                "delete": with_script(shell, delete_script(host, port))}
    return {"create": render_create(host, port), "stdin": None, "delete": render_delete(host, port)}


def node_resource_name(name: str, node: str) -> str:
    """A resource name per node. ':' (IPv6) would clash with the URN's separators."""
    return f"{name}-{re.sub(r'[^A-Za-z0-9._-]', '-', node)}"


@dataclass
class ContainerdMirrorArgs:
    nodes: Sequence[str]
    access: NodeAccess
    registry_host: str
    registry_port: int


class ContainerdMirror(pulumi.ComponentResource):
    """One command per node. Create configures the node, and destroy restores its files."""

    summaries: pulumi.Output[dict[str, str]]

    def __init__(self, name: str, args: ContainerdMirrorArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("istio-proxy-debug:containerd_mirror:ContainerdMirror", name, None, opts)
        names = {node: node_resource_name(name, node) for node in args.nodes}
        if len(set(names.values())) != len(names):
            raise ValueError(f"two nodes map to the same resource name: {sorted(names.values())}")
        commands = {}
        for node, resource_name in names.items():
            commands[node] = args.access.command(
                resource_name, node,
                **node_commands(args.access, node, args.registry_host, args.registry_port),
                # Another registry replaces the command, old first: the delete stored in the state takes
                # the old registry's entry out before the new one goes in, so the node never pulls from
                # both. A change to the script alone runs create again, which is idempotent.
                triggers=[registry_address(args.registry_host, args.registry_port)],
                opts=pulumi.ResourceOptions(parent=self, delete_before_replace=True),
            )
        self.summaries = pulumi.Output.all(
            *(command.stdout for command in commands.values())
        ).apply(lambda outs: {node: (out or "").strip() for node, out in zip(commands, outs, strict=True)})
        self.register_outputs({"summaries": self.summaries})
