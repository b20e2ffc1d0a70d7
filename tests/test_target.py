"""S7 and S11: the target workload, checked against the walkthrough's own manifests.

The expected values are the walkthrough's YAML (../shared/seed/debug-istio-proxy.zh.md, copied below
verbatim) and the Istio 1.17 facts of ../shared/research/istio-lldb-containerd.md §2; each deliberate
difference from the walkthrough is spelt out where it is applied.
"""

from __future__ import annotations

import json
import re
import shlex

import pytest
import yaml

from components.debug_ports import DebuggerPorts
from components.target import (
    Workload,
    attach_statefulset,
    namespace_manifest,
    service_manifest,
    start_command,
    startup_statefulset,
)
from tests.conftest import evaluate, resource
from tests.mock_stack import FAKE_IMAGE_DIGEST as FAKE_DIGEST

# --- the walkthrough, verbatim -------------------------------------------------------------------

# S7, "2.2 运行目标 pod" (applied with `kubectl -n mark apply -f -`).
WALKTHROUGH_S7 = """
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: fortio-server
  labels:
    app: fortio-server
spec:
  serviceName: fortio-server
  replicas: 1
  selector:
    matchLabels:
      app: fortio-server
  template:
    metadata:
      annotations:
        sidecar.istio.io/proxyImage: 192.168.122.1:5000/proxyv2:1.17.2-debug
        sidecar.istio.io/inject: "true"
        sidecar.istio.io/proxyMemoryLimit: "4Gi"
        sidecar.istio.io/proxyMemory: "512Mi"
      labels:
        app.kubernetes.io/name: fortio-server
        app: fortio-server
    spec:
      restartPolicy: Always
      containers:
      - name: main-app
        image: docker.io/fortio/fortio
        imagePullPolicy: IfNotPresent
        command: ["/usr/bin/fortio"]
        args: ["server", "-M", "8070 http://fortio-server-l2:8080"]
        ports:
        - containerPort: 8080
          protocol: TCP
          name: http
        - containerPort: 8070
          protocol: TCP
          name: http-m

      - name: istio-proxy
        image: auto
        imagePullPolicy: IfNotPresent
"""

