"""attachTo: the Envoy already running in a pod, debugged in place. Nothing of the pod changes and nothing is made
in its namespace: no image, no restart, no ephemeral container. The stack reads the pod once (its node, the
container's image and id; components/scripts/attached-pod.sh), puts lldb-server on that node beside the pod, in the
container's namespaces (components/lldb_server.py, with a bundle that needs nothing from the pod), and loads Istio's
own symbols for the running Envoy when they are its code (components/prebuilt_envoy.py with SYMBOL_ARTIFACT,
components/launch.py's symbols_verdict).
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
from pulumi_command import local

from components.attach_to import AttachTo
from components.options import child_options
from components.scripts import key_values, script


@dataclass(frozen=True)
class PodFacts:
    """What attached-pod.sh read of the pod."""

    node: str
    uid: str
    image: str
    container_id: str
    restart_count: int
    istio_version: str


def parse_pod_facts(stdout: str) -> PodFacts:
    values = key_values(stdout, {"node", "uid", "image", "containerId", "restartCount", "istioVersion"})
    return PodFacts(node=values["node"], uid=values["uid"], image=values["image"],
                    container_id=values["containerId"], restart_count=int(values["restartCount"]),
                    istio_version=values["istioVersion"])


def lookup_environment(target: AttachTo, fallback_version: str, kubeconfig_file: str | None) -> dict[str, str]:
    return {"POD_NAMESPACE": target.namespace, "POD_NAME": target.pod, "CONTAINER": target.container,
            "FALLBACK_VERSION": fallback_version, **({"KUBECONFIG": kubeconfig_file} if kubeconfig_file else {})}


@dataclass
class AttachedPodArgs:
    target: AttachTo
    # The release when the image's tag names none (a custom build): istioVersion.
    fallback_version: str
    kubeconfig_file: str | None = None


class AttachedPod(pulumi.ComponentResource):
    """The pod as it runs, read once by `up`."""

    node: pulumi.Output[str]
    container_id: pulumi.Output[str]
    image: pulumi.Output[str]
    istio_version: pulumi.Output[str]
    # Changes whenever the container is another one (restarted, or the pod made anew).
    revision: pulumi.Output[str]

    def __init__(self, name: str, args: AttachedPodArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("istio-proxy-debug:attached_pod:AttachedPod", name, None, opts)
        lookup = local.Command(
            f"{name}-lookup",
            create=script("attached-pod.sh"),
            interpreter=["/bin/bash", "-c"],
            environment=lookup_environment(args.target, args.fallback_version, args.kubeconfig_file),
            # Read when attachTo changes; a preview reads nothing (a PR's preview has no cluster). A container
            # restarted since is another process: `pulumi up --replace` this lookup attaches to the new one.
            opts=child_options(self, opts),
        )
        facts = lookup.stdout.apply(parse_pod_facts)
        self.node = facts.apply(lambda f: f.node)
        self.container_id = facts.apply(lambda f: f.container_id)
        self.image = facts.apply(lambda f: f.image)
        self.istio_version = facts.apply(lambda f: f.istio_version)
        self.revision = facts.apply(lambda f: f"{f.uid}/{f.container_id}")
        self.register_outputs({"node": self.node, "containerId": self.container_id, "image": self.image,
                               "istioVersion": self.istio_version})
