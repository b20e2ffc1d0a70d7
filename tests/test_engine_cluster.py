"""`placement: cluster` on the real engine (docs/placement.md, "Host or cluster"), and the stack's two secrets.

A stack made as a user makes it (`make stack NAME=… PLACEMENT=cluster`'s tools/new_stack.py, `pulumi stack init`,
`pulumi config set`, `sshPrivateKey` and `codeServerPassword` with `--secret`), with `envoySource: build` so that
both the builder's and code-server's StatefulSets exist (and `builderImage`, so that the builder's needs no
checkout), in a copy of the project, brought up by the built CLI and plugins against the tests' control plane.
Its workspace claim asks for a stand-in ReadWriteMany StorageClass: no provisioner, one volume made beforehand
(tests/control_plane.py), which the real controller-manager binds.

KWOK plays the kubelet: pods are scheduled, Running and Ready, but no container runs, so nothing can `kubectl exec`
into them, and there is no node to reach over SSH. Everything else the stack does needs one or the other: the
checkout runs in code-server's pod (workspace-prepare), the build and the debug image in the builder's (envoy-make,
debug-image-*), the containerd entry and lldb-server over SSH on the nodes; the target's namespace and StatefulSet
wait for the containerd entry and the debug image, and code-server's workspace ConfigMap carries launch.json, known
only at the end. So `pulumi up --target` brings up exactly the resources whose dependencies in the engine's own
graph (`pulumi preview --json`) hold no command: the namespace and the workspace claim, the builder's and
code-server's StatefulSets, code-server's password Secret and Service, the registry's Deployment and Service.
kubectl, not the program, then says what the API server holds: each workload as the stack asked for it and Ready,
the claim Bound to the stand-in volume, each Service in front of its pod. `pulumi destroy` removes the workloads
and keeps the namespace and the claim (retain_on_delete: they hold the source, the bazel cache and the images).

Neither secret (nor its base64, nor any line of the key's body) is in plain text in the stack file, the file
backend's state, `pulumi stack export`, `pulumi stack output --json`, or anything any CLI command printed; the same
scan finds a password set with `--plaintext` (which the CLI refuses without), and finds the stack's namespace (a
plain value) in the state and in what `up` printed."""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, require_tool
from tests.control_plane import ControlPlane, stand_in_storage_class
from tests.toolchain import Pulumi, pulumi_env, script_value, toolchain_bin, toolchain_dir, user_project

STACK = "quinn"
PROJECT = "istio-proxy-debug"
STORAGE_CLASS = "stand-in-rwx"
# The file backend's state of the stack, below its folder.
STATE_FILE = f".pulumi/stacks/{PROJECT}/{STACK}.json"
BUILDER_IMAGE = "gcr.io/istio-testing/build-tools-proxy:release-1.17-latest-amd64"
# A password `pulumi config set` refuses without --plaintext, on every run. The CLI (pkg/cmd/pulumi/config/config.go,
# looksLikeSecret) scores the first 16 characters of a value whose key names a password with zxcvbn, and refuses at
# 80 bits (or 40 bits at 3 bits a character). A random hex token lands on either side of that line by chance (1 run
# in 10 to 15); these 16 characters (all four character classes, no word, sequence, repeat or keyboard run) score
# far above it, and what follows them is never scored.
PASSWORD_REFUSED = "Vq7#Lz!9pR$2mK&x-plaintext-scan"
# What pulumi-command runs: exec into a pod, or SSH to a node.
COMMAND_TYPES = ("command:local:Command", "command:remote:Command")
# The resources that need neither, by type and the program's name; everything else waits for a command.
NO_COMMAND = {
    ("kubernetes:core/v1:Namespace", "workspace-volume-namespace"),
    ("kubernetes:core/v1:PersistentVolumeClaim", "workspace-volume-claim"),
    ("kubernetes:apps/v1:StatefulSet", "builder-statefulset"),
    ("kubernetes:apps/v1:StatefulSet", "debugger-statefulset"),
    ("kubernetes:core/v1:Secret", "debugger-password"),
    ("kubernetes:core/v1:Service", "debugger-service"),
    ("kubernetes:core/v1:Service", "registry-service"),
    ("kubernetes:apps/v1:Deployment", "registry-deployment"),
}
WORKLOADS = (("statefulset", "istio-proxy-builder"), ("statefulset", "code-server"),
             ("deployment", "image-registry"), ("service", "code-server"), ("service", "image-registry"),
             ("secret", "code-server-password"))


