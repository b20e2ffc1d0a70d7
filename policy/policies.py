"""The project's safety rules as CrossGuard policies, checked on every resource of a preview or an update.

1. `lldb-server-only-for-the-debugger`: the node-side lldb-server runs any command it is asked to, as root
   on the node. The program has it take connections from the debugger's address only (`--listen <host>:<port>`
   is LLDB's peer filter) and writes `LISTEN_ALL='true'` into the command only when `lldbServerListenAll` is set
   (components/lldb_server.py); a command that gives a wildcard address without that marker — by its
   LISTEN_ADDRESS assignment, or by an `lldb-server platform --listen` (or a `lldb-server gdbserver host:port`)
   it runs — is refused.
2. `privileged-only-where-needed`: of the Docker containers only the builder (S2: bazel's sandbox, docker)
   and the debugger (S9: ptrace) are privileged; of the Kubernetes workloads only the cluster placement's
   builder (its `builder` container, for bazel's sandbox) and, with nodeAccess kubernetes, the node agents (a
   Pod named `node-agent-<its nodeName>`, labelled as one, whose one container `agent` is the node's root shell:
   components/node_agent.py); the target never is (startup mode adds
   SYS_PTRACE instead, components/target.py), nor is code-server (it ptraces nothing), nor is a container a
   Gateway's `deployment` overlay gives istiod's Deployment (target waypoint or gateway).
3. `debug-image-by-digest`: the pod runs exactly the debug image that was pushed: the
   `sidecar.istio.io/proxyImage` annotation names it `…@sha256:<digest>`, and an istio-proxy or istio-init
   the pod declares itself (startup mode's overrides) names it too, or `auto` (the injector's, from that
   annotation) when the pod is injected. With target waypoint or gateway no pod is injected: the Envoy is
   the one istiod deploys for a Gateway, and the debug image reaches it through the Gateway's parametersRef
   ConfigMap, whose `deployment` key istiod applies to its Deployment as a strategic merge patch
   (components/mesh_gateway.py); an istio-proxy (or istio-init) that overlay gives names the image by digest.
   The policy reads the ConfigMap's own text, as YAML (a key given twice is refused: which one istiod reads
   is not the policy's guess); an overlay it cannot read is a violation.

Only pure functions and the policy objects live here; policy/__main__.py builds the pack, which starts
a gRPC server, so tests import this module alone. Resource properties arrive as the engine sends them:
camelCase input names, secrets already unwrapped, mappings and lists that raise
`pulumi_policy`'s UnknownValueError when a value is not known yet (a preview): that is left to
propagate, and the engine reports the policy as not checkable during that preview.
"""

from __future__ import annotations

import ipaddress
import posixpath
import re
import socket
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import yaml
from pulumi_policy import EnforcementLevel, ReportViolation, ResourceValidationArgs, ResourceValidationPolicy

PACK_NAME = "istio-proxy-debug-safety"

# --- 1. lldb-server ------------------------------------------------------------------------------------------

COMMAND_TYPES = frozenset({"command:remote:Command", "command:local:Command"})
# Every text a Command runs or feeds to what it runs.
COMMAND_TEXT_FIELDS = ("create", "update", "delete", "stdin")
LISTEN_ADDRESS = "LISTEN_ADDRESS"
LISTEN_ALL = "LISTEN_ALL"
# lldb-server's own spellings of "every address", besides the unspecified IPv4/IPv6 addresses.
_WILDCARD_WORDS = frozenset({"", "*"})
_ASSIGNMENT_WORD = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", re.DOTALL)
_DECLARATION_WORDS = frozenset({"export", "readonly", "declare", "local", "typeset"})
_VARIABLE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")
_LLDB_SERVER_PROGRAM = re.compile(r"^lldb-server(-[0-9][0-9.]*)?$")
# `lldb-server platform` and its one-letter alias; getopt_long_only: -listen, --listen, --li…, -L.
_PLATFORM_WORDS = frozenset({"platform", "p"})
# `lldb-server gdbserver [[host]:port]` and its alias: a gdbserver listening on its own.
_GDBSERVER_WORDS = frozenset({"gdbserver", "g"})
_HOST_PORT = re.compile(r"^(?:tcp://)?(?:\[[^\]]*\]|[^\s:/\[\]]*):[0-9]+$")
_OPERATOR_CHARS = ";&|()"
_SEPARATORS = frozenset({";", "&", "&&", "|", "||", ";;", "(", ")", "\n"})
_NESTING_LIMIT = 4


