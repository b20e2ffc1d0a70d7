"""S5 with placement: cluster — no Docker: a one-off rootless BuildKit pod builds and pushes the debug image.

The pod (the `--overrides` of `kubectl run`) against the Kubernetes schema and against the builder that stages
the context; build-debug-image-in-cluster.sh run for real by bash against a fake kubectl, which runs the pod's
command here with a fake BuildKit; and the program under mocks.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from components.debug_image import CONTEXT_SUBDIR
from components.registry import in_cluster_address
from components.scripts import script
from tests.conftest import CLUSTER_PLACEMENT, ROOT, evaluate, require_tool, resource
from tests.lldb_session import build_id, compile_debuggee
from tests.mock_stack import FAKE_IMAGE_DIGEST, project_file, stack_config
from tests.test_debug_image import stage_envoy
from tests.test_target import validate

SCRIPT = ROOT / "components" / "scripts" / "build-debug-image-in-cluster.sh"
DOCKERFILE = ROOT / "components" / "docker" / "debug-image.Dockerfile"


def heredoc(text: str, name: str) -> str:
    """The body of the script's quoted here-document `name`."""
    match = re.search(rf"<<'{name}'\n(.*?)\n{name}\n", text, flags=re.DOTALL)
    assert match, f"no heredoc {name}"
    return match.group(1) + "\n"
BUILT_DIGEST = "sha256:" + "c" * 64
CONFIG_DIGEST = "sha256:" + "f" * 64


def build_inputs(evaluation: dict) -> dict:
    return resource(evaluation, "debug-image-build")["inputs"]


def buildkit_pod(evaluation: dict) -> dict:
    return json.loads(build_inputs(evaluation)["environment"]["POD_OVERRIDES"])


def only_container(pod_spec: dict) -> dict:
    (container,) = pod_spec["containers"]
    return container


def claims(pod_spec: dict) -> dict[str, str]:
    return {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod_spec["volumes"]
            if "persistentVolumeClaim" in v}


# --- the pod ----------------------------------------------------------------------------------------------------


def test_pod_validates_against_the_kubernetes_openapi_schema(cluster):
    validate(buildkit_pod(cluster))


def test_pod_mounts_the_claim_at_the_folder_the_staging_step_writes(cluster):
    """Where the builder's staging step writes, through the builder pod's own mounts, is the folder the
    BuildKit pod mounts at the build's CONTEXT_DIR."""
    builder = resource(cluster, "builder-statefulset")["inputs"]["spec"]["template"]["spec"]
    staged = resource(cluster, "debug-image-context")["inputs"]["environment"]["CONTEXT_DIR"]
    (through,) = [m for m in only_container(builder)["volumeMounts"] if staged.startswith(m["mountPath"] + "/")]
    on_volume = through["subPath"] + staged[len(through["mountPath"]):]
    assert on_volume.endswith("/" + CONTEXT_SUBDIR)

    pod = buildkit_pod(cluster)
    assert claims(pod["spec"]) == claims(builder), "the builder's workspace claim"
    context_dir = build_inputs(cluster)["environment"]["CONTEXT_DIR"]
    (mount,) = [m for m in only_container(pod["spec"])["volumeMounts"] if m["mountPath"] == context_dir]
    assert mount["name"] == through["name"] and mount["subPath"] == on_volume
    assert mount["readOnly"] is True


def test_pod_runs_rootless_buildkit_unprivileged_and_outside_the_mesh(cluster):
    pod = buildkit_pod(cluster)
    spec = pod["spec"]
    container = only_container(spec)
    security = container["securityContext"]
    assert not security.get("privileged") and "capabilities" not in security
    assert not any(spec.get(key) for key in ("hostPID", "hostIPC", "hostNetwork"))
    assert "fsGroup" not in spec.get("securityContext", {}), "no recursive chown of the whole workspace volume"
    assert security["runAsUser"] == security["runAsGroup"] == 1000
    assert security["seccompProfile"] == security["appArmorProfile"] == {"type": "Unconfined"}
    assert {"name": "BUILDKITD_FLAGS", "value": "--oci-worker-no-process-sandbox"} in container["env"]
    assert re.fullmatch(r"docker\.io/moby/buildkit:v\d+\.\d+\.\d+-rootless@sha256:[0-9a-f]{64}", container["image"])
    assert pod["metadata"]["annotations"]["sidecar.istio.io/inject"] == "false"
    assert spec["restartPolicy"] == "Never"


