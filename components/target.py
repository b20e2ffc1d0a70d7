"""S7 and S11: the target workload — namespace, headless Service and StatefulSet — in one of two modes.

attach (S7): the walkthrough's StatefulSet `fortio-server` with the fortio app on 8080/8070, injected by
Istio: `sidecar.istio.io/proxyImage` names the debug image as the nodes pull it, by digest
(`<registryHost>:<registryPort>/proxyv2@sha256:…`; the injector uses an annotation value that contains
"/" verbatim, for istio-init and istio-proxy alike), and `proxyMemory`/`proxyMemoryLimit` size the
sidecar for the debug build. The node-side lldb-server (S8) attaches to the Envoy that pilot-agent runs.

startup (S11): injection off, and the spec Istio 1.17's injector would produce written out (env, volumes,
ports, labels, the status annotation), changed so Envoy can be started by hand under the debugger:
- `istio-init` applies the capture with iptables-restore (components/iptables.py): Istio's default rules,
  the debugger ports excluded from inbound capture, outbound capture only for the app's uid and gid;
- `istio-proxy` runs `sleep` instead of pilot-agent, with no probe, no postStart `pilot-agent wait` and no
  readiness gate that would kill or hold a pod whose Envoy is not up;
- the app runs as `appUid`, so every process in it (`kubectl exec` included) is the captured user.
`start_command` is the `kubectl exec` that then starts pilot-agent (and so Envoy) as uid 1337.

Privileges for the debugger. lldb-server in S8 runs on the node as root in the host's user namespace,
outside the container's seccomp filter: it may ptrace any process on the node, whatever the container's
capabilities. So in attach mode the injected security context is left as Istio makes it: adding
SYS_PTRACE through the injector's `istio-proxy` override would only reach the bounding set of processes
that run as uid 1337 with no_new_privs (allowPrivilegeEscalation: false) — no process could use it.
In startup mode the developer may run lldb-server inside istio-proxy (walkthrough S11): Envoy is not its
child, so under Yama ptrace_scope=1 (Ubuntu's default) attaching needs CAP_SYS_PTRACE, i.e. root via the
image's passwordless sudo. The container therefore adds SYS_PTRACE (which also lets a RuntimeDefault
seccomp profile allow process_vm_readv) and allows privilege escalation for sudo, keeping the runtime's
default capabilities (sudo needs SETUID/SETGID) and uid 1337 for whatever `kubectl exec` starts. It is
not privileged: ptrace needs neither the host's devices nor an unconfined seccomp/AppArmor profile.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from components.config import memory_bytes
from components.debug_ports import DebuggerPorts
from components.iptables import ISTIO_PROXY_GID, ISTIO_PROXY_UID, init_command, nat_rules
from components.options import child_options

MODES = ("attach", "startup")
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
# What istio-proxy runs instead of pilot-agent in startup mode; the node-side lldb-server finds it by name.
PROXY_WAIT_COMMAND = "/usr/bin/sleep"
INIT_CONTAINER = "istio-init"

# What Istio 1.17's injector writes, for a default install (istiod in istio-system, trust domain
# cluster.local, default revision, REDIRECT interception, third-party JWTs, mesh concurrency 2).
STARTUP_ISTIO_MINOR = "1.17"
ISTIO_CA_ADDR = "istiod.istio-system.svc:15012"
ISTIO_TRUST_DOMAIN = "cluster.local"
PILOT_AGENT = "/usr/local/bin/pilot-agent"
PILOT_AGENT_ARGS = (
    "--proxyLogLevel=warning", "--proxyComponentLogLevel=misc:error", "--log_output_level=default:info",
    "--concurrency", "2",
)
ISTIO_VOLUME_MOUNTS = (
    ("workload-socket", "/var/run/secrets/workload-spiffe-uds"),
    ("credential-socket", "/var/run/secrets/credential-uds"),
    ("workload-certs", "/var/run/secrets/workload-spiffe-credentials"),
    ("istiod-ca-cert", "/var/run/secrets/istio"),
    ("istio-data", "/var/lib/istio/data"),
    ("istio-envoy", "/etc/istio/proxy"),
    ("istio-token", "/var/run/secrets/tokens"),
    ("istio-podinfo", "/etc/istio/pod"),
)

@dataclass(frozen=True)
class Workload:
    """The plain values the manifests are built from. `proxy_image` may be a pulumi Output: it is only
    placed into the manifests, never inspected, except that a plain string is checked."""

    namespace: str
    name: str
    proxy_image: pulumi.Input[str]
    app_uid: int
    debugger_ports: DebuggerPorts
    istio_version: str
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
        if mode == "startup":
            minor = ".".join(self.istio_version.split(".")[:2])
            if minor != STARTUP_ISTIO_MINOR:
                raise ValueError(
                    f"startup mode writes out Istio {STARTUP_ISTIO_MINOR}'s injected sidecar; istioVersion "
                    f"{self.istio_version} is not supported (use attach mode)"
                )
            if self.app_uid in (0, ISTIO_PROXY_UID):
                raise ValueError(f"app uid {self.app_uid} must be neither root nor the proxy's {ISTIO_PROXY_UID}")

    @property
    def selector(self) -> dict[str, str]:
        return {"app": self.name}


def pod_name(workload: str) -> str:
    """The StatefulSet's one pod: ordinal 0."""
    return f"{workload}-0"


