"""S9: the debugger — the container `lldb-vscode-server` that VS Code attaches to, or code-server in the cluster.

On the host, as in the walkthrough, it is privileged, on the builder's network (with nodeAccess kubernetes, on
the host's, where the port-forward to lldb-server listens), and mounts the source and the
bazel cache at the builder's paths (/work, /home/.cache), so the paths in the debug info resolve in it too.
Its image carries the lldb client and clangd rather than the target's debug image, which now holds only
lldb-server. The VS Code "attached container configuration" it outputs opens /work with CodeLLDB and
clangd installed, so attaching needs no manual set-up.

In the cluster, VS Code itself runs there as code-server: one pod mounting the workspace volume at the same
paths, with CodeLLDB and clangd, and the stack's attach configurations in a workspace file of its own, so
the developer opens a URL (through a port-forward) instead of touching the source tree. It is not
privileged: CodeLLDB only connects out to lldb-server on the node, which does the ptrace.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_docker as docker
import pulumi_kubernetes as k8s
from pulumi_command import local

from components.builder import workspace_mounts
from components.options import child_options
from components.placement import Placement, bind_mount
from components.scripts import dockerfile, script
from components.workspace import CONTAINER_CACHE_DIR, CONTAINER_SOURCE_DIR, WorkspaceLayout

DOCKERFILE = "debugger.Dockerfile"
PLATFORM = "linux/amd64"
# Pinned as code-server installs them, from Open VSX. Both versions are in a VSCodium server's extension list
# (VSCodium installs from Open VSX too). CodeLLDB's Open VSX package fetches its lldb (the platform package)
# from the project's GitHub release on first use, into the same extensions folder on the volume.
EXTENSION_VERSIONS = {"vadimcn.vscode-lldb": "1.12.1", "llvm-vs-code-extensions.vscode-clangd": "0.4.0"}
EXTENSIONS = tuple(EXTENSION_VERSIONS)
# Where VS Code's Dev Containers extension reads per-container settings, below its user data folder.
ATTACH_CONFIG_DIR = "globalStorage/ms-vscode-remote.remote-containers/nameConfigs"

# code-server 4.109.2 (Code 1.109.2), from code-server's CHANGELOG.md; the plain tag is its Debian 12 image
# (ci/release-image/docker-bake.hcl), whose apt has clangd.
CODE_SERVER_IMAGE = "docker.io/codercom/code-server:4.109.2"
CODE_SERVER_NAME = "code-server"
CODE_SERVER_PORT = 8080
START_SCRIPT = "code-server-start.sh"
FIRST_START_TIMEOUT = "30m"
PASSWORD_SECRET = f"{CODE_SERVER_NAME}-password"
PASSWORD_KEY = "password"
# Extensions, user data and apt's downloads, on the volume: a restarted pod installs nothing again.
STATE_DIR = posixpath.join(CONTAINER_CACHE_DIR, "istio-proxy-debug", "code-server")
WORKSPACE_DIR = "/etc/istio-proxy-debug"
WORKSPACE_FILE = "istio-proxy.code-workspace"
WORKSPACE_CONFIGMAP = f"{CODE_SERVER_NAME}-workspace"
# /work holds bazel's convenience symlinks into the whole cache: neither watch nor search through them.
WORKSPACE_SETTINGS = {"files.watcherExclude": {"**/bazel-*/**": True}, "search.followSymlinks": False}


def debugger_image_tag(dockerfile_text: str) -> str:
    """A tag that changes with the Dockerfile, so a new Dockerfile is a new image."""
    return "istio-proxy-debugger:" + hashlib.sha256(dockerfile_text.encode()).hexdigest()[:12]


def attach_config(workspace_folder: str = CONTAINER_SOURCE_DIR) -> dict:
    """VS Code's attached-container configuration for the debugger container."""
    return {"workspaceFolder": workspace_folder, "extensions": list(EXTENSIONS), "remoteUser": "root"}


def code_server_workspace_file(launch_json_text: str) -> str:
    """A multi-root workspace of /work whose launch configurations are the stack's launch.json."""
    return json.dumps({"folders": [{"path": CONTAINER_SOURCE_DIR}], "launch": json.loads(launch_json_text),
                       "settings": WORKSPACE_SETTINGS}, indent=2)


def code_server_workspace_configmap(placement: Placement, workspace_file: pulumi.Input[str]) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": placement.metadata(WORKSPACE_CONFIGMAP, app=CODE_SERVER_NAME),
        "data": {WORKSPACE_FILE: workspace_file},
    }


