"""S1: the workspace under workDir — the istio/proxy source, the bazel cache and the registry data.

Everything here took hours to make, so nothing here is ever deleted: the command has no delete step,
and `pulumi destroy` leaves the folders as they are.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

import pulumi
from pulumi_command import local

from components.scripts import script

# Where the builder (and later the debugger) sees the folders, as in the walkthrough's `docker run -v`.
CONTAINER_SOURCE_DIR = "/work"
CONTAINER_CACHE_DIR = "/home/.cache"


@dataclass(frozen=True)
class WorkspaceLayout:
    """The folders under workDir, and how the containers see them."""

    work_dir: str

    @property
    def source_dir(self) -> str:
        return posixpath.join(self.work_dir, "work")

    @property
    def cache_dir(self) -> str:
        return posixpath.join(self.work_dir, "home", ".cache")

    @property
    def registry_dir(self) -> str:
        return posixpath.join(self.work_dir, "registry")

    def container_mounts(self) -> list[tuple[str, str]]:
        """(host folder, container folder) pairs shared by every container that reads the build."""
        return [(self.source_dir, CONTAINER_SOURCE_DIR), (self.cache_dir, CONTAINER_CACHE_DIR)]

    def host_path(self, container_path: str) -> str:
        """The developer-host path of a path inside a container that has `container_mounts()`."""
        for host, mounted in self.container_mounts():
            if container_path == mounted or container_path.startswith(mounted + "/"):
                return host + container_path[len(mounted):]
        raise ValueError(f"{container_path} is under none of the workspace mounts {self.container_mounts()}")


@dataclass
class WorkspaceArgs:
    layout: WorkspaceLayout
    repository: str
    tag: str


class Workspace(pulumi.ComponentResource):
    """Clones istio/proxy at the tag (checks it out when the tag changes) and creates the cache folders."""

    commit: pulumi.Output[str]

    def __init__(self, name: str, args: WorkspaceArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("istio-proxy-debug:workspace:Workspace", name, None, opts)
        layout = args.layout
        prepare = local.Command(
            f"{name}-prepare",
            create=script("prepare-workspace.sh"),
            interpreter=["/bin/bash", "-c"],
            environment={
                "SOURCE_DIR": layout.source_dir,
                "SOURCE_REPOSITORY": args.repository,
                "SOURCE_TAG": args.tag,
                "CACHE_DIR": layout.cache_dir,
                "REGISTRY_DIR": layout.registry_dir,
            },
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.layout = layout
        self.commit = prepare.stdout.apply(lambda out: out.strip())
        self.register_outputs({"commit": self.commit})