def start_command(namespace: str, pod: str) -> str:
    """The walkthrough's by-hand start of pilot-agent in the waiting istio-proxy (as uid 1337, the
    container's user; `kubectl exec` gives it the container's env), with a terminal so Ctrl-C stops it."""
    words = [
        "kubectl", "-n", namespace, "exec", "-it", pod, "-c", PROXY_CONTAINER, "--",
        PILOT_AGENT, "proxy", "sidecar", "--domain", f"{namespace}.svc.{ISTIO_TRUST_DOMAIN}", *PILOT_AGENT_ARGS,
    ]
    return shlex.join(words)


def namespace_manifest(namespace: str) -> dict:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}


def service_manifest(w: Workload) -> dict:
    """The headless Service the StatefulSet's serviceName names; its port names tell Istio the protocol."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": w.name, "namespace": w.namespace, "labels": dict(w.selector)},
        "spec": {
            "clusterIP": "None",
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


def _affinity(node: str | None) -> dict:
    """Pins the pod to a node by its exact name (matchFields metadata.name), through the scheduler."""
    if node is None:
        return {}
    term = {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}
    return {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [term]}}}}


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


def attach_statefulset(w: Workload) -> dict:
    """S7: the walkthrough's StatefulSet, injected by Istio with the debug image."""
    w.check("attach")
    metadata = {
        "annotations": {
            "sidecar.istio.io/proxyImage": w.proxy_image,
            "sidecar.istio.io/inject": "true",
            "sidecar.istio.io/proxyMemoryLimit": w.proxy_memory_limit,
            "sidecar.istio.io/proxyMemory": w.proxy_memory,
        },
        # The label (not only the deprecated annotation) selects the pod for Istio's object webhook, so
        # it is injected in a namespace without the istio-injection label too.
        "labels": {"app.kubernetes.io/name": w.name, **w.selector, "sidecar.istio.io/inject": "true"},
    }
    spec = {
        "restartPolicy": "Always",
        "containers": [
            _app_container(),
            # The injector merges a container of this name into its own; "auto" keeps the injected image.
            {"name": PROXY_CONTAINER, "image": "auto", "imagePullPolicy": "IfNotPresent"},
        ],
        **_affinity(w.target_node_name),
    }
    return _statefulset(w, metadata, spec)


def _field_env(name: str, path: str) -> dict:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def istio_pod_ports(containers: list[dict]) -> str:
    """ISTIO_META_POD_PORTS as the 1.17 template writes it: one JSON object per line, comma first."""
    ports = [{"name": p["name"], "containerPort": p["containerPort"], "protocol": p["protocol"]}
             for c in containers for p in c.get("ports", [])]
    lines = [("    " if i == 0 else "    ,") + json.dumps(p, separators=(",", ":")) for i, p in enumerate(ports)]
    return "\n".join(["[", *lines, "]"])


