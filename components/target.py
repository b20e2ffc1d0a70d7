"""S7 and S11: the target workload — namespace, headless Service and StatefulSet — in one of two modes. With
`target` waypoint or gateway the app runs without a sidecar and the Envoy under debug is the one istiod deploys
for a Gateway (components/mesh_gateway.py); what follows is the sidecar's.

attach (S7): the walkthrough's StatefulSet `fortio-server` with the fortio app on 8080/8070, injected by
Istio: `sidecar.istio.io/proxyImage` names the debug image as the nodes pull it, by digest
(`<registryHost>:<registryPort>/proxyv2@sha256:…`; the injector uses an annotation value that contains
"/" verbatim, for istio-init and istio-proxy alike), and `proxyMemory`/`proxyMemoryLimit` size the
sidecar for the debug build. The node-side lldb-server (S8) attaches to the Envoy that pilot-agent runs.

startup (S11): the same injected pod, changed through the mechanism Istio documents for it: the pod
declares containers named like the injector's (`istio-proxy`, `istio-init`, image "auto"), which the cluster's
own injector merges into what it injects (its `proxy-override*` golden tests, native sidecars included). So
that release's injector still writes the proxy's env, volumes, certificates and bootstrap, and:
- `istio-proxy` runs components/scripts/istio-proxy-wait.sh instead of pilot-agent: it keeps the injector's
  own pilot-agent arguments as the start file (START_FILE) and waits. `status.sidecar.istio.io/port: "0"`
  makes the template leave out its readiness and startup probes (so nothing restarts the waiting proxy, and a
  native sidecar does not hold the app back), and the lifecycle hooks are replaced by ones that succeed;
- `istio-init` runs that release's own istio-iptables, with the debugger ports excluded from inbound capture
  through `traffic.sidecar.istio.io/excludeInboundPorts`, then narrows outbound capture to the app's uid and
  gid (components/scripts/istio-init-capture.sh);
- the app runs as `appUid`, so every process in it (`kubectl exec` included) is the captured user.
`start_command` is the `kubectl exec` that then runs the start file: pilot-agent (and so Envoy) as uid 1337.

Privileges for the debugger. lldb-server in S8 runs on the node as root in the host's user namespace,
outside the container's seccomp filter: it may ptrace any process on the node, whatever the container's
capabilities. So in attach mode the injected security context is left as Istio makes it: adding
SYS_PTRACE through the injector's `istio-proxy` override would only reach the bounding set of processes
that run as uid 1337 with no_new_privs (allowPrivilegeEscalation: false) — no process could use it.
In startup mode the developer may run lldb-server inside istio-proxy (walkthrough S11): Envoy is not its
child, so under Yama ptrace_scope=1 (Ubuntu's default) attaching needs CAP_SYS_PTRACE, i.e. root via the
image's passwordless sudo. Over the template's `drop: [ALL]` (which a merge cannot remove) the override
therefore adds SYS_PTRACE (which also lets a RuntimeDefault seccomp profile allow process_vm_readv), SETUID
and SETGID (without them sudo cannot become root), and allows privilege escalation for sudo, keeping uid
1337 for whatever `kubectl exec` starts. It is not privileged: ptrace needs neither the host's devices nor
an unconfined seccomp/AppArmor profile.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from components.debug_ports import DebuggerPorts
from components.debugged_proxy import START_FILE, debugger_security_context, node_affinity, waiting_command
from components.iptables import ISTIO_PROXY_UID, capture_override, excluded_inbound_ports_annotation
from components.kind_cluster import kubectl_command
from components.mesh_gateway import (
    DATAPLANE_MODE_LABEL,
    USE_WAYPOINT_LABEL,
    WAYPOINT,
    GatewayTarget,
    MeshGateway,
    MeshGatewayArgs,
    gateway_name,
    namespace_labels,
)
from components.options import child_options
from components.settings import MODES, memory_bytes

SIDECAR = "sidecar"
DEFAULT_PROXY_MEMORY = "512Mi"
DEFAULT_PROXY_MEMORY_LIMIT = "4Gi"
# Pulling the debug image (Envoy with debug info, plus lldb: about 2 GB) and starting it can be slow.
ROLLOUT_TIMEOUT = "30m"

# The walkthrough's app (S7).
APP_CONTAINER = "main-app"
APP_IMAGE = "docker.io/fortio/fortio"
APP_COMMAND = ["/usr/bin/fortio"]
APP_ARGS = ["server", "-M", "8070 http://fortio-server-l2:8080"]
APP_PORTS = ({"name": "http", "port": 8080}, {"name": "http-m", "port": 8070})
PROXY_CONTAINER = "istio-proxy"
INIT_CONTAINER = "istio-init"
# What istio-proxy runs instead of pilot-agent in startup mode; the node-side lldb-server finds it by name.
PROXY_WAIT_PROCESS = "sleep"
# The injector's own image for a container the pod declares (webhook.go AutoImage).
INJECTED_IMAGE = "auto"
# The status port annotation's "no status": the template then renders no readiness or startup probe.
NO_STATUS_PORT = "0"
# Hooks that replace whatever the install's template sets (pilot-agent wait, drain), and succeed at once.
NO_OP_HOOK = {"exec": {"command": ["/bin/true"]}}


@dataclass(frozen=True)
class Workload:
    """The plain values the manifests are built from. `proxy_image` may be a pulumi Output: it is only
    placed into the manifests, never inspected, except that a plain string is checked."""

    namespace: str
    name: str
    proxy_image: pulumi.Input[str]
    app_uid: int
    debugger_ports: DebuggerPorts
    target_node_name: str | None = None
    proxy_memory: str = DEFAULT_PROXY_MEMORY
    proxy_memory_limit: str = DEFAULT_PROXY_MEMORY_LIMIT

    def check(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        if isinstance(self.proxy_image, str) and "/" not in self.proxy_image:
            raise ValueError(f"proxy image {self.proxy_image!r} must contain '/': Istio uses the proxyImage "
                             "annotation verbatim only then (registry:port/repository@sha256:…)")
        if memory_bytes(self.proxy_memory) > memory_bytes(self.proxy_memory_limit):
            raise ValueError(f"proxy memory request {self.proxy_memory} is above its limit {self.proxy_memory_limit}")
        if mode == "startup" and self.app_uid in (0, ISTIO_PROXY_UID):
            raise ValueError(f"app uid {self.app_uid} must be neither root nor the proxy's {ISTIO_PROXY_UID}")

    @property
    def selector(self) -> dict[str, str]:
        return {"app": self.name}


def pod_name(workload: str) -> str:
    """The StatefulSet's one pod: ordinal 0."""
    return f"{workload}-0"


