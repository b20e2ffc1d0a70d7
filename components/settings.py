"""Every setting of the project, declared once, in the order Pulumi.yaml lists them.

Each `Setting` says its type, its default (or how it is derived from the settings above it), what it accepts
and the sentence a user sees when a value is refused. Pulumi.yaml's `config:` block and docs/configuration.md's settings
table are generated from `SETTINGS` (`make config-docs`, tools/config_docs.py), and tests fail when either
differs. `Setting.read` turns the CLI's string for one key into its typed value; rules that tie several
settings together are in components/config_rules.py, and components/config.py runs both.
"""

from __future__ import annotations

import ipaddress
import json
import posixpath
import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import KW_ONLY, dataclass
from typing import Any

from components.attach_to import parse_attach_to
from components.debug_ports import GDBSERVER_PORT_COUNT, PLATFORM_PORT_RANGE, USER_PORT_RANGE
from components.stack_names import kind_cluster_name, kind_node_name

PROJECT = "istio-proxy-debug"

# The types a setting has. Pulumi.yaml declares each but the secret ones (a declared key without a default is
# required by the CLI, and a secret has none); a boolean derived from other settings is declared a string that
# defaults to "", since Pulumi's booleans have no "unset".
STRING, INTEGER, BOOLEAN, STRINGS, SECRET = "string", "integer", "boolean", "array", "secret"


class Values(dict):
    """The settings read so far: key → typed value, None where unset or refused; and the CLI's strings."""

    def __init__(self, raw: Mapping[str, str | None], stack: str):
        super().__init__()
        self.raw = raw
        self.stack = stack

    def is_set(self, key: str) -> bool:
        return self.raw.get(key) not in (None, "")


@dataclass(frozen=True)
class Problem:
    """One refusal: `key = value: sentence`, or `key is required: sentence` when it is `missing`."""

    key: str
    sentence: str
    missing: bool = False


@dataclass(frozen=True)
class Setting:
    key: str
    type: str
    # What Pulumi.yaml declares, so what the CLI passes when the stack does not set the key; an empty value
    # means this too. None: nothing ("" for a string, [] for a list).
    default: str | int | bool | list | None = None
    _: KW_ONLY
    # The settings table's "meaning" (docs/configuration.md) and Pulumi.yaml's description.
    about: str
    # Whether the typed value is accepted, and the sentence when it is not (by default, the check's own:
    # `_one_of` and `_between` say what they accept).
    accepts: Callable[[Any], bool] | None = None
    refused: str = ""
    # How to set it: an empty value is refused with this (and never means the default).
    required: str | None = None
    # The value an empty one takes, from the settings above it (None: as if there were no rule).
    derived: Callable[[Values], Any] | None = None
    # Whether the setting means anything with the settings above it; when not, it is not read and takes its
    # derived value (or None).
    applies: Callable[[Values], bool] | None = None
    # The accepted value as the stack uses it.
    tidy: Callable[[Any], Any] | None = None
    # The settings table's "default" cell, where it is not the declared default.
    shown_default: str | None = None

    @property
    def field(self) -> str:
        """The StackConfig field: the key in snake_case."""
        return re.sub(r"(?<!^)(?=[A-Z])", "_", self.key).lower()

    @property
    def refusal(self) -> str:
        """The sentence a refused value gets."""
        return self.refused or getattr(self.accepts, "refusal", "")

    @property
    def secret(self) -> bool:
        return self.type == SECRET

    @property
    def python_type(self) -> type:
        """The field's type in StackConfig: None where the setting may be unset."""
        return {INTEGER: int, BOOLEAN: bool, STRINGS: tuple[str, ...]}.get(self.type, str | None)

    def read(self, values: Values) -> tuple[Any, Problem | None]:
        """This setting's typed value, from the CLI's string and the settings above it."""
        if self.applies is not None and not self.applies(values):
            return (self.derived(values) if self.derived else None), None
        raw = values.raw.get(self.key)
        if raw is None or raw == "":
            value = self.derived(values) if self.derived else None
            if value is None and self.required:
                return None, Problem(self.key, self.required, missing=True)
            return (value if value is not None else self._declared_default()), None
        value = self._typed(raw)
        if value is None:
            return None, Problem(self.key, self._type_refusal())
        if self.accepts is not None and not self.accepts(value):
            return None, Problem(self.key, self.refusal)
        return (self.tidy(value) if self.tidy else value), None

    def shown(self, raw: str | None, value: Any) -> str:
        """The value as a refusal quotes it: never a secret's; a list in its JSON form, or as given when it is
        not one."""
        if self.secret:
            return "<secret>"
        if self.type != STRINGS:
            return json.dumps(raw if raw is not None else value)
        items = self._typed(raw) if raw else value
        return raw if items is None else json.dumps(list(items))

    def _declared_default(self) -> Any:
        if self.default in ("", []):
            return None
        return tuple(self.default) if isinstance(self.default, list) else self.default

    def _typed(self, raw: str) -> Any:
        """The CLI's string as this setting's type; None when it is not one."""
        if self.type == INTEGER:
            return int(raw, 10) if re.fullmatch(r"[+-]?[0-9]+", raw) else None
        if self.type == BOOLEAN:
            return {"true": True, "True": True, "false": False, "False": False}.get(raw)
        if self.type == STRINGS:
            try:
                items = json.loads(raw)
            except json.JSONDecodeError:
                return None
            ok = isinstance(items, list) and all(isinstance(item, str) for item in items)
            return tuple(items) if ok else None
        return raw

    def _type_refusal(self) -> str:
        if self.type == BOOLEAN:
            return "expected true or false"
        if self.type == STRINGS:
            return f"expected a list of strings; {self.required}"
        return self.refusal