def _proxy_env(w: Workload, app_containers: list[dict]) -> list[dict]:
    return [
        {"name": "JWT_POLICY", "value": "third-party-jwt"},
        {"name": "PILOT_CERT_PROVIDER", "value": "istiod"},
        {"name": "CA_ADDR", "value": ISTIO_CA_ADDR},
        _field_env("POD_NAME", "metadata.name"),
        _field_env("POD_NAMESPACE", "metadata.namespace"),
        _field_env("INSTANCE_IP", "status.podIP"),
        _field_env("SERVICE_ACCOUNT", "spec.serviceAccountName"),
        _field_env("HOST_IP", "status.hostIP"),
        {"name": "PROXY_CONFIG", "value": "{}\n"},
        {"name": "ISTIO_META_POD_PORTS", "value": istio_pod_ports(app_containers)},
        {"name": "ISTIO_META_APP_CONTAINERS", "value": ",".join(c["name"] for c in app_containers)},
        {"name": "ISTIO_META_CLUSTER_ID", "value": "Kubernetes"},
        _field_env("ISTIO_META_NODE_NAME", "spec.nodeName"),
        {"name": "ISTIO_META_INTERCEPTION_MODE", "value": "REDIRECT"},
        # The webhook names the pod's controller: the StatefulSet.
        {"name": "ISTIO_META_WORKLOAD_NAME", "value": w.name},
        {"name": "ISTIO_META_OWNER", "value": f"kubernetes://apis/apps/v1/namespaces/{w.namespace}/statefulsets/{w.name}"},
        {"name": "ISTIO_META_MESH_ID", "value": ISTIO_TRUST_DOMAIN},
        {"name": "TRUST_DOMAIN", "value": ISTIO_TRUST_DOMAIN},
    ]


