"""istio-proxy-debug: remote source-level debugging of Envoy in an Istio sidecar, waypoint or gateway, as one stack."""

import signal

import pulumi

from components.attach_to import parse_attach_to
from components.attached_pod import AttachedPod, AttachedPodArgs
from components.builder import Builder, BuilderArgs, pinned_builder_image
from components.config import StackConfig, load_config
from components.containerd_mirror import ContainerdMirror, ContainerdMirrorArgs
from components.debug_image import DebugImage, DebugImageArgs, base_image
from components.debugger import Debugger, DebuggerArgs
from components.docker_daemon import require_docker
from components.envoy_build import EnvoyBuild, EnvoyBuildArgs
from components.istio import Istio, IstioArgs
from components.kind_cluster import KindCluster, KindClusterArgs
from components.launch import LLDB_MODULE_CACHE_DIR, in_place_outputs, launch_outputs, symbols_verdict
from components.launch_file import LaunchFile, LaunchFileArgs
from components.lldb_server import InPlace, LldbServer, LldbServerArgs, LldbServerBundle, LldbServerBundleArgs
from components.network import DockerNetwork, DockerNetworkArgs
from components.node_access import NodeAccess
from components.node_agent import LOOPBACK, NodeAgents, NodeAgentsArgs
from components.placement import Placement
from components.prebuilt_envoy import SYMBOL_ARTIFACT, SYMBOLS_DIR, PrebuiltEnvoy, PrebuiltEnvoyArgs
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


def deployed_target(config: StackConfig) -> dict:
    """The walkthrough's way: the stack deploys the target, with the debug image, and debugs its Envoy."""
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
            code_server_password=(pulumi.Output.secret(config.code_server_password)
                                  if config.code_server_password else None),
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

    outputs = {
        "cluster": config.kind_cluster_name,
        "kubeconfigFile": config.kubeconfig_file,
        "sourceCommit": workspace.commit,
        "envoySource": config.envoy_source,
        "builderContainer": builder.target if builder else None,
        "dockerNetwork": network_name,
        "envoyElf": envoy.elf,
        "envoyElfHostPath": envoy.elf_host_path,
        "envoyDwp": envoy.dwp if config.prebuilt else None,
        "envoyCheckout": envoy.envoy_checkout if config.prebuilt else None,
        "envoyCommit": envoy.envoy_commit if config.prebuilt else None,
        "bazelExecroot": None if config.prebuilt else envoy.execroot,
        "bazelExecrootHostPath": None if config.prebuilt else envoy.execroot_host_path,
        "envoyBuildId": envoy.build_id,
        "registryPushAddress": registry.push_address,
        "registryPullAddress": registry.pull_address,
        "debugImage": debug_image.pull_reference,
        "debugImagePushed": debug_image.pushed_reference,
        "debugImageEnvoyBytes": debug_image.shipped_envoy_bytes,
        "debuggerContainer": debugger.container_name,
        "debuggerAttachConfig": debugger.attach_config,
        "debuggerAttachConfigPath": debugger.attach_config_path,
        "codeServerUrl": debugger.code_server_url,
        "codeServerPortForward": debugger.code_server_port_forward,
        "containerdMirror": containerd_mirror.summaries,
        "connectUrl": lldb_server.connect_url,
        "lldbServerPortForward": lldb_server.port_forward_command,
        "debuggerPorts": list(config.debugger_ports.all),
        "launchJson": launch.launch_json,
        "launchJsonFile": launch_file.path if launch_file else None,
        "lldbCommands": launch.lldb_commands,
        "podName": target.pod_name,
        "startCommand": target.start_command,
        "portForwardCommand": target.port_forward_command,
    }
    if target.request_command is not None:
        outputs["requestCommand"] = target.request_command
    return outputs


