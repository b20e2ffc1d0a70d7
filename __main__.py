"""istio-proxy-debug: remote source-level debugging of Envoy in an Istio sidecar, waypoint or gateway, as one stack."""

import signal

import pulumi

from components.builder import Builder, BuilderArgs, pinned_builder_image
from components.config import load_config
from components.containerd_mirror import ContainerdMirror, ContainerdMirrorArgs
from components.debug_image import DebugImage, DebugImageArgs, base_image
from components.debugger import Debugger, DebuggerArgs
from components.docker_daemon import require_docker
from components.envoy_build import EnvoyBuild, EnvoyBuildArgs
from components.istio import Istio, IstioArgs
from components.kind_cluster import KindCluster, KindClusterArgs
from components.launch import launch_outputs
from components.launch_file import LaunchFile, LaunchFileArgs
from components.lldb_server import LldbServer, LldbServerArgs
from components.network import DockerNetwork, DockerNetworkArgs
from components.node_access import NodeAccess
from components.node_agent import LOOPBACK, NodeAgents, NodeAgentsArgs
from components.placement import Placement
from components.prebuilt_envoy import PrebuiltEnvoy, PrebuiltEnvoyArgs
from components.registry import REGISTRY_CONTAINER_PORT, Registry, RegistryArgs
from components.settings import local_folder
from components.target import PROXY_WAIT_PROCESS, Target, TargetArgs, Workload
from components.workspace import Workspace, WorkspaceArgs, WorkspaceVolume, WorkspaceVolumeArgs

# The cluster placement's own namespace (suffixed with the stack off dev) and its workspace claim.
CLUSTER_NAMESPACE = "istio-proxy-debug"
WORKSPACE_CLAIM = "workspace"
# nodeAccess kubernetes: the node agents' namespace (suffixed the same way).
NODE_AGENT_NAMESPACE = "istio-proxy-debug-nodes"

# Ctrl-C in the developer's terminal reaches every process of the CLI, this program too: the CLI cancels the update
# and ends the program itself, which would otherwise print a page of KeyboardInterrupt traceback.
signal.signal(signal.SIGINT, signal.SIG_IGN)
config = load_config()
if config.placement == "host":
    # The host's containers, network and images go through pulumi-docker, whose provider fails with a page of
    # traceback when no daemon answers, even in a preview: stop first with one line that says where and what to do.
    require_docker()
if config.node_access == "kubernetes":
    # The agents run the image the debug image is made from: the nodes pull it before they can pull the debug image.
    agents = NodeAgents("node-agents", NodeAgentsArgs(
        nodes=config.nodes, namespace=config.physical_name(NODE_AGENT_NAMESPACE),
        image=base_image(config.istio_version), instance=f"{config.project}-{config.stack}",
    ))
else:
    agents = None
node_access = NodeAccess(
    config.node_access, ssh_user=config.ssh_user,
    ssh_private_key=pulumi.Output.secret(config.ssh_private_key) if config.ssh_private_key else None,
    agents=agents, kubeconfig_file=config.kubeconfig_file,
    port_forwarded=config.node_access == "kubernetes" and config.placement == "host",
)

if config.cluster == "kind":
    # The lab: a kind cluster of the stack's own, Istio in it, and every Kubernetes resource through its provider.
    kind = KindCluster("kind", KindClusterArgs(
        cluster_name=config.kind_cluster_name, kubeconfig_file=config.kubeconfig_file,
        node_network=config.node_network,
    ))
    cluster_options = pulumi.ResourceOptions(providers=[kind.provider])
    istio = Istio("istio", IstioArgs(
        version=config.istio_version, ambient=config.target == "waypoint", gateway_api=config.target != "sidecar",
    ), opts=cluster_options)
    # The node scripts need the node; the target needs istiod's injector.
    nodes_ready = [kind]
    injector_ready = istio.ready
else:
    kind = None
    cluster_options = pulumi.ResourceOptions()
    nodes_ready, injector_ready = [], []

if config.placement == "cluster":
    placement = Placement.cluster(namespace=config.physical_name(CLUSTER_NAMESPACE), claim_name=WORKSPACE_CLAIM)
    volume = WorkspaceVolume("workspace-volume", WorkspaceVolumeArgs(
        namespace=placement.namespace, claim_name=placement.claim_name,
        storage_class=config.workspace_storage_class, size=config.workspace_volume_size,
    ))
    ready_for_workloads = [volume]
else:
    placement = Placement.host(config.work_dir)
    # On the host the folders must exist before a container mounts them.
    workspace = Workspace("workspace", WorkspaceArgs(
        repository=config.source_repository, tag=config.istio_version, layout=placement.layout,
    ))
    ready_for_workloads = [workspace]