# S11, "定制手工拉起的 istio-proxy": `istioctl kube-inject` output of Istio 1.17.2, edited by hand.
WALKTHROUGH_S11 = """
apiVersion: apps/v1
kind: StatefulSet
metadata:
  creationTimestamp: null
  labels:
    app: fortio-server
  name: fortio-server
spec:
  replicas: 1
  selector:
    matchLabels:
      app: fortio-server
  serviceName: fortio-server
  template:
    metadata:
      annotations:
        kubectl.kubernetes.io/default-container: main-app
        kubectl.kubernetes.io/default-logs-container: main-app
        prometheus.io/path: /stats/prometheus
        prometheus.io/port: "15020"
        prometheus.io/scrape: "true"
        sidecar.istio.io/proxyImage: 192.168.122.1:5000/proxyv2:1.17.2-debug
        sidecar.istio.io/status: STATUS
        sidecar.istio.io/inject: "false"
      creationTimestamp: null
      labels:
        app: fortio-server
        app.kubernetes.io/name: fortio-server
        security.istio.io/tlsMode: istio
        service.istio.io/canonical-name: fortio-server
        service.istio.io/canonical-revision: latest
    spec:
      containers:
      - args:
        - 10d
        command:
        - /bin/sleep
        image: docker.io/nicolaka/netshoot:latest
        imagePullPolicy: IfNotPresent
        name: main-app
        ports:
        - containerPort: 8080
          name: http
          protocol: TCP
        resources: {}
      - args:
        - 20d
        command:
        - /usr/bin/sleep
        env:
        - name: JWT_POLICY
          value: third-party-jwt
        - name: PILOT_CERT_PROVIDER
          value: istiod
        - name: CA_ADDR
          value: istiod.istio-system.svc:15012
        - name: POD_NAME
          valueFrom:
            fieldRef:
              fieldPath: metadata.name
        - name: POD_NAMESPACE
          valueFrom:
            fieldRef:
              fieldPath: metadata.namespace
        - name: INSTANCE_IP
          valueFrom:
            fieldRef:
              fieldPath: status.podIP
        - name: SERVICE_ACCOUNT
          valueFrom:
            fieldRef:
              fieldPath: spec.serviceAccountName
        - name: HOST_IP
          valueFrom:
            fieldRef:
              fieldPath: status.hostIP
        - name: PROXY_CONFIG
          value: |
            {}
        - name: ISTIO_META_POD_PORTS
          value: |-
            [
                {"name":"http","containerPort":8080,"protocol":"TCP"}
                ,{"name":"http-m","containerPort":8070,"protocol":"TCP"}
                ,{"name":"grpc","containerPort":8079,"protocol":"TCP"}
            ]
        - name: ISTIO_META_APP_CONTAINERS
          value: main-app
        - name: ISTIO_META_CLUSTER_ID
          value: Kubernetes
        - name: ISTIO_META_NODE_NAME
          valueFrom:
            fieldRef:
              fieldPath: spec.nodeName
        - name: ISTIO_META_INTERCEPTION_MODE
          value: REDIRECT
        - name: ISTIO_META_MESH_ID
          value: cluster.local
        - name: TRUST_DOMAIN
          value: cluster.local
        image: 192.168.122.1:5000/proxyv2:1.17.2-debug
        name: istio-proxy
        ports:
        - containerPort: 15090
          name: http-envoy-prom
          protocol: TCP
        - containerPort: 2159
          name: http-m
          protocol: TCP
        resources:
          requests:
            cpu: 100m
            memory: 128Mi
        securityContext:
          allowPrivilegeEscalation: true
          capabilities:
            add:
            - ALL
          privileged: true
          readOnlyRootFilesystem: false
          runAsGroup: 1337
          runAsNonRoot: true
          runAsUser: 1337
        volumeMounts:
        - mountPath: /var/run/secrets/workload-spiffe-uds
          name: workload-socket
        - mountPath: /var/run/secrets/credential-uds
          name: credential-socket
        - mountPath: /var/run/secrets/workload-spiffe-credentials
          name: workload-certs
        - mountPath: /var/run/secrets/istio
          name: istiod-ca-cert
        - mountPath: /var/lib/istio/data
          name: istio-data
        - mountPath: /etc/istio/proxy
          name: istio-envoy
        - mountPath: /var/run/secrets/tokens
          name: istio-token
        - mountPath: /etc/istio/pod
          name: istio-podinfo
      restartPolicy: Always
      volumes:
      - name: workload-socket
      - name: credential-socket
      - name: workload-certs
      - emptyDir:
          medium: Memory
        name: istio-envoy
      - emptyDir: {}
        name: istio-data
      - downwardAPI:
          items:
          - fieldRef:
              fieldPath: metadata.labels
            path: labels
          - fieldRef:
              fieldPath: metadata.annotations
            path: annotations
        name: istio-podinfo
      - name: istio-token
        projected:
          sources:
          - serviceAccountToken:
              audience: istio-ca
              expirationSeconds: 43200
              path: istio-token
      - configMap:
          name: istio-ca-root-cert
        name: istiod-ca-cert
  updateStrategy: {}
status:
  availableReplicas: 0
  replicas: 0
""".replace(  # the one line too long for this file, split here and nowhere else
    "STATUS",
    """'{"initContainers":["istio-init"],"containers":["istio-proxy"],"volumes":["workload-socket","credential-socket","workload-certs","istio-envoy","istio-data","istio-podinfo","istio-token","istiod-ca-cert"],"imagePullSecrets":null,"revision":"default"}'""",
)

