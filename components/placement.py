"""Where the stack places its workloads (config `placement`), as plain values the components branch on.

host (the walkthrough): the builder, the registry and the debugger are Docker containers on the developer
host, and the workspace is folders under workDir. cluster (the walkthrough's S12): they are pods in a
namespace of the stack's own, and the workspace is one ReadWriteMany volume that every pod mounts at the
same paths the host containers use (/work, /home/.cache), so the debug info's paths resolve in both.
Either way, scripts reach the workload that runs them (the builder; the debugger when Envoy is downloaded
rather than built) the same way: on stdin to `bash -s`, through `docker exec` or `kubectl exec`.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass

import pulumi_docker as docker

from components.workspace import WorkspaceLayout

HOST = "host"
CLUSTER = "cluster"
WORKSPACE_VOLUME = "workspace"
BUILDER_CONTAINER = "builder"
PART_OF = "istio-proxy-debug"


@dataclass(frozen=True)
class Placement:
    kind: str
    layout: WorkspaceLayout
    # cluster only: the namespace of the builder, registry, debugger and workspace claim, and the claim.
    namespace: str | None = None
    claim_name: str | None = None

    @property
    def in_cluster(self) -> bool:
        return self.kind == CLUSTER

    @classmethod
    def host(cls, work_dir: str) -> Placement:
        return cls(HOST, WorkspaceLayout(work_dir))

    @classmethod
    def cluster(cls, namespace: str, claim_name: str) -> Placement:
        return cls(CLUSTER, WorkspaceLayout(""), namespace=namespace, claim_name=claim_name)

    def workspace_volume(self) -> dict:
        """The pod volume of the workspace claim."""
        return {"name": WORKSPACE_VOLUME, "persistentVolumeClaim": {"claimName": self.claim_name}}

    def workspace_mounts(self) -> list[dict]:
        """The claim's folders at the container paths the host containers use."""
        return [{"name": WORKSPACE_VOLUME, "mountPath": inside, "subPath": folder}
                for folder, inside in self.layout.container_mounts()]

    def metadata(self, name: str, app: str | None = None) -> dict:
        """An object of the stack's own namespace, labelled as part of `app` (by default itself)."""
        return {"name": name, "namespace": self.namespace, "labels": workload_labels(app or name)}

    def one_pod_workload(self, kind: str, name: str, containers: list[dict], extra_volumes: Sequence[dict] = (),
                         **spec: object) -> dict:
        """A StatefulSet or Deployment of one pod that mounts the workspace claim (and `extra_volumes`),
        kept out of the mesh: none of these pods is Istio's business."""
        labels = workload_labels(name)
        return {
            "apiVersion": "apps/v1",
            "kind": kind,
            "metadata": self.metadata(name),
            "spec": {
                **spec,
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels, "annotations": {"sidecar.istio.io/inject": "false"}},
                    "spec": {"containers": containers, "volumes": [self.workspace_volume(), *extra_volumes]},
                },
            },
        }

    def service(self, name: str, service_type: str, port: int, **port_fields: object) -> dict:
        """The Service in front of the one-pod workload `name`, on one TCP port named http."""
        return {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": self.metadata(name),
            "spec": {
                "type": service_type,
                "selector": workload_labels(name),
                "ports": [{"name": "http", "port": port, "targetPort": port, **port_fields, "protocol": "TCP"}],
            },
        }

    def script_exec(self, target: str, env_keys: Sequence[str], container: str = BUILDER_CONTAINER) -> str:
        """The command that runs a script on stdin in a workload that mounts the workspace (container
        `target`, or `container` of the pod `target`), passing on the named variables of the command's own
        environment."""
        if not self.in_cluster:
            passed = "".join(f"--env {key} " for key in env_keys)
            return f"docker exec -i {passed}{shlex.quote(target)} bash -s"
        # kubectl exec passes no environment: the local shell expands each value into an argument of `env`.
        passed = "".join(f'{key}="${key}" ' for key in env_keys)
        return (f"kubectl exec -i --namespace {shlex.quote(self.namespace)} {shlex.quote(target)} "
                f"--container {shlex.quote(container)} -- env {passed}bash -s")


def workload_labels(name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": PART_OF}


def bind_mount(host: str, inside: str, read_only: bool = False) -> docker.ContainerMountArgs:
    """A bind mount (`--mount type=bind`), not a volume (`-v`): the engine refuses a missing host folder instead
    of creating it, root-owned, where the stack expected the developer's."""
    return docker.ContainerMountArgs(type="bind", source=host, target=inside, read_only=read_only or None)