def template_digest(template: dict) -> str:
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:16]


def pod_revision(statefulset_uid: str | None, template: str) -> str:
    """The StatefulSet's identity and its pod template's digest: together they change exactly when its pod is made
    anew (a new template rolls it; a StatefulSet made again makes a new one)."""
    return f"{statefulset_uid}/{template}"


def start_command(namespace: str, pod: str, kubeconfig_file: str | None = None) -> str:
    """The walkthrough's by-hand start of pilot-agent in the waiting istio-proxy: the start file the wait
    wrote from the injector's own arguments, run as the container's user (uid 1337) with its env, with a
    terminal so Ctrl-C stops it. With the lab's own kubeconfig when it has one."""
    return kubectl_command(kubeconfig_file, "-n", namespace, "exec", "-it", pod, "-c", PROXY_CONTAINER, "--",
                           "/bin/sh", START_FILE)


def port_forward_command(namespace: str, pod: str, kubeconfig_file: str | None = None) -> str:
    """How the developer reaches the target app from their machine: its HTTP port on localhost."""
    port = APP_PORTS[0]["port"]
    return kubectl_command(kubeconfig_file, "-n", namespace, "port-forward", f"pod/{pod}", f"{port}:{port}")


def namespace_manifest(namespace: str, target: str = SIDECAR, workload: str = "") -> dict:
    """The namespace labelled for injection, as Istio's guides do (`kubectl label namespace … istio-injection=enabled`);
    the pod asks for it itself too (sidecar.istio.io/inject), so an existing namespace need not be labelled.
    With a waypoint: ambient, its services through the waypoint (the app's pod and Service say so themselves too,
    so an existing namespace is not changed for everyone in it)."""
    labels = {"istio-injection": "enabled"} if target == SIDECAR else namespace_labels(target, workload)
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace, "labels": labels}}


