"""S10 without copy and paste (placement host): the stack's launch configurations in the launch.json that VS
Code reads when it opens /work in the debugger container, beside the developer's own.

components/scripts/launch-json-file.py does the file work on the developer host: a merge by name on `up`, the
original kept byte for byte, and on `destroy` the original back (or, after the developer's own edits, only the
stack's configurations taken out).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

import pulumi
import pulumi_command.local as local

from components.options import child_options
from components.scripts import script
from components.workspace import CONTAINER_SOURCE_DIR, WorkspaceLayout

LAUNCH_FILE_IN_WORKSPACE = f"{CONTAINER_SOURCE_DIR}/.vscode/launch.json"


def launch_file_command(action: str) -> str:
    """The developer host's python3 running the script (its text, so a change shows in the preview)."""
    return shlex.join(["python3", "-c", script("launch-json-file.py"), action])


@dataclass
class LaunchFileArgs:
    layout: WorkspaceLayout
    launch_json: pulumi.Input[str]


class LaunchFile(pulumi.ComponentResource):
    """`workDir/work/.vscode/launch.json` with the stack's configurations merged in; `path` is that file."""

    path: pulumi.Output[str]

    def __init__(self, name: str, args: LaunchFileArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("istio-proxy-debug:launch_file:LaunchFile", name, None, opts)
        path = args.layout.host_path(LAUNCH_FILE_IN_WORKSPACE)
        local.Command(
            f"{name}-merge",
            create=launch_file_command("write"),
            delete=launch_file_command("restore"),
            environment={"LAUNCH_FILE": path, "LAUNCH_JSON": args.launch_json},
            opts=child_options(self, opts),
        )
        self.path = pulumi.Output.from_input(path)
        self.register_outputs({"path": self.path})
