"""The stack configuration: every key parsed and checked before any resource exists.

`parse_config` is a pure function from the raw config strings (as the Pulumi CLI hands them to the
program, project defaults from Pulumi.yaml already applied) to a typed `StackConfig`. Every problem is
collected, so one `pulumi preview` names all of them at once, each with the key, the bad value and
what is expected. `load_config` reads the raw strings through `pulumi.Config` and turns the problems
into a `pulumi.RunError`, which the CLI prints without a stack trace.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import posixpath
import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import pulumi

from components.debug_ports import GDBSERVER_PORT_COUNT, PLATFORM_PORT_RANGE, USER_PORT_RANGE, DebuggerPorts
from components.mesh_gateway import deployment_name, longest_workload

PROJECT = "istio-proxy-debug"
# The stack that reproduces the walkthrough: it keeps the walkthrough's container and network names.
WALKTHROUGH_STACK = "dev"
DEFAULT_SOURCE_REPOSITORY = "https://github.com/istio/proxy.git"
# Where istio/proxy's CI (scripts/release-binary.sh) publishes envoy-debug-<SHA>.{tar.gz,sha256,dwp}, and where
# istio/istio's own build downloads Envoy from (bin/init.sh, ISTIO_ENVOY_BASE_URL).
DEFAULT_PREBUILT_BASE_URL = "https://storage.googleapis.com/istio-build/proxy"
ISTIO_PROXY_UID = 1337

_VERSION = re.compile(r"^(\d+)\.(\d+)\.(\d+)$")
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_HOSTNAME_LABEL = r"[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){_HOSTNAME_LABEL}(\.{_HOSTNAME_LABEL})*$")
_DOCKER_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
_IMAGE_PATH_PART = r"[a-z0-9]+([._-][a-z0-9]+)*"
_IMAGE_REF = re.compile(
    rf"^{_IMAGE_PATH_PART}(:[0-9]+)?(/{_IMAGE_PATH_PART})*(:[\w][\w.-]{{0,127}})?(@sha256:[0-9a-f]{{64}})?$"
)
_UNIX_USER = re.compile(r"^[a-z_][a-z0-9_-]*[$]?$")
_GIT_URL = re.compile(r"^(https?://|ssh://|git://|file://|[\w.-]+@[\w.-]+:)\S+$")
_HTTP_URL = re.compile(r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[^\s?#]*)?$")
_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")
_UNITS = {None: 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
          "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
# Ports the sidecar itself uses: Envoy's outbound and inbound listeners, HBONE, prometheus, health, status.
ISTIO_PROXY_PORTS = frozenset({15000, 15001, 15004, 15006, 15008, 15009, 15020, 15021, 15053, 15090})
# The oldest release supported: the walkthrough's minor, whose istio/proxy builds Envoy as the root //:envoy.
OLDEST_ISTIO = (1, 17)
# The kind cluster a `cluster: kind` stack creates (suffixed with the stack off dev), its one node container
# (kind names the node `<cluster>-control-plane`, in Docker and in Kubernetes alike) and its kubeconfig.
KIND_CLUSTER_BASE_NAME = "istio-proxy-debug"
REGISTRY_CONTAINER = "image-registry"


def kind_node_name(cluster_name: str) -> str:
    return f"{cluster_name}-control-plane"


def kind_kubeconfig_file(work_dir: str, cluster_name: str) -> str:
    return posixpath.join(work_dir, "kind", f"{cluster_name}.kubeconfig")


# A StatefulSet's pods carry the label controller-revision-hash=<name>-<10 chars>, at most 63 long.
_MAX_STATEFULSET_NAME = 52


class ConfigError(Exception):
    """All the problems found in one stack configuration."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__(
            f"the stack configuration has {len(problems)} problem(s):\n" + "\n".join(f"  - {p}" for p in problems)
        )


