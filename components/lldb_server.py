"""S8: lldb-server on the target node, in the pod's UTS, PID and mount namespaces, on the node's network.

The walkthrough's `nsenter -t $ENVOY_PID -u -p -m lldb-server platform --server --listen *:2159`, made
repeatable: the process is found by the pod's hostname and namespace, the server takes connections from the
debugger's address only, its gdbserver ports are pinned (components/debug_ports.py), it is detached with a pidfile
so `pulumi up` returns, and the same pidfile stops it on delete. It runs again — delete before create — when the
pod's image, the pod (a new one of the same name too) or the debugger's address changes.

`--listen <host>:<port>` is a client filter, not a bind address: for any host other than loopback LLDB's
TCPSocket listens on every address and rejects a connection from any other peer ("rejecting incoming
connection from … (expecting …)"). So the host given is where the debugger connects from.
"""

from __future__ import annotations

import posixpath
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import pulumi
from pulumi_command import local

from components.debug_ports import DebuggerPorts
from components.node_access import NodeAccess, with_script
from components.node_agent import lldb_server_port_forward, pod_node_environment
from components.options import child_options
from components.scripts import key_values, script, shell_assignments
from components.workspace import CONTAINER_CACHE_DIR, WorkspaceLayout

# Where the debug image puts the real binary (its gdbserver must be found beside it).
IMAGE_LLDB_SERVER = "/opt/lldb-server/bin/lldb-server"
# On the node, outside any pod: the pidfile and the log, one pair per stack.
STATE_DIR = "/run/istio-proxy-debug"
# attachTo: the lldb-server bundles the stacks put on the node (components/scripts/lldb-server-bundle-install.sh).
BUNDLE_ROOT = "/var/lib/istio-proxy-debug"
# nodeAccess kubernetes: how long the target pod may take to be scheduled (its StatefulSet is Ready already).
POD_NODE_WAIT_SECONDS = 120


def render_node_script(parameters: Mapping[str, str | int], *bodies: str) -> str:
    """Parameters as shell assignments, then the script bodies: SSH does not pass an environment."""
    return shell_assignments(parameters) + "".join(bodies)


# lldb-server platform runs any command it is asked to, as root on the node: take every peer only when
# lldbServerListenAll says so, and say so in the resource, where the policy pack can see it.
LISTEN_ALL_ADDRESS = "0.0.0.0"


def node_parameters(*, pod: str, namespace: str, process_name: str, debugger_address: str, listen_all: bool,
                    ports: DebuggerPorts, instance: str, container_id: str | None = None,
                    bundle_dir: str | None = None) -> dict[str, str | int]:
    return {
        "POD_NAME": pod,
        "POD_NAMESPACE": namespace,
        "PROCESS_NAME": process_name,
        "LISTEN_ADDRESS": LISTEN_ALL_ADDRESS if listen_all else debugger_address,
        "LISTEN_ALL": "true" if listen_all else "false",
        "PLATFORM_PORT": ports.platform,
        "GDBSERVER_ARGS": " ".join(ports.lldb_server_args(20)),
        "GDBSERVER_ARGS_BEFORE_LLDB20": " ".join(ports.lldb_server_args(19)),
        "LLDB_SERVER": IMAGE_LLDB_SERVER,
        "STATE_DIR": STATE_DIR,
        "INSTANCE": instance,
        # attachTo: the container by its id, and the lldb-server the stack put on the node.
        **({"CONTAINER_ID": container_id, "LLDB_SERVER_BUNDLE": bundle_dir} if container_id else {}),
    }


def start_script(parameters: Mapping[str, str | int]) -> str:
    """Stops a previous instance, then starts the server; prints the target's pid inside the pod."""
    return render_node_script(parameters, script("elf-facts.sh"), script("container-process.sh"),
                              script("lldb-server-stop.sh"), script("lldb-server-start.sh"))


def bundle_dir(instance: str) -> str:
    """attachTo: where the lldb-server bundle goes on the node, one per stack; on disk, not in /run's memory."""
    return f"{BUNDLE_ROOT}/{instance}/lldb-server"


def install_bundle_command(access: NodeAccess, node: str, host_dir: str, node_dir: str, digest: str) -> str:
    """The bundle from the developer host's folder, streamed as a tar into the node's folder."""
    install = render_node_script({"BUNDLE_DIR": node_dir, "DIGEST": digest}, script("lldb-server-bundle-install.sh"))
    return f"tar -C {shlex.quote(host_dir)} -cf - . | {access.root_command(node, install)}"