def test_pod_is_merged_into_the_pod_kubectl_run_generates(cluster):
    """A strategic merge joins containers by name: kubectl names its container as the pod."""
    env = build_inputs(cluster)["environment"]
    pod = buildkit_pod(cluster)
    assert pod["metadata"]["name"] == only_container(pod["spec"])["name"] == env["POD"]
    assert pod["metadata"]["namespace"] == env["NAMESPACE"]
    assert only_container(pod["spec"])["image"] == env["BUILDKIT_IMAGE"]


@pytest.mark.parametrize("strip", ["true", "false"])
def test_the_staged_context_is_readable_by_buildkits_uid(cluster, tmp_path, strip):
    """The builder stages as root; under a container's default umask the context stays world-readable, so
    uid 1000 reads it without an fsGroup."""
    require_tool("objcopy")
    elf = compile_debuggee(tmp_path)
    context = tmp_path / "context"
    previous = os.umask(0o022)
    try:
        done = stage_envoy(cluster, elf, context, build_id(elf), strip=strip)
    finally:
        os.umask(previous)
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(context.stat().st_mode) & 0o005 == 0o005
    assert stat.S_IMODE((context / "envoy").stat().st_mode) & 0o004


# --- the script, run for real against a fake kubectl -------------------------------------------------------------