@dataclass(frozen=True)
class StackConfig:
    project: str
    stack: str
    istio_version: str
    work_dir: str
    source_repository: str
    # None: the image the checked-out source pins (common/scripts/setup_env.sh), read at `up`.
    builder_image: str | None
    build_envoy: bool
    bazel_build_args: str
    strip_target_binary: bool
    docker_network: str
    docker_network_subnet: str
    # None with nodeAccess docker (registry_pull_host names the registry container instead).
    registry_host: str | None
    registry_port: int
    nodes: tuple[str, ...]
    ssh_user: str
    ssh_private_key: str | None = field(repr=False)
    namespace: str
    create_namespace: bool
    workload: str
    proxy_memory: str
    proxy_memory_limit: str
    target_node_address: str
    target_node_name: str | None
    mode: str
    envoy_source: str
    prebuilt_base_url: str
    envoy_repository: str | None
    lldb_server_port: int
    lldb_server_listen_all: bool
    app_uid: int
    placement: str
    workspace_storage_class: str | None
    workspace_volume_size: str
    code_server_password: str | None = field(repr=False)
    cluster: str = "existing"
    node_access: str = "ssh"
    # nodeAccess docker: the Docker network of the node containers, which the stack's containers join.
    node_network: str | None = None
    # Which Envoy is debugged: the target's sidecar, or the waypoint or gateway istiod deploys for it.
    target: str = "sidecar"

    @property
    def prebuilt(self) -> bool:
        return self.envoy_source == "prebuilt"

    @property
    def debugger_ports(self) -> DebuggerPorts:
        return DebuggerPorts(self.lldb_server_port)

    @property
    def compilation_mode(self) -> str:
        return bazel_compilation_mode(self.bazel_build_args)

    @property
    def kind_cluster_name(self) -> str | None:
        return self.physical_name(KIND_CLUSTER_BASE_NAME) if self.cluster == "kind" else None

    @property
    def kubeconfig_file(self) -> str | None:
        """Where the kind cluster's own kubeconfig is written: under workDir, never ~/.kube/config."""
        return kind_kubeconfig_file(self.work_dir, self.kind_cluster_name) if self.cluster == "kind" else None

    @property
    def registry_pull_host(self) -> str:
        """With nodeAccess docker the nodes pull from the registry container by its name on nodeNetwork."""
        return self.registry_container if self.node_access == "docker" else self.registry_host

    @property
    def registry_container(self) -> str:
        return self.physical_name(REGISTRY_CONTAINER)

    def physical_name(self, base: str) -> str:
        return physical_name(self.stack, base)


def physical_name(stack: str, base: str) -> str:
    """A name for an object on a shared Docker host: the walkthrough's own for `dev`, suffixed otherwise."""
    return base if stack == WALKTHROUGH_STACK else f"{base}-{stack}"


def memory_bytes(quantity: str) -> float:
    """A Kubernetes memory quantity (e.g. 512Mi, 4Gi, 1G) in bytes; ValueError for anything else."""
    match = _QUANTITY.match(quantity) if isinstance(quantity, str) else None
    if match is None:
        raise ValueError(f"{quantity!r} is not a memory quantity like 512Mi or 4Gi")
    return float(match.group(1)) * _UNITS[match.group(2)]


class _Reader:
    """Parses one raw value per key and records a problem instead of raising."""

    def __init__(self, raw: Mapping[str, str | None]):
        self.raw = raw
        self.problems: list[str] = []

    def problem(self, key: str, value: object, expected: str) -> None:
        """Strings are shown quoted; lists (array keys) in their JSON form."""
        shown = "<secret>" if key in SECRET_KEYS else json.dumps(value)
        self.problems.append(f"{PROJECT}:{key} = {shown}: {expected}")

    def text(self, key: str) -> str | None:
        value = self.raw.get(key)
        return None if value is None or value == "" else value

    def required(self, key: str, hint: str) -> str | None:
        value = self.text(key)
        if value is None:
            self.problems.append(f"{PROJECT}:{key} is required: {hint}")
        return value

    def checked(self, key: str, value: str | None, ok: Callable[[str], bool], expected: str) -> str | None:
        if value is not None and not ok(value):
            self.problem(key, value, expected)
            return None
        return value

    def boolean(self, key: str) -> bool | None:
        value = self.text(key)
        if value is None:
            self.problems.append(f"{PROJECT}:{key} is required: set it to true or false")
            return None
        if value in ("true", "True"):
            return True
        if value in ("false", "False"):
            return False
        self.problem(key, value, "expected true or false")
        return None

    def integer(self, key: str, low: int, high: int, what: str) -> int | None:
        value = self.text(key)
        if value is None:
            self.problems.append(f"{PROJECT}:{key} is required: {what}")
            return None
        try:
            number = int(value, 10)
        except ValueError:
            number = None
        if number is None or not low <= number <= high:
            self.problem(key, value, f"expected {what}")
            return None
        return number

    def string_list(self, key: str, hint: str) -> list[str] | None:
        value = self.text(key)
        if value is None:
            self.problems.append(f"{PROJECT}:{key} is required: {hint}")
            return None
        try:
            items = json.loads(value)
        except json.JSONDecodeError:
            items = None
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            self.problems.append(f"{PROJECT}:{key} = {value}: expected a list of strings; {hint}")
            return None
        if not items:
            self.problem(key, items, f"expected at least one; {hint}")
            return None
        return items


