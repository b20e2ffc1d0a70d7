"""The generated parts of docs/troubleshooting.md: every message the stack can stop with, from the code that says it.

- `refusals_table`: each setting's refusal sentences, straight from `SETTINGS` (components/settings.py);
- `rules_table`: each rule's messages, read from components/config_rules.py's source (`rule_messages`, with `ast`),
  in the order of `RULES`: the f-strings' values that follow from module constants or loop constants are filled in,
  the others shown as `<placeholders>`;
- `messages_tables`: what the scripts and modules print when they stop (`MESSAGES`, kept here by hand with what each
  means and the fix); tests/test_docs.py checks that every message's words still occur in the file that prints it.

tools/config_docs.py writes them between their markers (`make config-docs`) and checks them (`make lint`).
"""

from __future__ import annotations

import ast
import inspect
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from components import config_rules
from components.settings import PROJECT, SETTINGS, Setting

ROOT = Path(__file__).resolve().parents[1]

# --- settings ------------------------------------------------------------------------------------------------------


def _cell(text: str) -> str:
    """Text in a table cell: a code span that holds it whole (a backtick inside takes a longer fence)."""
    text = text.replace("|", "\\|")
    fence = "``" if "`" in text else "`"
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def refusal_sentences(setting: Setting) -> list[str]:
    """What a set value of `setting` can be refused with: its check's sentence, and its type's where that differs."""
    sentences = [setting.refusal, setting._type_refusal()]  # noqa: SLF001 - the sentence config.py prints
    return [s for s in dict.fromkeys(sentences) if s]


def refusals_table() -> str:
    rows = ["| setting | a value it refuses | left empty |", "|---|---|---|"]
    for setting in SETTINGS:
        refused = " or ".join(_cell(s) for s in refusal_sentences(setting))
        required = _cell(setting.required) if setting.required else ""
        if refused or required:
            rows.append(f"| `{setting.key}` | {refused} | {required} |")
    return "\n".join(rows) + "\n"


# --- the rules -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RuleMessage:
    rule: str
    key: str
    sentence: str
    missing: bool

    @property
    def line(self) -> str:
        """As components/config.py prints it, the value a placeholder."""
        if self.missing:
            return f"{PROJECT}:{self.key} is required: {self.sentence}"
        return f"{PROJECT}:{self.key} = <value>: {self.sentence}"


def _placeholder(source: str) -> str:
    """An expression the docs cannot know, as a name: v["nodes"][0] → <nodes[0]>, ', '.join(bad) → <bad>."""
    source = re.sub(r"""v\[["'](\w+)["']\]""", r"\1", source)
    source = re.sub(r"""^["'], ["']\.join\((.*)\)$""", r"\1", source)
    return f"<{source}>"


def _evaluated(node: ast.expr, env: dict) -> tuple[bool, object]:
    try:
        return True, eval(compile(ast.Expression(node), "<rule>", "eval"), vars(config_rules), dict(env))  # noqa: S307
    except Exception:  # noqa: BLE001 - whatever cannot be known without a configuration stays a placeholder
        return False, None