def service_manifest(w: Workload, target: str = SIDECAR) -> dict:
    """The headless Service the StatefulSet's serviceName names; its port names tell Istio the protocol. A waypoint
    or a gateway routes to a Service's address: then it has one, and a waypoint's names the waypoint."""
    labels = dict(w.selector)
    if target == WAYPOINT:
        labels[USE_WAYPOINT_LABEL] = gateway_name(w.name, target)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": w.name, "namespace": w.namespace, "labels": labels},
        "spec": {
            **({"clusterIP": "None"} if target == SIDECAR else {}),
            "selector": dict(w.selector),
            "ports": [{"name": p["name"], "port": p["port"], "targetPort": p["port"], "protocol": "TCP"}
                      for p in APP_PORTS],
        },
    }


def _app_container() -> dict:
    return {
        "name": APP_CONTAINER,
        "image": APP_IMAGE,
        "imagePullPolicy": "IfNotPresent",
        "command": list(APP_COMMAND),
        "args": list(APP_ARGS),
        "ports": [{"containerPort": p["port"], "protocol": "TCP", "name": p["name"]} for p in APP_PORTS],
    }


def _statefulset(w: Workload, template_metadata: dict, pod_spec: dict) -> dict:
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": w.name, "namespace": w.namespace, "labels": dict(w.selector)},
        "spec": {
            "serviceName": w.name,
            "replicas": 1,
            "selector": {"matchLabels": dict(w.selector)},
            "template": {"metadata": template_metadata, "spec": pod_spec},
        },
    }


def _injected_metadata(w: Workload, annotations: dict | None = None) -> dict:
    return {
        "annotations": {
            "sidecar.istio.io/proxyImage": w.proxy_image,
            "sidecar.istio.io/inject": "true",
            "sidecar.istio.io/proxyMemoryLimit": w.proxy_memory_limit,
            "sidecar.istio.io/proxyMemory": w.proxy_memory,
            **(annotations or {}),
        },
        # The label (not only the deprecated annotation) selects the pod for Istio's object webhook, so
        # it is injected in a namespace without the istio-injection label too.
        "labels": {"app.kubernetes.io/name": w.name, **w.selector, "sidecar.istio.io/inject": "true"},
    }


def _pod_spec(w: Workload, containers: list[dict], init_containers: list[dict] | None = None) -> dict:
    return {
        "restartPolicy": "Always",
        **({"initContainers": init_containers} if init_containers else {}),
        "containers": containers,
        **({"affinity": node_affinity(w.target_node_name)} if w.target_node_name is not None else {}),
    }


def attach_statefulset(w: Workload) -> dict:
    """S7: the walkthrough's StatefulSet, injected by Istio with the debug image."""
    w.check("attach")
    # The injector merges a container of this name into its own; "auto" keeps the injected image.
    proxy = {"name": PROXY_CONTAINER, "image": INJECTED_IMAGE, "imagePullPolicy": "IfNotPresent"}
    return _statefulset(w, _injected_metadata(w), _pod_spec(w, [_app_container(), proxy]))


