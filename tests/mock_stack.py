"""Evaluates the real `__main__.py` under Pulumi mocks, configured the way the Pulumi CLI would do it.

The mocks do not read Pulumi.yaml or the stack file, so `stack_config` applies them itself: project
defaults first, then the stack file's values, as strings (the CLI hands integers as "5000", booleans as
"true", arrays as JSON). `evaluate` runs the program once and returns every registered resource with its
inputs, and the stack outputs, as plain JSON-able data.

One evaluation per process (the root Stack of the mocks is process-global), so tests run it in a
subprocess: `python -m tests.mock_stack STACK [--preview] [--set key=value ...]` prints the JSON, or the
program's configuration error on stderr with exit code 2.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import runpy
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]

# What the walkthrough's lab produced, returned by the mocks as the commands' output (see build-envoy.sh).
WALKTHROUGH_COMMIT = "a0c7b0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7"
WALKTHROUGH_EXECROOT = "/home/.cache/bazel/_bazel_root/1e0bb3bee2d09d2e4ad3523530d3b40c/execroot/io_istio_proxy"
WALKTHROUGH_BUILD_ID = "5f0a7d5c3f2b1e0d9c8b7a6f5e4d3c2b1a09f8e7"
WALKTHROUGH_SANDBOX_ROOT = (
    "/home/.cache/bazel/_bazel_root/1e0bb3bee2d09d2e4ad3523530d3b40c/sandbox/linux-sandbox/263/execroot/io_istio_proxy"
)
WALKTHROUGH_ENVOY_PID = 15  # "pid": "15" in the walkthrough's launch.json
# What a prebuilt Envoy's download reports (fetch-prebuilt-envoy.sh, prepare-envoy-source.sh): Istio 1.17.2's
# Envoy commit (istio/proxy's WORKSPACE), and a sandbox root of Istio's CI recorded in the debug info.
PREBUILT_BUILD_ID = "9c0ffee0c0ffee0c0ffee0c0ffee0c0ffee0c0ff"
PREBUILT_ENVOY_COMMIT = "d45eacec11967b7c3fce724709239f2bf9ca0cc4"
PREBUILT_SANDBOX_ROOT = (
    "/home/prow/.cache/bazel/_bazel_prow/0f1e2d3c/sandbox/processwrapper-sandbox/7/execroot/io_istio_proxy"
)
# The builder image Istio 1.17.2's istio/proxy pins (common/scripts/setup_env.sh; ../shared/istio-releases).
WALKTHROUGH_BUILDER_IMAGE = (
    "gcr.io/istio-testing/build-tools-proxy:release-1.17-80e042c2d3016b759c6c5ebe4e77564a7f43bf2c")
FAKE_IMAGE_DIGEST = "sha256:" + "d" * 64
FAKE_STRIPPED_BYTES = 187_000_000
# A kind node's address on the `kind` network (docker inspect).
KIND_NODE_ADDRESS = "172.19.0.2"
# The debugger container's address on its network (the Docker provider's networkData).
DEBUGGER_ADDRESS = "172.19.128.2"
# What `kind get kubeconfig` prints, shortened: the admin key makes it a secret.
FAKE_KUBECONFIG = "apiVersion: v1\nkind: Config\nusers: [{name: kind, user: {client-key-data: ZmFrZQ==}}]\n"
FAKE_SECRET = "-----BEGIN OPENSSH PRIVATE KEY-----\nfake\n-----END OPENSSH PRIVATE KEY-----\n"
# What a Deployment's ReplicaSet adds to its pods' names: the pod-template-hash and five random characters.
FAKE_POD_SUFFIX = "-6d9c8f7b5d-x2kqp"
FAKE_STATEFULSET_UID = "3f9a6c2e-7b1d-4e8a-9c0f-5d2b8e4a1c67"
# nodeAccess kubernetes: the address a node agent's pod reports, its node's own (host network).
NODE_AGENT_ADDRESS = "10.128.0.7"
# attachTo: what attached-pod.sh reads of the running pod, and what the node reports of its Envoy (the release's
# .text, the same as its envoy-symbol's), where it is loaded, and the lldb-server bundle's digest.
ATTACHED_NODE = "gke-pool-1-abcd"
ATTACHED_POD_UID = "6b2f0e4a-1c3d-4e5f-8a9b-0c1d2e3f4a5b"
ATTACHED_CONTAINER_ID = "4f3c2b1a" * 8
ATTACHED_LOAD_SLIDE = "0x55d5c9a00000"
RELEASE_TEXT_DIGEST = "7e" * 32
FAKE_BUNDLE_DIGEST = "b0" * 32


class MissingConfig(Exception):
    """What the CLI reports for a declared key with no default that the stack does not set."""


def _cli_string(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def project_file() -> dict:
    return yaml.safe_load((ROOT / "Pulumi.yaml").read_text())


def default_bazel_options(option: str) -> list[str]:
    """What the default bazelBuildArgs (Pulumi.yaml) pass with --copt or --linkopt."""
    from components.bazel_args import bazel_option_values  # here: the harness imports the SDK only when it runs

    return bazel_option_values(project_file()["config"]["bazelBuildArgs"]["default"], option)


def stack_config(stack: str, overrides: dict[str, str | None] | None = None) -> tuple[dict[str, str], list[str]]:
    """The `<project>:<key>` → string map and the secret keys the CLI would pass for `stack`."""
    project = project_file()
    name = project["name"]
    values: dict[str, str] = {k: _cli_string(d["default"]) for k, d in project["config"].items() if "default" in d}
    secret_keys: list[str] = []
    stack_file = ROOT / f"Pulumi.{stack}.yaml"
    if stack_file.exists():
        for key, value in (yaml.safe_load(stack_file.read_text()).get("config") or {}).items():
            key = key.split(":", 1)[1] if key.startswith(f"{name}:") else key
            if isinstance(value, dict) and "secure" in value:
                value = FAKE_SECRET
                secret_keys.append(f"{name}:{key}")
            values[key] = _cli_string(value)
    for key, value in (overrides or {}).items():
        if value is None:
            values.pop(key, None)
        else:
            values[key] = value
    missing = [k for k, d in project["config"].items() if "default" not in d and k not in values]
    if missing:
        raise MissingConfig(f"Stack '{stack}' is missing configuration value '{missing[0]}'")
    return {f"{name}:{k}": v for k, v in values.items()}, secret_keys


@dataclass(frozen=True)
class SourceFacts:
    """What the scripts read from the istio/proxy checkout: the walkthrough's by default, or a release's
    manifest (../shared/istio-releases/<version>/manifest.json)."""

    commit: str = WALKTHROUGH_COMMIT
    builder_image: str = WALKTHROUGH_BUILDER_IMAGE
    # attachTo: the release the pod's image tag names.
    version: str = "1.30.3"
    envoy_commit: str = PREBUILT_ENVOY_COMMIT
    envoy_repository: str = "https://github.com/istio/envoy.git"

    @classmethod
    def of_release(cls, manifest: dict) -> SourceFacts:
        envoy = manifest["envoy"]
        return cls(commit=manifest["proxySha"], builder_image=manifest["builderImage"], envoy_commit=envoy["sha"],
                   envoy_repository=f"https://github.com/{envoy['org']}/{envoy['repo']}.git",
                   version=manifest["istioVersion"])


def _fake_outputs(typ: str, name: str, inputs: dict, facts: SourceFacts) -> dict:
    """Outputs a provider would add to its inputs, fixed to the walkthrough's values and the source's facts."""
    if typ == "docker:index/remoteImage:RemoteImage":
        return {"imageId": "sha256:" + hashlib.sha256(inputs["name"].encode()).hexdigest()}
    if typ == "kubernetes:apps/v1:StatefulSet":
        # The API server's uid.
        return {"metadata": {**inputs["metadata"], "uid": FAKE_STATEFULSET_UID}}
    if typ == "command:local:Command" and name.endswith("-prepare"):
        return {"stdout": f"{facts.commit}\n{facts.builder_image}\n"}
    if typ == "command:local:Command" and name.endswith("-make"):
        elf = f"{WALKTHROUGH_EXECROOT}/bazel-out/k8-dbg/bin/envoy"
        return {"stdout": f"elf={elf}\nexecroot={WALKTHROUGH_EXECROOT}\nbuildId={WALKTHROUGH_BUILD_ID}\n"
                          f"sandboxRoots={WALKTHROUGH_SANDBOX_ROOT}\n"}
    if typ == "command:local:Command" and name.endswith("envoy-source"):
        return {"stdout": f"commit={facts.envoy_commit}\nrepository={facts.envoy_repository}\n"
                          "external=external/envoy\n"}
    if typ == "command:local:Command" and name.endswith("envoy-fetch"):
        folder = f"{inputs['environment']['DEST_DIR']}/{facts.commit}"
        elf = f"{folder}/{'envoy-symbol' if 'ARTIFACT' in inputs['environment'] else 'envoy'}"
        return {"stdout": f"elf={elf}\ndwp={elf}.dwp\nbuildId={PREBUILT_BUILD_ID}\n"
                          f"compDirs=/proc/self/cwd\nsandboxRoots={PREBUILT_SANDBOX_ROOT}\n"
                          f"textDigest={RELEASE_TEXT_DIGEST}\n"}
    if typ == "command:local:Command" and name == "attached-pod-lookup":
        env = inputs["environment"]
        return {"stdout": f"node={ATTACHED_NODE}\nuid={ATTACHED_POD_UID}\ncontainer={env['CONTAINER']}\n"
                          f"image=docker.io/istio/proxyv2:{facts.version}\ncontainerId={ATTACHED_CONTAINER_ID}\n"
                          f"restartCount=0\nistioVersion={facts.version}\n"}
    if typ == "command:local:Command" and name == "lldb-server-bundle-collect":
        return {"stdout": f"bundle={inputs['environment']['BUNDLE_DIR']}\ndigest={FAKE_BUNDLE_DIGEST}\n"}
    if typ == "command:local:Command" and name.endswith("-context"):
        env = inputs["environment"]
        return {"stdout": f"bytes={FAKE_STRIPPED_BYTES}\nbuildId={env['BUILD_ID']}\nstripped={env['STRIP']}\n"}
    if typ == "command:local:Command" and name == "debug-image-build":
        repository = inputs["environment"]["IMAGE"].rsplit(":", 1)[0]
        return {"stdout": f"Step 1/3 ...\n{repository}@{FAKE_IMAGE_DIGEST}\n"}
    # The node commands run over SSH, or through docker exec from the host (nodeAccess docker).
    node_command = typ in ("command:remote:Command", "command:local:Command")
    if node_command and name.startswith("containerd-mirror-"):
        return {"stdout": "192.168.122.1:5000: hosts.toml in /etc/containerd/certs.d (no restart)\n"}
    if node_command and name == "lldb-server-platform":
        in_place = "CONTAINER_ID=" in inputs["stdin"]
        report = f"textDigest={RELEASE_TEXT_DIGEST}\nloadSlide={ATTACHED_LOAD_SLIDE}\n" if in_place else ""
        return {"stdout": f"{report}{WALKTHROUGH_ENVOY_PID}\n"}
    if typ == "docker:index/container:Container" and name == "debugger-container":
        if inputs.get("networkMode") == "host":
            return {}
        network = inputs["networksAdvanced"][0]["name"]
        return {"networkDatas": [{"networkName": network, "ipAddress": DEBUGGER_ADDRESS}]}
    if typ == "kubernetes:core/v1:Pod" and name.startswith("node-agents-"):
        return {"status": {"phase": "Running", "podIP": NODE_AGENT_ADDRESS}}
    if typ == "command:local:Command" and name == "lldb-server-node":
        # The scheduler's choice: the first of the nodes with an agent.
        return {"stdout": inputs["environment"]["NODES"].split()[0] + "\n"}
    if typ == "command:local:Command" and name == "lldb-server-node-address":
        return {"stdout": f"{KIND_NODE_ADDRESS}\n"}
    if typ == "command:local:Command" and name.startswith("target-") and name.endswith("-pod"):
        # istiod's Deployment for the Gateway the selector names: a waypoint's keeps its name, a gateway's gets
        # its class (istio) as a suffix.
        gateway = inputs["environment"]["SELECTOR"].split("=", 1)[1]
        deployment = gateway if name == "target-waypoint-pod" else f"{gateway}-istio"
        return {"stdout": f"{deployment}{FAKE_POD_SUFFIX}\n"}
    if typ == "command:local:Command" and name == "kind-cluster":
        return {"stdout": FAKE_KUBECONFIG}
    if typ == "command:local:Command" and name == "debugger-image":
        return {"stdout": "sha256:" + hashlib.sha256(inputs["stdin"].encode()).hexdigest() + "\n"}
    return {}


def _plain(value: Any) -> Any:
    """Resource inputs as JSON data (secrets arrive wrapped in a signature envelope; values not known
    until an update show as "<unknown>", as a preview prints them)."""
    from pulumi.output import Unknown

    if isinstance(value, Unknown):
        return "<unknown>"
    if isinstance(value, dict):
        if "4dabf18193072939515e22adb298388d" in value and "value" in value:
            return {"secret": _plain(value["value"])}
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def evaluate(stack: str = "dev", overrides: dict[str, str | None] | None = None, preview: bool = False,
             facts: SourceFacts = SourceFacts()) -> dict:
    import pulumi

    config, secret_keys = stack_config(stack, overrides)
    resources: list[dict] = []

    class RecordingMocks(pulumi.runtime.Mocks):
        def new_resource(self, args: pulumi.runtime.MockResourceArgs):
            # In a preview of a new stack nothing has run yet: provider-computed outputs stay unknown.
            computed = {} if preview else _fake_outputs(args.typ, args.name, args.inputs, facts)
            outputs = {**args.inputs, **computed}
            resources.append({
                "type": args.typ, "name": args.name, "custom": bool(args.custom), "inputs": _plain(args.inputs),
                # The provider reference (`<provider urn>::<id>`); empty for the default provider.
                "provider": args.provider or "",
            })
            return f"{args.name}-id", outputs

        def call(self, args: pulumi.runtime.MockCallArgs):
            return {}

    pulumi.runtime.set_mocks(RecordingMocks(), project=project_file()["name"], stack=stack, preview=preview)
    pulumi.runtime.set_all_config(config, secret_keys)
    sys.path.insert(0, str(ROOT))
    # The mocks stand in for the providers, and so for the Docker daemon the program asks before the docker
    # provider would (components/docker_daemon.py): the evaluation never depends on this machine's Docker.
    import components.docker_daemon

    components.docker_daemon.probe = lambda address, seconds=None: None
    outputs: dict = {}

    options: dict[str, dict] = {}

    def record_options(args: pulumi.ResourceTransformationArgs) -> None:
        """Resource options never reach the mocks: a (client-side) stack transformation sees them."""
        opts = args.opts
        timeouts = opts.custom_timeouts
        options[args.name] = {
            "parent": opts.parent._name if opts.parent is not None else None,
            "deleteBeforeReplace": bool(opts.delete_before_replace),
            "retainOnDelete": bool(opts.retain_on_delete),
            "dependsOn": sorted(d._name for d in (opts.depends_on or [])),
            "customTimeouts": {"create": timeouts.create, "update": timeouts.update} if timeouts else None,
            "additionalSecretOutputs": sorted(opts.additional_secret_outputs or []),
        }

    @pulumi.runtime.test
    def run_program():
        pulumi.runtime.register_stack_transformation(record_options)
        runpy.run_path(str(ROOT / "__main__.py"), run_name="__pulumi_program__")
        exports = pulumi.runtime.get_root_resource().outputs
        return pulumi.Output.all(**exports).apply(outputs.update)

    run_program()
    for resource in resources:
        resource["options"] = options.get(resource["name"], {})
    # Registration order depends on how the event loop interleaves outputs; the graph does not.
    resources.sort(key=lambda r: (r["type"], r["name"]))
    return {"resources": resources, "outputs": _plain(outputs)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stack")
    parser.add_argument("--preview", action="store_true")
    parser.add_argument("--source-facts", metavar="MANIFEST", help="a release's manifest.json as the source's facts")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a key; KEY= with no value unsets it")
    args = parser.parse_args()
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key] = value if value else None
    import pulumi

    try:
        facts = SourceFacts.of_release(json.loads(Path(args.source_facts).read_text())) if args.source_facts \
            else SourceFacts()
        result = evaluate(args.stack, overrides, preview=args.preview, facts=facts)
    except (pulumi.RunError, MissingConfig) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    json.dump(result, sys.stdout, indent=1, sort_keys=True, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