def _text(node: ast.expr, env: dict, source: str) -> str:
    """A string constant, a concatenation or an f-string, with what can be known filled in."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        parts = []
        for value in node.values:
            if isinstance(value, ast.Constant):
                parts.append(str(value.value))
            else:
                known, result = _evaluated(value.value, env)
                parts.append(str(result) if known else _placeholder(ast.get_source_segment(source, value.value)))
        return "".join(parts)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _text(node.left, env, source) + _text(node.right, env, source)
    known, result = _evaluated(node, env)
    return str(result) if known else _placeholder(ast.get_source_segment(source, node))


def _bind(target: ast.expr, value: object, env: dict) -> dict:
    if isinstance(target, ast.Name):
        return {**env, target.id: value}
    if isinstance(target, ast.Tuple) and isinstance(value, tuple | list) and len(value) == len(target.elts):
        for element, item in zip(target.elts, value, strict=True):
            env = _bind(element, item, env)
        return env
    return env


def _problems(statements: list[ast.stmt], env: dict, source: str) -> Iterator[tuple[str, str, bool]]:
    """Every Problem(key, sentence[, missing]) the statements make, loops over constants unrolled."""
    for statement in statements:
        if isinstance(statement, ast.Assign) and len(statement.targets) == 1:
            known, value = _evaluated(statement.value, env)
            if known:
                env = _bind(statement.targets[0], value, env)
        elif isinstance(statement, ast.For):
            known, items = _evaluated(statement.iter, env)
            for item in list(items) if known else [None]:
                yield from _problems(statement.body, _bind(statement.target, item, env) if known else env, source)
        elif isinstance(statement, ast.If):
            yield from _problems(statement.body, env, source)
            yield from _problems(statement.orelse, env, source)
        else:
            for node in ast.walk(statement):
                if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Problem":
                    key = _text(node.args[0], env, source)
                    sentence = _text(node.args[1], env, source)
                    missing = any(k.arg == "missing" and getattr(k.value, "value", False) for k in node.keywords)
                    yield key, sentence, missing


def rule_messages() -> list[RuleMessage]:
    """Each rule's messages, in the order the rules run."""
    source = inspect.getsource(config_rules)
    functions = {node.name: node for node in ast.parse(source).body if isinstance(node, ast.FunctionDef)}
    messages = []
    for rule in config_rules.RULES:
        found = dict.fromkeys(_problems(functions[rule.__name__].body, {}, source))
        messages += [RuleMessage(rule.__name__, key, sentence, missing) for key, sentence, missing in found]
    return messages


def rules_table() -> str:
    rows = ["| rule | setting | message |", "|---|---|---|"]
    for message in rule_messages():
        rows.append(f"| `{message.rule}` | `{message.key}` | {_cell(message.line)} |")
    return "\n".join(rows) + "\n"


# --- what the scripts and modules stop with ------------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    # The file that prints it, from the project's root.
    source: str
    # What it puts before the words (its tag, e.g. "lldb-server: "), as the source writes it; may be empty.
    prefix: str
    # The words, exactly as the source writes them: shell `$NAME`s, make `$(NAME)`s, Python `{name}`s.
    says: str
    means: str
    fix: str
    # Whether the words follow the prefix at once (else something the docs leave out comes between).
    starts: bool = True

    @property
    def line(self) -> str:
        """As a user reads it: every variable a <name>, what comes between or after an ellipsis."""
        return shown(self.prefix + ("" if self.starts else "… ") + self.says) + " …"


_VARIABLE = re.compile(r"\$\(([A-Z_]+)\)|\$\{(\w+)[^}]*\}|\$(\w+)|\{([^{}]+)\}")
# A command's output in a message: `$(id -u)`, or one the quoting cut off (`$(cat "$errors")` read as `$(cat `).
_COMMAND = re.compile(r"\$\((?![A-Z_]+\))(?:[^()]|\([^()]*\))*(?:\)|$)")


def _name(match: re.Match) -> str:
    inner = next(group for group in match.groups() if group)
    names = re.findall(r"\w+", inner)
    return f"<{names[-1].lower()}>" if names else match.group(0)


def shown(text: str) -> str:
    """The words with every variable a <name>: `$NAME`, `${NAME…}`, `$(NAME)`, `{expression}` (its last name)."""
    return _VARIABLE.sub(_name, _COMMAND.sub("<…>", text))