def debugger_container_ports(ports: DebuggerPorts) -> list[dict]:
    named = [("lldb-platform", ports.platform)] + [(f"lldb-gdb-{i}", p) for i, p in enumerate(ports.gdbserver, 1)]
    return [{"containerPort": port, "name": name, "protocol": "TCP"} for name, port in named]


def waiting_proxy_override(ports: DebuggerPorts) -> dict:
    """istio-proxy as the pod declares it in startup mode: what the injector merges over its own sidecar."""
    return {
        "name": PROXY_CONTAINER,
        "image": INJECTED_IMAGE,
        "imagePullPolicy": "IfNotPresent",
        # No args: the injector's own (`proxy sidecar …`) follow, as the wait's "$@".
        "command": waiting_command(),
        "lifecycle": {"postStart": NO_OP_HOOK, "preStop": NO_OP_HOOK},
        "ports": debugger_container_ports(ports),
        "securityContext": debugger_security_context(),
    }


def startup_statefulset(w: Workload) -> dict:
    """S11: the injected StatefulSet whose istio-proxy waits for the developer to start pilot-agent."""
    w.check("startup")
    app = _app_container()
    app["securityContext"] = {"runAsUser": w.app_uid, "runAsGroup": w.app_uid, "runAsNonRoot": True}
    metadata = _injected_metadata(w, {
        "status.sidecar.istio.io/port": NO_STATUS_PORT,
        **excluded_inbound_ports_annotation(w.debugger_ports.all),
    })
    spec = _pod_spec(w, [app, waiting_proxy_override(w.debugger_ports)],
                     [capture_override(INIT_CONTAINER, INJECTED_IMAGE, w.app_uid)])
    return _statefulset(w, metadata, spec)


def plain_statefulset(w: Workload, target: str) -> dict:
    """The app without a sidecar, when the Envoy under debug is a waypoint's or a gateway's: with a waypoint an
    ambient pod, so ztunnel carries its traffic (and sends what is addressed to its Service through the waypoint)."""
    labels = {"app.kubernetes.io/name": w.name, **w.selector, "sidecar.istio.io/inject": "false"}
    if target == WAYPOINT:
        labels[DATAPLANE_MODE_LABEL] = "ambient"
    return _statefulset(w, {"labels": labels}, _pod_spec(w, [_app_container()]))


def statefulset_manifest(w: Workload, mode: str, target: str = SIDECAR) -> dict:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    if target != SIDECAR:
        return plain_statefulset(w, target)
    return attach_statefulset(w) if mode == "attach" else startup_statefulset(w)


@dataclass
class TargetArgs:
    # The workload's plain values; its proxy_image is the debug image as the nodes pull it, by digest.
    workload: Workload
    mode: str
    create_namespace: bool
    # The lab's kubeconfig, for the commands the stack prints; None: the current context.
    kubeconfig_file: str | None = None
    # Whose Envoy is debugged: the StatefulSet's sidecar, or a waypoint's or gateway's (components/mesh_gateway.py).
    target: str = SIDECAR


