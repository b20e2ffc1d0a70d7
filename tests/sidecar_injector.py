"""A stand-in for istiod's sidecar injector: a real mutating admission webhook, registered with a test API server,
that answers a pod's creation with the injection of one Istio release, as reproduced from that release's own golden
files (tests/injector.py), so a workload the stack creates is injected the way a cluster injects it.

`inject` is the injection, a pure function: the release's injection of a plain StatefulSet (`statefulset.yaml
.injected`: the native sidecar from 1.2x on, the regular one before), rendered for the pod's annotations the stack
uses (`sidecar.istio.io/proxyImage`, `proxyMemory`, `proxyMemoryLimit`, `status.sidecar.istio.io/port: "0"`,
`traffic.sidecar.istio.io/excludeInboundPorts`), the pod's own `istio-proxy`/`istio-init` merged as the injector
merges them, the pod's own containers, volumes and ports in place of the golden's app. tests/test_sidecar_injector.py
checks it against every release's golden files that show these steps.

`InjectorWebhook` serves it over HTTPS on an address the API server reaches and registers it with the two webhooks
Istio's chart registers (a namespace labelled `istio-injection=enabled`, or a pod labelled
`sidecar.istio.io/inject=true` in a namespace without the label); a pod of a namespace labelled `disabled` (the
stack's node agents) is left alone. Like istiod it also writes the mesh's root certificate ConfigMap,
`istio-ca-root-cert`, into the namespace of each pod it injects (the injected pod mounts it).
"""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.control_plane import ControlPlane
from tests.injector import INJECTED, PROXY, injected_with_overrides, pod_template, status_port_zero
from tests.releases import Release

PLAIN_GOLDEN = "statefulset.yaml.injected"
STATUS_ANNOTATION = "sidecar.istio.io/status"
PROXY_IMAGE_ANNOTATION = "sidecar.istio.io/proxyImage"
STATUS_PORT_ANNOTATION = "status.sidecar.istio.io/port"
EXCLUDED_INBOUND_ANNOTATION = "traffic.sidecar.istio.io/excludeInboundPorts"
OVERRIDES_ANNOTATION = "proxy.istio.io/overrides"
# The template's resources for the proxy, by annotation (injection-template.yaml: `annotation .ObjectMeta
# "sidecar.istio.io/proxyMemory" …`).
RESOURCE_ANNOTATIONS = {"sidecar.istio.io/proxyCPU": ("requests", "cpu"),
                        "sidecar.istio.io/proxyCPULimit": ("limits", "cpu"),
                        "sidecar.istio.io/proxyMemory": ("requests", "memory"),
                        "sidecar.istio.io/proxyMemoryLimit": ("limits", "memory")}
CA_ROOT_CONFIGMAP = "istio-ca-root-cert"


@dataclass(frozen=True)
class Owner:
    """The workload a pod belongs to, as the injector names it in the proxy's metadata."""

    kind: str  # the resource's plural: statefulsets, deployments, pods
    group_version: str  # apps/v1, or v1 for a bare pod
    namespace: str
    name: str

    @property
    def uri(self) -> str:
        prefix = "apis/" if "/" in self.group_version else "api/"
        return f"kubernetes://{prefix}{self.group_version}/namespaces/{self.namespace}/{self.kind}/{self.name}"


def pod_owner(pod: dict, namespace: str) -> Owner:
    """A pod's workload from its controller reference (a StatefulSet's pods name it), or the pod itself."""
    for reference in pod["metadata"].get("ownerReferences") or []:
        if reference.get("controller") and reference["kind"] == "StatefulSet":
            return Owner("statefulsets", reference["apiVersion"], namespace, reference["name"])
    return Owner("pods", "v1", namespace, pod["metadata"]["name"])


def pod_ports_env(containers: list[dict]) -> str:
    """ISTIO_META_POD_PORTS as the template writes it: each port of the app's containers, as JSON, a line each."""
    ports = [json.dumps({k: p[k] for k in ("name", "hostPort", "containerPort", "protocol", "hostIP") if k in p},
                        separators=(",", ":"))
             for c in containers for p in c.get("ports") or []]
    return "[\n" + "".join(f"    {',' if i else ''}{port}\n" for i, port in enumerate(ports)) + "]"