S = "components/scripts/"
ATTACH_TO = "attachTo $POD_NAMESPACE/$POD_NAME: "
MESSAGES: tuple[tuple[str, tuple[Message, ...]], ...] = (
    ("make up and make test, before Pulumi runs", (
        Message("Makefile", "make: ", "$(PYTHON) is not installed: install Python 3.11 or later",
                "no `python3` on PATH", "install Python 3.11 or later with venv (Debian/Ubuntu: `apt-get install "
                "python3 python3-venv`), or name another with `PYTHON=`"),
        Message("Makefile", "make: ", "'$(PYTHON) -m venv' failed: install Python's venv module",
                "Python has no venv module", "`apt-get install python3-venv`"),
        Message("Makefile", "make: ", "pip could not install",
                "`requirements-dev.txt` could not be installed into `.venv`",
                "check your network or PyPI mirror (`PIP_INDEX_URL`)"),
        Message("Makefile", "make: ", "the Pulumi CLI is not installed, and curl (to install it) is",
                "no Pulumi CLI, and no curl to fetch it", "install curl, or the Pulumi CLI yourself"),
        Message("Makefile", "make: ", "could not install the Pulumi CLI $(PULUMI_VERSION)",
                "Pulumi's installer failed (offline?)",
                "install the Pulumi CLI from https://www.pulumi.com/docs/install/ and run `make up` again"),
        Message("Makefile", "make: ", "the $(STACK) stack needs Docker (20.10 or later), and there is",
                "a kind stack (the lab) and no `docker` command", "install Docker Engine or Docker Desktop"),
        Message("Makefile", "make: ", "Docker does not answer ('docker info' fails)",
                "Docker is installed but not running, or not yours to use",
                "start Docker, or add yourself to the `docker` group (then log in again)"),
        Message("tools/install-kind.sh", "make: ", "kind: $url has SHA-256 $actual, not the pinned $expected: not "
                "installed", "the kind binary downloaded is not the release's (a proxy's error page, a tampered file)",
                "nothing was installed: run `make up` again on a clean link, or install kind yourself"),
        Message("tools/install-kind.sh", "make: ", "kind: could not download $url (see above): check your network",
                "kind could not be downloaded (offline?)",
                "install kind yourself (the release the Makefile pins) and run `make up` again"),
        Message("tools/install-kind.sh", "make: ", "kind: no pinned kind build for",
                "an OS or CPU kind publishes no pinned build for", "install kind yourself"),
        Message("Makefile", "make: ", "the toolchain is built with Go 1.26 or later, and there is no go",
                "`make test` builds the tests' toolchain with Go", "install Go 1.26 or later"),
        Message("tools/toolchain.sh", "toolchain: ", "the $name plugin $version could not be downloaded (above), and "
                "there is no plugin mirror: set", "a provider plugin the Go module proxy does not serve, and no mirror",
                "set `PULUMI_PLUGIN_MIRROR` to a folder of Pulumi's plugin archives and their `SHA256SUMS` (see "
                "[Testing](testing.md#the-toolchain-the-tests-run-on-make-toolchain))"),
        Message("tools/toolchain.sh", "toolchain: ", "$PULUMI_PLUGIN_MIRROR/$archive has SHA-256 $actual, but "
                "SHA256SUMS says $expected: not installed", "a plugin archive in the mirror does not match its "
                "checksum", "replace the archive in the mirror"),
        Message("tests/disk_use.py", "disk: ", "GiB free, and the tests take up to {NEEDED_GIB} GiB",
                "`make test` starts with less free disk than the tests take (the Docker engine's images, the real "
                "node's containerd, the modules' folders); they may stop with `No space left on device`",
                "free space where the checkout is, or remove what earlier runs kept: `.cache/docker-engine/` (with no "
                "engine running) and `/tmp/pytest-of-$USER/` (see [Testing](testing.md#disk))", starts=False),
    )),
    ("preview or up, before any resource", (
        Message("components/config.py", "", "the stack configuration has {len(problems)} problem(s)",
                "settings are refused; each is listed below it, with the key, the value and what is expected",
                "see [a setting refused](#a-setting-refused) and [settings that contradict each other]"
                "(#settings-that-contradict-each-other)"),
        Message("components/config.py", "", "is not a setting of this project",
                "a key this project does not have (misspelt?)",
                "the message names the nearest key; or `pulumi config rm <key>`", starts=False),
        Message("components/docker_daemon.py", "", "Docker does not answer at {first} ({hosts.origin}{also}): "
                "{reason}. Start Docker", "a stack with placement host needs a Docker daemon that answers, even to "
                "preview; the reason is: no such socket, connection refused, permission denied, no answer within "
                "3 s, or not HTTP", "start Docker, or set `DOCKER_HOST` (or `docker:host`); to preview without "
                "Docker, see [Commands](commands.md#preview-up-destroy)"),
    )),
    ("the source and Envoy", (
        Message(S + "prepare-workspace.sh", "prepare-workspace: ", "tag $SOURCE_TAG is not in $SOURCE_REPOSITORY; "
                "check istioVersion", "the release has no tag in istio/proxy (or in your fork)",
                "set `istioVersion` to a release, or `sourceRepository` to a clone that has the tag"),
        Message(S + "prepare-workspace.sh", "prepare-workspace: ", "cannot check out $SOURCE_TAG without losing "
                "local changes", "your own changes in `workDir/work` are in the way of another release",
                "commit or stash them, then `pulumi up` again"),
        Message(S + "prepare-workspace.sh", "prepare-workspace: ", "$SOURCE_DIR exists, is not empty and is not a "
                "git checkout", "`workDir/work` holds something else", "move it away, or point `workDir` elsewhere"),
        Message(S + "prepare-envoy-source.sh", "prepare-envoy-source: ", "cannot fetch Envoy commit $envoy_sha from "
                "$url: set envoyRepository", "the Envoy commit istio/proxy pins is not at that URL",
                "set `envoyRepository` to a mirror that has it"),
        Message(S + "prepare-envoy-source.sh", "prepare-envoy-source: ", "cannot check out $branch without losing "
                "local changes", "your changes in the Envoy checkout are in the way",
                "commit or stash them, then `pulumi up` again"),
        Message(S + "fetch-prebuilt-envoy.sh", "fetch-prebuilt-envoy: ", "no prebuilt debug Envoy for istio/proxy "
                "commit $SHA", "Istio's bucket has no debug build for this commit (HTTP 404, or no such file): a "
                "fork's, a local one, or a release no longer kept",
                "`envoySource: build`, or `prebuiltBaseUrl` to a mirror that has it"),
        Message(S + "fetch-prebuilt-envoy.sh", "fetch-prebuilt-envoy: ", "$name.tar.gz: its sha256 is $got, but "
                "$name.sha256 says $expected", "a checksum that does not match: the tar.gz is not the one published "
                "with its `.sha256` (corrupt or cut off)", "nothing was kept: `pulumi up` again"),
        Message(S + "fetch-prebuilt-envoy.sh", "fetch-prebuilt-envoy: ", "$name.dwp: its MD5 is $got, but the server "
                "states $md5", "the `.dwp` does not match the MD5 the bucket states",
                "nothing was kept: `pulumi up` again"),
        Message(S + "fetch-prebuilt-envoy.sh", "fetch-prebuilt-envoy: ", "$name.dwp: received $have bytes, but $url "
                "has $size", "the `.dwp` is not the size the server states", "nothing was kept: `pulumi up` again"),
        Message(S + "fetch-prebuilt-envoy.sh", "fetch-prebuilt-envoy: ", "$name.dwp: the transfer broke off after",
                "the `.dwp` download was cut off", "`pulumi up` again resumes it from its `.partial`"),
        Message(S + "fetch-prebuilt-envoy.sh", "fetch-prebuilt-envoy: ", "$name.tar.gz: the transfer failed (curl "
                "exit", "the tar.gz download failed (curl said why above it)", "`pulumi up` again"),
        Message(S + "fetch-prebuilt-envoy.sh", "fetch-prebuilt-envoy: ", "$name.dwp changed on the server during the "
                "download", "the `.dwp` was replaced on the server while it downloaded",
                "`pulumi up` again fetches it whole"),
        Message(S + "fetch-prebuilt-envoy.sh", "fetch-prebuilt-envoy: ", "$name.dwp holds no .debug_info.dwo section",
                "the `.dwp` is not a DWARF package", "check `prebuiltBaseUrl`; nothing was kept"),
        Message(S + "fetch-prebuilt-envoy.sh", "fetch-prebuilt-envoy: ", "$name.tar.gz: its envoy has no GNU build-id "
                "note", "the ELF could not be matched to the image's stripped copy",
                "check `prebuiltBaseUrl`; nothing was kept"),
        Message(S + "fetch-prebuilt-envoy.sh", "fetch-prebuilt-envoy: ", "$tool is missing where the download runs: "
                "install it", "a tool the download needs is missing in the debugger container or code-server pod",
                "install it there (the stack's debugger image has them)"),
        Message(S + "build-envoy.sh", "build-envoy: ", "${CC:-gcc} cannot link with bazelBuildArgs' --linkopt",
                "`build`: the builder's compiler cannot link with those options (no lld?), found before the build "
                "starts", "install the linker in the builder image, or change those `--linkopt`"),
        Message(S + "build-envoy.sh", "build-envoy: ", "make build failed (see the build output above)",
                "`build`: the bazel build failed", "read the build's output in the `pulumi up` log"),
        Message(S + "build-envoy.sh", "build-envoy: ", "no Envoy build in $WORKSPACE_DIR (no bazel-out link)",
                "`buildEnvoy: false` and no earlier build", "`buildEnvoy: true`, or build it in the builder first"),
        Message(S + "prepare-image-context.sh", "prepare-image-context: ", "the ELF changed since the build",
                "the ELF's build-id is not the one built", "`pulumi up` again", starts=False),
    )),
    ("the registry, the debug image and the nodes' containerd", (
        Message(S + "build-debug-image.sh", "build-debug-image: ", "the registry at ${IMAGE%%/*} did not take the push "
                "of $IMAGE within ${wait_seconds} s", "the registry does not answer: its container is not running",
                "`docker ps`, `docker logs <registry container>`; `REGISTRY_WAIT_SECONDS` in `pulumi up`'s "
                "environment waits longer than 60 s"),
        Message(S + "build-debug-image.sh", "build-debug-image: ", "the registry at ${IMAGE%%/*} does not answer yet; "
                "retrying the push", "not an error: the registry was started moments ago",
                "nothing: the push is retried for up to 60 s"),
        Message(S + "build-debug-image.sh", "build-debug-image: ", "docker push of $IMAGE failed:",
                "the registry answered and refused the push", "its last line says why"),
        Message(S + "build-debug-image.sh", "build-debug-image: ", "docker build of $IMAGE failed",
                "the debug image did not build (Docker's output above says why)",
                "often apt in the build stage: check the host's network or proxy"),
        Message(S + "build-debug-image-in-cluster.sh", "build-debug-image-in-cluster: ", "the BuildKit pod $POD in "
                "namespace $NAMESPACE failed", "`placement: cluster`: the rootless BuildKit pod failed",
                "its messages are above it; the nodes must allow unprivileged user namespaces (see "
                "[Host or cluster](placement.md#requirements-of-the-cluster-placement))"),
        Message(S + "containerd-mirror-create.sh", "containerd-mirror: ", "$CONTAINERD_CONFIG already mirrors "
                "$REGISTRY to $endpoints; remove that entry, or point registryHost elsewhere",
                "the node already pulls that registry from elsewhere",
                "remove that entry on the node, or change `registryHost`/`registryPort`"),
        Message(S + "containerd-mirror-create.sh", "containerd-mirror: ", "'s CRI plugin did not come up after the "
                "change.", "containerd did not load the edited configuration: the files were put back and "
                "containerd restarted", "the `journalctl -u containerd` lines in the message say why",
                starts=False),
        Message(S + "containerd-mirror-create.sh", "containerd-mirror: ", "containerd is not on PATH: is this a "
                "Kubernetes node that runs containerd?", "`nodes` names a machine without containerd",
                "name the cluster's nodes"),
        Message(S + "containerd-mirror-create.sh", "containerd-mirror: ", "containerd cannot read $CONTAINERD_CONFIG "
                "(above); fix it first", "the node's containerd configuration does not load even before the "
                "change", "fix it on the node"),
        Message(S + "containerd-mirror-common.sh", "containerd-mirror: ", "must run as root",
                "`sshUser` is not root and has no passwordless sudo", "`sshUser: root`, or `sudo -n` for that user"),
    )),
    ("the target pod", (
        Message(S + "pod-node.sh", "pod node: ", "$POD_NAMESPACE/$POD_NAME was scheduled on node $node, which is not "
                "one of nodes ($NODES):", "`nodeAccess: kubernetes`: the pod is on a node not among `nodes`, "
                "without the stack's containerd entry and agent", "add it (`pulumi config set --path 'nodes[N]' "
                "<node>`), or pin the pod to one of them with `targetNodeName`"),
        Message(S + "pod-node.sh", "pod node: ", "$POD_NAMESPACE/$POD_NAME is on no node after ${WAIT_SECONDS}s",
                "the pod was not scheduled within 120 s", "`kubectl -n <namespace> describe pod <pod>` says why"),
        Message(S + "gateway-pod.sh", "gateway pod: ", "no single Running pod",
                "`target: waypoint`/`gateway`: istiod ran no pod with the stack's overlay within 30 minutes",
                "does istiod accept the Gateway? `kubectl -n <namespace> describe gateway`; the pods seen follow"),
        Message(S + "istio-init-capture.sh", "istio-init: ", "istio-iptables left no ISTIO_REDIRECT chain",
                "startup mode on a mesh with `--native-nftables`: there is no iptables chain to narrow",
                "`mode: attach` there"),
    )),
    ("lldb-server on the node", (
        Message(S + "lldb-server-start.sh", "lldb-server: ", "no $PROCESS_NAME process of pod "
                "$POD_NAMESPACE/$POD_NAME on this node", "no Envoy of that pod (startup mode: no waiting proxy) "
                "on the node; the processes it found are listed", "is the pod running there? "
                "`kubectl get pod -o wide`"),
        Message(S + "lldb-server-start.sh", "lldb-server: ", "has no $LLDB_SERVER: does the pod run the debug image?",
                "the pod's proxy is not the stack's debug image", "check the pod's `sidecar.istio.io/proxyImage`: "
                "is its namespace injected?", starts=False),
        Message(S + "lldb-server-start.sh", "lldb-server: ", "several $PROCESS_NAME processes of pod "
                "$POD_NAMESPACE/$POD_NAME with lldb-server", "more than one candidate Envoy", "the pids are listed: "
                "report it"),
        Message(S + "lldb-server-start.sh", "lldb-server: ", "port $PLATFORM_PORT is already in use on this node "
                "(not by our lldb-server)", "another program (another stack?) holds `lldbServerPort` on the node",
                "another `lldbServerPort` (`make stack` chooses free ones)"),
        Message(S + "lldb-server-start.sh", "lldb-server: ", "lldb-server did not start listening on",
                "lldb-server started and does not listen; the last lines of its log follow", "read them"),
        Message(S + "lldb-server-start.sh", "lldb-server: ", "refusing to serve every peer",
                "the debugger's address would let any peer in", "`lldbServerListenAll: true` if you mean it"),
        Message(S + "lldb-server-start.sh", "lldb-server: ", "$LLDB_SERVER in $POD_NAME does not run:",
                "the pod's lldb-server does not start (a library missing?)", "the message has its error"),
    )),
    ("attach in place (attachTo)", (
        Message(S + "attached-pod.sh", ATTACH_TO, "no such pod",
                "`attachTo` names no pod", "set it to a running pod's `<namespace>/<pod>`"),
        Message(S + "attached-pod.sh", ATTACH_TO, "no container $CONTAINER (its containers:",
                "the pod has no container of that name (`istio-proxy` unless named)",
                "`attachTo <namespace>/<pod>/<container>`"),
        Message(S + "attached-pod.sh", ATTACH_TO, "its container $CONTAINER does not run",
                "the container is waiting or terminated", "`kubectl describe pod` says why"),
        Message(S + "attached-pod.sh", ATTACH_TO, "cannot read the pod:",
                "kubectl could not read it (no access, no cluster)", "check your kubeconfig's context and RBAC"),
        Message(S + "lldb-server-start.sh", "lldb-server: ", "attachTo $POD_NAMESPACE/$POD_NAME: its container "
                "(${CONTAINER_ID:0:12}) runs no $PROCESS_NAME on this", "the named container runs no `envoy` "
                "(what it runs is listed)", "name the container that runs Envoy: `<namespace>/<pod>/<container>`"),
        Message(S + "lldb-server-modules.sh", "lldb-server modules: ", "no $PROCESS_NAME in container "
                "${CONTAINER_ID:0:12} on this node", "the Envoy lldb-server was started for is gone (the container "
                "restarted meanwhile)", "read the pod again: [a pod restarted later](attach-in-place.md#a-pod-"
                "restarted-later)"),
        Message(S + "lldb-server-start.sh", "lldb-server: ", "no lldb-server bundle at",
                "the bundle is not on the node (removed by hand?)", "`pulumi up --replace` the bundle's install, or "
                "`pulumi destroy` then `up`"),
        Message(S + "collect-lldb-server-bundle.sh", "lldb-server bundle: ", "$tool is missing in the debugger: its "
                "image installs lldb, patchelf and tini",
                "the debugger container lacks lldb-server, ldd, patchelf or tini-static",
                "`pulumi up` again makes the debugger image anew"),
        Message("components/launch.py", "", "no symbols: no {artifact} for the running Envoy ({missing})",
                "not an error: Istio publishes no symbols for this Envoy (HTTP 404: not a release's build, or no "
                "longer kept); attached without them", "nothing; function names come from the binary's own symbol "
                "table, if it kept one"),
        Message("components/launch.py", "", "no symbols: {elf} is not the running Envoy's code",
                "not an error: the release's symbols are another build's (a custom build, a patched image); "
                "attached without them", "nothing; or attach to a pod that runs the release's own image"),
    )),
)