# S11: how the walkthrough starts Envoy by hand, in `kubectl exec -it fortio-server-0 -c istio-proxy`.
WALKTHROUGH_START = (
    "/usr/local/bin/pilot-agent proxy sidecar --domain ${POD_NAMESPACE}.svc.cluster.local --proxyLogLevel=warning"
    " --proxyComponentLogLevel=misc:error --log_output_level=default:info --concurrency 2"
)
# Research §2: env of the 1.17 sidecar that the webhook adds for a pod with a controller (here the
# StatefulSet) and that the walkthrough's kube-inject output lacks.
WEBHOOK_OWNER_ENV = {
    "ISTIO_META_WORKLOAD_NAME": "fortio-server",
    "ISTIO_META_OWNER": "kubernetes://apis/apps/v1/namespaces/mark/statefulsets/fortio-server",
}
# Research §2, hello.yaml.injected: istio-init's security context.
INJECTED_INIT_SECURITY_CONTEXT = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]},
    "privileged": False,
    "readOnlyRootFilesystem": False,
    "runAsGroup": 0,
    "runAsNonRoot": False,
    "runAsUser": 0,
}

# The dev stack (Pulumi.dev.yaml and the project defaults): the walkthrough's lab.
LAB_IMAGE = f"192.168.122.1:5000/proxyv2@{FAKE_DIGEST}"
LAB = Workload(namespace="mark", name="fortio-server", proxy_image=LAB_IMAGE, app_uid=1000,
               debugger_ports=DebuggerPorts(2159))
PINNED = Workload(**{**LAB.__dict__, "target_node_name": "node-55"})


def pinned_to(node: str) -> dict:
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}]}}}


def container(pod_spec: dict, name: str, init: bool = False) -> dict:
    matches = [c for c in pod_spec["initContainers" if init else "containers"] if c["name"] == name]
    assert len(matches) == 1, f"expected one container {name}"
    return matches[0]


def env_map(c: dict) -> dict:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c["env"]}


# --- the component under mocks -------------------------------------------------------------------


def target_evaluation(*sets: str) -> dict:
    """The program's resources and outputs for the dev stack with overrides, under mocks."""
    return evaluate("dev", *sets)