def copy_modules_command(access: NodeAccess, node: str, parameters: Mapping[str, str | int],
                         module_cache_host_dir: str) -> str:
    """The files the attached process maps, from the node into the debugger's module cache, as lldb lays out a
    remote-linux module's (so nothing is copied while the process is stopped)."""
    modules = render_node_script({k: parameters[k] for k in ("CONTAINER_ID", "PROCESS_NAME", "STATE_DIR", "INSTANCE")},
                                 script("elf-facts.sh"), script("container-process.sh"),
                                 script("lldb-server-modules.sh"))
    folder = shlex.quote(posixpath.join(module_cache_host_dir, "remote-linux"))
    return f"mkdir -p {folder} && {access.root_command(node, modules)} | tar -x -C {folder}"


def remove_bundle_command(access: NodeAccess, node: str, node_dir: str) -> str:
    parent = posixpath.dirname(node_dir)
    return access.root_command(node, f"rm -rf {shlex.quote(node_dir)}; rmdir {shlex.quote(parent)} "
                                     f"{shlex.quote(BUNDLE_ROOT)} 2>/dev/null || true")


@dataclass(frozen=True)
class InPlace:
    """attachTo: the running container, by its id, and the lldb-server bundle on the developer host (collected
    from the debugger's lldb) with the digest of its files."""

    container_id: pulumi.Input[str]
    bundle_host_dir: pulumi.Input[str]
    bundle_digest: pulumi.Input[str]
    # The debugger's lldb module cache on this host (its platform.module-cache-directory).
    module_cache_host_dir: str


def stop_script(parameters: Mapping[str, str | int]) -> str:
    """What the stop needs: where the pidfile is."""
    return render_node_script({k: parameters[k] for k in ("STATE_DIR", "INSTANCE")}, script("lldb-server-stop.sh"))


@dataclass
class LldbServerArgs:
    # The node as the access reaches it: an address over SSH, a container name with docker, a node name with
    # kubernetes; None with kubernetes: the node the target pod was scheduled on.
    node: str | None
    # Where the debugger's connections come from as the node sees them (the only peer lldb-server accepts
    # unless listen_all); None only with listen_all.
    debugger_address: pulumi.Input[str | None]
    listen_all: bool
    access: NodeAccess
    pod: pulumi.Input[str]
    namespace: str
    process_name: str
    ports: DebuggerPorts
    instance: str
    # What makes the running server stale: the pod's image, the pod itself, a new pod of the same name (the
    # debugger's address is in the script's text).
    restart_on: Sequence[pulumi.Input[str]]
    # nodeAccess docker: the Docker network the debugger shares with the node (lldb-server binds the node's
    # address there), and what changes when the node container is made anew.
    node_network: pulumi.Input[str] | None = None
    node_created: Sequence[pulumi.Input[str]] = ()
    # attachTo: the running container and the lldb-server the stack puts on the node for it.
    in_place: InPlace | None = None


