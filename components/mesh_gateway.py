"""The Envoy of an ambient-mode waypoint or of an ingress gateway, as the debug target (setting `target`).

istiod owns these pods: its gateway deployment controller renders a Deployment from a Gateway API `Gateway`
(class `istio-waypoint`: manifests/.../files/waypoint.yaml; class `istio`: kube-gateway.yaml) and would revert
any patch made to it. Its own customization is the one used here: a Gateway's
`spec.infrastructure.parametersRef` names a ConfigMap in its namespace whose `deployment` key istiod applies
to the rendered Deployment as a strategic merge patch (deploymentcontroller.go `applyOverlay`, Istio 1.26 on;
config.FIRST_CUSTOMIZABLE_GATEWAY). The overlay gives the `istio-proxy` container:
- the debug image by digest, and the memory request and limit the sidecar gets (proxyMemory, proxyMemoryLimit);
  the template's CPU stays;
- the security context the sidecar's startup override gets (components/debugged_proxy.py): SYS_PTRACE, SETUID and
  SETGID over the template's drop ALL, privilege escalation for the image's sudo, a writable root. In both
  modes: here the pod exists only to be debugged, so lldb-server may also run inside it (walkthrough S11);
- the node affinity of targetNodeName, so the pod runs where lldb-server is started;
- startup mode: components/scripts/istio-proxy-wait.sh instead of pilot-agent, with the template's own args
  (`proxy waypoint …` or `proxy router …`) as the start file, and no startup or readiness probe (`null`
  deletes a field in a strategic merge patch), so nothing restarts the waiting container. Gateways capture no
  traffic with iptables, so no istio-init is involved.

The pod is found by the label istiod gives every pod of a Gateway (`gateway.networking.k8s.io/gateway-name`),
once it runs the debug image: components/scripts/gateway-pod.sh, bounded.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import pulumi
import pulumi_command as command
import pulumi_kubernetes as k8s
import yaml

from components.debugged_proxy import debugger_security_context, node_affinity, waiting_command
from components.kind_cluster import kubectl_command
from components.options import child_options
from components.scripts import script

WAYPOINT, GATEWAY = "waypoint", "gateway"
GATEWAY_API = "gateway.networking.k8s.io/v1"
GATEWAY_CLASSES = {WAYPOINT: "istio-waypoint", GATEWAY: "istio"}
# The label istiod puts on every object (pods included) it renders for a Gateway.
GATEWAY_NAME_LABEL = "gateway.networking.k8s.io/gateway-name"
# Ambient enrolment, and the waypoint that service-addressed traffic goes through (Istio's ambient guides).
DATAPLANE_MODE_LABEL = "istio.io/dataplane-mode"
USE_WAYPOINT_LABEL = "istio.io/use-waypoint"
WAYPOINT_FOR_LABEL = "istio.io/waypoint-for"
PROXY_CONTAINER = "istio-proxy"
# A waypoint listens for HBONE on 15008 (Istio's documented waypoint Gateway); the gateway for plain HTTP.
WAYPOINT_LISTENER = {"name": "mesh", "port": 15008, "protocol": "HBONE"}
GATEWAY_LISTENER = {"name": "http", "port": 80, "protocol": "HTTP", "allowedRoutes": {"namespaces": {"from": "Same"}}}
# A pod's hostname is its name cut to 63 characters; lldb-server finds the pod by its whole name. A Deployment's
# pod is named <deployment>-<pod-template-hash (up to 10)>-<5 random>.
MAX_HOSTNAME = 63
POD_NAME_SUFFIX = 17
# On the pod template: which overlay a pod was made from, so the lookup never takes one of an earlier rollout.
OVERLAY_ANNOTATION = "istio-proxy-debug/overlay"
# How long `pulumi up` waits for istiod to roll out the debug Envoy (an image of about 2 GB to pull).
POD_WAIT_SECONDS = 1800


def gateway_name(workload: str, target: str) -> str:
    return f"{workload}-{target}"


def deployment_name(workload: str, target: str) -> str:
    """What istiod names the Deployment (deploymentcontroller.go getDefaultName): a waypoint's keeps the
    Gateway's name, a gateway's gets its class as a suffix."""
    name = gateway_name(workload, target)
    return name if target == WAYPOINT else f"{name}-{GATEWAY_CLASSES[target]}"


def longest_workload(target: str) -> int:
    """The longest workload name whose gateway pods keep their whole name as hostname."""
    return MAX_HOSTNAME - POD_NAME_SUFFIX - (len(deployment_name("", target)))


def parameters_name(workload: str, target: str) -> str:
    return f"{gateway_name(workload, target)}-options"


@dataclass(frozen=True)
class GatewayTarget:
    """The plain values the manifests are built from; `proxy_image` may be a pulumi Output (it is only placed)."""

    target: str
    namespace: str
    workload: str
    service_port: int
    proxy_image: pulumi.Input[str]
    proxy_memory: str
    proxy_memory_limit: str
    # The app's container, and its HTTP client command (the waypoint's request is sent from there).
    app_container: str
    app_client: tuple[str, ...]
    target_node_name: str | None = None

    @property
    def name(self) -> str:
        return gateway_name(self.workload, self.target)

    @property
    def pod_selector(self) -> str:
        return f"{GATEWAY_NAME_LABEL}={self.name}"


def gateway_manifest(g: GatewayTarget) -> dict:
    """The Gateway istiod deploys the Envoy from, pointing at the overlay ConfigMap."""
    waypoint = g.target == WAYPOINT
    return {
        "apiVersion": GATEWAY_API,
        "kind": "Gateway",
        "metadata": {"name": g.name, "namespace": g.namespace,
                     **({"labels": {WAYPOINT_FOR_LABEL: "service"}} if waypoint else {})},
        "spec": {
            "gatewayClassName": GATEWAY_CLASSES[g.target],
            "listeners": [dict(WAYPOINT_LISTENER if waypoint else GATEWAY_LISTENER)],
            "infrastructure": {"parametersRef": {"group": "", "kind": "ConfigMap",
                                                 "name": parameters_name(g.workload, g.target)}},
        },
    }


def http_route_manifest(g: GatewayTarget) -> dict:
    """gateway only: every request the gateway takes goes to the target's Service."""
    return {
        "apiVersion": GATEWAY_API,
        "kind": "HTTPRoute",
        "metadata": {"name": g.workload, "namespace": g.namespace},
        "spec": {
            "parentRefs": [{"name": g.name}],
            "rules": [{"backendRefs": [{"name": g.workload, "port": g.service_port}]}],
        },
    }