def debugged_in_place(config: StackConfig) -> dict:
    """attachTo: the Envoy already running in a pod, debugged where it runs. Nothing of the pod changes and nothing
    is made in its namespace: lldb-server on its node (through nodeAccess), the debugger, launch.json; and Istio's
    symbols for the release its image names, loaded when they are the running Envoy's code."""
    target = parse_attach_to(config.attach_to)
    pod = AttachedPod("attached-pod", AttachedPodArgs(target=target, fallback_version=config.istio_version,
                                                      kubeconfig_file=config.kubeconfig_file))
    agents = NodeAgents("node-agents", NodeAgentsArgs(
        nodes=(), attached_node=pod.node, namespace=config.physical_name(NODE_AGENT_NAMESPACE),
        image=base_image(config.istio_version), instance=f"{config.project}-{config.stack}",
    )) if config.node_access == "kubernetes" else None
    node_access = NodeAccess(config.node_access, agents=agents, kubeconfig_file=config.kubeconfig_file,
                             port_forwarded=agents is not None)
    placement = Placement.host(config.work_dir)
    # istio/proxy at the tag of the pod's release: the symbols' <SHA> and their source.
    workspace = Workspace("workspace", WorkspaceArgs(
        repository=config.source_repository, tag=pod.istio_version, layout=placement.layout))
    network_name = config.node_network if node_access.by_docker else None
    launch_json_text, resolve_launch_json = pulumi.deferred_output()
    debugger = Debugger("debugger", DebuggerArgs(
        placement=placement, container_name=config.physical_name("lldb-vscode-server"), network_name=network_name,
        host_network=node_access.by_kubernetes, mirror_folder=local_folder(config.prebuilt_base_url),
        launch_json=launch_json_text,
    ), opts=pulumi.ResourceOptions(depends_on=[workspace]))
    symbols = PrebuiltEnvoy("release-envoy", PrebuiltEnvoyArgs(
        placement=placement, workbench_exec=debugger.exec_command, istio_version=pod.istio_version,
        source_commit=workspace.commit, base_url=config.prebuilt_base_url, envoy_repository=config.envoy_repository,
        artifact=SYMBOL_ARTIFACT, dest_dir=SYMBOLS_DIR, missing_ok=True,
    ))
    bundle = LldbServerBundle("lldb-server-bundle", LldbServerBundleArgs(
        workbench_exec=debugger.exec_command, layout=placement.layout))
    lldb_server = LldbServer("lldb-server", LldbServerArgs(
        node=pod.node,
        # The port-forward connects on the node's loopback; with docker, the debugger container on the nodes' network.
        debugger_address=LOOPBACK if node_access.by_kubernetes else debugger.address,
        listen_all=config.lldb_server_listen_all, access=node_access, pod=target.pod, namespace=target.namespace,
        process_name="envoy", ports=config.debugger_ports, instance=f"{config.project}-{config.stack}",
        restart_on=[pod.revision], node_network=network_name,
        in_place=InPlace(container_id=pod.container_id, bundle_host_dir=bundle.host_dir,
                         bundle_digest=bundle.digest,
                         module_cache_host_dir=placement.layout.host_path(LLDB_MODULE_CACHE_DIR)),
    ))
    verdict = pulumi.Output.all(symbols.missing, symbols.elf, symbols.text_digest, lldb_server.text_digest,
                                lldb_server.load_slide).apply(
        lambda v: symbols_verdict(artifact=SYMBOL_ARTIFACT, missing=v[0], elf=v[1], symbol_digest=v[2],
                                  running_digest=v[3], slide=v[4]))
    # Said while `up` runs, and kept as the `symbols` output.
    verdict.apply(lambda v: pulumi.log.info(v.line))
    launch = in_place_outputs(pod=target.pod, connect_url=lldb_server.connect_url, pid=lldb_server.pid,
                              source_map=symbols.source_map, verdict=verdict)
    resolve_launch_json(launch.launch_json)
    launch_file = LaunchFile("launch-file", LaunchFileArgs(layout=placement.layout, launch_json=launch.launch_json))
    loaded = verdict.apply(lambda v: v.symbols is not None)
    return {
        "attachedPod": str(target),
        "attachedNode": pod.node,
        "attachedImage": pod.image,
        "istioVersion": pod.istio_version,
        "sourceCommit": workspace.commit,
        "symbols": verdict.apply(lambda v: v.line),
        "envoyElf": pulumi.Output.all(loaded, symbols.elf).apply(lambda v: v[1] if v[0] else None),
        "envoyElfHostPath": pulumi.Output.all(loaded, symbols.elf_host_path).apply(lambda v: v[1] if v[0] else None),
        "envoyDwp": pulumi.Output.all(loaded, symbols.dwp).apply(lambda v: v[1] if v[0] else None),
        "envoyCheckout": symbols.envoy_checkout,
        "envoyCommit": symbols.envoy_commit,
        "dockerNetwork": network_name,
        "debuggerContainer": debugger.container_name,
        "debuggerAttachConfig": debugger.attach_config,
        "debuggerAttachConfigPath": debugger.attach_config_path,
        "connectUrl": lldb_server.connect_url,
        "lldbServerPortForward": lldb_server.port_forward_command,
        "debuggerPorts": list(config.debugger_ports.all),
        "launchJson": launch.launch_json,
        "launchJsonFile": launch_file.path,
        "lldbCommands": launch.lldb_commands,
        "podName": target.pod,
    }


config = load_config()
if config.placement == "host":
    # The host's containers, network and images go through pulumi-docker, whose provider fails with a page of
    # traceback when no daemon answers, even in a preview: stop first with one line that says where and what to do.
    require_docker()
for key, value in (debugged_in_place(config) if config.attach_to else deployed_target(config)).items():
    pulumi.export(key, value)
