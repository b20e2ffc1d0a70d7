"""Istio in the lab's cluster: Istio's official Helm charts `base` (CRDs, cluster roles) and `istiod` (the control
plane and the sidecar injector) at `istioVersion`, as Istio's Helm install guide does it. The releases wait
until istiod is ready, so the target's pod is injected.

A waypoint or gateway target also needs the Gateway API CRDs, which Istio's charts do not ship: the standard
channel's `standard-install.yaml` of GATEWAY_API_VERSION, installed before istiod as Istio's guides do. A
waypoint needs ambient mode too (Istio's ambient Helm guide): istiod with the `ambient` profile, and the `cni`
(release istio-cni) and `ztunnel` charts with it.
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
# The Gateway API release of the lab: the one Istio 1.28's own go.mod names, and still serving the v1beta1
# Gateway that Istio 1.26 and 1.27 patch (the oldest releases with target waypoint or gateway).
GATEWAY_API_VERSION = "v1.4.1"
GATEWAY_API_CRDS = ("https://github.com/kubernetes-sigs/gateway-api/releases/download/"
                    f"{GATEWAY_API_VERSION}/standard-install.yaml")
AMBIENT_PROFILE = {"profile": "ambient"}
# The names Istio's guides give the releases of its charts.
RELEASE_NAMES = {"base": "istio-base", "cni": "istio-cni"}


def release_args(chart: str, version: str, values: dict | None = None) -> dict:
    """A Helm release of one of Istio's charts in istio-system, named like Istio's guide names it."""
    return {
        "name": RELEASE_NAMES.get(chart, chart),
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
    # A waypoint target: ambient mode (cni, ztunnel, istiod's ambient profile).
    ambient: bool = False
    # A waypoint or gateway target: the Gateway API CRDs.
    gateway_api: bool = False


class Istio(pulumi.ComponentResource):
    """`ready` are the releases whose readiness the target waits for: istiod, and ambient's node agents."""

    istiod: k8s.helm.v3.Release
    ready: list[pulumi.Resource]

    def __init__(self, name: str, args: IstioArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("istio-proxy-debug:istio:Istio", name, None, opts)

        def after(*resources: pulumi.Resource) -> pulumi.ResourceOptions:
            return pulumi.ResourceOptions.merge(child_options(self, opts),
                                                pulumi.ResourceOptions(depends_on=list(resources)))

        base = k8s.helm.v3.Release(f"{name}-base", **release_args("base", args.version),
                                   opts=child_options(self, opts))
        # istiod's webhooks and roles need base's CRDs, and its gateway controller the Gateway API's.
        crds = [base]
        if args.gateway_api:
            crds.append(k8s.yaml.v2.ConfigFile(f"{name}-gateway-api", file=GATEWAY_API_CRDS,
                                               opts=child_options(self, opts)))
        values = {**ISTIOD_VALUES, **(AMBIENT_PROFILE if args.ambient else {})}
        self.istiod = k8s.helm.v3.Release(f"{name}-istiod", **release_args("istiod", args.version, values),
                                          opts=after(*crds))
        self.ready = [self.istiod]
        if args.ambient:
            cni = k8s.helm.v3.Release(f"{name}-cni", **release_args("cni", args.version, AMBIENT_PROFILE),
                                      opts=after(self.istiod))
            ztunnel = k8s.helm.v3.Release(f"{name}-ztunnel", **release_args("ztunnel", args.version),
                                          opts=after(cni))
            self.ready += [cni, ztunnel]
        self.register_outputs({"istiod": self.istiod.status})