def proxy_overlay(g: GatewayTarget, mode: str, image: str) -> dict:
    """The istio-proxy container of the overlay: merged by name into the rendered one."""
    proxy = {
        "name": PROXY_CONTAINER,
        "image": image,
        "resources": {"requests": {"memory": g.proxy_memory}, "limits": {"memory": g.proxy_memory_limit}},
        "securityContext": debugger_security_context(),
    }
    if mode == "startup":
        proxy.update({
            "command": waiting_command(),
            "startupProbe": None,
            "readinessProbe": None,
        })
    return proxy


def overlay_id(overlay: dict) -> str:
    return hashlib.sha256(yaml.safe_dump(overlay, sort_keys=True).encode()).hexdigest()[:16]


def deployment_overlay(g: GatewayTarget, mode: str, image: str) -> dict:
    """The ConfigMap's `deployment` patch; its pod template carries the id of the rest of it."""
    pod_spec: dict = {"containers": [proxy_overlay(g, mode, image)]}
    if g.target_node_name is not None:
        pod_spec["affinity"] = node_affinity(g.target_node_name)
    template = {"spec": pod_spec}
    template["metadata"] = {"annotations": {OVERLAY_ANNOTATION: overlay_id({"spec": {"template": template}})}}
    return {"spec": {"template": template}}


def pod_overlay_id(overlay: dict) -> str:
    return overlay["spec"]["template"]["metadata"]["annotations"][OVERLAY_ANNOTATION]


def parameters_metadata(g: GatewayTarget) -> dict:
    """The ConfigMap the Gateway's parametersRef names."""
    return {"name": parameters_name(g.workload, g.target), "namespace": g.namespace}


def parameters_data(overlay: dict) -> dict[str, str]:
    """Only `deployment`: istiod refuses keys it does not know."""
    return {"deployment": yaml.safe_dump(overlay, sort_keys=False)}


def namespace_labels(target: str, workload: str) -> dict[str, str]:
    """A namespace the stack creates: ambient with the waypoint for its services; a gateway needs nothing."""
    if target == WAYPOINT:
        return {DATAPLANE_MODE_LABEL: "ambient", USE_WAYPOINT_LABEL: gateway_name(workload, target)}
    return {}