class LldbServer(pulumi.ComponentResource):
    connect_url: pulumi.Output[str]
    pid: pulumi.Output[int]
    # attachTo: the running executable's .text digest and load slide (components/scripts/lldb-server-start.sh);
    # None otherwise.
    text_digest: pulumi.Output[str | None]
    load_slide: pulumi.Output[str | None]
    # nodeAccess kubernetes, host placement: the port-forward to the node's loopback the debugger connects
    # through; None otherwise.
    port_forward_command: pulumi.Output[str | None]

    def __init__(self, name: str, args: LldbServerArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("istio-proxy-debug:lldb_server:LldbServer", name, None, opts)
        node = args.node if args.node is not None else self._pod_node(name, args, opts)
        node_address = args.access.address(f"{name}-node-address", node, args.node_network, args.node_created,
                                           opts=child_options(self, opts))
        in_place = args.in_place
        parameters = pulumi.Output.all(args.pod, args.debugger_address,
                                       in_place.container_id if in_place else None).apply(
            lambda v: node_parameters(pod=v[0], namespace=args.namespace, process_name=args.process_name,
                                      debugger_address=v[1],
                                      listen_all=args.listen_all, ports=args.ports, instance=args.instance,
                                      container_id=v[2], bundle_dir=bundle_dir(args.instance) if v[2] else None)
        )
        shell = pulumi.Output.from_input(node).apply(args.access.root_shell)
        after = [self._install_bundle(name, node, args, opts)] if in_place else []
        server = args.access.command(
            f"{name}-platform", node,
            create=shell,
            stdin=parameters.apply(start_script),
            delete=pulumi.Output.all(shell, parameters).apply(lambda v: with_script(v[0], stop_script(v[1]))),
            # On another node (the pod moved) it is another server: the old one stops there first.
            triggers=[*args.restart_on, *([node] if args.node is None else [])],
            # The old server holds the port: it must stop before the new one starts.
            opts=pulumi.ResourceOptions.merge(child_options(self, opts, delete_before_replace=True),
                                              pulumi.ResourceOptions(depends_on=after)),
        )
        if in_place:
            # Before the debugger attaches, which waits for launch.json and lldbCommands, so for this.
            copied = local.Command(
                f"{name}-modules",
                create=pulumi.Output.all(node, parameters).apply(
                    lambda v: copy_modules_command(args.access, v[0], v[1], in_place.module_cache_host_dir)),
                triggers=[*args.restart_on],
                opts=pulumi.ResourceOptions.merge(child_options(self, opts),
                                                  pulumi.ResourceOptions(depends_on=[server])),
            )
            stdout = pulumi.Output.all(server.stdout, copied.id).apply(lambda v: v[0])
        else:
            stdout = server.stdout
        reported = stdout.apply(lambda out: key_values(out, set()))
        self.text_digest = reported.apply(lambda values: values.get("textDigest"))
        self.load_slide = reported.apply(lambda values: values.get("loadSlide"))
        self.connect_url = node_address.apply(
            lambda address: f"connect://{address}:{args.ports.platform}")
        self.pid = stdout.apply(lambda out: int(out.strip().splitlines()[-1]))
        self.port_forward_command = pulumi.Output.from_input(node).apply(
            lambda n: lldb_server_port_forward(n, args.access.agents.namespace, args.ports.all,
                                               args.access.kubeconfig_file)
            if args.access.port_forwarded else None)
        self.register_outputs({"connectUrl": self.connect_url, "pid": self.pid,
                               "portForwardCommand": self.port_forward_command, "textDigest": self.text_digest,
                               "loadSlide": self.load_slide})

    def _install_bundle(self, name: str, node: pulumi.Input[str], args: LldbServerArgs,
                        opts: pulumi.ResourceOptions | None) -> local.Command:
        """attachTo: the lldb-server bundle streamed to the node (again when it changes); removed on destroy."""
        access, in_place, node_dir = args.access, args.in_place, bundle_dir(args.instance)
        return local.Command(
            f"{name}-bundle",
            create=pulumi.Output.all(node, in_place.bundle_host_dir, in_place.bundle_digest).apply(
                lambda v: install_bundle_command(access, v[0], v[1], node_dir, v[2])),
            delete=pulumi.Output.from_input(node).apply(lambda n: remove_bundle_command(access, n, node_dir)),
            triggers=[node, in_place.bundle_digest],
            opts=pulumi.ResourceOptions.merge(
                child_options(self, opts),
                # Through the agents: Ready before it runs, there still when its delete does.
                pulumi.ResourceOptions(depends_on=access.agents.pods if access.by_kubernetes else [])),
        )

    def _pod_node(self, name: str, args: LldbServerArgs, opts: pulumi.ResourceOptions | None) -> pulumi.Output[str]:
        """The node the target pod runs on, among those with an agent, looked up once it is scheduled
        (components/scripts/pod-node.sh)."""
        access = args.access
        lookup = local.Command(
            f"{name}-node",
            create=script("pod-node.sh"),
            interpreter=["/bin/bash", "-c"],
            environment=pulumi.Output.from_input(args.pod).apply(lambda pod: pod_node_environment(
                pod, args.namespace, access.agents.nodes, POD_NODE_WAIT_SECONDS, access.kubeconfig_file)),
            # A new pod of the same name may be on another node: look again.
            triggers=list(args.restart_on),
            opts=child_options(self, opts),
        )
        return lookup.stdout.apply(lambda out: out.strip().splitlines()[-1])


# attachTo: the bundle in the cache folder the debugger container mounts.
BUNDLE_IN_CACHE = posixpath.join(CONTAINER_CACHE_DIR, "istio-proxy-debug", "lldb-server")


@dataclass
class LldbServerBundleArgs:
    # The debugger: its lldb-server is the one the bundle is made of (the same LLDB as its client).
    workbench_exec: Callable[[list[str]], pulumi.Input[str]]
    layout: WorkspaceLayout


class LldbServerBundle(pulumi.ComponentResource):
    """attachTo: the debugger's lldb-server with every library it loads, made to run inside any container
    (components/scripts/collect-lldb-server-bundle.sh), in the workspace's cache folder on this host."""

    host_dir: pulumi.Output[str]
    digest: pulumi.Output[str]

    def __init__(self, name: str, args: LldbServerBundleArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("istio-proxy-debug:lldb_server:LldbServerBundle", name, None, opts)
        environment = {"BUNDLE_DIR": BUNDLE_IN_CACHE}
        collect = local.Command(
            f"{name}-collect",
            create=args.workbench_exec(list(environment)),
            stdin=script("collect-lldb-server-bundle.sh"),
            environment=environment,
            opts=child_options(self, opts),
        )
        values = collect.stdout.apply(lambda out: key_values(out, {"bundle", "digest"}))
        self.host_dir = values.apply(lambda v: args.layout.host_path(v["bundle"]))
        self.digest = values.apply(lambda v: v["digest"])
        self.register_outputs({"hostDir": self.host_dir, "digest": self.digest})