# --- what values are: the small named checks the table uses ------------------------------------------------

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
# The oldest release supported: the walkthrough's minor, whose istio/proxy builds Envoy as the root //:envoy.
OLDEST_ISTIO = (1, 17)
# A StatefulSet's pods carry the label controller-revision-hash=<name>-<10 chars>, at most 63 long.
_MAX_STATEFULSET_NAME = 52
MIN_CODE_SERVER_PASSWORD = 12
DEFAULT_SOURCE_REPOSITORY = "https://github.com/istio/proxy.git"
# Where istio/proxy's CI (scripts/release-binary.sh) publishes envoy-debug-<SHA>.{tar.gz,sha256,dwp}, and where
# istio/istio's own build downloads Envoy from (bin/init.sh, ISTIO_ENVOY_BASE_URL).
DEFAULT_PREBUILT_BASE_URL = "https://storage.googleapis.com/istio-build/proxy"
MODES = ("attach", "startup")
TARGETS = ("sidecar", "waypoint", "gateway")
ENVOY_SOURCES = ("prebuilt", "build")
PLACEMENTS = ("host", "cluster")
CLUSTERS = ("existing", "kind")
NODE_ACCESSES = ("ssh", "docker", "kubernetes")


def memory_bytes(quantity: str) -> float:
    """A Kubernetes memory quantity (e.g. 512Mi, 4Gi, 1G) in bytes; ValueError for anything else."""
    match = _QUANTITY.match(quantity) if isinstance(quantity, str) else None
    if match is None:
        raise ValueError(f"{quantity!r} is not a memory quantity like 512Mi or 4Gi")
    return float(match.group(1)) * _UNITS[match.group(2)]


def _parses(parse: Callable[[str], object]) -> Callable[[str], bool]:
    """A check that `parse` accepts the value (raises no ValueError)."""

    def check(value: str) -> bool:
        try:
            parse(value)
            return True
        except ValueError:
            return False

    return check


def _matches(pattern: re.Pattern, longest: int = 253) -> Callable[[str], bool]:
    return lambda value: len(value) <= longest and bool(pattern.match(value))


def _one_of(choices: tuple[str, ...]) -> Callable[[str], bool]:
    def check(value: str) -> bool:
        return value in choices

    check.refusal = f"expected {', '.join(choices[:-1])} or {choices[-1]}"
    return check


def _between(low: int, high: int) -> Callable[[int], bool]:
    def check(number: int) -> bool:
        return low <= number <= high

    check.refusal = f"expected an integer from {low} to {high}"
    return check