def _parses(parse: Callable[[str], object]) -> Callable[[str], bool]:
    """A check that `parse` accepts the value (raises no ValueError)."""

    def check(value: str) -> bool:
        try:
            parse(value)
            return True
        except ValueError:
            return False

    return check


_is_ip = _parses(ipaddress.ip_address)
_is_shell_words = _parses(shlex.split)
_is_network = _parses(lambda v: ipaddress.ip_network(v, strict=True))


def _is_host(value: str) -> bool:
    """An IP address, or a DNS name that does not look like a mistyped IP address."""
    if _is_ip(value):
        return True
    return bool(_HOSTNAME.match(value)) and not re.fullmatch(r"[\d.]+", value)


def _is_subnet(value: str) -> bool:
    return "/" in value and _is_network(value)


def _release(value: str) -> tuple[int, int]:
    """The major and minor of a release version x.y.z."""
    major, minor, _ = value.split(".")
    return int(major), int(minor)


def _is_supported_release(value: str) -> bool:
    return _VERSION.match(value) is not None and _release(value) >= OLDEST_ISTIO


def _is_absolute_dir(value: str) -> bool:
    return value.startswith("/") and posixpath.normpath(value) == value.rstrip("/") and value != "/"


def _is_base_url(value: str) -> bool:
    """An http(s) URL of a folder (no query, no fragment), or file:// and an absolute folder."""
    if value.startswith("file://"):
        return _is_absolute_dir(value[len("file://"):])
    return bool(_HTTP_URL.match(value))


def local_folder(url: str) -> str | None:
    """The folder a file:// URL names; None for any other URL."""
    return url[len("file://"):] if url.startswith("file://") else None


def bazel_compilation_mode(bazel_build_args: str) -> str:
    """The compilation mode (`dbg`, `opt` or `fastbuild`) the args select; the last setting wins."""
    mode = "fastbuild"
    words = shlex.split(bazel_build_args)
    for i, word in enumerate(words):
        if word in ("-c", "--compilation_mode") and i + 1 < len(words):
            mode = words[i + 1]
        elif word.startswith("--compilation_mode="):
            mode = word.split("=", 1)[1]
        elif word == "--config=debug":  # istio/proxy .bazelrc: build:debug -c dbg
            mode = "dbg"
        elif word == "--config=release":  # istio/proxy .bazelrc: build:release -c opt --strip=always
            mode = "opt"
    return mode


def bazel_option_values(bazel_build_args: str, option: str) -> list[str]:
    """What the args pass with a repeatable bazel option (`copt`, `linkopt`), in order, as bazel reads it:
    `--copt=-g` or `--copt -g`."""
    words = shlex.split(bazel_build_args)
    values = []
    for i, word in enumerate(words):
        if word.startswith(f"--{option}="):
            values.append(word.split("=", 1)[1])
        elif word == f"--{option}" and i + 1 < len(words):
            values.append(words[i + 1])
    return values


# istio/proxy's envoy.bazelrc: build:linux --fission=dbg,opt.
_BAZELRC_FISSION = "dbg,opt"


def bazel_fission_modes(bazel_build_args: str) -> set[str]:
    """The compilation modes whose DWARF goes to .dwo files beside the objects; the last --fission wins."""
    value = ([_BAZELRC_FISSION] + bazel_option_values(bazel_build_args, "fission"))[-1]
    if value == "yes":
        return {"fastbuild", "dbg", "opt"}
    return set() if value == "no" else set(value.split(","))


