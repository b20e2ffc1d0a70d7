"""S1: the workspace under workDir — the istio/proxy source, the bazel cache and the registry data.

Everything here took hours to make, so nothing here is ever deleted: the command has no delete step,
and `pulumi destroy` leaves the folders as they are.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s
from pulumi_command import local

from components.options import child_options
from components.scripts import script

# Where the builder (and later the debugger) sees the folders, as in the walkthrough's `docker run -v`.
CONTAINER_SOURCE_DIR = "/work"
CONTAINER_CACHE_DIR = "/home/.cache"


@dataclass(frozen=True)
class WorkspaceLayout:
    """The workspace's folders, and how the builder and debugger see them.

    `root` is workDir on the developer host; in the cluster it is "", and the folders are paths relative
    to the workspace volume (the subPaths the pods mount).
    """

    root: str

    @property
    def source_dir(self) -> str:
        return posixpath.join(self.root, "work")

    @property
    def cache_dir(self) -> str:
        return posixpath.join(self.root, "home", ".cache")

    @property
    def registry_dir(self) -> str:
        return posixpath.join(self.root, "registry")

    def container_mounts(self) -> list[tuple[str, str]]:
        """(storage folder, container folder) pairs shared by every workload that reads the build."""
        return [(self.source_dir, CONTAINER_SOURCE_DIR), (self.cache_dir, CONTAINER_CACHE_DIR)]

    def host_path(self, container_path: str) -> str:
        """Where a path inside the builder or debugger lives in the workspace storage (host folder or volume)."""
        for host, mounted in self.container_mounts():
            if container_path == mounted or container_path.startswith(mounted + "/"):
                return host + container_path[len(mounted):]
        raise ValueError(f"{container_path} is under none of the workspace mounts {self.container_mounts()}")


@dataclass
class WorkspaceArgs:
    repository: str
    tag: str
    # host: the folders under workDir, prepared on the developer host before any container mounts them.
    layout: WorkspaceLayout | None = None
    # cluster: the checkout runs in a pod that mounts the workspace volume (Builder.exec_command, or the
    # debugger's when there is no builder).
    workbench_exec: Callable[[list[str]], pulumi.Input[str]] | None = None


class Workspace(pulumi.ComponentResource):
    """Clones istio/proxy at the tag (checks it out when the tag changes) and creates the cache folders; reports
    the commit and the builder image the checkout pins."""

    commit: pulumi.Output[str]
    builder_image: pulumi.Output[str | None]

    def __init__(self, name: str, args: WorkspaceArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("istio-proxy-debug:workspace:Workspace", name, None, opts)
        environment = {"SOURCE_REPOSITORY": args.repository, "SOURCE_TAG": args.tag}
        if args.workbench_exec is None:
            environment.update(SOURCE_DIR=args.layout.source_dir, CACHE_DIR=args.layout.cache_dir,
                               REGISTRY_DIR=args.layout.registry_dir)
            where = {"create": script("prepare-workspace.sh"), "interpreter": ["/bin/bash", "-c"]}
        else:
            # The volume's folders exist (the pods' subPath mounts made them); the registry's is not mounted here.
            environment.update(SOURCE_DIR=CONTAINER_SOURCE_DIR, CACHE_DIR=CONTAINER_CACHE_DIR)
            where = {"create": args.workbench_exec(list(environment)), "stdin": script("prepare-workspace.sh")}
        prepare = local.Command(
            f"{name}-prepare", environment=environment, opts=child_options(self, opts), **where,
        )
        self.commit = prepare.stdout.apply(lambda out: checkout_facts(out)[0])
        self.builder_image = prepare.stdout.apply(lambda out: checkout_facts(out)[1])
        self.register_outputs({"commit": self.commit, "builderImage": self.builder_image})


def checkout_facts(stdout: str) -> tuple[str, str | None]:
    """prepare-workspace.sh's report: the commit, and the builder image the checkout pins (None if none)."""
    lines = stdout.splitlines() + ["", ""]
    return lines[0].strip(), lines[1].strip() or None


def workspace_claim(namespace: str, claim_name: str, storage_class: str | None, size: str) -> dict:
    """The ReadWriteMany claim every pod of the cluster placement mounts: builder, registry, debugger."""
    spec: dict = {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": size}}}
    if storage_class is not None:
        spec["storageClassName"] = storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": claim_name, "namespace": namespace,
                     "labels": {"app.kubernetes.io/part-of": "istio-proxy-debug"}},
        "spec": spec,
    }


@dataclass
class WorkspaceVolumeArgs:
    namespace: str
    claim_name: str
    storage_class: str | None
    size: str


class WorkspaceVolume(pulumi.ComponentResource):
    """The cluster placement's namespace and workspace claim. Both are retained by `pulumi destroy`: the
    claim holds the source tree, hours of bazel cache and the registry's images, and deleting the
    namespace would delete the claim with it. `kubectl delete namespace <it>` removes them on purpose."""

    namespace: pulumi.Output[str]
    claim_name: pulumi.Output[str]

    def __init__(self, name: str, args: WorkspaceVolumeArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("istio-proxy-debug:workspace:WorkspaceVolume", name, None, opts)
        namespace = k8s.core.v1.Namespace(
            f"{name}-namespace", metadata={"name": args.namespace},
            opts=child_options(self, opts, retain_on_delete=True),
        )
        claim = workspace_claim(args.namespace, args.claim_name, args.storage_class, args.size)
        created = k8s.core.v1.PersistentVolumeClaim(
            f"{name}-claim",
            # The namespace's output, so the claim waits for it.
            metadata={**claim["metadata"], "namespace": namespace.metadata.apply(lambda m: m.name)},
            spec=claim["spec"],
            # A WaitForFirstConsumer class binds only when the builder mounts it; the provider knows that
            # (pulumi-kubernetes#3130) and does not wait for Bound then.
            opts=child_options(self, opts, retain_on_delete=True),
        )
        self.namespace = namespace.metadata.apply(lambda m: m.name)
        self.claim_name = created.metadata.apply(lambda m: m.name)
        self.register_outputs({"namespace": self.namespace, "claimName": self.claim_name})