def _set_env(container: dict, name: str, value: str) -> None:
    for entry in container.get("env", []):
        if entry["name"] == name:
            entry.clear()
            entry.update({"name": name, "value": value})


def _sidecars(spec: dict) -> list[dict]:
    return [c for field_ in ("initContainers", "containers") for c in spec.get(field_, []) if c["name"] in INJECTED]


def inject(release: Release, pod: dict, owner: Owner, proxy_image: str | None = None) -> dict:
    """The pod (metadata and spec) as `release`'s injector returns it. `proxy_image`: the install's own proxy image
    (hub and tag), used unless the pod names one; None keeps the golden files' test image."""
    golden = pod_template(release.golden(PLAIN_GOLDEN))
    annotations = dict(pod["metadata"].get("annotations") or {})
    labels = dict(pod["metadata"].get("labels") or {})
    own = pod["spec"]
    app_containers = [c for c in own.get("containers", []) if c["name"] not in INJECTED]
    spec = copy.deepcopy(golden["spec"])
    image = annotations.get(PROXY_IMAGE_ANNOTATION) or proxy_image
    for sidecar in _sidecars(spec):
        if image:
            sidecar["image"] = image
        if sidecar["name"] == PROXY:
            for annotation, (bound, resource) in RESOURCE_ANNOTATIONS.items():
                if annotation in annotations:
                    sidecar.setdefault("resources", {}).setdefault(bound, {})[resource] = annotations[annotation]
            _set_env(sidecar, "ISTIO_META_POD_PORTS", pod_ports_env(app_containers))
            _set_env(sidecar, "ISTIO_META_APP_CONTAINERS", ",".join(c["name"] for c in app_containers))
            _set_env(sidecar, "ISTIO_META_WORKLOAD_NAME", owner.name)
            _set_env(sidecar, "ISTIO_META_OWNER", owner.uri)
    if annotations.get(STATUS_PORT_ANNOTATION) == "0":
        spec = status_port_zero(spec, annotations.get(EXCLUDED_INBOUND_ANNOTATION, ""))
    merged, overrides = injected_with_overrides(spec, own)
    status = json.loads(golden["metadata"]["annotations"][STATUS_ANNOTATION])
    own_inits = [c for c in own.get("initContainers", []) if c["name"] not in INJECTED]
    merged["initContainers"] = [c for c in merged.get("initContainers", []) if c["name"] in INJECTED] + own_inits
    merged["containers"] = app_containers + [c for c in merged["containers"] if c["name"] in INJECTED]
    merged["volumes"] = [v for v in merged.get("volumes", []) if v["name"] in status["volumes"]] + own.get(
        "volumes", [])
    if not merged["initContainers"]:
        del merged["initContainers"]
    result_spec = {**{k: v for k, v in own.items() if k not in ("containers", "initContainers", "volumes")},
                   **merged}
    injected_annotations = {**golden["metadata"]["annotations"], **annotations}
    first_app = app_containers[0]["name"]
    injected_annotations["kubectl.kubernetes.io/default-container"] = first_app
    injected_annotations["kubectl.kubernetes.io/default-logs-container"] = first_app
    if overrides:
        injected_annotations[OVERRIDES_ANNOTATION] = json.dumps(overrides, separators=(",", ":"))
    canonical = (labels.get("service.istio.io/canonical-name") or labels.get("app.kubernetes.io/name")
                 or labels.get("app") or owner.name)
    revision = (labels.get("service.istio.io/canonical-revision") or labels.get("app.kubernetes.io/version")
                or labels.get("version") or "latest")
    injected_labels = {**labels, "security.istio.io/tlsMode": "istio",
                       "service.istio.io/canonical-name": canonical,
                       "service.istio.io/canonical-revision": revision}
    return {"metadata": {**pod["metadata"], "annotations": injected_annotations, "labels": injected_labels},
            "spec": result_spec}