def marks_dead_code(linkopt: str) -> bool:
    """Whether a linker option is the stack's dead-code marking (lld's -z dead-reloc-in-nonalloc)."""
    return "dead-reloc-in-nonalloc" in linkopt


def _lld_options_without_lld(bazel_build_args: str) -> list[str]:
    """The --linkopt values only lld understands, when the args do not link with lld (gold fails the link
    on them; GNU ld ignores them)."""
    linkopts = bazel_option_values(bazel_build_args, "linkopt")
    linkers = [o.split("=", 1)[1] for o in linkopts if o.startswith("-fuse-ld=")]
    if linkers and linkers[-1] == "lld":
        return []
    return [o for o in linkopts if marks_dead_code(o)]


SECRET_KEYS = frozenset({"sshPrivateKey", "codeServerPassword"})
KEYS = (
    "istioVersion", "workDir", "sourceRepository", "builderImage", "buildEnvoy", "bazelBuildArgs",
    "stripTargetBinary", "dockerNetwork", "dockerNetworkSubnet", "registryHost", "registryPort", "nodes", "sshUser",
    "sshPrivateKey", "namespace", "workload", "targetNodeAddress", "targetNodeName", "mode",
    "lldbServerPort", "lldbServerListenAll", "appUid", "createNamespace", "proxyMemory", "proxyMemoryLimit",
    "placement", "workspaceStorageClass", "workspaceVolumeSize", "codeServerPassword",
    "envoySource", "prebuiltBaseUrl", "envoyRepository", "cluster", "nodeAccess", "nodeNetwork", "target",
)
MODES = ("attach", "startup")
TARGETS = ("sidecar", "waypoint", "gateway")
# The first release whose gateway deployment controller applies a Gateway's spec.infrastructure.parametersRef
# ConfigMap to the Deployment it generates (deploymentcontroller.go, applyOverlay): how the debug image, its
# memory and the ptrace capability reach a waypoint's or gateway's Envoy.
FIRST_CUSTOMIZABLE_GATEWAY = (1, 26)
ENVOY_SOURCES = ("prebuilt", "build")
PLACEMENTS = ("host", "cluster")
CLUSTERS = ("existing", "kind")
NODE_ACCESSES = ("ssh", "docker")
# A NodePort Service takes its port from the API server's default --service-node-port-range.
NODE_PORT_RANGE = (30000, 32767)
MIN_CODE_SERVER_PASSWORD = 12
PORT = "an integer port from 1 to 65535"