def command_texts(props: Mapping[str, Any]) -> list[str]:
    """The shell texts of a Command resource: create, update, delete and stdin, where set."""
    return [props[field] for field in COMMAND_TEXT_FIELDS if field in props and isinstance(props[field], str)]


def _logical_lines(text: str) -> list[str]:
    """The text's lines, with backslash-newline continuations joined as the shell joins them."""
    return text.replace("\\\r\n", " ").replace("\\\n", " ").splitlines()


def shell_words(line: str) -> list[str] | None:
    """One line's words as the shell splits them: quotes and backslashes removed, a comment (an unquoted `#`
    starting a word) dropped, and the control operators `;` `&` `&&` `|` `||` `(` `)` as words of their
    own (`2>&1` and `&>` stay redirections). None when a quote is left open: a line of a longer string."""
    words: list[str] = []
    word: list[str] = []
    in_word = False
    i, n = 0, len(line)
    while i < n:
        c = line[i]
        if c in " \t\r":
            if in_word:
                words.append("".join(word))
                word, in_word = [], False
        elif c == "#" and not in_word:
            break
        elif c in _OPERATOR_CHARS and not (c == "&" and ((word and word[-1] in "<>") or line[i + 1:i + 2] == ">")):
            if in_word:
                words.append("".join(word))
                word, in_word = [], False
            if c in "&|;" and line[i + 1:i + 2] == c:
                words.append(c + c)
                i += 1
            else:
                words.append(c)
        elif c == "'":
            end = line.find("'", i + 1)
            if end < 0:
                return None
            word.append(line[i + 1:end])
            in_word, i = True, end
        elif c == '"':
            j = i + 1
            while j < n and line[j] != '"':
                if line[j] == "\\" and j + 1 < n and line[j + 1] in '"\\$`':
                    j += 1
                word.append(line[j])
                j += 1
            if j >= n:
                return None
            in_word, i = True, j
        elif c == "\\":
            if i + 1 < n:
                word.append(line[i + 1])
                i += 1
            in_word = True
        else:
            word.append(c)
            in_word = True
        i += 1
    if in_word:
        words.append("".join(word))
    return words


def shell_assignments(text: str) -> dict[str, list[str]]:
    """Every `NAME=value` the text assigns at the start of a simple command (`export` and the like
    allowed), each name with all its values in order, unquoted as the shell would read them."""
    found: dict[str, list[str]] = {}
    for line in _logical_lines(text):
        words = shell_words(line)
        if not words:
            continue
        start = True
        for word in words:
            if word in _SEPARATORS:
                start = True
                continue
            if start and word in _DECLARATION_WORDS:
                continue
            match = _ASSIGNMENT_WORD.match(word) if start else None
            if match:
                found.setdefault(match.group(1), []).append(match.group(2))
            else:
                start = False
    return found