if placement.in_cluster:
    network_name = None
elif node_access.by_docker:
    # The nodes' own network: there the debugger reaches lldb-server, and the nodes the registry, by name.
    network_name = kind.node_network if kind else config.node_network
else:
    network_name = DockerNetwork("docker", DockerNetworkArgs(
        name=config.physical_name(config.docker_network), subnet=config.docker_network_subnet,
    )).name
# launch.json is known only at the end, but code-server (the debugger in the cluster) carries it: it comes
# later, and the debugger first.
launch_json_text, resolve_launch_json = pulumi.deferred_output()
debugger = Debugger(
    "debugger",
    DebuggerArgs(
        placement=placement,
        container_name=config.physical_name("lldb-vscode-server"),
        network_name=network_name,
        host_network=node_access.by_kubernetes,
        mirror_folder=local_folder(config.prebuilt_base_url) if config.prebuilt else None,
        code_server_password=pulumi.Output.secret(config.code_server_password) if config.code_server_password else None,
        launch_json=launch_json_text,
    ),
    # It mounts the workspace: the host's folders, or the volume in its namespace.
    opts=pulumi.ResourceOptions(depends_on=ready_for_workloads),
)
if placement.in_cluster:
    # In the cluster the checkout runs in the debugger's pod: the volume is mounted nowhere else, and the
    # builder's image is only known from the checkout.
    workspace = Workspace("workspace", WorkspaceArgs(
        repository=config.source_repository, tag=config.istio_version, workbench_exec=debugger.exec_command,
    ))
if config.prebuilt:
    # No builder: the scripts that need the workspace run in the debugger, which mounts it the same way.
    builder = None
    workbench_exec = debugger.exec_command
    envoy = PrebuiltEnvoy(
        "envoy",
        PrebuiltEnvoyArgs(
            placement=placement,
            workbench_exec=workbench_exec,
            istio_version=config.istio_version,
            source_commit=workspace.commit,
            base_url=config.prebuilt_base_url,
            envoy_repository=config.envoy_repository,
        ),
    )
else:
    builder = Builder(
        "builder",
        BuilderArgs(
            placement=placement,
            # builderImage needs no checkout: the builder (a pull of many GB) need not wait for the clone.
            image=config.builder_image or workspace.builder_image.apply(pinned_builder_image),
            container_name=config.physical_name("istio-proxy-builder"),
            network_name=network_name,
        ),
        opts=pulumi.ResourceOptions(depends_on=ready_for_workloads),
    )
    workbench_exec = builder.exec_command
    envoy = EnvoyBuild(
        "envoy",
        EnvoyBuildArgs(
            placement=placement,
            builder_exec=builder.exec_command,
            bazel_build_args=config.bazel_build_args,
            compilation_mode=config.compilation_mode,
            build_envoy=config.build_envoy,
            source_commit=workspace.commit,
        ),
    )
registry_pull_port = REGISTRY_CONTAINER_PORT if node_access.by_docker else config.registry_port
registry = Registry(
    "registry",
    RegistryArgs(
        placement=placement,
        port=config.registry_port,
        pull_host=config.registry_pull_host,
        pull_port=registry_pull_port,
        container_name=config.registry_container,
        node_network=network_name if node_access.by_docker else None,
    ),
    opts=pulumi.ResourceOptions(depends_on=ready_for_workloads),
)
debug_image = DebugImage(
    "debug-image",
    DebugImageArgs(
        placement=placement,
        workbench_exec=workbench_exec,
        elf=envoy.elf,
        build_id=envoy.build_id,
        istio_version=config.istio_version,
        strip=config.strip_target_binary,
        push_address=registry.push_address,
        pull_address=registry.pull_address,
    ),
    # The push needs the registry running.
    opts=pulumi.ResourceOptions(depends_on=[registry]),
)
containerd_mirror = ContainerdMirror(
    "containerd-mirror",
    ContainerdMirrorArgs(
        nodes=config.nodes,
        access=node_access,
        registry_host=config.registry_pull_host,
        registry_port=registry_pull_port,
    ),
    opts=pulumi.ResourceOptions(depends_on=nodes_ready),
)
target = Target(
    "target",
    TargetArgs(
        workload=Workload(
            namespace=config.namespace,
            name=config.workload,
            proxy_image=debug_image.pull_reference,
            app_uid=config.app_uid,
            debugger_ports=config.debugger_ports,
            target_node_name=config.target_node_name,
            proxy_memory=config.proxy_memory,
            proxy_memory_limit=config.proxy_memory_limit,
        ),
        mode=config.mode,
        create_namespace=config.create_namespace,
        kubeconfig_file=config.kubeconfig_file,
        target=config.target,
    ),
    # The nodes must be able to pull the debug image before the pod asks for it, and istiod must inject it.
    opts=pulumi.ResourceOptions.merge(cluster_options,
                                      pulumi.ResourceOptions(depends_on=[containerd_mirror, *injector_ready])),
)
if placement.in_cluster:
    # lldbServerListenAll is required there: code-server's address moves with its pod.
    debugger_peer = None