def parse_config(raw: Mapping[str, str | None], stack: str, project: str = PROJECT) -> StackConfig:
    """Checks every key of `raw` (the CLI's strings, defaults applied) and returns the typed config."""
    r = _Reader(raw)
    for key in raw:
        if key not in KEYS:
            close = difflib.get_close_matches(key, KEYS, n=1)
            hint = f"did you mean {close[0]}?" if close else "remove it with `pulumi config rm " + key + "`"
            r.problems.append(f"{PROJECT}:{key} is not a setting of this project: {hint}")

    istio_version = r.checked(
        "istioVersion", r.required("istioVersion", "set the Istio release to debug, e.g. 1.30.3"),
        _is_supported_release,
        f"expected a release version x.y.z from {OLDEST_ISTIO[0]}.{OLDEST_ISTIO[1]}.0 on, e.g. 1.30.3",
    )
    placement = r.checked("placement", r.text("placement") or "host", lambda v: v in PLACEMENTS,
                          "expected host (Docker on the developer host) or cluster (pods and a shared volume)")
    on_host = placement != "cluster"
    cluster = r.checked(
        "cluster", r.text("cluster") or "existing", lambda v: v in CLUSTERS,
        "expected existing (the cluster of your current kubeconfig context) or kind (a kind cluster the stack "
        "creates on this host's Docker, with Istio)",
    )
    if cluster == "kind" and not on_host:
        r.problem("placement", placement, "expected host with cluster kind: the kind cluster has no ReadWriteMany "
                                          "storage for the workspace; pulumi config set placement host")
    node_access = r.checked(
        "nodeAccess", r.text("nodeAccess") or ("docker" if cluster == "kind" else "ssh"),
        lambda v: v in NODE_ACCESSES,
        "expected ssh (the nodes are machines reached over SSH) or docker (the nodes are containers on this host's "
        "Docker, run with docker exec)",
    )
    if cluster == "kind" and node_access == "ssh":
        r.problem("nodeAccess", node_access, "expected docker with cluster kind: kind's nodes are containers on this "
                                             "host; pulumi config rm nodeAccess")
        node_access = None
    if node_access == "docker" and not on_host:
        r.problem("nodeAccess", node_access, "expected ssh with placement cluster: nodeAccess docker puts the "
                                             "registry and the debugger on the nodes' Docker network, on this host")
        node_access = None
    by_docker = node_access == "docker"
    node_network = r.checked(
        "nodeNetwork", r.text("nodeNetwork") or "kind", lambda v: bool(_DOCKER_NAME.match(v)),
        "expected a Docker network name (letters, digits, _ . -), e.g. kind",
    ) if by_docker else None
    work_dir = r.checked(
        "workDir",
        r.required("workDir", "set an absolute folder on the developer host, e.g. /home/me/istio-testing")
        if on_host else r.text("workDir"),
        _is_absolute_dir, "expected an absolute, normalised folder path other than /, e.g. /home/me/istio-testing",
    )
    source_repository = r.checked(
        "sourceRepository", r.text("sourceRepository") or DEFAULT_SOURCE_REPOSITORY,
        lambda v: bool(_GIT_URL.match(v)), "expected a git URL, e.g. " + DEFAULT_SOURCE_REPOSITORY,
    )
    builder_image = r.checked(
        "builderImage", r.text("builderImage"), lambda v: bool(_IMAGE_REF.match(v)),
        "expected an image reference, e.g. gcr.io/istio-testing/build-tools-proxy:release-1.30-<sha>, "
        "or empty for the one the istio/proxy checkout pins",
    )
    build_envoy = r.boolean("buildEnvoy")
    bazel_build_args = r.checked(
        "bazelBuildArgs", r.raw.get("bazelBuildArgs") or "", _is_shell_words,
        "expected bazel arguments as shell words with balanced quotes, e.g. -s --config=debug",
    )
    if bazel_build_args is not None and bazel_compilation_mode(bazel_build_args) != "dbg":
        r.problem("bazelBuildArgs", bazel_build_args,
                  "expected a debug build: keep --config=debug (or -c dbg) so the ELF has debug info")
    if bazel_build_args is not None and bazel_compilation_mode(bazel_build_args) == "dbg" and \
            "dbg" in bazel_fission_modes(bazel_build_args):
        r.problem("bazelBuildArgs", bazel_build_args,
                  "expected --fission=no: istio/proxy's envoy.bazelrc (--fission=dbg,opt) would leave a debug "
                  "build's DWARF in .dwo files beside the objects, which lldb finds only when run from the "
                  "execution root")
    if bazel_build_args is not None and (lld_only := _lld_options_without_lld(bazel_build_args)):
        r.problem("bazelBuildArgs", bazel_build_args,
                  f"--linkopt={lld_only[0]} is an lld option: keep --linkopt=-fuse-ld=lld beside it, or drop it")
    strip_target_binary = r.boolean("stripTargetBinary")
    docker_network = r.checked(
        "dockerNetwork", r.required("dockerNetwork", "set a Docker network name, e.g. router"),
        lambda v: bool(_DOCKER_NAME.match(v)), "expected a Docker network name: letters, digits, _ . -",
    )
    subnet = r.checked(
        "dockerNetworkSubnet", r.required("dockerNetworkSubnet", "set a CIDR, e.g. 172.18.0.0/16"),
        _is_subnet, "expected a network in CIDR form with no host bits set, e.g. 172.18.0.0/16",
    )
    if by_docker:
        registry_host = r.text("registryHost")
        if registry_host is not None:
            r.problem("registryHost", registry_host,
                      "expected no value with nodeAccess docker: the nodes pull from the registry container by name "
                      "on nodeNetwork; pulumi config rm registryHost")
    else:
        registry_host = r.checked(
            "registryHost",
            r.required("registryHost", "set the address the nodes pull images from, e.g. 192.168.122.1"),
            _is_host, "expected an IP address or DNS name that the nodes reach, e.g. 192.168.122.1",
        )
    if on_host:
        registry_port = r.integer("registryPort", 1, 65535, PORT)
    else:
        registry_port = r.integer(
            "registryPort", *NODE_PORT_RANGE,
            f"with placement cluster, the registry Service's NodePort: an integer from {NODE_PORT_RANGE[0]} to "
            f"{NODE_PORT_RANGE[1]}, e.g. pulumi config set registryPort 30500",
        )
    if cluster == "kind":
        nodes = [kind_node_name(physical_name(stack, KIND_CLUSTER_BASE_NAME))]
        if r.text("nodes") not in (None, "[]"):
            r.problems.append(f"{PROJECT}:nodes is set, but cluster kind has one node, {nodes[0]}, which the stack "
                              "creates: pulumi config rm nodes")
    elif by_docker:
        nodes = r.string_list("nodes", 'set the node container names, e.g. pulumi config set --path "nodes[0]" '
                                       'kind-control-plane')
        if nodes is not None and (bad := [n for n in nodes if not _DOCKER_NAME.match(n)]):
            r.problem("nodes", nodes, f"expected Docker container names (docker ps); not valid: {', '.join(bad)}")
            nodes = None
    else:
        nodes = r.string_list("nodes", 'set the node addresses, e.g. pulumi config set --path "nodes[0]" '
                                       '192.168.122.55')
        if nodes is not None and (bad := [n for n in nodes if not _is_host(n)]):
            r.problem("nodes", nodes, f"expected IP addresses or DNS names; not valid: {', '.join(bad)}")
            nodes = None
    if nodes is not None and len(set(nodes)) != len(nodes):
        r.problem("nodes", nodes, "expected each node once")
        nodes = None
    ssh_user = r.checked("sshUser", r.required("sshUser", "set the SSH user on the nodes, e.g. root"),
                         lambda v: bool(_UNIX_USER.match(v)), "expected a Unix user name, e.g. root")
    ssh_private_key = r.checked(
        "sshPrivateKey", r.text("sshPrivateKey"), lambda v: "PRIVATE KEY-----" in v,
        "expected the contents of a PEM/OpenSSH private key: "
        "pulumi config set --secret sshPrivateKey < ~/.ssh/id_ed25519",
    )
    namespace = r.checked(
        "namespace", r.required("namespace", "set the target namespace, e.g. mark"),
        lambda v: len(v) <= 63 and bool(_DNS1123_LABEL.match(v)),
        "expected a DNS-1123 label: at most 63 lowercase letters, digits or '-', starting and ending alphanumeric",
    )
    create_namespace = r.boolean("createNamespace")
    workload = r.checked(
        "workload", r.required("workload", "set the StatefulSet name, e.g. fortio-server"),
        lambda v: len(v) <= _MAX_STATEFULSET_NAME and bool(_DNS1035_LABEL.match(v)),
        f"expected a DNS-1035 label of at most {_MAX_STATEFULSET_NAME} characters "
        "(lowercase letters, digits, '-', starting with a letter)",
    )
    memory = "expected a Kubernetes memory quantity, e.g. 512Mi or 4Gi"
    proxy_memory = r.checked("proxyMemory", r.required("proxyMemory", "set e.g. 512Mi"), _parses(memory_bytes), memory)
    proxy_memory_limit = r.checked("proxyMemoryLimit", r.required("proxyMemoryLimit", "set e.g. 4Gi"),
                                   _parses(memory_bytes), memory)
    if proxy_memory and proxy_memory_limit and memory_bytes(proxy_memory) > memory_bytes(proxy_memory_limit):
        r.problem("proxyMemoryLimit", proxy_memory_limit, f"expected at least proxyMemory ({proxy_memory})")
    target_node_address = r.text("targetNodeAddress")
    if target_node_address is None and nodes:
        target_node_address = nodes[0]
    elif target_node_address is not None and nodes is not None and target_node_address not in nodes:
        r.problem("targetNodeAddress", target_node_address, f"expected one of nodes: {', '.join(nodes)}")
        target_node_address = None
    target_node_name = r.checked(
        "targetNodeName", r.text("targetNodeName") or (nodes[0] if cluster == "kind" and nodes else None),
        lambda v: len(v) <= 253 and bool(_DNS1123_SUBDOMAIN.match(v)),
        "expected a Kubernetes node name (DNS-1123 subdomain), as `kubectl get nodes` shows it",
    )
    mode = r.checked("mode", r.required("mode", "set attach or startup"), lambda v: v in MODES,
                     "expected attach (debug a running Envoy) or startup (start Envoy by hand under lldb)")
    target = r.checked(
        "target", r.text("target") or "sidecar", lambda v: v in TARGETS,
        "expected sidecar (the target's injected istio-proxy), waypoint (the ambient-mode waypoint istiod deploys "
        "for the target's namespace) or gateway (an ingress gateway istiod deploys, routing to the target)",
    )
    if target in ("waypoint", "gateway") and istio_version is not None and \
            _release(istio_version) < FIRST_CUSTOMIZABLE_GATEWAY:
        first = ".".join(map(str, FIRST_CUSTOMIZABLE_GATEWAY))
        r.problem("target", target,
                  f"expected sidecar with istioVersion {istio_version}: the debug image, its memory and the ptrace "
                  f"capability reach the Envoy istiod deploys for a Gateway only through the Gateway's "
                  f"spec.infrastructure.parametersRef ConfigMap, which istiod applies from Istio {first}.0 on; "
                  f"set istioVersion {first}.0 or later, or target sidecar")
    if target in ("waypoint", "gateway") and workload is not None and len(workload) > longest_workload(target):
        r.problem("workload", workload,
                  f"expected at most {longest_workload(target)} characters with target {target}: istiod's Deployment "
                  f"{deployment_name(workload, target)} names pods longer than a hostname's 63 characters, and "
                  "lldb-server finds the pod by its hostname")
    envoy_source = r.checked(
        "envoySource", r.required("envoySource", "set prebuilt or build"), lambda v: v in ENVOY_SOURCES,
        "expected prebuilt (Istio's published debug build of Envoy, downloaded) or build (compiled in the builder)",
    )
    prebuilt_base_url = r.checked(
        "prebuiltBaseUrl",
        r.required("prebuiltBaseUrl",
                   f"set the folder URL of envoy-debug-<SHA>.tar.gz, e.g. {DEFAULT_PREBUILT_BASE_URL}"),
        _is_base_url, f"expected an http(s) URL of a folder without ? or #, e.g. {DEFAULT_PREBUILT_BASE_URL}, or "
                      "file:// and an absolute, normalised folder, e.g. file:///srv/istio-build/proxy",
    )
    if prebuilt_base_url is not None:
        prebuilt_base_url = prebuilt_base_url.rstrip("/")
        if not on_host and local_folder(prebuilt_base_url) is not None:
            r.problem("prebuiltBaseUrl", prebuilt_base_url,
                      "expected an http(s) URL with placement cluster: the download runs in the cluster, which does "
                      "not see the developer host's folders; serve the folder over http, e.g. from a bucket")
            prebuilt_base_url = None
    envoy_repository = r.checked(
        "envoyRepository", r.text("envoyRepository"), lambda v: bool(_GIT_URL.match(v)),
        "expected a git URL of the Envoy repository (a mirror), or empty for the one istio/proxy's WORKSPACE names",
    )
    lldb_server_port = r.integer(
        "lldbServerPort", *PLATFORM_PORT_RANGE,
        f"an integer port from {PLATFORM_PORT_RANGE[0]} to {PLATFORM_PORT_RANGE[1]}: the {GDBSERVER_PORT_COUNT} "
        "ports after it are lldb-server's gdbserver ports, which it accepts only in "
        f"{USER_PORT_RANGE[0]}-{USER_PORT_RANGE[1]}",
    )
    # Unset: the one value the cluster placement allows there, the safe one elsewhere.
    lldb_server_listen_all = (r.boolean("lldbServerListenAll") if r.text("lldbServerListenAll") is not None
                              else placement == "cluster")
    if placement == "cluster" and lldb_server_listen_all is False:
        r.problem("lldbServerListenAll", "false",
                  "expected true with placement cluster: lldb-server takes connections from the debugger's address "
                  "only, and code-server's, as the node sees it, is its pod's (or, behind some CNIs, its node's) and "
                  "changes with it; pulumi config set lldbServerListenAll true, and keep debuggerPorts firewalled "
                  "to the cluster")
    app_uid = r.integer("appUid", 1, 2**31 - 1, "an integer uid from 1 to 2147483647")
    if app_uid == ISTIO_PROXY_UID:
        r.problem("appUid", str(app_uid), f"expected a uid other than {ISTIO_PROXY_UID}, which is istio-proxy's own")
        app_uid = None
    if lldb_server_port is not None and ISTIO_PROXY_PORTS & set(DebuggerPorts(lldb_server_port).all):
        own = ", ".join(map(str, sorted(ISTIO_PROXY_PORTS)))
        r.problem("lldbServerPort", str(lldb_server_port),
                  f"expected debugger ports clear of the sidecar's own ({own})")
    if registry_port is not None and lldb_server_port is not None:
        debugger = DebuggerPorts(lldb_server_port).all
        if registry_port in debugger:
            r.problem("lldbServerPort", str(lldb_server_port),
                      f"expected the debugger ports {debugger[0]}-{debugger[-1]} not to include registryPort")

    workspace_storage_class = r.checked(
        "workspaceStorageClass", r.text("workspaceStorageClass"),
        lambda v: len(v) <= 253 and bool(_DNS1123_SUBDOMAIN.match(v)),
        "expected a StorageClass name (kubectl get storageclass) that offers ReadWriteMany, or empty for the default",
    )
    workspace_volume_size = r.checked(
        "workspaceVolumeSize", r.required("workspaceVolumeSize", "set e.g. 200Gi"),
        lambda v: _parses(memory_bytes)(v) and memory_bytes(v) >= 2**30,
        "expected a storage quantity of at least 1Gi, e.g. 200Gi (the source tree and a debug build's bazel cache)",
    )
    code_server_password = r.text("codeServerPassword")
    if placement == "cluster" and code_server_password is None:
        r.problems.append(f"{PROJECT}:codeServerPassword is required with placement cluster: it guards code-server; "
                          "pulumi config set --secret codeServerPassword <at least "
                          f"{MIN_CODE_SERVER_PASSWORD} characters>")
    elif code_server_password is not None and len(code_server_password) < MIN_CODE_SERVER_PASSWORD:
        r.problem("codeServerPassword", code_server_password,
                  f"expected at least {MIN_CODE_SERVER_PASSWORD} characters: code-server is reachable by the cluster")
        code_server_password = None

    if r.problems:
        raise ConfigError(r.problems)
    return StackConfig(
        project=project, stack=stack, istio_version=istio_version, work_dir=work_dir,
        source_repository=source_repository, builder_image=builder_image, build_envoy=build_envoy,
        bazel_build_args=bazel_build_args, strip_target_binary=strip_target_binary,
        docker_network=docker_network, docker_network_subnet=subnet,
        registry_host=registry_host, registry_port=registry_port, nodes=tuple(nodes), ssh_user=ssh_user,
        ssh_private_key=ssh_private_key, namespace=namespace, create_namespace=create_namespace,
        workload=workload, proxy_memory=proxy_memory, proxy_memory_limit=proxy_memory_limit,
        target_node_address=target_node_address, target_node_name=target_node_name, mode=mode,
        envoy_source=envoy_source, prebuilt_base_url=prebuilt_base_url, envoy_repository=envoy_repository,
        lldb_server_port=lldb_server_port, lldb_server_listen_all=lldb_server_listen_all, app_uid=app_uid,
        placement=placement, workspace_storage_class=workspace_storage_class,
        workspace_volume_size=workspace_volume_size, code_server_password=code_server_password,
        cluster=cluster, node_access=node_access, node_network=node_network, target=target,
    )


def _project_keys_set() -> list[str]:
    """The project's keys the stack sets, to catch misspelt ones (pulumi.Config cannot list keys)."""
    from pulumi.runtime import config as runtime_config

    names = set(runtime_config.CONFIG.get()) | set(runtime_config.get_config_env())
    prefix = f"{pulumi.get_project()}:"
    return sorted(n[len(prefix):] for n in names if n.startswith(prefix))


def load_config() -> StackConfig:
    """Reads and checks the stack's config; a bad value stops the program with one clear message."""
    config = pulumi.Config()
    raw = {key: config.get(key) for key in set(KEYS) | set(_project_keys_set())}
    try:
        return parse_config(raw, stack=pulumi.get_stack(), project=pulumi.get_project())
    except ConfigError as error:
        raise pulumi.RunError(str(error)) from None