def code_server_secret(placement: Placement, password: pulumi.Input[str]) -> dict:
    """The password, as given (pulumi_kubernetes makes a Secret's data a Pulumi secret in the state)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": placement.metadata(PASSWORD_SECRET, app=CODE_SERVER_NAME),
        "type": "Opaque",
        "stringData": {PASSWORD_KEY: password},
    }


def code_server_statefulset(placement: Placement, start_script: str) -> dict:
    """One code-server pod, `code-server-0`, with the workspace where the builder has it."""
    container = {
        "name": CODE_SERVER_NAME,
        "image": CODE_SERVER_IMAGE,
        # dumb-init (in the image) forwards the kubelet's SIGTERM to code-server, which the script execs.
        "command": ["dumb-init", "--", "bash", "-c", start_script, START_SCRIPT,
                    *(f"{extension}@{version}" for extension, version in EXTENSION_VERSIONS.items())],
        "workingDir": CONTAINER_SOURCE_DIR,
        "env": [
            {"name": "STATE_DIR", "value": STATE_DIR},
            {"name": "CODE_SERVER_PORT", "value": str(CODE_SERVER_PORT)},
            {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": PASSWORD_SECRET, "key": PASSWORD_KEY}}},
        ],
        "ports": [{"name": "http", "containerPort": CODE_SERVER_PORT, "protocol": "TCP"}],
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": CODE_SERVER_PORT}},
        # Root, as the walkthrough's debugger container: apt installs clangd, and lldb writes its index cache
        # into the root-owned bazel cache folder. Not privileged: no ptrace happens here.
        "securityContext": {"runAsUser": 0, "runAsGroup": 0, "privileged": False},
        "volumeMounts": [*placement.workspace_mounts(),
                         {"name": "workspace-file", "mountPath": WORKSPACE_DIR, "readOnly": True}],
    }
    # A directory mount, not subPath: kubelet rewrites the file in place when the launch configurations
    # change (a new pid). Optional: code-server starts before the build has produced them.
    workspace_file = {"name": "workspace-file",
                      "configMap": {"name": WORKSPACE_CONFIGMAP, "optional": True}}
    return placement.one_pod_workload("StatefulSet", CODE_SERVER_NAME, [container], [workspace_file],
                                      serviceName=CODE_SERVER_NAME)


def code_server_service(placement: Placement) -> dict:
    return placement.service(CODE_SERVER_NAME, "ClusterIP", CODE_SERVER_PORT)


def code_server_port_forward(namespace: str, service: str) -> str:
    return f"kubectl port-forward --namespace {namespace} service/{service} {CODE_SERVER_PORT}:{CODE_SERVER_PORT}"


def code_server_url() -> str:
    """code-server through the port-forward, opening the workspace file."""
    return f"http://localhost:{CODE_SERVER_PORT}/?workspace={posixpath.join(WORKSPACE_DIR, WORKSPACE_FILE)}"


@dataclass
class DebuggerArgs:
    placement: Placement
    # host only
    container_name: str
    network_name: pulumi.Input[str | None]
    # host only: on the developer host's own network instead (nodeAccess kubernetes: its loopback is where
    # `kubectl port-forward` takes lldb-server's ports).
    host_network: bool = False
    # host only: a folder of the developer host the container also sees, read-only at the same path (a
    # file:// prebuiltBaseUrl, which the download reads in the container).
    mirror_folder: str | None = None
    # cluster only: the password guarding code-server, and the stack's launch.json text.
    code_server_password: pulumi.Input[str] | None = None
    launch_json: pulumi.Input[str] | None = None


def debugger_mounts(layout: WorkspaceLayout, mirror_folder: str | None) -> list[docker.ContainerMountArgs]:
    """The builder's mounts (the workspace at the paths the debug info refers to), and the mirror folder."""
    mirror = [] if mirror_folder is None else [bind_mount(mirror_folder, mirror_folder, read_only=True)]
    return [*workspace_mounts(layout), *mirror]