elif node_access.by_docker:
    # The container itself, on the nodes' network.
    debugger_peer = debugger.address
elif node_access.by_kubernetes:
    # The port-forward, which connects on the node's loopback.
    debugger_peer = LOOPBACK
else:
    # The developer host behind Docker's NAT, over SSH.
    debugger_peer = config.registry_host
lldb_server = LldbServer(
    "lldb-server",
    LldbServerArgs(
        # With kubernetes the node the target pod is pinned to, or else (None) the one it was scheduled on.
        node=config.target_node_name if node_access.by_kubernetes else config.target_node_address,
        # The one peer lldb-server accepts: the debugger as the node sees it.
        debugger_address=debugger_peer,
        listen_all=config.lldb_server_listen_all,
        access=node_access,
        pod=target.pod_name,
        namespace=config.namespace,
        # attach: the running Envoy; startup: istio-proxy's waiting process, in whose namespaces Envoy will run.
        process_name="envoy" if config.mode == "attach" else PROXY_WAIT_PROCESS,
        ports=config.debugger_ports,
        instance=f"{config.project}-{config.stack}",
        restart_on=[debug_image.pull_reference, target.pod_name, target.pod_revision],
        node_network=network_name if node_access.by_docker else None,
        node_created=[kind.cluster_id] if kind else [],
    ),
    opts=pulumi.ResourceOptions(depends_on=nodes_ready),
)
launch = launch_outputs(
    mode=config.mode, pod=target.pod_name, elf=envoy.elf, source_map=envoy.source_map,
    connect_url=lldb_server.connect_url, pid=lldb_server.pid,
)
resolve_launch_json(launch.launch_json)
# On the host the debugger container opens /work: its .vscode/launch.json gets the configurations (in the
# cluster code-server's workspace file carries them).
launch_file = None if placement.in_cluster else LaunchFile(
    "launch-file", LaunchFileArgs(layout=placement.layout, launch_json=launch.launch_json))

pulumi.export("cluster", config.kind_cluster_name)
pulumi.export("kubeconfigFile", config.kubeconfig_file)
pulumi.export("sourceCommit", workspace.commit)
pulumi.export("envoySource", config.envoy_source)
pulumi.export("builderContainer", builder.target if builder else None)
pulumi.export("dockerNetwork", network_name)
pulumi.export("envoyElf", envoy.elf)
pulumi.export("envoyElfHostPath", envoy.elf_host_path)
pulumi.export("envoyDwp", envoy.dwp if config.prebuilt else None)
pulumi.export("envoyCheckout", envoy.envoy_checkout if config.prebuilt else None)
pulumi.export("envoyCommit", envoy.envoy_commit if config.prebuilt else None)
pulumi.export("bazelExecroot", None if config.prebuilt else envoy.execroot)
pulumi.export("bazelExecrootHostPath", None if config.prebuilt else envoy.execroot_host_path)
pulumi.export("envoyBuildId", envoy.build_id)
pulumi.export("registryPushAddress", registry.push_address)
pulumi.export("registryPullAddress", registry.pull_address)
pulumi.export("debugImage", debug_image.pull_reference)
pulumi.export("debugImagePushed", debug_image.pushed_reference)
pulumi.export("debugImageEnvoyBytes", debug_image.shipped_envoy_bytes)
pulumi.export("debuggerContainer", debugger.container_name)
pulumi.export("debuggerAttachConfig", debugger.attach_config)
pulumi.export("debuggerAttachConfigPath", debugger.attach_config_path)
pulumi.export("codeServerUrl", debugger.code_server_url)
pulumi.export("codeServerPortForward", debugger.code_server_port_forward)
pulumi.export("containerdMirror", containerd_mirror.summaries)
pulumi.export("connectUrl", lldb_server.connect_url)
pulumi.export("lldbServerPortForward", lldb_server.port_forward_command)
pulumi.export("debuggerPorts", list(config.debugger_ports.all))
pulumi.export("launchJson", launch.launch_json)
pulumi.export("launchJsonFile", launch_file.path if launch_file else None)
pulumi.export("lldbCommands", launch.lldb_commands)
pulumi.export("podName", target.pod_name)
pulumi.export("startCommand", target.start_command)
pulumi.export("portForwardCommand", target.port_forward_command)
if target.request_command is not None:
    pulumi.export("requestCommand", target.request_command)