def istio_volumes() -> list[dict]:
    return [
        {"name": "workload-socket", "emptyDir": {}},
        {"name": "credential-socket", "emptyDir": {}},
        {"name": "workload-certs", "emptyDir": {}},
        {"name": "istio-envoy", "emptyDir": {"medium": "Memory"}},
        {"name": "istio-data", "emptyDir": {}},
        {"name": "istio-podinfo", "downwardAPI": {"items": [
            {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
            {"path": "annotations", "fieldRef": {"fieldPath": "metadata.annotations"}},
        ]}},
        {"name": "istio-token", "projected": {"sources": [
            {"serviceAccountToken": {"audience": "istio-ca", "expirationSeconds": 43200, "path": "istio-token"}},
        ]}},
        {"name": "istiod-ca-cert", "configMap": {"name": "istio-ca-root-cert"}},
    ]


def sidecar_status() -> str:
    """The sidecar.istio.io/status annotation the 1.17 injector leaves on the pods it injected."""
    return json.dumps({
        "initContainers": [INIT_CONTAINER],
        "containers": [PROXY_CONTAINER],
        "volumes": [v["name"] for v in istio_volumes()],
        "imagePullSecrets": None,
        "revision": "default",
    }, separators=(",", ":"))


def debugger_container_ports(ports: DebuggerPorts) -> list[dict]:
    named = [("lldb-platform", ports.platform)] + [(f"lldb-gdb-{i}", p) for i, p in enumerate(ports.gdbserver, 1)]
    return [{"containerPort": port, "name": name, "protocol": "TCP"} for name, port in named]


def _proxy_resources(w: Workload) -> dict:
    """What the injector makes of proxyMemory/proxyMemoryLimit: only the annotated values, no CPU."""
    return {"requests": {"memory": w.proxy_memory}, "limits": {"memory": w.proxy_memory_limit}}


def startup_statefulset(w: Workload) -> dict:
    """S11: the hand-injected StatefulSet whose istio-proxy waits for the developer to start pilot-agent."""
    w.check("startup")
    app = _app_container()
    app["securityContext"] = {"runAsUser": w.app_uid, "runAsGroup": w.app_uid, "runAsNonRoot": True}
    init = {
        "name": INIT_CONTAINER,
        "image": w.proxy_image,
        "imagePullPolicy": "IfNotPresent",
        "command": init_command(nat_rules(w.debugger_ports.all, app_uid=w.app_uid)),
        # The 1.17 template gives istio-init the sidecar's resources too.
        "resources": _proxy_resources(w),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]},
            "privileged": False,
            "readOnlyRootFilesystem": False,
            "runAsGroup": 0,
            "runAsNonRoot": False,
            "runAsUser": 0,
        },
    }
    proxy = {
        "name": PROXY_CONTAINER,
        "image": w.proxy_image,
        "imagePullPolicy": "IfNotPresent",
        # Waits instead of `pilot-agent proxy sidecar …`; start_command starts it by hand.
        "command": [PROXY_WAIT_COMMAND],
        "args": ["infinity"],
        "env": _proxy_env(w, [app]),
        "ports": [
            {"containerPort": 15090, "name": "http-envoy-prom", "protocol": "TCP"},
            *debugger_container_ports(w.debugger_ports),
        ],
        "resources": _proxy_resources(w),
        "securityContext": {
            "allowPrivilegeEscalation": True,
            "capabilities": {"add": ["SYS_PTRACE"]},
            "privileged": False,
            "readOnlyRootFilesystem": False,
            "runAsGroup": ISTIO_PROXY_GID,
            "runAsNonRoot": True,
            "runAsUser": ISTIO_PROXY_UID,
        },
        "volumeMounts": [{"mountPath": path, "name": name} for name, path in ISTIO_VOLUME_MOUNTS],
    }
    metadata = {
        "annotations": {
            "kubectl.kubernetes.io/default-container": APP_CONTAINER,
            "kubectl.kubernetes.io/default-logs-container": APP_CONTAINER,
            "prometheus.io/path": "/stats/prometheus",
            "prometheus.io/port": "15020",
            "prometheus.io/scrape": "true",
            "sidecar.istio.io/proxyImage": w.proxy_image,
            "sidecar.istio.io/status": sidecar_status(),
            "sidecar.istio.io/inject": "false",
        },
        "labels": {
            **w.selector,
            "app.kubernetes.io/name": w.name,
            "security.istio.io/tlsMode": "istio",
            "service.istio.io/canonical-name": w.name,
            "service.istio.io/canonical-revision": "latest",
            # Keeps the namespace webhook away (its objectSelector excludes inject=false).
            "sidecar.istio.io/inject": "false",
        },
    }
    spec = {
        "restartPolicy": "Always",
        "initContainers": [init],
        "containers": [app, proxy],
        "volumes": istio_volumes(),
        **_affinity(w.target_node_name),
    }
    return _statefulset(w, metadata, spec)


def statefulset_manifest(w: Workload, mode: str) -> dict:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    return attach_statefulset(w) if mode == "attach" else startup_statefulset(w)


@dataclass
class TargetArgs:
    # The workload's plain values; its proxy_image is the debug image as the nodes pull it, by digest.
    workload: Workload
    mode: str
    create_namespace: bool


class Target(pulumi.ComponentResource):
    """The namespace (unless it exists), the headless Service and the StatefulSet of the chosen mode."""

    pod_name: pulumi.Output[str]
    start_command: pulumi.Output[str | None]

    def __init__(self, name: str, args: TargetArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("istio-proxy-debug:target:Target", name, None, opts)
        workload = args.workload
        try:
            statefulset = statefulset_manifest(workload, args.mode)
        except ValueError as error:
            raise pulumi.RunError(f"target: {error}") from None
        service = service_manifest(workload)

        namespace: pulumi.Input[str] = workload.namespace
        if args.create_namespace:
            created = k8s.core.v1.Namespace(
                f"{name}-namespace", metadata=namespace_manifest(workload.namespace)["metadata"],
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
                custom_timeouts=pulumi.CustomTimeouts(create=ROLLOUT_TIMEOUT, update=ROLLOUT_TIMEOUT),
            ),
        )
        self.pod_name = created_set.metadata.apply(lambda m: pod_name(m.name))
        if args.mode == "startup":
            self.start_command = pulumi.Output.all(namespace, self.pod_name).apply(lambda v: start_command(*v))
        else:
            self.start_command = pulumi.Output.from_input(None)
        self.register_outputs({"podName": self.pod_name, "startCommand": self.start_command})