def test_script_passes_shellcheck():
    shellcheck = require_tool("shellcheck")
    done = subprocess.run([shellcheck, "--severity=style", str(SCRIPT)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout


def test_the_pods_own_script_passes_shellcheck_as_plain_sh():
    """The part that runs in the pod, under the BuildKit image's busybox sh."""
    shellcheck = require_tool("shellcheck")
    in_pod = heredoc(SCRIPT.read_text(), "IN_POD")
    done = subprocess.run([shellcheck, "--severity=style", "-s", "sh", "-"], input=in_pod, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stdout


FAKE_KUBECTL = """#!{python}
# Stands in for kubectl: records each call and its stdin. `run` checks the override as a strategic merge would
# apply it, then runs the pod's command here, with the container's env and the fake BuildKit first on PATH.
import json, os, subprocess, sys

args = sys.argv[1:]
stdin = sys.stdin.read() if args[0] == "run" else ""
with open(os.environ["FAKE_KUBECTL_LOG"], "a") as log:
    log.write(json.dumps({{"argv": args, "stdin": stdin}}) + "\\n")
if args[0] != "run":
    sys.exit(0)
if os.environ.get("FAKE_KUBECTL_FAIL"):
    sys.exit('Error from server (Forbidden): pods is forbidden: violates PodSecurity "baseline:latest"')
name = args[1]
pod = json.loads(args[args.index("--overrides") + 1])
(container,) = pod["spec"]["containers"]
if container["name"] != name:
    sys.exit(f"the override's container {{container['name']}} is not kubectl's {{name}}: a second container")
env = {{**os.environ, **{{e["name"]: e["value"] for e in container["env"]}}}}
env["PATH"] = os.environ["FAKE_POD_PATH"] + ":" + os.environ["PATH"]
done = subprocess.run(args[args.index("--") + 1:], input=stdin, text=True, env=env)
if os.environ.get("FAKE_KUBECTL_CHATTER"):
    print(f'pod "{{name}}" deleted')
sys.exit(done.returncode)
"""

FAKE_BUILDCTL = """#!{python}
# Stands in for buildctl-daemonless.sh: records its argv, BUILDKITD_FLAGS and the Dockerfile it is given,
# prints progress, and writes the metadata file as buildctl does.
import json, os, sys

args = sys.argv[1:]
local = dict(args[i + 1].split("=", 1) for i, a in enumerate(args) if a == "--local")
with open(os.path.join(local["dockerfile"], "Dockerfile")) as f:
    dockerfile = f.read()
with open(os.environ["FAKE_BUILDCTL_LOG"], "w") as log:
    json.dump({{"argv": args, "flags": os.environ.get("BUILDKITD_FLAGS"), "dockerfile": dockerfile}}, log)
print("#1 [internal] load build definition from Dockerfile", file=sys.stderr)
print("buildctl chatter on stdout")
if os.environ.get("FAKE_BUILDCTL_FAIL"):
    sys.exit("error: failed to push: http: server gave HTTP response to HTTPS client")
print("#12 pushing layers 2.1s done", file=sys.stderr)
metadata = {{"containerimage.config.digest": "{config}",
            "containerimage.descriptor": {{"digest": "{built}", "size": 1234}}}}
if not os.environ.get("FAKE_BUILDCTL_NO_DIGEST"):
    metadata["containerimage.digest"] = "{built}"
with open(args[args.index("--metadata-file") + 1], "w") as f:
    json.dump(metadata, f, **json.loads(os.environ.get("FAKE_METADATA_FORMAT", '{{"indent": 2}}')))
"""

FAKE_DOCKER = """#!/bin/sh
echo "docker $*" >> "$FAKE_DOCKER_LOG"
exit 1
"""


def executable(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o755)


def run_cluster_build(evaluation: dict, tmp_path: Path, envoy: bool = True,
                      **extra: str) -> subprocess.CompletedProcess:
    """build-debug-image-in-cluster.sh as rendered, with this test's context folder in place of the mount."""
    for folder in ("bin", "pod-bin", "context", "pod-tmp"):
        (tmp_path / folder).mkdir()
    executable(tmp_path / "bin" / "kubectl", FAKE_KUBECTL.format(python=sys.executable))
    executable(tmp_path / "bin" / "docker", FAKE_DOCKER)
    executable(tmp_path / "pod-bin" / "buildctl-daemonless.sh",
               FAKE_BUILDCTL.format(python=sys.executable, built=BUILT_DIGEST, config=CONFIG_DIGEST))
    if envoy:
        (tmp_path / "context" / "envoy").write_bytes(b"\x7fELF")
    build = build_inputs(evaluation)
    env = {**os.environ, **build["environment"], "CONTEXT_DIR": str(tmp_path / "context"),
           "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}", "FAKE_POD_PATH": str(tmp_path / "pod-bin"),
           "TMPDIR": str(tmp_path / "pod-tmp"), "FAKE_KUBECTL_LOG": str(tmp_path / "kubectl.log"),
           "FAKE_BUILDCTL_LOG": str(tmp_path / "buildctl.json"), "FAKE_DOCKER_LOG": str(tmp_path / "docker.log"),
           **extra}
    return subprocess.run([*build["interpreter"], build["create"]], input=build["stdin"], env=env,
                          capture_output=True, text=True, timeout=60)


def kubectl_calls(tmp_path: Path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "kubectl.log").read_text().splitlines()]


def option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


@pytest.mark.parametrize("metadata_format", [{"indent": 2}, {"separators": [",", ":"]}], ids=["indented", "compact"])
def test_script_builds_in_a_buildkit_pod_and_prints_the_pushed_digest(cluster, tmp_path, metadata_format):
    done = run_cluster_build(cluster, tmp_path, FAKE_METADATA_FORMAT=json.dumps(metadata_format))
    assert done.returncode == 0, done.stderr
    env = build_inputs(cluster)["environment"]
    repository = env["IMAGE"].rsplit(":", 1)[0]
    assert done.stdout == f"{repository}@{BUILT_DIGEST}\n", "only the reference by digest on stdout"
    assert "load build definition" in done.stderr, "BuildKit's progress on stderr"
    assert "buildctl chatter on stdout" in done.stderr, "whatever else BuildKit prints shows, on stderr"
    assert not (tmp_path / "docker.log").exists(), "no docker command"

    delete, run = kubectl_calls(tmp_path)
    assert delete["argv"][:3] == ["delete", "pod", env["POD"]] and "--ignore-not-found" in delete["argv"]
    argv = run["argv"]
    assert argv[:2] == ["run", env["POD"]] and option(argv, "--namespace") == env["NAMESPACE"]
    assert {"--rm", "-i", "--restart=Never", "--override-type=strategic", "--command"} <= set(argv)
    assert option(argv, "--image") == env["BUILDKIT_IMAGE"]
    assert json.loads(option(argv, "--overrides")) == buildkit_pod(cluster)
    assert run["stdin"] == DOCKERFILE.read_text(), "the Dockerfile reaches the pod unchanged"

    buildctl = json.loads((tmp_path / "buildctl.json").read_text())
    assert buildctl["dockerfile"] == DOCKERFILE.read_text()
    assert buildctl["flags"] == "--oci-worker-no-process-sandbox"
    args = buildctl["argv"]
    assert args[:3] == ["build", "--frontend", "dockerfile.v0"]
    pairs = list(zip(args[1::2], args[2::2], strict=True))
    assert ("--local", f"context={tmp_path / 'context'}") in pairs
    assert ("--opt", "build-arg:BASE_IMAGE=docker.io/istio/proxyv2:1.17.2") in pairs
    assert ("--opt", "platform=linux/amd64") in pairs
    assert ("--output", f"type=image,name={env['IMAGE']},push=true,registry.insecure=true") in pairs


def test_script_ignores_what_else_kubectl_prints(cluster, tmp_path):
    done = run_cluster_build(cluster, tmp_path, FAKE_KUBECTL_CHATTER="1")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"{build_inputs(cluster)['environment']['IMAGE'].rsplit(':', 1)[0]}"
                                        f"@{BUILT_DIGEST}"]


def test_script_fails_clearly_when_kubectl_fails(cluster, tmp_path):
    done = run_cluster_build(cluster, tmp_path, FAKE_KUBECTL_FAIL="1")
    assert done.returncode == 1 and done.stdout == ""
    env = build_inputs(cluster)["environment"]
    assert "is forbidden" in done.stderr
    assert (f"build-debug-image-in-cluster: the BuildKit pod {env['POD']} in namespace {env['NAMESPACE']} "
            "failed (exit 1)") in done.stderr


def test_script_fails_clearly_when_the_build_fails(cluster, tmp_path):
    done = run_cluster_build(cluster, tmp_path, FAKE_BUILDCTL_FAIL="1")
    assert done.returncode == 1 and done.stdout == ""
    image = build_inputs(cluster)["environment"]["IMAGE"]
    assert f"build-debug-image-in-cluster: BuildKit's build or push of {image} failed" in done.stderr
    assert "build-debug-image-in-cluster: the BuildKit pod" in done.stderr


def test_script_fails_clearly_without_a_digest_in_the_metadata(cluster, tmp_path):
    done = run_cluster_build(cluster, tmp_path, FAKE_BUILDCTL_NO_DIGEST="1")
    assert done.returncode == 1 and done.stdout == ""
    assert "build-debug-image-in-cluster: no containerimage.digest in BuildKit's metadata" in done.stderr
    assert CONFIG_DIGEST not in done.stdout, "the config's digest is not the image's"


def test_script_fails_clearly_without_envoy_in_the_context(cluster, tmp_path):
    done = run_cluster_build(cluster, tmp_path, envoy=False)
    assert done.returncode == 1 and done.stdout == ""
    assert f"build-debug-image-in-cluster: no envoy in the build context {tmp_path / 'context'}" in done.stderr
    assert not (tmp_path / "buildctl.json").exists(), "nothing built"


# --- under mocks -------------------------------------------------------------------------------------------------


def test_cluster_build_runs_kubectl_and_no_docker(cluster):
    build = build_inputs(cluster)
    assert build["create"] == SCRIPT.read_text()
    commands = [line for line in build["create"].splitlines() if not line.lstrip().startswith("#")]
    assert not [line for line in commands if re.search(r"\bdocker\b", line)]
    assert any(re.match(r"out=\$\(kubectl run ", line) for line in commands)
    assert build["stdin"] == DOCKERFILE.read_text()
    assert len(build["triggers"]) == 1 and "buildId=" in build["triggers"][0], "rebuilt when Envoy changes"
    children = [r for r in cluster["resources"] if r["options"].get("parent") == "debug-image"]
    assert {(r["type"], r["name"]) for r in children} == {
        ("command:local:Command", "debug-image-context"), ("command:local:Command", "debug-image-build"),
    }, "no Docker resource"


def test_nodes_pull_what_the_pod_pushed_through_the_registry_service(cluster):
    env = build_inputs(cluster)["environment"]
    service = in_cluster_address(env["NAMESPACE"])
    assert env["IMAGE"] == f"{service}/proxyv2:1.17.2-debug"
    registry_host = stack_config("dev")[0][f"{project_file()['name']}:registryHost"]
    assert cluster["outputs"]["debugImagePushed"] == f"{service}/proxyv2@{FAKE_IMAGE_DIGEST}"
    assert cluster["outputs"]["debugImage"] == f"{registry_host}:30500/proxyv2@{FAKE_IMAGE_DIGEST}"


def test_a_preview_renders_the_same_build(cluster):
    preview = build_inputs(evaluate("dev", *CLUSTER_PLACEMENT, preview=True))
    assert preview["environment"] == build_inputs(cluster)["environment"], "known without a cluster"


def test_host_placement_still_builds_with_docker_on_the_host():
    build = build_inputs(evaluate("dev"))
    assert build["create"] == script("build-debug-image.sh")
    assert set(build["environment"]) == {"CONTEXT_DIR", "BASE_IMAGE", "IMAGE", "PLATFORM"}