class Target(pulumi.ComponentResource):
    """The namespace (unless it exists), the headless Service and the StatefulSet of the chosen mode; with a
    waypoint or gateway target, the app without a sidecar and the MeshGateway whose pod is debugged."""

    pod_name: pulumi.Output[str]
    # Changes whenever the pod under debug is made anew (a new template rolls it; a StatefulSet deleted by hand
    # and restored by `up` makes a new one): whatever runs in the old pod's namespaces must start again.
    pod_revision: pulumi.Output[str]
    start_command: pulumi.Output[str | None]
    port_forward_command: pulumi.Output[str | None]
    # waypoint or gateway: a request through the Envoy under debug; None with a sidecar.
    request_command: pulumi.Output[str] | None

    def __init__(self, name: str, args: TargetArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("istio-proxy-debug:target:Target", name, None, opts)
        workload = args.workload
        try:
            statefulset = statefulset_manifest(workload, args.mode, args.target)
        except ValueError as error:
            raise pulumi.RunError(f"target: {error}") from None
        service = service_manifest(workload, args.target)

        namespace: pulumi.Input[str] = workload.namespace
        if args.create_namespace:
            created = k8s.core.v1.Namespace(
                f"{name}-namespace",
                metadata=namespace_manifest(workload.namespace, args.target, workload.name)["metadata"],
                opts=child_options(self, opts),
            )
            namespace = created.metadata.apply(lambda m: m.name)  # orders the rest after it
        k8s.core.v1.Service(
            f"{name}-service",
            metadata={**service["metadata"], "namespace": namespace},
            spec=service["spec"],
            opts=child_options(self, opts, delete_before_replace=True),
        )
        created_set = k8s.apps.v1.StatefulSet(
            f"{name}-statefulset",
            metadata={**statefulset["metadata"], "namespace": namespace},
            spec=statefulset["spec"],
            opts=child_options(
                self, opts, delete_before_replace=True,
                # A new template makes a new StatefulSet rather than a rolling update: the provider's wait for an
                # update can end on the old pod (its StatefulSet awaiter ignores status.observedGeneration, so the
                # status from before the update counts as rolled out), and lldb-server would then look for the new
                # pod's process in the old one. A new StatefulSet is Ready only with its new pod.
                replace_on_changes=["spec.template"],
                custom_timeouts=pulumi.CustomTimeouts(create=ROLLOUT_TIMEOUT, update=ROLLOUT_TIMEOUT),
            ),
        )
        self.pod_name = created_set.metadata.apply(lambda m: pod_name(m.name))
        # The template as sent, not the controller's revision of it: a preview knows it, so a PR's diff shows
        # lldb-server starting again.
        template = pulumi.Output.from_input(statefulset["spec"]["template"]).apply(template_digest)
        self.pod_revision = pulumi.Output.all(created_set.metadata.uid, template).apply(lambda v: pod_revision(*v))
        self.request_command = None
        if args.target != SIDECAR:
            gateway = self._mesh_gateway(name, args, opts, after=created_set)
            # istiod names each new pod anew.
            self.pod_name = self.pod_revision = gateway.pod_name
            self.request_command = gateway.request_command
        if args.mode == "startup":
            self.start_command = pulumi.Output.all(namespace, self.pod_name).apply(
                lambda v: start_command(*v, args.kubeconfig_file))
        else:
            self.start_command = pulumi.Output.from_input(None)
        if args.target == SIDECAR:
            self.port_forward_command = pulumi.Output.all(namespace, self.pod_name).apply(
                lambda v: port_forward_command(*v, args.kubeconfig_file))
        else:
            self.port_forward_command = gateway.port_forward_command
        self.register_outputs({"podName": self.pod_name, "podRevision": self.pod_revision,
                               "startCommand": self.start_command,
                               "portForwardCommand": self.port_forward_command})

    def _mesh_gateway(self, name: str, args: TargetArgs, opts: pulumi.ResourceOptions | None,
                      after: pulumi.Resource) -> MeshGateway:
        """The waypoint or gateway istiod deploys for the app, whose Envoy is the one debugged."""
        workload = args.workload
        return MeshGateway(f"{name}-{args.target}", MeshGatewayArgs(
            gateway=GatewayTarget(
                target=args.target, namespace=workload.namespace, workload=workload.name,
                service_port=APP_PORTS[0]["port"], proxy_image=workload.proxy_image,
                proxy_memory=workload.proxy_memory, proxy_memory_limit=workload.proxy_memory_limit,
                target_node_name=workload.target_node_name,
                app_container=APP_CONTAINER, app_client=(APP_COMMAND[0], "curl"),
            ),
            mode=args.mode, app_pod=self.pod_name, kubeconfig_file=args.kubeconfig_file,
        ), opts=pulumi.ResourceOptions.merge(child_options(self, opts), pulumi.ResourceOptions(depends_on=[after])))