@dataclass
class Run:
    command: str
    seconds: float
    returncode: int
    output: str


@dataclass
class RecordingPulumi:
    """The CLI in the user's project, each command's duration and output kept for the report and the scan."""

    pulumi: Pulumi
    runs: list[Run] = field(default_factory=list)

    def __call__(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        start = time.monotonic()
        done = self.pulumi(*args, **{"check": False, **kwargs})
        targets = [a for a in args if a.startswith("--target=")]
        command = " ".join([a for a in args if a not in targets] + ([f"--target ×{len(targets)}"] if targets else []))
        self.runs.append(Run(command, time.monotonic() - start, done.returncode, done.stdout + done.stderr))
        if kwargs.get("check", True) and done.returncode != 0:
            raise AssertionError(f"pulumi {' '.join(args)} exited {done.returncode}:\n{done.stdout[-4000:]}\n"
                                 f"{done.stderr[-4000:]}")
        return done


def make_stack(pulumi: RecordingPulumi, name: str, *sets: str, secret_sets: dict[str, str]) -> dict:
    """`make stack NAME=name PLACEMENT=cluster`, `pulumi stack init`, then the user's `pulumi config set`s (the
    secret ones on stdin, as the docs' `< ~/.ssh/id_ed25519`); the stack file's config as written."""
    pulumi.pulumi.make_stack(name, "--placement", "cluster")
    for assignment in sets:
        key, value = assignment.split("=", 1)
        pulumi("config", "set", *(["--path"] if "[" in key else []), key, value)
    for key, value in secret_sets.items():
        pulumi("config", "set", "--secret", key, input=value)
    return yaml.safe_load((pulumi.pulumi.project / f"Pulumi.{name}.yaml").read_text())["config"]


def no_command_targets(preview: dict) -> tuple[dict[str, str], list[str]]:
    """From the engine's graph (each step's state: dependencies, property dependencies, parent): the custom
    resources none of whose dependencies, followed all the way, is a command, by URN and name; and the URNs
    `--target` needs to create them, their parent components included (the root stack and the providers are
    always targeted)."""
    states = {step["urn"]: step["newState"] for step in preview["steps"] if step.get("newState")}

    def direct(urn: str) -> set[str]:
        state = states[urn]
        found = set(state.get("dependencies", []))
        for urns in state.get("propertyDependencies", {}).values():
            found |= set(urns)
        if state.get("parent"):
            found.add(state["parent"])
        return {u for u in found if u in states}

    def closure(urn: str) -> set[str]:
        seen, todo = set(), [urn]
        while todo:
            for dep in direct(todo.pop()) - seen:
                seen.add(dep)
                todo.append(dep)
        return seen

    chosen = {urn: urn.rsplit("::", 1)[1] for urn, state in states.items()
              if state["custom"] and not state["type"].startswith("pulumi:providers:")
              and state["type"] not in COMMAND_TYPES
              and not any(states[d]["type"] in COMMAND_TYPES for d in closure(urn))}
    needed = set(chosen).union(*(closure(urn) for urn in chosen))
    return chosen, sorted(u for u in needed if states[u]["type"] != "pulumi:pulumi:Stack")


def live(plane: ControlPlane, namespace: str, kind: str, name: str) -> dict | None:
    done = plane.kubectl("get", kind, name, "--namespace", namespace, "-o", "json", check=False)
    if done.returncode != 0:
        assert "NotFound" in done.stderr, done.stderr
        return None
    return json.loads(done.stdout)


def contained(wanted, actual, path: str = "") -> list[str]:
    """Where `actual` (as the API server keeps it, defaults added) differs from `wanted` (what the stack sent)."""
    if isinstance(wanted, dict):
        if not isinstance(actual, dict):
            return [f"{path}: {actual!r} is not an object"]
        return [d for k, v in wanted.items() for d in contained(v, actual.get(k), f"{path}.{k}")]
    if isinstance(wanted, list):
        if not isinstance(actual, list) or len(actual) != len(wanted):
            return [f"{path}: {actual!r} is not {len(wanted)} items"]
        return [d for i, (w, a) in enumerate(zip(wanted, actual, strict=True)) for d in contained(w, a, f"{path}[{i}]")]
    return [] if wanted == actual else [f"{path}: {actual!r} != {wanted!r}"]


@dataclass
class Lifecycle:
    """What one cluster stack went through: its config, the engine's preview, what the API server held after
    `up` and after `destroy`, and every CLI command's duration and output."""

    namespace: str
    config: dict
    preview: dict
    targets: dict[str, str]
    after_up: dict[tuple[str, str], dict | None]
    endpoints: dict[str, list[str]]
    claim_after_up: dict
    volume: dict
    after_destroy: dict[tuple[str, str], dict | None]
    export_after_up: dict
    namespace_after_destroy: dict | None
    claim_after_destroy: dict | None
    sent: dict[str, dict]
    secrets: dict[str, str]
    plain_files: dict[str, str]
    runs: list[Run]


def key_pair(folder: Path) -> str:
    """A real ed25519 private key, as `ssh-keygen` writes it."""
    require_tool("ssh-keygen")
    key = folder / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(key)], check=True,
                   capture_output=True, timeout=60)
    return key.read_text()