def ints(value):
    """Mock inputs carry numbers as floats (protobuf Struct); whole ones back to int."""
    if isinstance(value, dict):
        return {k: ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [ints(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def manifest(evaluation: dict, name: str) -> dict:
    """A Kubernetes resource of the evaluation as the object the provider sends to the API server."""
    inputs = ints(resource(evaluation, name)["inputs"])
    return {k: inputs[k] for k in ("apiVersion", "kind", "metadata", "spec") if k in inputs}


# --- S7: attach mode ------------------------------------------------------------------------------


def test_s7_statefulset_is_the_walkthroughs_with_the_debug_image_by_digest():
    expected = yaml.safe_load(WALKTHROUGH_S7)
    expected["metadata"]["namespace"] = "mark"  # kubectl -n mark apply
    template = expected["spec"]["template"]["metadata"]
    walkthrough_image = template["annotations"]["sidecar.istio.io/proxyImage"]
    # The same registry (as the nodes reach it) and repository, pinned by digest instead of a tag.
    template["annotations"]["sidecar.istio.io/proxyImage"] = walkthrough_image.split(":1.17.2-debug")[0] + "@" + (
        FAKE_DIGEST)
    # Also the label: the annotation alone is not seen by Istio's object webhook (namespaces without
    # the istio-injection label).
    template["labels"]["sidecar.istio.io/inject"] = "true"
    assert attach_statefulset(LAB) == expected


def test_s7_headless_service_named_like_the_statefulsets_service_name():
    service = service_manifest(LAB)
    statefulset = attach_statefulset(LAB)
    assert service["metadata"]["name"] == statefulset["spec"]["serviceName"] == "fortio-server"
    assert service["metadata"]["namespace"] == "mark"
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"].items() <= statefulset["spec"]["template"]["metadata"]["labels"].items()
    assert {(p["name"], p["port"], p["targetPort"]) for p in service["spec"]["ports"]} == {
        ("http", 8080, 8080), ("http-m", 8070, 8070)}


def test_namespace_is_the_walkthroughs_labelled_for_injection():
    namespace = namespace_manifest("mark")
    assert namespace["metadata"]["name"] == "mark"
    assert namespace["metadata"]["labels"] == {"istio-injection": "enabled"}, "the default injector's namespace label"


@pytest.mark.parametrize("build", [attach_statefulset, startup_statefulset], ids=["attach", "startup"])
def test_pinned_to_the_target_node_by_name_only_when_set(build):
    assert "affinity" not in build(LAB)["spec"]["template"]["spec"]
    assert build(PINNED)["spec"]["template"]["spec"]["affinity"] == pinned_to("node-55")


def test_s7_proxy_memory_values_reach_the_annotations():
    w = Workload(**{**LAB.__dict__, "proxy_memory": "1Gi", "proxy_memory_limit": "8Gi"})
    annotations = attach_statefulset(w)["spec"]["template"]["metadata"]["annotations"]
    assert annotations["sidecar.istio.io/proxyMemory"] == "1Gi"
    assert annotations["sidecar.istio.io/proxyMemoryLimit"] == "8Gi"


# --- S11: startup mode ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def walkthrough_s11() -> dict:
    return yaml.safe_load(WALKTHROUGH_S11)


@pytest.fixture(scope="module")
def startup() -> dict:
    return startup_statefulset(LAB)


def test_s11_statefulset_metadata_and_selector_as_in_the_walkthrough(walkthrough_s11, startup):
    assert startup["metadata"]["name"] == walkthrough_s11["metadata"]["name"]
    assert startup["metadata"]["labels"] == walkthrough_s11["metadata"]["labels"]
    for key in ("replicas", "selector", "serviceName"):
        assert startup["spec"][key] == walkthrough_s11["spec"][key]


def test_s11_the_clusters_injector_injects_it_without_probes_and_with_the_debugger_ports_excluded(startup):
    metadata = startup["spec"]["template"]["metadata"]
    assert metadata["labels"]["sidecar.istio.io/inject"] == "true"
    annotations = metadata["annotations"]
    assert annotations["sidecar.istio.io/proxyImage"] == LAB_IMAGE
    assert annotations["status.sidecar.istio.io/port"] == "0"
    assert annotations["traffic.sidecar.istio.io/excludeInboundPorts"] == "2159,2160,2161,2162,2163"
    assert "sidecar.istio.io/status" not in annotations, "the injector writes its own status, not a copy"


def test_s11_only_overrides_of_the_injectors_containers_no_copy_of_its_spec(startup):
    spec = startup["spec"]["template"]["spec"]
    proxy, init = container(spec, "istio-proxy"), container(spec, "istio-init", init=True)
    for injected in (proxy, init):
        assert injected["image"] == "auto"
        assert not {"args", "volumeMounts", "resources", "securityContext"} & set(init)
    assert "volumes" not in spec
    assert "args" not in proxy, "the injector's own pilot-agent arguments follow the wait"
    assert init["env"] == [{"name": "APP_UID", "value": "1000"}]


def test_s11_proxy_may_be_ptraced_with_the_narrowest_privileges(startup):
    proxy = container(startup["spec"]["template"]["spec"], "istio-proxy")
    assert proxy["securityContext"] == {"allowPrivilegeEscalation": True,
                                        "capabilities": {"add": ["SYS_PTRACE", "SETUID", "SETGID"]},
                                        "readOnlyRootFilesystem": False}


def test_s11_proxy_declares_every_debugger_port(startup):
    proxy = container(startup["spec"]["template"]["spec"], "istio-proxy")
    assert [p["containerPort"] for p in proxy["ports"]] == [2159, 2160, 2161, 2162, 2163]


def test_s11_app_runs_as_the_app_user(startup):
    app = container(startup["spec"]["template"]["spec"], "main-app")
    assert app["securityContext"] == {"runAsUser": 1000, "runAsGroup": 1000, "runAsNonRoot": True}
    assert [(p["name"], p["containerPort"]) for p in app["ports"]] == [("http", 8080), ("http-m", 8070)]
    assert startup["spec"]["template"]["spec"]["containers"][0]["name"] == "main-app", "the app comes first"


def test_s11_start_command_runs_the_start_file_in_the_proxy_container():
    assert shlex.split(start_command("mark", "fortio-server-0")) == [
        "kubectl", "-n", "mark", "exec", "-it", "fortio-server-0", "-c", "istio-proxy", "--",
        "/bin/sh", "/tmp/start-pilot-agent.sh"]


def test_app_uid_and_debugger_ports_follow_the_values():
    w = Workload(**{**LAB.__dict__, "app_uid": 4242, "debugger_ports": DebuggerPorts(3000)})
    template = startup_statefulset(w)["spec"]["template"]
    assert container(template["spec"], "main-app")["securityContext"]["runAsUser"] == 4242
    assert container(template["spec"], "istio-init", init=True)["env"] == [{"name": "APP_UID", "value": "4242"}]
    assert template["metadata"]["annotations"]["traffic.sidecar.istio.io/excludeInboundPorts"] == (
        "3000,3001,3002,3003,3004")


@pytest.mark.parametrize(("change", "mode", "message"), [
    ({"proxy_image": "proxyv2:1.17.2-debug"}, "attach", "must contain '/'"),
    ({"proxy_memory": "lots"}, "attach", "not a memory quantity"),
    ({"proxy_memory": "8Gi", "proxy_memory_limit": "4Gi"}, "startup", "above its limit"),
    ({"app_uid": 1337}, "startup", "neither root nor the proxy"),
])
def test_bad_values_are_refused_with_the_reason(change, mode, message):
    w = Workload(**{**LAB.__dict__, **change})
    build = attach_statefulset if mode == "attach" else startup_statefulset
    with pytest.raises(ValueError, match=re.escape(message)):
        build(w)


# --- Kubernetes schema and the API server's own checks ------------------------------------------

ALL_MANIFESTS = {
    "namespace": namespace_manifest("mark"),
    "service": service_manifest(LAB),
    "attach": attach_statefulset(LAB),
    "attach-pinned": attach_statefulset(PINNED),
    "startup": startup_statefulset(LAB),
    "startup-pinned": startup_statefulset(PINNED),
}
_IANA_SVC_NAME = re.compile(r"^(?=.{1,15}$)(?=.*[a-z])[a-z0-9]+(-[a-z0-9]+)*$")


def validate(obj: dict) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    version = kubernetes_validate.latest_version()
    assert tuple(int(p) for p in version.split(".")[:2]) >= (1, 30), version
    kubernetes_validate.validate(obj, version, strict=True)


@pytest.mark.parametrize("name", ALL_MANIFESTS)
def test_manifest_validates_against_the_kubernetes_openapi_schema(name):
    validate(ALL_MANIFESTS[name])


def test_the_schema_check_catches_a_bad_field():
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    bad = json.loads(json.dumps(ALL_MANIFESTS["startup"]))
    bad["spec"]["template"]["spec"]["containers"][1]["securityContext"]["capabilites"] = {"add": ["ALL"]}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(bad)


@pytest.mark.parametrize("name", ["attach", "startup", "startup-pinned"])
def test_pod_template_passes_the_api_servers_name_checks(name):
    template = ALL_MANIFESTS[name]["spec"]["template"]
    spec = template["spec"]
    containers = spec["containers"] + spec.get("initContainers", [])
    assert len({c["name"] for c in containers}) == len(containers)
    ports = [p for c in containers for p in c.get("ports", [])]
    assert all(_IANA_SVC_NAME.match(p["name"]) for p in ports), ports
    assert len({p["name"] for p in ports}) == len(ports), "port names unique in the pod"
    assert len({p["containerPort"] for p in ports}) == len(ports)
    volumes = {v["name"] for v in spec.get("volumes", [])}
    assert {m["name"] for c in containers for m in c.get("volumeMounts", [])} <= volumes
    for c in containers:
        assert len({e["name"] for e in c.get("env", [])}) == len(c.get("env", []))
    selector = ALL_MANIFESTS[name]["spec"]["selector"]["matchLabels"]
    assert selector.items() <= template["metadata"]["labels"].items()


# --- the component, under mocks ------------------------------------------------------------------

def kubernetes_resources(evaluation: dict) -> list[tuple[str, str]]:
    """The evaluation's Kubernetes resources, each checked to be a child of the Target component."""
    component = resource(evaluation, "target")
    assert component["type"] == "istio-proxy-debug:target:Target" and not component["custom"]
    found = [r for r in evaluation["resources"] if r["type"].startswith("kubernetes:")]
    for r in found:
        assert r["options"]["parent"] == "target", r["name"]
    return sorted((r["type"], r["name"]) for r in found)


def test_attach_mode_under_mocks_creates_namespace_service_and_the_s7_statefulset():
    evaluation = target_evaluation()
    assert kubernetes_resources(evaluation) == [
        ("kubernetes:apps/v1:StatefulSet", "target-statefulset"),
        ("kubernetes:core/v1:Namespace", "target-namespace"),
        ("kubernetes:core/v1:Service", "target-service"),
    ]
    assert manifest(evaluation, "target-namespace") == namespace_manifest("mark")
    assert manifest(evaluation, "target-service") == service_manifest(LAB)
    statefulset = manifest(evaluation, "target-statefulset")
    assert statefulset == attach_statefulset(LAB)
    validate(statefulset)
    annotations = statefulset["spec"]["template"]["metadata"]["annotations"]
    assert annotations["sidecar.istio.io/proxyImage"] == f"192.168.122.1:5000/proxyv2@{FAKE_DIGEST}"
    assert evaluation["outputs"]["podName"] == "fortio-server-0"
    assert evaluation["outputs"].get("startCommand") is None
    options = resource(evaluation, "target-statefulset")["options"]
    assert options["deleteBeforeReplace"] is True
    assert options["customTimeouts"]["create"] == options["customTimeouts"]["update"] == "30m"


def test_startup_mode_under_mocks_creates_the_s11_statefulset_and_the_start_command():
    evaluation = target_evaluation("mode=startup", "targetNodeName=node-55")
    assert [name for _, name in kubernetes_resources(evaluation)] == [
        "target-statefulset", "target-namespace", "target-service"]
    statefulset = manifest(evaluation, "target-statefulset")
    assert statefulset == startup_statefulset(PINNED)
    validate(statefulset)
    assert evaluation["outputs"]["podName"] == "fortio-server-0"
    assert shlex.split(evaluation["outputs"]["startCommand"]) == [
        "kubectl", "-n", "mark", "exec", "-it", "fortio-server-0", "-c", "istio-proxy", "--",
        "/bin/sh", "/tmp/start-pilot-agent.sh"]


def test_existing_namespace_is_used_not_created():
    evaluation = target_evaluation("createNamespace=false", "namespace=team-a", "workload=echo")
    assert [name for _, name in kubernetes_resources(evaluation)] == ["target-statefulset", "target-service"]
    statefulset = manifest(evaluation, "target-statefulset")
    assert statefulset["metadata"]["namespace"] == "team-a"
    assert manifest(evaluation, "target-service")["metadata"] == {
        "name": "echo", "namespace": "team-a", "labels": {"app": "echo"}}
    assert evaluation["outputs"]["podName"] == "echo-0"


def test_the_config_values_reach_the_startup_pod():
    evaluation = target_evaluation("mode=startup", "appUid=2000", "lldbServerPort=3100", "registryPort=5001")
    spec = manifest(evaluation, "target-statefulset")["spec"]["template"]["spec"]
    assert container(spec, "main-app")["securityContext"]["runAsUser"] == 2000
    template = manifest(evaluation, "target-statefulset")["spec"]["template"]
    assert template["metadata"]["annotations"]["sidecar.istio.io/proxyImage"] == (
        f"192.168.122.1:5001/proxyv2@{FAKE_DIGEST}")
    assert template["metadata"]["annotations"]["traffic.sidecar.istio.io/excludeInboundPorts"].endswith(",3104")
    assert container(spec, "istio-init", init=True)["env"] == [{"name": "APP_UID", "value": "2000"}]