class Debugger(pulumi.ComponentResource):
    """`container_name` is the container, or the code-server pod; the attach configuration is the host's,
    the code-server URL and port-forward the cluster's (None elsewhere). Both mount the workspace where the
    builder does, so with no builder (envoySource prebuilt) the stack's scripts run here (`exec_command`)."""

    container_name: pulumi.Output[str]
    # host: the container's address on its network; None in the cluster (code-server's pod address moves).
    address: pulumi.Output[str | None]
    attach_config: pulumi.Output[str | None]
    attach_config_path: pulumi.Output[str | None]
    code_server_url: pulumi.Output[str | None]
    code_server_port_forward: pulumi.Output[str | None]

    def __init__(self, name: str, args: DebuggerArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("istio-proxy-debug:debugger:Debugger", name, None, opts)
        self._placement = args.placement
        if args.placement.in_cluster:
            self._code_server(name, args, opts)
        else:
            self._container(name, args, opts)
        self.register_outputs({
            "containerName": self.container_name,
            "attachConfig": self.attach_config,
            "attachConfigPath": self.attach_config_path,
            "codeServerUrl": self.code_server_url,
            "codeServerPortForward": self.code_server_port_forward,
        })

    def _container(self, name: str, args: DebuggerArgs, opts: pulumi.ResourceOptions | None) -> None:
        text = dockerfile(DOCKERFILE)
        image = local.Command(
            f"{name}-image",
            create=script("build-debugger-image.sh"),
            interpreter=["/bin/bash", "-c"],
            stdin=text,
            environment={"IMAGE": debugger_image_tag(text), "PLATFORM": PLATFORM},
            opts=child_options(self, opts),
        )
        container = docker.Container(
            f"{name}-container",
            name=args.container_name,
            hostname=args.container_name,
            image=image.stdout.apply(lambda out: out.strip()),
            init=True,
            privileged=True,
            **({"network_mode": "host"} if args.host_network else
               {"networks_advanced": [docker.ContainerNetworksAdvancedArgs(name=args.network_name)]}),
            mounts=debugger_mounts(args.placement.layout, args.mirror_folder),
            working_dir=CONTAINER_SOURCE_DIR,
            entrypoints=["/bin/bash"],
            command=["-c", "/bin/sleep 300d"],
            opts=child_options(self, opts, delete_before_replace=True),
        )
        self.container_name = container.name
        # Where its connections come from on its network (with nodeAccess docker the nodes' own, so no NAT between);
        # on the host's network, none of its own.
        self.address = pulumi.Output.from_input(None) if args.host_network else container.network_datas.apply(
            lambda networks: networks[0].ip_address)
        self.attach_config = pulumi.Output.from_input(json.dumps(attach_config(), indent=2))
        self.attach_config_path = container.name.apply(lambda n: f"{ATTACH_CONFIG_DIR}/{n}.json")
        self.code_server_url = pulumi.Output.from_input(None)
        self.code_server_port_forward = pulumi.Output.from_input(None)

    def _code_server(self, name: str, args: DebuggerArgs, opts: pulumi.ResourceOptions | None) -> None:
        placement = args.placement
        secret = code_server_secret(placement, args.code_server_password)
        password = k8s.core.v1.Secret(
            f"{name}-password", metadata=secret["metadata"], type=secret["type"], string_data=secret["stringData"],
            opts=child_options(self, opts),
        )
        configmap = code_server_workspace_configmap(
            placement, pulumi.Output.from_input(args.launch_json).apply(code_server_workspace_file))
        workspace = k8s.core.v1.ConfigMap(
            f"{name}-workspace", metadata=configmap["metadata"], data=configmap["data"],
            # A fixed name the pod mounts: a new pid replaces it under the running pod.
            opts=child_options(self, opts, delete_before_replace=True),
        )
        manifest = code_server_statefulset(placement, script(START_SCRIPT))
        statefulset = k8s.apps.v1.StatefulSet(
            f"{name}-statefulset", metadata=manifest["metadata"], spec=manifest["spec"],
            # The container reads its password from the Secret when it starts; its first start installs
            # clangd and the extensions before it is ready.
            opts=pulumi.ResourceOptions.merge(
                child_options(self, opts, custom_timeouts=pulumi.CustomTimeouts(create=FIRST_START_TIMEOUT,
                                                                                 update=FIRST_START_TIMEOUT)),
                pulumi.ResourceOptions(depends_on=[password]),
            ),
        )
        service = code_server_service(placement)
        created = k8s.core.v1.Service(
            f"{name}-service", metadata=service["metadata"], spec=service["spec"], opts=child_options(self, opts),
        )
        self.container_name = statefulset.metadata.apply(lambda m: f"{m.name}-0")
        self.address = pulumi.Output.from_input(None)
        self.attach_config = pulumi.Output.from_input(None)
        self.attach_config_path = pulumi.Output.from_input(None)
        # The URL opens the workspace file: it is given once the file's ConfigMap exists.
        self.code_server_url = workspace.metadata.apply(lambda _: code_server_url())
        self.code_server_port_forward = created.metadata.apply(lambda m: code_server_port_forward(m.namespace, m.name))

    def exec_command(self, env_keys: Sequence[str]) -> pulumi.Output[str]:
        """The command that runs a script on stdin in the debugger container or the code-server pod, passing
        on these variables of its own environment; it waits for the debugger to be up."""
        return self.container_name.apply(
            lambda target: self._placement.script_exec(target, list(env_keys), container=CODE_SERVER_NAME))