def messages_tables() -> str:
    parts = []
    for title, messages in MESSAGES:
        rows = [f"### {title[0].upper()}{title[1:]}", "", "| the message | what it means | what to do |",
                "|---|---|---|"]
        rows += [f"| {_cell(message.line)} | {message.means} | {message.fix} |" for message in messages]
        parts.append("\n".join(rows) + "\n")
    return "\n".join(parts)


# --- every other stop, read from the scripts -----------------------------------------------------------------------

# The scripts whose stops are listed, and the functions that print a message and stop.
SCRIPTS = (*sorted(f"{S}{p.name}" for p in (ROOT / S).glob("*.sh")), "tools/install-kind.sh", "tools/toolchain.sh")
_STOP = re.compile(r'\b(?:die|fail|refuse|discard|roll_back|not_published)\s+'
                   r'((?:"(?:[^"\\]|\\.)*"[ \t]*(?:\\\n\s*)?)+)')
_PART = re.compile(r'"((?:[^"\\]|\\.)*)"')
_TAG = re.compile(r'^(?:die|fail)\(\) \{\n\s+echo "([^"$]*|\$what): \$\*"', flags=re.MULTILINE)


def script_stops(path: str) -> list[str]:
    """What `path` stops with, as its die/fail/… lines write it (a message that is only a variable is none)."""
    text = (ROOT / path).read_text()
    found = []
    for match in _STOP.finditer(text):
        words = " ".join(part for part in _PART.findall(match.group(1)))
        words = words.replace('\\"', '"').replace("\\`", "`")
        if not re.sub(r"\$\{[^}]*\}|\$\w+|\$[@*]", "", words).strip():
            continue  # "$why", "$1", "${resume[@]}": another line's words, said where they are made
        found.append(words)
    return list(dict.fromkeys(found))


def script_tag(path: str) -> str:
    """What the script's die() puts before its words (a -create.sh or -delete.sh script: its -common.sh's)."""
    common = ROOT / re.sub(r"-(create|delete)\.sh$", "-common.sh", path)
    match = _TAG.search((ROOT / path).read_text()) or (_TAG.search(common.read_text()) if common.exists() else None)
    return "" if match is None else ("attachTo <pod_namespace>/<pod_name>" if match[1] == "$what" else match[1]) + ": "


def explained(path: str, words: str) -> bool:
    return any(m.source == path and (m.says in words or words in m.says) for _, ms in MESSAGES for m in ms)


def other_stops_table() -> str:
    rows = ["| script | stops with |", "|---|---|"]
    for path in SCRIPTS:
        for words in script_stops(path):
            if not explained(path, words):
                rows.append(f"| `{Path(path).name}` | {_cell(shown(script_tag(path) + words))} |")
    return "\n".join(rows) + "\n"