def request_command(g: GatewayTarget, app_pod: str, kubeconfig_file: str | None) -> str:
    """One request through the Envoy under debug. Waypoint: from the (ambient) app pod to its own Service,
    which ztunnel sends through the waypoint; gateway: to the gateway's Service, with port-forward running."""
    if g.target == WAYPOINT:
        url = f"http://{g.workload}.{g.namespace}:{g.service_port}/"
        return kubectl_command(kubeconfig_file, "-n", g.namespace, "exec", app_pod, "-c", g.app_container, "--",
                               *g.app_client, url)
    return f"curl -sS http://localhost:{g.service_port}/"


def port_forward_command(g: GatewayTarget, kubeconfig_file: str | None) -> str | None:
    """gateway: its Service's HTTP port on localhost; a waypoint takes mesh traffic only."""
    if g.target == WAYPOINT:
        return None
    service = f"svc/{deployment_name(g.workload, g.target)}"
    return kubectl_command(kubeconfig_file, "-n", g.namespace, "port-forward", service,
                           f"{g.service_port}:{GATEWAY_LISTENER['port']}")


def pod_lookup_environment(g: GatewayTarget, mode: str, overlay: dict, kubeconfig_file: str | None) -> dict[str, str]:
    return {
        # attach: Envoy must run (istio-proxy ready); startup: it waits, and nothing is ready yet.
        "READY": "true" if mode == "attach" else "false",
        "NAMESPACE": g.namespace,
        "SELECTOR": g.pod_selector,
        "OVERLAY_ANNOTATION": OVERLAY_ANNOTATION,
        "OVERLAY": pod_overlay_id(overlay),
        "WAIT_SECONDS": str(POD_WAIT_SECONDS),
        **({"KUBECONFIG": kubeconfig_file} if kubeconfig_file else {}),
    }


@dataclass
class MeshGatewayArgs:
    gateway: GatewayTarget
    mode: str
    # The app's pod (for the waypoint's request command) and the lab's kubeconfig, None: the current context.
    app_pod: pulumi.Input[str]
    kubeconfig_file: str | None = None


class MeshGateway(pulumi.ComponentResource):
    """The overlay ConfigMap, the Gateway (and a gateway's HTTPRoute), and the lookup of the pod istiod runs."""

    pod_name: pulumi.Output[str]
    request_command: pulumi.Output[str]
    port_forward_command: pulumi.Output[str | None]

    def __init__(self, name: str, args: MeshGatewayArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("istio-proxy-debug:mesh_gateway:MeshGateway", name, None, opts)
        g = args.gateway
        image = pulumi.Output.from_input(g.proxy_image)
        overlay = image.apply(lambda i: deployment_overlay(g, args.mode, i))
        config_map = k8s.core.v1.ConfigMap(
            f"{name}-parameters", metadata=parameters_metadata(g), data=overlay.apply(parameters_data),
            # The provider replaces a ConfigMap whose data changes; its name is fixed (the Gateway names it).
            opts=child_options(self, opts, delete_before_replace=True),
        )
        gateway = gateway_manifest(g)
        created = k8s.apiextensions.CustomResource(
            f"{name}-gateway", api_version=gateway["apiVersion"], kind=gateway["kind"],
            metadata=gateway["metadata"], spec=gateway["spec"],
            opts=pulumi.ResourceOptions.merge(child_options(self, opts),
                                              pulumi.ResourceOptions(depends_on=[config_map])),
        )
        if g.target == GATEWAY:
            route = http_route_manifest(g)
            k8s.apiextensions.CustomResource(
                f"{name}-route", api_version=route["apiVersion"], kind=route["kind"],
                metadata=route["metadata"], spec=route["spec"],
                opts=pulumi.ResourceOptions.merge(child_options(self, opts),
                                                  pulumi.ResourceOptions(depends_on=[created])),
            )
        lookup = command.local.Command(
            f"{name}-pod",
            create=script("gateway-pod.sh"),
            interpreter=["/bin/bash", "-c"],
            # Its environment holds the overlay's id: a new overlay (image, memory, mode), a new pod to find.
            environment=overlay.apply(lambda o: pod_lookup_environment(g, args.mode, o, args.kubeconfig_file)),
            opts=pulumi.ResourceOptions.merge(child_options(self, opts),
                                              pulumi.ResourceOptions(depends_on=[created, config_map])),
        )
        self.pod_name = lookup.stdout.apply(lambda out: out.strip().splitlines()[-1])
        self.request_command = pulumi.Output.from_input(args.app_pod).apply(
            lambda pod: request_command(g, pod, args.kubeconfig_file))
        self.port_forward_command = pulumi.Output.from_input(port_forward_command(g, args.kubeconfig_file))
        self.register_outputs({"podName": self.pod_name, "requestCommand": self.request_command,
                               "portForwardCommand": self.port_forward_command})