def expand(value: str, variables: Mapping[str, str]) -> str:
    """`$NAME` and `${NAME}` replaced by the known values; unknown references are left as they are."""

    def replace(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        return variables.get(name, match.group(0))

    for _ in range(_NESTING_LIMIT):
        expanded = _VARIABLE.sub(replace, value)
        if expanded == value:
            break
        value = expanded
    return value


def is_resolved(value: str) -> bool:
    """No expansion or command substitution is left in the value."""
    return "$" not in value and "`" not in value


def is_wildcard_host(host: str) -> bool:
    """An address that binds every interface: '', '*', 0.0.0.0 (also as inet_aton reads '0'), ::, [::]."""
    host = host.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host in _WILDCARD_WORDS:
        return True
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_unspecified
    except ValueError:
        pass
    try:
        return socket.inet_aton(host) == b"\0\0\0\0"
    except OSError:
        return False


def listen_host(listen: str) -> str | None:
    """The host part of an lldb-server `--listen` value (`host:port`, `[v6]:port`, `port`, `tcp://…`);
    None for a Unix socket, which binds no address."""
    value = listen.strip()
    scheme, sep, rest = value.partition("://")
    if sep:
        if scheme.startswith("unix"):
            return None
        value = rest
    if value.startswith("/"):
        return None
    if value.startswith("["):
        host, _, _ = value[1:].partition("]")
        return host
    host, colon, port = value.rpartition(":")
    if not colon:
        return "" if value.isdigit() else value  # a bare port: every address
    return host


def _listen_values(words: Sequence[str]) -> Iterator[str]:
    """The values of the listen option among the words of one `lldb-server platform` command."""
    i = 0
    while i < len(words):
        word = words[i]
        if word in _SEPARATORS:
            return
        if word.startswith("-L") and not word.startswith("--") and len(word) > 2:
            yield word[2:]
        elif word.startswith("-") and word != "-":
            name, eq, inline = word.lstrip("-").partition("=")
            if word == "-L" or (len(name) >= 2 and "listen".startswith(name)):
                if eq:
                    yield inline
                elif i + 1 < len(words):
                    i += 1
                    yield words[i]
                else:
                    yield ""
        i += 1


def _flatten(words: list[str], depth: int = 0) -> list[str]:
    """Words that are themselves commands (`bash -c '…'`, `ssh node '…'`) split into their words too."""
    flat: list[str] = []
    for word in words:
        inner = shell_words(word) if depth < _NESTING_LIMIT and any(c.isspace() for c in word) else None
        if inner and len(inner) > 1:
            flat.extend(["\n", *_flatten(inner, depth + 1), "\n"])
        else:
            flat.append(word)
    return flat


def _gdbserver_listens(words: Sequence[str]) -> list[str]:
    """The `[host]:port` an `lldb-server gdbserver` listens on (its positional argument); none when it
    connects out (--reverse-connect)."""
    addresses = []
    for word in words:
        if word in _SEPARATORS or word == "--":
            break
        if word in ("--reverse-connect", "-reverse-connect", "-R"):
            return []
        if not word.startswith("-") and _HOST_PORT.match(word):
            addresses.append(word)
    return addresses


def lldb_server_listens(text: str, variables: Mapping[str, str]) -> list[tuple[str, str]]:
    """(how, address) for every lldb-server the text starts: `platform --listen` (every value, joined as
    lldb-server joins them) and `gdbserver [host]:port`; variables expanded."""
    found = []
    for line in _logical_lines(text):
        words = shell_words(line)
        if not words:
            continue
        words = [expand(w, variables) for w in _flatten(words)]
        for i, word in enumerate(words[:-1]):
            if not (_LLDB_SERVER_PROGRAM.match(posixpath.basename(word)) or not is_resolved(word)):
                continue
            if words[i + 1] in _PLATFORM_WORDS:
                values = list(_listen_values(words[i + 2:]))
                if values:
                    found.append(("lldb-server platform --listen", "".join(values)))
            elif words[i + 1] in _GDBSERVER_WORDS:
                found.extend(("lldb-server gdbserver", v) for v in _gdbserver_listens(words[i + 2:]))
    return found


def lldb_server_problems(props: Mapping[str, Any]) -> list[str]:
    """Why this Command would serve lldb-server on every address of the node without lldbServerListenAll."""
    texts = command_texts(props)
    assigned: dict[str, list[str]] = {}
    for text in texts:
        for name, values in shell_assignments(text).items():
            assigned.setdefault(name, []).extend(values)
    last = {name: values[-1] for name, values in assigned.items()}
    marker = LISTEN_ALL in assigned and all(expand(v, last) == "true" for v in assigned[LISTEN_ALL])
    if marker:
        return []
    problems = []
    for value in assigned.get(LISTEN_ADDRESS, []):
        address = expand(value, last)
        if not is_resolved(address):
            problems.append(f"{LISTEN_ADDRESS}={value!r} is not a literal address, so it may be every address, "
                            f"and {LISTEN_ALL} is not 'true'")
        elif is_wildcard_host(address):
            problems.append(f"{LISTEN_ADDRESS}={address!r} binds every address of the node, and {LISTEN_ALL} is "
                            "not 'true' (set lldbServerListenAll to mean it)")
    for text in texts:
        for how, listen in lldb_server_listens(text, last):
            host = listen_host(listen)
            if host is None:
                continue
            if not is_resolved(host):
                problems.append(f"{how} {listen!r}: cannot tell which address it binds, and {LISTEN_ALL} is not "
                                "'true'")
            elif is_wildcard_host(host):
                problems.append(f"{how} {listen!r} binds every address of the node, and {LISTEN_ALL} is not "
                                "'true' (set lldbServerListenAll to mean it)")
    return list(dict.fromkeys(problems))


def _validate_lldb_server(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if args.resource_type not in COMMAND_TYPES:
        return
    for problem in lldb_server_problems(args.props):
        report_violation(f"{args.name}: {problem}. lldb-server runs any command it is asked to, as root on the "
                         "node: restrict it to the debugger's address.", None)


# --- 2. privileged containers --------------------------------------------------------------------------------

DOCKER_CONTAINER = "docker:index/container:Container"
# The steps that need it: the builder (S2: bazel's sandbox, docker in docker) and the debugger (S9: ptrace).
# On a stack other than dev the name carries "-<stack>" (components/stack_names.py physical_name).
PRIVILEGED_DOCKER_CONTAINERS = ("istio-proxy-builder", "lldb-vscode-server")
_PRIVILEGED_NAME = re.compile(
    rf"^(?:{'|'.join(map(re.escape, PRIVILEGED_DOCKER_CONTAINERS))})(?:-[A-Za-z0-9_.-]+)?$"
)
# The cluster placement's builder (components/builder.py): (kind, name) → its containers that may be privileged.
PRIVILEGED_KUBERNETES_WORKLOADS = {("StatefulSet", "istio-proxy-builder"): ("builder",)}
# nodeAccess kubernetes (components/node_agent.py): a Pod named for the node it is bound to, labelled a node
# agent, whose one container is the node's root shell.
NODE_AGENT_PREFIX = "node-agent-"
NODE_AGENT_LABEL = ("app.kubernetes.io/component", "node-agent")
NODE_AGENT_CONTAINER = "agent"
# Kubernetes kinds that carry a pod spec, and where: Pod at spec, CronJob at spec.jobTemplate.spec.template.
_POD_TEMPLATE_KINDS = frozenset({"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "ReplicationController",
                                 "Job"})
CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")


def is_true(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() == "true")


def may_be_privileged(container_name: Any) -> bool:
    return isinstance(container_name, str) and bool(_PRIVILEGED_NAME.match(container_name))


def docker_privilege_problems(props: Mapping[str, Any]) -> list[str]:
    if not is_true(props.get("privileged")):
        return []
    name = props.get("name")
    if may_be_privileged(name):
        return []
    allowed = ", ".join(PRIVILEGED_DOCKER_CONTAINERS)
    return [f"Docker container {name!r} is privileged; only {allowed} (with a -<stack> suffix off dev) need it"]


def kubernetes_kind(resource_type: str) -> str | None:
    """`kubernetes:apps/v1:StatefulSet` → StatefulSet (a …Patch counts as its kind); None for other types."""
    if not resource_type.startswith("kubernetes:"):
        return None
    kind = resource_type.rsplit(":", 1)[-1]
    return kind.removesuffix("Patch")


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _items(value: Any) -> Sequence[Any]:
    return value if isinstance(value, Sequence) and not isinstance(value, str) else ()


def pod_template(resource_type: str, props: Mapping[str, Any]) -> tuple[Mapping[str, Any], Mapping[str, Any]] | None:
    """The pod's (metadata, spec) of a Kubernetes workload's properties; None for other resources."""
    kind = kubernetes_kind(resource_type)
    spec = _mapping(props.get("spec"))
    if kind == "Pod":
        return _mapping(props.get("metadata")), spec
    if kind == "CronJob":
        spec = _mapping(_mapping(spec.get("jobTemplate")).get("spec"))
    elif kind not in _POD_TEMPLATE_KINDS:
        return None
    template = _mapping(spec.get("template"))
    return _mapping(template.get("metadata")), _mapping(template.get("spec"))


def pod_containers(pod_spec: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(list name, container) for every container, init container and ephemeral container of a pod."""
    for field in CONTAINER_LISTS:
        for container in _items(pod_spec.get(field)):
            yield field, _mapping(container)


# --- a Gateway's `deployment` overlay (target waypoint or gateway) --------------------------------------------

# istiod renders the Envoy of a Gateway as a Deployment, then applies the `deployment` key of the ConfigMap the
# Gateway's spec.infrastructure.parametersRef names, as a strategic merge patch (components/mesh_gateway.py).
# Any ConfigMap with that key is read as such an overlay: a resource policy sees one resource at a time, not
# which Gateway names it.
OVERLAY_KEY = "deployment"


class OverlayError(ValueError):
    """A ConfigMap's `deployment` overlay that the policy cannot read as istiod would."""


class _OverlayLoader(yaml.SafeLoader):
    """yaml.safe_load's reading, except that a mapping giving a key twice is an error (a `<<` merge may still
    be overridden): which of the two istiod would apply is not the policy's guess to make."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: list[Any] = []
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                if key in seen:
                    raise yaml.constructor.ConstructorError("while constructing a mapping", node.start_mark,
                                                            f"found key {key!r} twice", key_node.start_mark)
                seen.append(key)
        return super().construct_mapping(node, deep=deep)


def _yaml_error(error: yaml.YAMLError) -> str:
    """A YAML error on one line: what, and where in the text."""
    if isinstance(error, yaml.MarkedYAMLError) and error.problem:
        mark = error.problem_mark
        what = f"{error.context}, {error.problem}" if error.context else error.problem
        return what + (f" at line {mark.line + 1}, column {mark.column + 1}" if mark else "")
    return " ".join(str(error).split())


def overlay_pod(resource_type: str, props: Mapping[str, Any]) -> tuple[Mapping[str, Any], Mapping[str, Any]] | None:
    """The pod template's (metadata, spec) a ConfigMap's `deployment` overlay patches into istiod's Deployment;
    None for a resource that carries no such overlay. OverlayError when the overlay cannot be read. An unknown
    `data` or `deployment` (a preview) raises UnknownValueError; an unknown value under another key is not
    read."""
    if kubernetes_kind(resource_type) != "ConfigMap":
        return None
    data = _mapping(props.get("data"))
    if OVERLAY_KEY not in data:
        return None
    text = data[OVERLAY_KEY]
    if not isinstance(text, str):
        raise OverlayError(f"data.{OVERLAY_KEY} is {type(text).__name__}, not YAML text")
    try:
        overlay = yaml.load(text, Loader=_OverlayLoader)  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as error:
        raise OverlayError(f"data.{OVERLAY_KEY} is not YAML the policy can read ({_yaml_error(error)})") from None
    template = _mapping(_mapping(_mapping(overlay).get("spec")).get("template"))
    return _mapping(template.get("metadata")), _mapping(template.get("spec"))


def kubernetes_privilege_problems(resource_type: str, props: Mapping[str, Any]) -> list[str]:
    pod = pod_template(resource_type, props)
    if pod is None:
        return []
    problems = []
    allowed = PRIVILEGED_KUBERNETES_WORKLOADS.get(
        (kubernetes_kind(resource_type), _mapping(props.get("metadata")).get("name")), ())
    if is_node_agent(resource_type, *pod):
        allowed = (NODE_AGENT_CONTAINER,)
    for field, container in pod_containers(pod[1]):
        if field == "containers" and container.get("name") in allowed:
            continue
        if is_true(_mapping(container.get("securityContext")).get("privileged")):
            problems.append(f"{field} {container.get('name')!r} is privileged; a Kubernetes workload of this "
                            "project never needs it (startup mode adds the SYS_PTRACE capability instead)")
    return problems


def is_node_agent(resource_type: str, metadata: Mapping[str, Any], spec: Mapping[str, Any]) -> bool:
    """A node agent: a Pod bound to a node, named for it, labelled as one, with its one container."""
    node = spec.get("nodeName")
    key, value = NODE_AGENT_LABEL
    return (kubernetes_kind(resource_type) == "Pod" and isinstance(node, str) and node != ""
            and metadata.get("name") == NODE_AGENT_PREFIX + node
            and _mapping(metadata.get("labels")).get(key) == value
            and [c.get("name") for _, c in pod_containers(spec)] == [NODE_AGENT_CONTAINER])


def overlay_privilege_problems(resource_type: str, props: Mapping[str, Any]) -> list[str]:
    """A container a Gateway's `deployment` overlay makes privileged (the Envoy istiod deploys)."""
    try:
        pod = overlay_pod(resource_type, props)
    except OverlayError:
        return []  # debug-image-by-digest reports an overlay nobody can read
    if pod is None:
        return []
    return [f"the {OVERLAY_KEY} overlay makes {field} {container.get('name')!r} of istiod's Deployment privileged; "
            "the Envoy it deploys for the Gateway needs only the capabilities the overlay adds (SYS_PTRACE, SETUID, "
            "SETGID)"
            for field, container in pod_containers(pod[1])
            if is_true(_mapping(container.get("securityContext")).get("privileged"))]


def _validate_privileged(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if args.resource_type == DOCKER_CONTAINER:
        problems = docker_privilege_problems(args.props)
    else:
        problems = (kubernetes_privilege_problems(args.resource_type, args.props)
                    + overlay_privilege_problems(args.resource_type, args.props))
    for problem in problems:
        report_violation(f"{args.name}: {problem}.", None)


# --- 3. the debug image by digest ----------------------------------------------------------------------------

PROXY_IMAGE_ANNOTATION = "sidecar.istio.io/proxyImage"
INJECT_KEY = "sidecar.istio.io/inject"
# The containers the injector adds, and that the pod may declare itself (merged into the injected ones).
SIDECAR_CONTAINERS = ("istio-proxy", "istio-init")
# What the pod spec names when the injector is to fill in its own image (from proxyImage).
INJECTED_IMAGE = "auto"
_BY_DIGEST = re.compile(r"^[^\s@]+@sha256:[0-9a-f]{64}$")


def is_by_digest(image: Any) -> bool:
    return isinstance(image, str) and bool(_BY_DIGEST.match(image))


def is_injected(metadata: Mapping[str, Any]) -> bool:
    """Whether Istio may inject the pod: neither its inject label nor its inject annotation says false."""
    for field in ("labels", "annotations"):
        value = _mapping(metadata.get(field)).get(INJECT_KEY)
        if isinstance(value, str) and value.lower() == "false":
            return False
    return True


def digest_problems(resource_type: str, props: Mapping[str, Any]) -> list[str]:
    pod = pod_template(resource_type, props)
    if pod is None:
        return []
    metadata, spec = pod
    problems = []
    annotations = _mapping(metadata.get("annotations"))
    if PROXY_IMAGE_ANNOTATION in annotations and not is_by_digest(annotations[PROXY_IMAGE_ANNOTATION]):
        problems.append(f"annotation {PROXY_IMAGE_ANNOTATION}={annotations[PROXY_IMAGE_ANNOTATION]!r} does not "
                        "name the debug image by digest (<registry>/<repository>@sha256:<64 hex>)")
    injected = is_injected(metadata)
    for field, container in pod_containers(spec):
        name = container.get("name")
        if name not in SIDECAR_CONTAINERS:
            continue
        image = container.get("image")
        if injected and image == INJECTED_IMAGE:
            continue
        if not is_by_digest(image):
            problems.append(f"{field} {name!r} runs image {image!r}, not the debug image by digest "
                            "(<registry>/<repository>@sha256:<64 hex>)")
    return problems


BY_TAG = "by tag, the pod runs whatever the tag names when it starts, not the image this stack built and pushed"


def overlay_digest_problems(resource_type: str, props: Mapping[str, Any]) -> list[str]:
    """Why a Gateway's `deployment` overlay would not run the debug image by digest: each whole sentence."""
    try:
        pod = overlay_pod(resource_type, props)
    except OverlayError as error:
        return [f"{error}: istiod cannot apply it to the Deployment it renders for the Gateway, and the policy "
                "cannot tell which image that Envoy runs"]
    if pod is None:
        return []
    problems = []
    for field, container in pod_containers(pod[1]):
        name = container.get("name")
        if name not in SIDECAR_CONTAINERS:
            continue
        image = container.get("image")
        if image is None:
            problems.append(f"the {OVERLAY_KEY} overlay gives {field} {name!r} no image, so istiod's Deployment "
                            "runs its template's (the release's proxyv2, by tag), not the debug image by digest "
                            "(<registry>/<repository>@sha256:<64 hex>)")
        elif not is_by_digest(image):
            why = "no injector replaces 'auto' in a Deployment istiod renders" if image == INJECTED_IMAGE else BY_TAG
            problems.append(f"the {OVERLAY_KEY} overlay gives {field} {name!r} image {image!r}, not the debug "
                            f"image by digest (<registry>/<repository>@sha256:<64 hex>); {why}")
    return problems


def _validate_digest(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    for problem in digest_problems(args.resource_type, args.props):
        report_violation(f"{args.name}: {problem}; {BY_TAG}.", None)
    for problem in overlay_digest_problems(args.resource_type, args.props):
        report_violation(f"{args.name}: {problem}.", None)


# --- the policies --------------------------------------------------------------------------------------------

LLDB_SERVER_POLICY = ResourceValidationPolicy(
    name="lldb-server-only-for-the-debugger",
    description="lldb-server platform takes connections from every address only when lldbServerListenAll says so "
                "(LISTEN_ALL='true' in its command).",
    enforcement_level=EnforcementLevel.MANDATORY,
    validate=_validate_lldb_server,
)
PRIVILEGED_POLICY = ResourceValidationPolicy(
    name="privileged-only-where-needed",
    description="Only the builder and debugger Docker containers are privileged; no Kubernetes container is (nor "
                "one a Gateway's deployment overlay gives).",
    enforcement_level=EnforcementLevel.MANDATORY,
    validate=_validate_privileged,
)
DIGEST_POLICY = ResourceValidationPolicy(
    name="debug-image-by-digest",
    description="The target pod names the debug image by digest: the proxyImage annotation, and istio-proxy and "
                "istio-init when the pod declares them (or auto, when it is injected); a Gateway's deployment "
                "overlay ConfigMap gives istio-proxy the debug image by digest.",
    enforcement_level=EnforcementLevel.MANDATORY,
    validate=_validate_digest,
)
POLICIES = [LLDB_SERVER_POLICY, PRIVILEGED_POLICY, DIGEST_POLICY]