is_docker_name = _matches(_DOCKER_NAME)
is_node_name = _matches(_DNS1123_SUBDOMAIN)
_is_ip = _parses(ipaddress.ip_address)
_is_memory = _parses(memory_bytes)


def is_host(value: str) -> bool:
    """An IP address, or a DNS name that does not look like a mistyped IP address."""
    if _is_ip(value):
        return True
    return bool(_HOSTNAME.match(value)) and not re.fullmatch(r"[\d.]+", value)


def _is_subnet(value: str) -> bool:
    return "/" in value and _parses(lambda v: ipaddress.ip_network(v, strict=True))(value)


def release(value: str) -> tuple[int, int]:
    """The major and minor of a release version x.y.z."""
    major, minor, _ = value.split(".")
    return int(major), int(minor)


def _is_supported_release(value: str) -> bool:
    return _VERSION.match(value) is not None and release(value) >= OLDEST_ISTIO


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


# --- derived values ----------------------------------------------------------------------------------------


def _kind_node(values: Values) -> str | None:
    return kind_node_name(kind_cluster_name(values.stack)) if values["cluster"] == "kind" else None


def _node_access_of_the_cluster(values: Values) -> str:
    if values["cluster"] == "kind":
        return "docker"
    # In place, lldb-server is streamed to the pod's node, which the Kubernetes API reaches on any cluster.
    return "kubernetes" if values["attachTo"] else "ssh"


def _by_docker(values: Values) -> bool:
    return values["nodeAccess"] == "docker"


def _not_on_kind(values: Values) -> bool:
    return values["cluster"] != "kind"


def _nodes_are_set(values: Values) -> bool:
    # kind has its own node; with attachTo lldb-server runs on the pod's node, whichever it is.
    return _not_on_kind(values) and not values["attachTo"]


def _the_kind_node(values: Values) -> tuple[str, ...] | None:
    node = _kind_node(values)
    return (node,) if node else None


def _the_first_node(values: Values) -> str | None:
    # With kubernetes, lldb-server runs on the target pod's node, whichever it is.
    if values["nodeAccess"] == "kubernetes":
        return None
    return values["nodes"][0] if values["nodes"] else None


def _listen_all_in_the_cluster(values: Values) -> bool:
    # The one value the cluster placement allows, the safe one elsewhere.
    return values["placement"] == "cluster"


PORT = "an integer port from 1 to 65535"
_SET_NODES = ('set the nodes: their addresses with nodeAccess ssh, e.g. pulumi config set --path "nodes[0]" '
              "192.168.122.55; their container names with nodeAccess docker, e.g. kind-control-plane; their "
              "Kubernetes node names (kubectl get nodes) with nodeAccess kubernetes")
_DEFAULT_BAZEL_BUILD_ARGS = (
    "-s --explain=explain.txt --config=debug --fission=no --copt=-gdwarf-5 --copt=-gpubnames "
    "--linkopt=-fuse-ld=lld --linkopt=-Wl,-z,dead-reloc-in-nonalloc=.debug_addr=0xffffffffffffffff"
)

# --- the table ---------------------------------------------------------------------------------------------