def backend_files(state: Path, when: str) -> dict[str, str]:
    """Every file of the file backend (the stack's state, its backups and history), as text, by path."""
    return {f"{p.relative_to(state)} ({when})": p.read_text(errors="replace") for p in sorted(state.rglob("*"))
            if p.is_file()}


def endpoint_pods(plane: ControlPlane, namespace: str, service: str) -> list[str]:
    """The pods the Service's EndpointSlices list as ready (the endpoint controller's view of its selector)."""
    slices = json.loads(plane.kubectl("get", "endpointslices", "--namespace", namespace, "-l",
                                      f"kubernetes.io/service-name={service}", "-o", "json").stdout)["items"]
    return sorted(e["targetRef"]["name"] for s in slices for e in s.get("endpoints") or []
                  if e.get("conditions", {}).get("ready") and e.get("targetRef"))


def wait_for(what: str, probe, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while not (value := probe()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout:.0f} s")
        time.sleep(0.5)
    return value


@pytest.fixture(scope="module")
def lifecycle(api_server, module_tmp) -> Lifecycle:
    folder = module_tmp("cluster-stack")
    bin_dir = toolchain_bin()
    project = user_project(folder / "clone")
    state = folder / "state"
    pulumi = RecordingPulumi(Pulumi(bin_dir, project, pulumi_env(bin_dir, state,
                                                                KUBECONFIG=str(api_server.kubeconfig))))
    project_config = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["config"]
    volume_name = stand_in_storage_class(api_server, STORAGE_CLASS,
                                         project_config["workspaceVolumeSize"]["default"])
    password = secrets.token_hex(12)
    key = key_pair(folder)
    config = make_stack(
        pulumi, STACK,
        "envoySource=build", f"builderImage={BUILDER_IMAGE}", f"workspaceStorageClass={STORAGE_CLASS}",
        # Loopback for the node and the registry's pull address: nothing of the stack may reach the lab's.
        "registryHost=127.0.0.1", "nodes[0]=127.0.0.1", "targetNodeAddress=127.0.0.1",
        secret_sets={"codeServerPassword": password, "sshPrivateKey": key},
    )
    namespace = f"{PROJECT}-{STACK}"
    pulumi("config")
    preview = json.loads(pulumi("preview", "--json").stdout)
    pulumi("preview", "--diff")
    chosen, urns = no_command_targets(preview)
    pulumi("up", "--yes", "--skip-preview", *(f"--target={urn}" for urn in urns))
    sent = {step["urn"].rsplit("::", 1)[1]: step["newState"]["inputs"] for step in preview["steps"]
            if step["urn"] in chosen}

    after_up = {(kind, name): live(api_server, namespace, kind, name) for kind, name in WORKLOADS}
    # The endpoint controller catches up with a Ready pod on its own time.
    endpoints = {service: wait_for(f"service {service} has a ready endpoint",
                                   lambda s=service: endpoint_pods(api_server, namespace, s))
                 for service in ("code-server", "image-registry")}
    claim_after_up = live(api_server, namespace, "persistentvolumeclaim", "workspace")
    volume = json.loads(api_server.kubectl("get", "persistentvolume", volume_name, "-o", "json").stdout)
    export_after_up = json.loads(pulumi("stack", "export").stdout)
    pulumi("stack", "output", "--json")
    state_after_up = backend_files(state, "after up")

    pulumi("destroy", "--yes", "--skip-preview")
    after_destroy = {(kind, name): live(api_server, namespace, kind, name) for kind, name in WORKLOADS}
    namespace_after = json.loads(api_server.kubectl("get", "namespace", namespace, "-o", "json").stdout)
    claim_after = live(api_server, namespace, "persistentvolumeclaim", "workspace")
    pulumi("stack", "export")
    pulumi("stack", "output", "--json")

    plain_files = {**state_after_up, **backend_files(state, "after destroy"),
                   f"Pulumi.{STACK}.yaml": (project / f"Pulumi.{STACK}.yaml").read_text()}
    lifecycle = Lifecycle(
        namespace=namespace, config=config, preview=preview, targets=chosen, after_up=after_up, endpoints=endpoints,
        claim_after_up=claim_after_up, volume=volume, after_destroy=after_destroy, export_after_up=export_after_up,
        namespace_after_destroy=namespace_after, claim_after_destroy=claim_after, sent=sent,
        secrets={"codeServerPassword": password, "sshPrivateKey": key}, plain_files=plain_files, runs=pulumi.runs,
    )
    yield lifecycle
    print(f"\n{'seconds':>8}  pulumi command ({STACK}, placement cluster)")
    for run in pulumi.runs:
        print(f"{run.seconds:8.2f}  {run.command}")
    # As docs/placement.md says to reclaim the volume on purpose; then the stand-ins go.
    api_server.kubectl("delete", "namespace", namespace, "--wait=false")
    api_server.kubectl("delete", "persistentvolume", volume_name, "--wait=false")
    api_server.kubectl("delete", "storageclass", STORAGE_CLASS)


def test_up_targets_exactly_the_resources_no_command_waits_for(lifecycle):
    targeted = {(urn.split("::")[2].rsplit("$", 1)[-1], name) for urn, name in lifecycle.targets.items()}
    assert targeted == NO_COMMAND
    commands = [step["urn"] for step in lifecycle.preview["steps"]
                if step["op"] == "create" and step["newState"]["type"] in COMMAND_TYPES]
    assert len(commands) >= 5, "the preview has the stack's commands (checkout, build, image, node scripts)"
    # The engine created what was targeted and nothing else (the providers are its own).
    state = lifecycle.export_after_up["deployment"]["resources"]
    created = {r["urn"] for r in state if r["custom"] and not r["type"].startswith("pulumi:providers:")}
    assert created == set(lifecycle.targets)


def test_the_builder_and_code_server_statefulsets_are_the_stacks_and_ready(lifecycle):
    for name, sent in (("istio-proxy-builder", lifecycle.sent["builder-statefulset"]),
                       ("code-server", lifecycle.sent["debugger-statefulset"])):
        statefulset = lifecycle.after_up[("statefulset", name)]
        assert statefulset is not None, f"statefulset {name} not on the API server"
        assert contained(sent["spec"], statefulset["spec"]) == [], name
        assert statefulset["status"].get("readyReplicas") == 1, statefulset["status"]
        pod = statefulset["spec"]["template"]["spec"]
        assert pod["volumes"][0] == {"name": "workspace", "persistentVolumeClaim": {"claimName": "workspace"}}
        mounts = {m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
        assert {"/work", "/home/.cache"} <= mounts, mounts
    builder = lifecycle.after_up[("statefulset", "istio-proxy-builder")]["spec"]["template"]["spec"]["containers"][0]
    assert builder["image"] == BUILDER_IMAGE and builder["securityContext"]["privileged"] is True
    code_server = lifecycle.after_up[("statefulset", "code-server")]["spec"]["template"]["spec"]["containers"][0]
    assert code_server["image"].startswith("docker.io/codercom/code-server:")
    password = next(e for e in code_server["env"] if e["name"] == "PASSWORD")
    assert password["valueFrom"]["secretKeyRef"]["name"] == "code-server-password"
    secret = lifecycle.after_up[("secret", "code-server-password")]
    assert base64.b64decode(secret["data"]["password"]).decode() == lifecycle.secrets["codeServerPassword"]


def test_the_workspace_claim_is_bound_to_the_stand_in_volume(lifecycle):
    claim = lifecycle.claim_after_up
    assert claim["spec"]["storageClassName"] == STORAGE_CLASS and claim["spec"]["accessModes"] == ["ReadWriteMany"]
    assert claim["status"]["phase"] == "Bound" and claim["spec"]["volumeName"] == lifecycle.volume["metadata"]["name"]
    assert lifecycle.volume["status"]["phase"] == "Bound"
    assert lifecycle.volume["spec"]["claimRef"]["namespace"] == lifecycle.namespace


def test_the_registry_and_services_front_their_pods(lifecycle):
    deployment = lifecycle.after_up[("deployment", "image-registry")]
    assert deployment is not None and deployment["status"].get("readyReplicas") == 1, deployment
    assert contained(lifecycle.sent["registry-deployment"]["spec"], deployment["spec"]) == []
    service = lifecycle.after_up[("service", "image-registry")]
    port = service["spec"]["ports"][0]
    assert service["spec"]["type"] == "NodePort"
    assert port["nodePort"] == int(lifecycle.config[f"{PROJECT}:registryPort"]) and port["port"] == 5000
    assert lifecycle.endpoints["code-server"] == ["code-server-0"]
    assert len(lifecycle.endpoints["image-registry"]) == 1
    assert lifecycle.endpoints["image-registry"][0].startswith("image-registry-")


def test_destroy_removes_the_workloads_and_keeps_the_namespace_and_the_claim(lifecycle):
    assert {k: v for k, v in lifecycle.after_destroy.items() if v is not None} == {}
    assert lifecycle.namespace_after_destroy["status"]["phase"] == "Active"
    claim = lifecycle.claim_after_destroy
    assert claim is not None and claim["status"]["phase"] == "Bound"
    assert claim["metadata"]["uid"] == lifecycle.claim_after_up["metadata"]["uid"], "the same claim, not a new one"


def secret_needles(secrets_by_key: dict[str, str]) -> dict[str, str]:
    """Each secret, its base64, and each line of a key's body (between its BEGIN and END lines)."""
    needles = {}
    for key, value in secrets_by_key.items():
        needles[key] = value.strip()
        needles[f"base64 of {key}"] = base64.b64encode(value.encode()).decode()
        needles[f"base64 of {key} (stripped)"] = base64.b64encode(value.strip().encode()).decode()
        body = [line for line in value.splitlines() if line and "-----" not in line]
        needles.update({f"{key} body line {i}": line for i, line in enumerate(body, 1)})
    return needles


def plain_occurrences(needles: dict[str, str], haystacks: dict[str, str]) -> list[str]:
    return [f"{what} in {where}" for where, text in haystacks.items() for what, needle in needles.items()
            if needle in text]


def test_the_secrets_are_nowhere_in_plain_text(lifecycle):
    haystacks = {**lifecycle.plain_files,
                 **{f"`pulumi {run.command}` ({i})": run.output for i, run in enumerate(lifecycle.runs)}}
    needles = secret_needles(lifecycle.secrets)
    assert len([n for n in needles if "body line" in n]) >= 3
    assert plain_occurrences(needles, haystacks) == []
    for key in lifecycle.secrets:
        assert set(lifecycle.config[f"{PROJECT}:{key}"]) == {"secure"}, key
    # The scan reads them as the text they are: the stack's namespace, a plain value, is in the state after up
    # and in what up and `stack export` printed.
    assert lifecycle.namespace in lifecycle.plain_files[f"{STATE_FILE} (after up)"]
    assert lifecycle.namespace not in lifecycle.plain_files[f"{STATE_FILE} (after destroy)"]
    for command in ("up", "stack export"):
        assert any(lifecycle.namespace in run.output for run in lifecycle.runs if run.command.startswith(command))
    commands = {run.command.split(" --")[0] for run in lifecycle.runs}
    assert {"preview", "up", "destroy", "stack export", "stack output"} <= commands, commands


def cli_secret_rule() -> str:
    """The source of the CLI's plain-value check, `looksLikeSecret`, from the module cache the toolchain was built
    from (the Makefile's PULUMI_VERSION): PASSWORD_REFUSED's reasoning holds only while it reads as it does."""
    source = (toolchain_dir() / "go" / "mod" / "github.com" / "pulumi" / "pulumi" /
              f"pkg/v3@v{script_value('PULUMI_VERSION')}" / "cmd" / "pulumi" / "config" / "config.go")
    assert source.is_file(), f"{source}: run make toolchain"
    return source.read_text()


def test_the_cli_rule_scores_a_password_by_its_first_16_characters():
    source = cli_secret_rule()
    for line in ('regexp.MustCompile("(?i)passwd|pass|password|pwd|secret|token")',
                 "maxEntropyCheckLength = 16", "entropyThreshold = 80.0", "entropyPerCharThreshold = 3.0",
                 "v = v[:maxEntropyCheckLength]", "info := zxcvbn.PasswordStrength(v, nil)",
                 "if !c.Plaintext && looksLikeSecret(key, value) {"):
        assert line in source, f"the CLI's looksLikeSecret no longer has {line!r}: PASSWORD_REFUSED needs a new look"


def test_the_cli_refuses_a_plain_password_by_its_first_16_characters(tmp_path):
    """The CLI's verdict on PASSWORD_REFUSED, and on what only differs after its 16th character or only before it,
    is the same on every run: the value decides it, not chance."""
    bin_dir = toolchain_bin()
    project = user_project(tmp_path / "clone")
    pulumi = RecordingPulumi(Pulumi(bin_dir, project, pulumi_env(bin_dir, tmp_path / "state")))
    make_stack(pulumi, "plain", secret_sets={})
    weak = "70badfb5825811e9e8fe61c5"  # CI's random token the CLI let through (issue 32)
    for value, refused in ((PASSWORD_REFUSED, True), (PASSWORD_REFUSED[:16] + weak, True),
                           (weak, False), (weak[:16] + PASSWORD_REFUSED, False)):
        result = pulumi("config", "set", "codeServerPassword", value, check=False)
        said = result.stderr.strip()
        assert (result.returncode != 0 and "looks like a secret" in said) == refused, (value, result.returncode, said)


def test_the_scan_finds_a_password_set_with_plaintext(tmp_path):
    bin_dir = toolchain_bin()
    project = user_project(tmp_path / "clone")
    pulumi = RecordingPulumi(Pulumi(bin_dir, project, pulumi_env(bin_dir, tmp_path / "state")))
    make_stack(pulumi, "plain", secret_sets={})
    refused = pulumi("config", "set", "codeServerPassword", PASSWORD_REFUSED, check=False)
    assert refused.returncode != 0 and "looks like a secret" in refused.stderr, refused.stderr
    pulumi("config", "set", "--plaintext", "codeServerPassword", PASSWORD_REFUSED)
    pulumi("config")
    haystacks = {"Pulumi.plain.yaml": (project / "Pulumi.plain.yaml").read_text(),
                 **{f"`pulumi {run.command}`": run.output for run in pulumi.runs}}
    found = plain_occurrences(secret_needles({"codeServerPassword": PASSWORD_REFUSED}), haystacks)
    assert "codeServerPassword in Pulumi.plain.yaml" in found, found
    assert "codeServerPassword in `pulumi config`" in found, found