def webhooks(url: str, ca_bundle: str) -> list[dict]:
    """The two webhooks Istio's istiod chart registers (mutatingwebhook.yaml, the default revision's)."""
    common = {"clientConfig": {"url": url, "caBundle": ca_bundle},
              "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}],
              "sideEffects": "None", "failurePolicy": "Fail", "reinvocationPolicy": "Never",
              "admissionReviewVersions": ["v1"], "timeoutSeconds": 10}
    return [
        {"name": "namespace.sidecar-injector.istio.io", **common,
         "namespaceSelector": {"matchExpressions": [{"key": "istio-injection", "operator": "In",
                                                     "values": ["enabled"]}]},
         "objectSelector": {"matchExpressions": [{"key": "sidecar.istio.io/inject", "operator": "NotIn",
                                                  "values": ["false"]}]}},
        {"name": "object.sidecar-injector.istio.io", **common,
         "namespaceSelector": {"matchExpressions": [{"key": "istio-injection", "operator": "DoesNotExist"},
                                                    {"key": "istio.io/rev", "operator": "DoesNotExist"}]},
         "objectSelector": {"matchExpressions": [{"key": "sidecar.istio.io/inject", "operator": "In",
                                                  "values": ["true"]},
                                                 {"key": "istio.io/rev", "operator": "DoesNotExist"}]}},
    ]


def _certificate(folder: Path, address: str) -> tuple[Path, Path]:
    """A self-signed serving certificate for `address` (an IP), as the API server verifies a webhook's."""
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = folder / "webhook.crt", folder / "webhook.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
                    "/CN=istiod.istio-system.svc", "-addext", f"subjectAltName=IP:{address}",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True, timeout=60)
    return cert, key


@dataclass
class InjectorWebhook:
    """The running webhook: what it injected (namespace/name), and what went wrong answering (kept for the tests)."""

    url: str
    injected: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def review_response(uid: str, patch: list[dict] | None) -> dict:
    response = {"uid": uid, "allowed": True}
    if patch:
        response |= {"patchType": "JSONPatch", "patch": base64.b64encode(json.dumps(patch).encode()).decode()}
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}


@contextlib.contextmanager
def injector_webhook(plane: ControlPlane, release: Release, address: str, folder: Path,
                     proxy_image: str) -> Iterator[InjectorWebhook]:
    """The webhook on `address` (where the API server reaches it), registered until the end."""
    cert, key = _certificate(folder, address)
    ca_root = cert.read_text()
    ready_namespaces: set[str] = set()

    def ca_configmap(namespace: str) -> None:
        if namespace in ready_namespaces:
            return
        manifest = {"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": CA_ROOT_CONFIGMAP, "namespace": namespace}, "data": {"root-cert.pem": ca_root}}
        plane.kubectl("apply", "-f", "-", stdin=json.dumps(manifest))
        ready_namespaces.add(namespace)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            request = review["request"]
            pod, namespace = request["object"], request["namespace"]
            name = pod["metadata"].get("name") or pod["metadata"].get("generateName", "") + "…"
            try:
                injected = inject(release, pod, pod_owner(pod, namespace), proxy_image)
                ca_configmap(namespace)
                patch = [{"op": "add", "path": "/metadata/annotations", "value": injected["metadata"]["annotations"]},
                         {"op": "add", "path": "/metadata/labels", "value": injected["metadata"]["labels"]},
                         {"op": "replace", "path": "/spec", "value": injected["spec"]}]
                state.injected.append(f"{namespace}/{name}")
            except Exception as error:  # noqa: BLE001 (kept for the tests; the pod is admitted uninjected)
                state.errors.append(f"{namespace}/{name}: {type(error).__name__}: {error}")
                patch = None
            body = json.dumps(review_response(request["uid"], patch)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer((address, 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    state = InjectorWebhook(url=f"https://{address}:{server.server_address[1]}/inject")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    configuration = {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
                     "metadata": {"name": "istio-sidecar-injector"},
                     "webhooks": webhooks(state.url, base64.b64encode(cert.read_bytes()).decode())}
    try:
        plane.kubectl("apply", "-f", "-", stdin=json.dumps(configuration))
        yield state
    finally:
        plane.kubectl("delete", "mutatingwebhookconfiguration", "istio-sidecar-injector", "--ignore-not-found",
                      check=False)
        server.shutdown()
        thread.join(timeout=30)