SETTINGS: tuple[Setting, ...] = (
    Setting(
        "istioVersion", STRING, "1.30.3",
        about="Istio release, x.y.z, 1.17.0 or later: the istio/proxy tag checked out, and the `proxyv2` image "
              "the debug image is made from (the `dev` stack: 1.17.2)",
        accepts=_is_supported_release,
        refused=f"expected a release version x.y.z from {OLDEST_ISTIO[0]}.{OLDEST_ISTIO[1]}.0 on, e.g. 1.30.3",
        required="set the Istio release to debug, e.g. 1.30.3",
    ),
    Setting(
        "attachTo", STRING,
        about="`<namespace>/<pod>[/<container>]`: debug the Envoy already running there, in place: nothing of the "
              "pod changes and nothing is deployed (no image, registry, containerd entry or target); lldb-server "
              "on its node, Istio's release symbols for its Envoy when they are its code (container "
              "`istio-proxy` unless named; see docs/attach-in-place.md)",
        accepts=lambda value: parse_attach_to(value) is not None,
        refused="expected <namespace>/<pod> or <namespace>/<pod>/<container> as kubectl names them, e.g. "
                "default/productpage-v1-6d9f8b9f5c-x2x7l",
        shown_default="none: deploy the target",
    ),
    Setting(
        "cluster", STRING, "existing",
        about="`existing`: the cluster of your current kubeconfig context, with Istio installed; `kind`: the lab, "
              "a one-node kind cluster the stack creates and deletes on this host's Docker, with Istio "
              "`istioVersion` from its Helm charts, its kubeconfig `workDir/kind/<cluster>.kubeconfig`",
        accepts=_one_of(CLUSTERS),
        refused="expected existing (the cluster of your current kubeconfig context) or kind (a kind cluster the "
                "stack creates on this host's Docker, with Istio)",
    ),
    Setting(
        "nodeAccess", STRING,
        about="how the node scripts (containerd entry, lldb-server) reach the nodes: `ssh` (machines, as "
              "`sshUser`), `docker` (node containers on this host, `docker exec -i <node> bash -s`; the "
              "registry, builder and debugger join `nodeNetwork`) or `kubernetes` (no SSH: a privileged agent "
              "pod per node, `kubectl exec`; lldb-server on the node's loopback, reached through the "
              "`lldbServerPortForward` command, see docs/your-cluster.md)",
        accepts=_one_of(NODE_ACCESSES),
        refused="expected ssh (the nodes are machines reached over SSH), docker (the nodes are containers on "
                "this host's Docker, run with docker exec) or kubernetes (the nodes are reached through the "
                "Kubernetes API, by an agent pod on each)",
        derived=_node_access_of_the_cluster, shown_default="`docker` with `kind`, else `ssh`",
    ),
    Setting(
        "nodeNetwork", STRING, "kind",
        about="`docker` only: the node containers' Docker network (kind's is `kind`), which the registry, builder "
              "and debugger join instead of `dockerNetwork`",
        accepts=is_docker_name, refused="expected a Docker network name (letters, digits, _ . -), e.g. kind",
        applies=_by_docker,
    ),
    Setting(
        "placement", STRING, "host",
        about="`host`: builder, registry and debugger as Docker containers on the developer host, folders under "
              "`workDir` (the walkthrough); `cluster`: as pods on a shared ReadWriteMany volume, VS Code as "
              "code-server (S12; needs `codeServerPassword`)",
        accepts=_one_of(PLACEMENTS),
        refused="expected host (Docker on the developer host) or cluster (pods and a shared volume)",
    ),
    Setting(
        "workDir", STRING,
        about="absolute folder on the developer host: `work/` (the istio/proxy source), `home/.cache` (the bazel "
              "cache), `registry/` (the registry's images); never deleted by destroy",
        accepts=_is_absolute_dir,
        refused="expected an absolute, normalised folder path other than /, e.g. /home/me/istio-testing",
        shown_default="required with `host`",
    ),
    Setting(
        "envoySource", STRING, "prebuilt",
        about="`prebuilt`: download the debug Envoy (ELF and `.dwp`) Istio's proxy CI publishes for the checked-out "
              "commit (minutes); `build`: compile it in the builder from the checkout, S1–S3 (hours). `dev` "
              "builds, as the walkthrough does",
        accepts=_one_of(ENVOY_SOURCES),
        refused="expected prebuilt (Istio's published debug build of Envoy, downloaded) or build (compiled in the "
                "builder)",
        required="set prebuilt or build",
    ),
    Setting(
        "prebuiltBaseUrl", STRING, DEFAULT_PREBUILT_BASE_URL,
        about="`prebuilt` only: the folder holding `envoy-debug-<SHA>.tar.gz`, `.sha256` and `.dwp`: Istio's "
              "bucket, a mirror, or `file:///folder` on the developer host (`host` placement; for air-gapped "
              "sites)",
        accepts=_is_base_url,
        refused=f"expected an http(s) URL of a folder without ? or #, e.g. {DEFAULT_PREBUILT_BASE_URL}, or "
                "file:// and an absolute, normalised folder, e.g. file:///srv/istio-build/proxy",
        required=f"set the folder URL of envoy-debug-<SHA>.tar.gz, e.g. {DEFAULT_PREBUILT_BASE_URL}",
        tidy=lambda url: url.rstrip("/"),
    ),
    Setting(
        "envoyRepository", STRING,
        about="`prebuilt` only: git URL the Envoy source is fetched from, at the commit istio/proxy's `WORKSPACE` "
              "pins; empty means `https://github.com/<ENVOY_ORG>/<ENVOY_REPO>.git` from that `WORKSPACE`",
        accepts=_GIT_URL.match,
        refused="expected a git URL of the Envoy repository (a mirror), or empty for the one istio/proxy's "
                "WORKSPACE names",
        shown_default="the `WORKSPACE`'s",
    ),
    Setting(
        "sourceRepository", STRING, DEFAULT_SOURCE_REPOSITORY,
        about="where istio/proxy is cloned from (a fork, a mirror)",
        accepts=_GIT_URL.match, refused=f"expected a git URL, e.g. {DEFAULT_SOURCE_REPOSITORY}",
    ),
    Setting(
        "builderImage", STRING,
        about="`build` only: the builder image; empty means the one the istio/proxy checkout pins "
              "(`common/scripts/setup_env.sh` `IMAGE_VERSION`, `Makefile.overrides.mk` `IMAGE_NAME`)",
        accepts=_IMAGE_REF.match,
        refused="expected an image reference, e.g. gcr.io/istio-testing/build-tools-proxy:release-1.30-<sha>, "
                "or empty for the one the istio/proxy checkout pins",
        shown_default="the checkout's pin",
    ),
    Setting(
        "buildEnvoy", BOOLEAN, True,
        about="`build` only: build Envoy; `false` uses the ELF an earlier build left in the bazel cache (a "
              "missing one is a clear error)",
        required="set it to true or false",
    ),
    Setting(
        "bazelBuildArgs", STRING, _DEFAULT_BAZEL_BUILD_ARGS,
        about="`build` only: `BAZEL_BUILD_ARGS` of istio/proxy's `make build`; must stay a debug build "
              "(`--config=debug` or `-c dbg`) with its DWARF in the ELF (`--fission=no`: istio/proxy's "
              "`envoy.bazelrc` would split it into `.dwo` files that lldb finds only from the execution root), "
              "checked at preview. The walkthrough's, plus a DWARF 5 name index (`.debug_names`, the two `--copt`: "
              "lldb never indexes the 1 GB ELF itself) and lld marking the addresses of discarded inline copies "
              "dead (the two `--linkopt`: lldb's address table holds live code only); keep all four when you "
              "change it. The `dead-reloc` option is lld's: without `-fuse-ld=lld` it is an error at preview "
              "(gold would fail the link), and the build tries every `--linkopt` on the builder's compiler "
              "before it starts",
        accepts=_parses(shlex.split),
        refused="expected bazel arguments as shell words with balanced quotes, e.g. -s --config=debug",
        required="set bazel arguments that keep a debug build, e.g. -s --config=debug --fission=no",
    ),
    Setting(
        "stripTargetBinary", BOOLEAN, True,
        about="ship Envoy in the debug image without debug info (build-id kept; lldb reads the symbols from the "
              "unstripped ELF on the developer side); `false` ships the full ELF, as the walkthrough does",
        required="set it to true or false",
    ),
    Setting(
        "dockerNetwork", STRING, "router",
        about="Docker network of the builder and debugger containers (suffixed with the stack's name off `dev`)",
        accepts=is_docker_name, refused="expected a Docker network name: letters, digits, _ . -",
        required="set a Docker network name, e.g. router",
    ),
    Setting(
        "dockerNetworkSubnet", STRING, "172.18.0.0/16",
        about="its subnet (CIDR)",
        accepts=_is_subnet, refused="expected a network in CIDR form with no host bits set, e.g. 172.18.0.0/16",
        required="set a CIDR, e.g. 172.18.0.0/16",
    ),
    Setting(
        "registryHost", STRING,
        about="the developer host's address as the nodes reach it (with `cluster` placement, a node's address, "
              "where the registry's NodePort listens): the nodes pull `<registryHost>:<registryPort>/…` over "
              "plain HTTP. Empty with `docker`: the nodes pull from the registry container by name on "
              "`nodeNetwork`, port 5000",
        accepts=is_host, refused="expected an IP address or DNS name that the nodes reach, e.g. 192.168.122.1",
        required="set the address the nodes pull images from, e.g. 192.168.122.1",
        applies=lambda values: not _by_docker(values) and not values["attachTo"],
        shown_default="required with `ssh`",
    ),
    Setting(
        "registryPort", INTEGER, 5000,
        about="the registry's host port; with `cluster` placement, its Service's NodePort (30000–32767)",
        accepts=_between(1, 65535), refused=f"expected {PORT}", required=f"set {PORT}",
    ),
    Setting(
        "nodes", STRINGS, [],
        about="the nodes whose containerd is taught to pull from the registry: addresses with `ssh`, container "
              "names with `docker`, node names with `kubernetes` (the target pod must run on one of them); with "
              "`kind`, the stack's own node `<cluster>-control-plane`",
        accepts=bool,
        refused=f"expected at least one; {_SET_NODES}", required=_SET_NODES,
        applies=_nodes_are_set, derived=_the_kind_node, shown_default="required, but with `kind` and `attachTo`",
    ),
    Setting(
        "sshUser", STRING, "root",
        about="`ssh` only: SSH user on the nodes",
        accepts=_UNIX_USER.match, refused="expected a Unix user name, e.g. root",
        required="set the SSH user on the nodes, e.g. root",
    ),
    Setting(
        "sshPrivateKey", SECRET,
        about="`ssh` only: its private key (`pulumi config set --secret sshPrivateKey < key`)",
        accepts=lambda key: "PRIVATE KEY-----" in key,
        refused="expected the contents of a PEM/OpenSSH private key: "
                "pulumi config set --secret sshPrivateKey < ~/.ssh/id_ed25519",
        shown_default="none: the SSH agent",
    ),
    Setting(
        "namespace", STRING, "mark",
        about="namespace of the target workload (a DNS-1123 label)",
        accepts=_matches(_DNS1123_LABEL, 63),
        refused="expected a DNS-1123 label: at most 63 lowercase letters, digits or '-', starting and ending "
                "alphanumeric",
        required="set the target namespace, e.g. mark",
    ),
    Setting(
        "createNamespace", BOOLEAN, True,
        about="create the namespace; `false` uses an existing one, which destroy then never deletes",
        required="set it to true or false",
    ),
    Setting(
        "workload", STRING, "fortio-server",
        about="name of the target StatefulSet and its headless Service",
        accepts=_matches(_DNS1035_LABEL, _MAX_STATEFULSET_NAME),
        refused=f"expected a DNS-1035 label of at most {_MAX_STATEFULSET_NAME} characters (lowercase letters, "
                "digits, '-', starting with a letter)",
        required="set the StatefulSet name, e.g. fortio-server",
    ),
    Setting(
        "proxyMemory", STRING, "512Mi",
        about="memory request of istio-proxy (`sidecar.istio.io/proxyMemory`)",
        accepts=_is_memory, refused="expected a Kubernetes memory quantity, e.g. 512Mi or 4Gi",
        required="set e.g. 512Mi",
    ),
    Setting(
        "proxyMemoryLimit", STRING, "4Gi",
        about="its memory limit (`sidecar.istio.io/proxyMemoryLimit`), at least `proxyMemory`: a debug Envoy "
              "needs far more than a release one",
        accepts=_is_memory, refused="expected a Kubernetes memory quantity, e.g. 512Mi or 4Gi",
        required="set e.g. 4Gi",
    ),
    Setting(
        "targetNodeAddress", STRING,
        about="node where lldb-server runs and the debugger connects; one of `nodes`. Not with `kubernetes`: "
              "there it is the node the target pod runs on",
        derived=_the_first_node, shown_default="the first of `nodes`",
    ),
    Setting(
        "targetNodeName", STRING,
        about="Kubernetes node name to pin the target pod to (with `kind`, its node)",
        accepts=is_node_name,
        refused="expected a Kubernetes node name (DNS-1123 subdomain), as `kubectl get nodes` shows it",
        derived=_kind_node, shown_default="none",
    ),
    Setting(
        "mode", STRING, "attach",
        about="`attach` (debug the running Envoy of an injected pod) or `startup` (the pod waits; Envoy is "
              "started by hand under lldb)",
        accepts=_one_of(MODES),
        refused="expected attach (debug a running Envoy) or startup (start Envoy by hand under lldb)",
        required="set attach or startup",
    ),
    Setting(
        "target", STRING, "sidecar",
        about="whose Envoy: `sidecar` (the StatefulSet's injected istio-proxy), `waypoint` (the ambient waypoint "
              "istiod deploys from a Gateway of class `istio-waypoint` for the target's Service; the app runs "
              "ambient) or `gateway` (an ingress gateway istiod deploys from a Gateway of class `istio`, with an "
              "HTTPRoute to the target); the last two need Istio 1.26.0 or later (see docs/target.md)",
        accepts=_one_of(TARGETS),
        refused="expected sidecar (the target's injected istio-proxy), waypoint (the ambient-mode waypoint istiod "
                "deploys for the target's namespace) or gateway (an ingress gateway istiod deploys, routing to the "
                "target)",
    ),
    Setting(
        "lldbServerPort", INTEGER, 2159,
        about=f"port of the node-side lldb-server platform; the {GDBSERVER_PORT_COUNT} ports after it are its "
              "gdbserver ports",
        accepts=_between(*PLATFORM_PORT_RANGE),
        refused=f"expected an integer port from {PLATFORM_PORT_RANGE[0]} to {PLATFORM_PORT_RANGE[1]}: the "
                f"{GDBSERVER_PORT_COUNT} ports after it are lldb-server's gdbserver ports, which it accepts only "
                f"in {USER_PORT_RANGE[0]}-{USER_PORT_RANGE[1]}",
        required=f"set an integer port from {PLATFORM_PORT_RANGE[0]} to {PLATFORM_PORT_RANGE[1]}",
    ),
    Setting(
        "lldbServerListenAll", BOOLEAN,
        about="`true` or `false`: let lldb-server take connections from any address, not only the debugger's "
              "(`registryHost`; with `docker` the debugger container's). It runs any command as root: keep "
              "`false`, except with `cluster` placement, which requires `true` (code-server's address moves with "
              "its pod)",
        derived=_listen_all_in_the_cluster, shown_default="`true` with `cluster` placement, else `false`",
    ),
    Setting(
        "appUid", INTEGER, 1000,
        about="uid/gid of the app in startup mode; only its outbound traffic is captured",
        accepts=_between(1, 2**31 - 1), refused="expected an integer uid from 1 to 2147483647",
        required="set an integer uid from 1 to 2147483647",
    ),
    Setting(
        "workspaceStorageClass", STRING,
        about="`cluster` only: StorageClass of the workspace volume, which must offer ReadWriteMany (NFS, CephFS, "
              "EFS, Filestore…); empty means the cluster's default class",
        accepts=_matches(_DNS1123_SUBDOMAIN),
        refused="expected a StorageClass name (kubectl get storageclass) that offers ReadWriteMany, or empty for "
                "the default",
        shown_default="the default class",
    ),
    Setting(
        "workspaceVolumeSize", STRING, "200Gi",
        about="`cluster` only: size of the workspace volume (source, bazel cache, registry data); never deleted "
              "by destroy",
        accepts=lambda size: _is_memory(size) and memory_bytes(size) >= 2**30,
        refused="expected a storage quantity of at least 1Gi, e.g. 200Gi (the source tree and a debug build's "
                "bazel cache)",
        required="set e.g. 200Gi",
    ),
    Setting(
        "codeServerPassword", SECRET,
        about=f"code-server's password, at least {MIN_CODE_SERVER_PASSWORD} characters "
              "(`pulumi config set --secret codeServerPassword`)",
        accepts=lambda password: len(password) >= MIN_CODE_SERVER_PASSWORD,
        refused=f"expected at least {MIN_CODE_SERVER_PASSWORD} characters: code-server is reachable by the "
                "cluster",
        shown_default="required with `cluster`",
    ),
)

KEYS = tuple(setting.key for setting in SETTINGS)
SECRET_KEYS = frozenset(setting.key for setting in SETTINGS if setting.secret)
