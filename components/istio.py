"""Istio in the lab's cluster: Istio's official Helm charts `base` (CRDs, cluster roles) and `istiod` (the control
plane and the sidecar injector) at `istioVersion`, as Istio's Helm install guide does it. The releases wait
until istiod is ready, so the target's pod is injected.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from components.options import child_options

ISTIO_CHARTS = "https://istio-release.storage.googleapis.com/charts"
ISTIO_NAMESPACE = "istio-system"
# istiod asks for 500m CPU and 2 GiB by default, more than a laptop's kind node spares beside a debug Envoy.
ISTIOD_VALUES = {"pilot": {"resources": {"requests": {"cpu": "100m", "memory": "256Mi"}}}}
INSTALL_TIMEOUT_SECONDS = 600


def release_args(chart: str, version: str, values: dict | None = None) -> dict:
    """A Helm release of one of Istio's charts in istio-system, named like Istio's guide names it."""
    return {
        "name": "istio-base" if chart == "base" else chart,
        "chart": chart,
        "version": version,
        "repository_opts": k8s.helm.v3.RepositoryOptsArgs(repo=ISTIO_CHARTS),
        "namespace": ISTIO_NAMESPACE,
        "create_namespace": True,
        "values": values or {},
        "timeout": INSTALL_TIMEOUT_SECONDS,
    }


@dataclass
class IstioArgs:
    version: str


class Istio(pulumi.ComponentResource):
    """`istiod` is the release whose readiness the target waits for."""

    istiod: k8s.helm.v3.Release

    def __init__(self, name: str, args: IstioArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("istio-proxy-debug:istio:Istio", name, None, opts)
        base = k8s.helm.v3.Release(f"{name}-base", **release_args("base", args.version),
                                   opts=child_options(self, opts))
        self.istiod = k8s.helm.v3.Release(
            f"{name}-istiod", **release_args("istiod", args.version, ISTIOD_VALUES),
            # istiod's webhooks and roles need base's CRDs.
            opts=pulumi.ResourceOptions.merge(child_options(self, opts), pulumi.ResourceOptions(depends_on=[base])),
        )
        self.register_outputs({"istiod": self.istiod.status})
