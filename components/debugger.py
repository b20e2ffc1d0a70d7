"""S9: the debugger container `lldb-vscode-server` that VS Code attaches to.

As in the walkthrough it is privileged, on the builder's network, and mounts the source and the bazel
cache at the builder's paths (/work, /home/.cache), so the paths in the debug info resolve in it too.
Its image carries the lldb client and clangd rather than the target's debug image, which now holds only
lldb-server. The VS Code "attached container configuration" it outputs opens /work with CodeLLDB and
clangd installed, so attaching needs no manual set-up.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import pulumi
import pulumi_docker as docker
from pulumi_command import local

from components.builder import workspace_volumes
from components.scripts import dockerfile, script
from components.workspace import CONTAINER_SOURCE_DIR, WorkspaceLayout

DOCKERFILE = "debugger.Dockerfile"
PLATFORM = "linux/amd64"
EXTENSIONS = ("vadimcn.vscode-lldb", "llvm-vs-code-extensions.vscode-clangd")
# Where VS Code's Dev Containers extension reads per-container settings, below its user data folder.
ATTACH_CONFIG_DIR = "globalStorage/ms-vscode-remote.remote-containers/nameConfigs"


def debugger_image_tag(dockerfile_text: str) -> str:
    """A tag that changes with the Dockerfile, so a new Dockerfile is a new image."""
    return "istio-proxy-debugger:" + hashlib.sha256(dockerfile_text.encode()).hexdigest()[:12]


def attach_config(workspace_folder: str = CONTAINER_SOURCE_DIR) -> dict:
    """VS Code's attached-container configuration for the debugger container."""
    return {"workspaceFolder": workspace_folder, "extensions": list(EXTENSIONS), "remoteUser": "root"}


@dataclass
class DebuggerArgs:
    container_name: str
    network_name: pulumi.Input[str]
    layout: WorkspaceLayout


class Debugger(pulumi.ComponentResource):
    container_name: pulumi.Output[str]
    attach_config: pulumi.Output[str]
    attach_config_path: pulumi.Output[str]

    def __init__(self, name: str, args: DebuggerArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("istio-proxy-debug:debugger:Debugger", name, None, opts)
        text = dockerfile(DOCKERFILE)
        image = local.Command(
            f"{name}-image",
            create=script("build-debugger-image.sh"),
            interpreter=["/bin/bash", "-c"],
            stdin=text,
            environment={"IMAGE": debugger_image_tag(text), "PLATFORM": PLATFORM},
            opts=pulumi.ResourceOptions(parent=self),
        )
        container = docker.Container(
            f"{name}-container",
            name=args.container_name,
            hostname=args.container_name,
            image=image.stdout.apply(lambda out: out.strip()),
            init=True,
            privileged=True,
            networks_advanced=[docker.ContainerNetworksAdvancedArgs(name=args.network_name)],
            volumes=workspace_volumes(args.layout),
            working_dir=CONTAINER_SOURCE_DIR,
            entrypoints=["/bin/bash"],
            command=["-c", "/bin/sleep 300d"],
            opts=pulumi.ResourceOptions(parent=self, delete_before_replace=True),
        )
        self.container_name = container.name
        self.attach_config = pulumi.Output.from_input(json.dumps(attach_config(), indent=2))
        self.attach_config_path = container.name.apply(lambda n: f"{ATTACH_CONFIG_DIR}/{n}.json")
        self.register_outputs({
            "containerName": self.container_name,
            "attachConfig": self.attach_config,
            "attachConfigPath": self.attach_config_path,
        })
