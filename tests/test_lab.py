"""The lab (`cluster: kind`, the `lab` stack `make up` brings up): its graph under mocks, its kind scripts run by
bash against a stand-in kind CLI, and its kind config's containerd patch loaded by a real containerd.

kind itself and Istio's charts cannot run here (no image can be pulled, no chart downloaded); the node side of
the lab with the real Docker engine is tests/test_kind_node.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from components import containerd_mirror
from components.config import ConfigError, parse_config
from components.istio import ISTIO_CHARTS, ISTIO_NAMESPACE
from components.kind_cluster import CERTS_DIR, KIND_NODE_IMAGE, KIND_VERSION, kind_config
from tests.conftest import MAKE_UP_WORK_DIR, ROOT, evaluate, resource, run_harness
from tests.mock_stack import DEBUGGER_ADDRESS, FAKE_KUBECONFIG, KIND_NODE_ADDRESS, stack_config
from tests.test_containerd_mirror import Node, cri_status

LAB_CLUSTER = "istio-proxy-debug-lab"
LAB_NODE = f"{LAB_CLUSTER}-control-plane"
KUBECONFIG_FILE = f"{MAKE_UP_WORK_DIR}/kind/{LAB_CLUSTER}.kubeconfig"


@pytest.fixture(scope="module")
def lab() -> dict:
    return evaluate("lab")


def depends_on(evaluation: dict, name: str) -> set[str]:
    """What a resource waits for: its own dependsOn and its parents'."""
    found: set[str] = set()
    while name:
        options = resource(evaluation, name)["options"]
        found |= set(options["dependsOn"])
        name = options["parent"]
    return found


# --- the graph ----------------------------------------------------------------------------------------------


def test_the_lab_creates_its_kind_cluster_with_its_own_kubeconfig(lab):
    cluster = resource(lab, "kind-cluster")
    env = cluster["inputs"]["environment"]
    assert env["KIND_CLUSTER"] == LAB_CLUSTER
    assert env["KUBECONFIG_FILE"] == KUBECONFIG_FILE, "the cluster's kubeconfig lives under workDir"
    assert yaml.safe_load(env["KIND_CONFIG"]) == yaml.safe_load(kind_config())
    assert env["NODE_NETWORK"] == "kind" and env["KIND_VERSION"] == KIND_VERSION
    assert cluster["options"]["additionalSecretOutputs"] == ["stdout"], "the kubeconfig holds the admin key"
    assert cluster["options"]["deleteBeforeReplace"], "a new cluster of the same name needs the old one gone"
    assert "kind delete cluster" in cluster["inputs"]["delete"]


def test_the_provider_is_made_from_that_clusters_kubeconfig(lab):
    provider = resource(lab, "kind-provider")
    assert provider["type"] == "pulumi:providers:kubernetes"
    assert provider["inputs"]["kubeconfig"] == {"secret": FAKE_KUBECONFIG}, "kind get kubeconfig's output, secret"
    assert provider["inputs"].get("context") is None, "no context of the developer's kubeconfig is chosen"


def test_every_kubernetes_resource_goes_through_the_labs_provider(lab):
    kubernetes = [r for r in lab["resources"] if r["type"].startswith("kubernetes:")]
    assert {r["name"] for r in kubernetes} >= {"istio-base", "istio-istiod", "target-namespace", "target-service",
                                               "target-statefulset"}
    for r in kubernetes:
        assert r["provider"].startswith("urn:pulumi:lab::istio-proxy-debug::") and "::kind-provider::" in \
            r["provider"], f"{r['name']} uses {r['provider'] or 'the default provider (the current context)'}"


def test_nothing_reads_or_writes_the_default_kubeconfig(lab):
    text = json.dumps(lab)
    assert ".kube/config" not in text and "KUBECONFIG=" not in text
    for command in ("portForwardCommand",):
        assert lab["outputs"][command].startswith(f"kubectl --kubeconfig {KUBECONFIG_FILE} ")
    startup = evaluate("lab", "mode=startup")["outputs"]["startCommand"]
    assert startup.startswith(f"kubectl --kubeconfig {KUBECONFIG_FILE} -n mark exec -it fortio-server-0 ")
    assert lab["outputs"]["kubeconfigFile"] == KUBECONFIG_FILE and lab["outputs"]["cluster"] == LAB_CLUSTER


def test_istio_is_installed_from_its_charts_before_the_target(lab):
    base, istiod = resource(lab, "istio-base"), resource(lab, "istio-istiod")
    version = stack_config("lab", {"workDir": MAKE_UP_WORK_DIR})[0]["istio-proxy-debug:istioVersion"]
    for release, chart in ((base, "base"), (istiod, "istiod")):
        inputs = release["inputs"]
        assert (inputs["chart"], inputs["version"], inputs["repositoryOpts"]["repo"]) == (chart, version, ISTIO_CHARTS)
        assert inputs["namespace"] == ISTIO_NAMESPACE and inputs["createNamespace"] is True
        assert not inputs.get("skipAwait"), "the release waits until istiod is ready"
    assert base["inputs"]["name"] == "istio-base" and istiod["inputs"]["name"] == "istiod", "no random suffix"
    assert "istio-base" in depends_on(lab, "istio-istiod")
    for name in ("target-namespace", "target-statefulset", "target-service"):
        assert "istio-istiod" in depends_on(lab, name), f"{name} would be created before the injector runs"


def test_the_node_scripts_wait_for_the_node_and_run_through_docker_exec(lab):
    mirror = resource(lab, f"containerd-mirror-{LAB_NODE}")
    assert mirror["type"] == "command:local:Command"
    assert mirror["inputs"]["create"] == f"docker exec -i {LAB_NODE} bash -s"
    assert mirror["inputs"]["stdin"] == containerd_mirror.create_script("image-registry-lab", 5000)
    assert "kind" in depends_on(lab, f"containerd-mirror-{LAB_NODE}")
    server = resource(lab, "lldb-server-platform")
    assert server["inputs"]["create"] == f"docker exec -i {LAB_NODE} bash -s"
    assert "POD_NAME='fortio-server-0'" in server["inputs"]["stdin"], "after the target: its pod's name"
    assert f"LISTEN_ADDRESS='{DEBUGGER_ADDRESS}'" in server["inputs"]["stdin"], \
        "only the debugger container, on the nodes' network, is let in"
    assert "kind" in depends_on(lab, "lldb-server-platform")
    address = resource(lab, "lldb-server-node-address")
    assert address["inputs"]["create"].startswith("docker inspect --type container --format ")
    assert address["inputs"]["triggers"] == ["kind-cluster-id"], "a new node container is looked up again"
    assert lab["outputs"]["connectUrl"] == f"connect://{KIND_NODE_ADDRESS}:2159"


def test_registry_builder_and_debugger_join_the_nodes_network(lab):
    assert lab["outputs"]["dockerNetwork"] == "kind"
    assert not [r for r in lab["resources"] if r["type"] == "docker:index/network:Network"], \
        "no network of its own, whose subnet could clash with kind's"
    for name in ("registry-container", "debugger-container"):
        networks = resource(lab, name)["inputs"]["networksAdvanced"]
        assert [n["name"] for n in networks] == ["kind"], name
    registry = resource(lab, "registry-container")["inputs"]
    port = int(stack_config("lab", {"workDir": MAKE_UP_WORK_DIR})[0]["istio-proxy-debug:registryPort"])
    assert registry["name"] == "image-registry-lab"
    assert registry["ports"] == [{"internal": 5000, "external": port, "ip": "127.0.0.1"}], \
        "the nodes pull on kind's network: the host port takes this host's pushes only"
    assert lab["outputs"]["registryPullAddress"] == "image-registry-lab:5000", "by name, on kind's network"
    assert lab["outputs"]["debugImage"].startswith("image-registry-lab:5000/proxyv2@sha256:")


def test_the_lab_needs_no_build_and_writes_launch_json_into_the_workspace(lab):
    assert lab["outputs"]["envoySource"] == "prebuilt"
    assert not [r for r in lab["resources"] if r["name"].startswith("builder")]
    assert lab["outputs"]["launchJsonFile"] == f"{MAKE_UP_WORK_DIR}/work/.vscode/launch.json"


def test_a_preview_of_the_lab_needs_nothing_running():
    done = run_harness("lab", preview=True)
    assert done.returncode == 0, done.stderr
    preview = json.loads(done.stdout)
    assert resource(preview, "lldb-server-platform")["inputs"]["stdin"] == "<unknown>", \
        "the node's address is known only once the node runs"
    assert resource(preview, "kind-provider")["inputs"]["kubeconfig"] == {"secret": "<unknown>"}


def test_the_walkthroughs_stack_is_unchanged_by_the_lab():
    dev = evaluate("dev")
    assert not [r for r in dev["resources"] if r["provider"]], "the current context, as before"
    assert not [r for r in dev["resources"] if r["name"].startswith(("kind", "istio-"))]
    assert resource(dev, "lldb-server-platform")["type"] == "command:remote:Command"


# --- config ---------------------------------------------------------------------------------------------------


def lab_raw(**values: str | None) -> dict[str, str | None]:
    raw, _ = stack_config("lab", {"workDir": MAKE_UP_WORK_DIR})
    raw = {k.split(":", 1)[1]: v for k, v in raw.items()}
    return {**raw, **values}


@pytest.mark.parametrize("values, message", [
    ({"placement": "cluster", "codeServerPassword": "correct-horse-battery"}, "expected host with cluster kind"),
    ({"nodeAccess": "ssh"}, "expected docker with cluster kind"),
    ({"registryHost": "192.168.122.1"}, "expected no value with nodeAccess docker"),
    ({"nodes": '["n1"]'}, "cluster kind has one node, istio-proxy-debug-lab-control-plane"),
    ({"cluster": "minikube"}, "expected existing"),
    ({"nodeNetwork": "bad network"}, "expected a Docker network name"),
])
def test_bad_lab_settings_are_named_with_the_fix(values, message):
    with pytest.raises(ConfigError) as error:
        parse_config(lab_raw(**values), stack="lab")
    assert message in str(error.value)


def test_node_containers_of_an_existing_cluster_are_reached_by_docker():
    raw, _ = stack_config("dev", {"nodeAccess": "docker", "registryHost": "", "nodes": '["kind-control-plane"]',
                                  "targetNodeAddress": ""})
    config = parse_config({k.split(":", 1)[1]: v for k, v in raw.items()}, stack="dev")
    assert (config.node_access, config.node_network, config.nodes) == ("docker", "kind", ("kind-control-plane",))
    assert config.registry_pull_host == "image-registry" and config.kubeconfig_file is None
    with pytest.raises(ConfigError, match="expected Docker container names"):
        parse_config({k.split(":", 1)[1]: v for k, v in raw.items()} | {"nodes": '["192.168.122.55:22"]'},
                     stack="dev")


# --- the kind scripts, run by bash against a stand-in kind -------------------------------------------------------

STAND_IN_KIND = r"""#!/usr/bin/env bash
# Records each call (arguments, the environment kind reads, stdin for --config=-) and acts like kind.
{ printf '%s\n' "kind $*"; echo "KIND_EXPERIMENTAL_DOCKER_NETWORK=${KIND_EXPERIMENTAL_DOCKER_NETWORK:-}"; } \
  >>"$KIND_LOG"
case "$1 $2" in
  "get clusters") cat "$KIND_STATE" 2>/dev/null || true ;;
  "create cluster")
    for arg; do [ "$arg" = "--config=-" ] && cat >"$KIND_STDIN"; done
    name=$4; kubeconfig=${7:?}
    echo "$name" >>"$KIND_STATE"
    echo "kubeconfig-of-$name" >"$kubeconfig"
    echo "Creating cluster \"$name\" ..." >&2 ;;
  "get kubeconfig") echo "apiVersion: v1 # of $4" ;;
  "export kubeconfig") echo "exported" >&2 ;;
  "delete cluster") echo "Deleting cluster \"$4\" ..." >&2 ;;
  *) echo "stand-in kind: unexpected $*" >&2; exit 2 ;;
esac
"""


def run_kind_script(tmp: Path, text: str, environment: dict, path: str) -> subprocess.CompletedProcess:
    """A kind script as the program renders it (bash -c), with HOME a scratch folder: ~/.kube must stay empty."""
    env = {**environment, "PATH": path, "HOME": str(tmp / "home"), "KIND_LOG": str(tmp / "kind.log"),
           "KIND_STATE": str(tmp / "clusters"), "KIND_STDIN": str(tmp / "stdin")}
    return subprocess.run(["bash", "-c", text], env=env, cwd=tmp, capture_output=True, text=True, timeout=60)


@pytest.fixture
def kind_bin(tmp_path: Path) -> str:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "kind").write_text(STAND_IN_KIND)
    (bin_dir / "docker").write_text("#!/bin/sh\n[ \"$1\" = info ]\n")
    for tool in (bin_dir / "kind", bin_dir / "docker"):
        tool.chmod(0o755)
    (tmp_path / "home").mkdir()
    return f"{bin_dir}:{os.environ['PATH']}"


def test_the_create_script_hands_kind_the_config_and_prints_only_the_kubeconfig(lab, tmp_path, kind_bin):
    cluster = resource(lab, "kind-cluster")["inputs"]
    environment = {**cluster["environment"], "KUBECONFIG_FILE": str(tmp_path / "work" / "kind" / "lab.kubeconfig")}
    done = run_kind_script(tmp_path, cluster["create"], environment, kind_bin)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"apiVersion: v1 # of {LAB_CLUSTER}\n", "stdout is the kubeconfig, and only it"
    log = (tmp_path / "kind.log").read_text()
    assert f"kind create cluster --name {LAB_CLUSTER} --config=- --kubeconfig {environment['KUBECONFIG_FILE']}" in log
    assert "KIND_EXPERIMENTAL_DOCKER_NETWORK=kind" in log
    assert yaml.safe_load((tmp_path / "stdin").read_text()) == yaml.safe_load(kind_config())
    assert (tmp_path / "work" / "kind" / "lab.kubeconfig").exists(), "its folder was made"
    assert not (tmp_path / "home" / ".kube").exists(), "the developer's kubeconfig is untouched"
    # Again (an `up` that stopped half-way): the cluster is kept, not created twice.
    again = run_kind_script(tmp_path, cluster["create"], environment, kind_bin)
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "kind.log").read_text().count("kind create cluster") == 1
    assert "exists already: keeping it" in again.stderr


def test_the_delete_script_deletes_the_cluster_from_its_own_kubeconfig_only(lab, tmp_path, kind_bin):
    cluster = resource(lab, "kind-cluster")["inputs"]
    done = run_kind_script(tmp_path, cluster["delete"], cluster["environment"], kind_bin)
    assert done.returncode == 0, done.stderr
    assert f"kind delete cluster --name {LAB_CLUSTER} --kubeconfig {KUBECONFIG_FILE}" in \
        (tmp_path / "kind.log").read_text()


def test_without_kind_the_scripts_say_what_to_install(lab, tmp_path):
    cluster = resource(lab, "kind-cluster")["inputs"]
    bare = tmp_path / "bare"
    bare.mkdir()
    for tool in ("dirname", "mkdir", "grep"):
        (bare / tool).symlink_to(shutil.which(tool))
    for step in ("create", "delete"):
        done = subprocess.run(["/bin/bash", "-c", cluster[step]], env={**cluster["environment"], "PATH": str(bare)},
                              capture_output=True, text=True, timeout=60)
        assert done.returncode != 0
        assert "kind CLI is not installed" in done.stderr and "make up" in done.stderr, done.stderr


# --- the kind config's containerd patch, loaded by a real containerd -----------------------------------------------

# kind v0.32.0's node config (images/base/files/etc/containerd/config.toml), its CRI part: version 2, no
# config_path and no registry section.
KIND_NODE_CONTAINERD = """version = 2

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.10"

[plugins."io.containerd.grpc.v1.cri".containerd]
  discard_unpacked_layers = true
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
  SystemdCgroup = true
"""


def patched_node_config() -> str:
    """The node's config with the stack's kind config patches applied as kind applies them (a TOML merge; with
    disjoint tables that is the concatenation)."""
    patches = yaml.safe_load(kind_config())["containerdConfigPatches"]
    merged = KIND_NODE_CONTAINERD + "\n" + "\n".join(patches)
    tomllib.loads(merged)  # one valid document
    return merged


def test_the_kind_config_pins_the_node_image_and_sets_config_path():
    config = yaml.safe_load(kind_config())
    assert config["nodes"] == [{"role": "control-plane", "image": KIND_NODE_IMAGE}]
    assert KIND_NODE_IMAGE.startswith("kindest/node:v1.") and "@sha256:" in KIND_NODE_IMAGE
    minor = int(KIND_NODE_IMAGE.split(":v1.")[1].split(".")[0])
    assert minor >= 32, "Istio 1.30 needs Kubernetes 1.32; native sidecars need 1.29"
    patch = tomllib.loads(config["containerdConfigPatches"][0])
    assert patch["plugins"]["io.containerd.grpc.v1.cri"]["registry"] == {"config_path": CERTS_DIR}


def test_the_patched_kind_node_config_loads_and_the_mirror_script_writes_hosts_toml(tmp_path):
    node = Node(tmp_path)
    node.config.parent.mkdir(parents=True)
    # The node harness keeps its /etc under tmp (the machine's own /etc/containerd is never touched): the patch's
    # config_path moves there with it.
    node.config.write_text(patched_node_config().replace(CERTS_DIR, str(node.certs)))
    plugins = node.start_containerd()
    assert cri_status(plugins) == "ok", node.log()
    dump = subprocess.run(["containerd", "--config", str(node.config), "config", "dump"], capture_output=True,
                          text=True, check=True).stdout
    assert tomllib.loads(dump)["plugins"]["io.containerd.grpc.v1.cri"]["registry"]["config_path"] == str(node.certs)
    # The stack's mirror script, as the lab renders it (on stdin to docker exec's bash -s).
    script = containerd_mirror.create_script("image-registry-lab", 5000)
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", "bash", "-s"], input=script,
                          env=node.env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    hosts = tomllib.loads((node.certs / "image-registry-lab:5000" / "hosts.toml").read_text())
    assert hosts["server"] == "http://image-registry-lab:5000"
    assert node.restarts() == 1, "config_path was set: hosts.toml needs no restart (the one is the test's start)"
    assert tomllib.loads(node.config.read_text()) == tomllib.loads(
        patched_node_config().replace(CERTS_DIR, str(node.certs))), "the node's config is left as kind wrote it"
    node.stop_containerd()


def test_make_up_installs_the_kind_release_whose_node_image_the_stack_pins():
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(rf"^KIND_VERSION \?= {re.escape(KIND_VERSION)}$", makefile, flags=re.MULTILINE), \
        "Makefile KIND_VERSION and components/kind_cluster.py KIND_VERSION differ"
    pins = re.findall(r"^KIND_SHA256_(linux|darwin)_(amd64|arm64) := ([0-9a-f]{64})$", makefile, flags=re.MULTILINE)
    assert len(pins) == 4 and len({p[2] for p in pins}) == 4, "one checksum per platform"


@pytest.fixture(scope="module")
def waypoint_lab() -> dict:
    return evaluate("lab", "target=waypoint")


def test_a_waypoint_lab_installs_ambient_from_istios_charts_in_the_guides_order(waypoint_lab):
    """Istio's ambient Helm guide: base, the Gateway API CRDs, istiod with the ambient profile, istio-cni with it,
    ztunnel; every release waited for, the target after all of them (ztunnel and the CNI must run before an
    ambient pod starts)."""
    version = stack_config("lab", {"workDir": MAKE_UP_WORK_DIR})[0]["istio-proxy-debug:istioVersion"]
    charts = {"istio-base": "base", "istio-istiod": "istiod", "istio-cni": "cni", "istio-ztunnel": "ztunnel"}
    for name, chart in charts.items():
        inputs = resource(waypoint_lab, name)["inputs"]
        assert (inputs["chart"], inputs["version"], inputs["repositoryOpts"]["repo"]) == (chart, version, ISTIO_CHARTS)
        assert inputs["namespace"] == ISTIO_NAMESPACE and not inputs.get("skipAwait")
    assert resource(waypoint_lab, "istio-cni")["inputs"]["name"] == "istio-cni"
    for name in ("istio-istiod", "istio-cni"):
        assert resource(waypoint_lab, name)["inputs"]["values"]["profile"] == "ambient", name
    crds = resource(waypoint_lab, "istio-gateway-api")
    assert crds["type"] == "kubernetes:yaml/v2:ConfigFile"
    assert re.fullmatch(r"https://github\.com/kubernetes-sigs/gateway-api/releases/download/v[0-9.]+/standard-install"
                        r"\.yaml", crds["inputs"]["file"])
    assert {"istio-base", "istio-gateway-api"} <= depends_on(waypoint_lab, "istio-istiod")
    assert "istio-istiod" in depends_on(waypoint_lab, "istio-cni")
    assert "istio-cni" in depends_on(waypoint_lab, "istio-ztunnel")
    for name in ("target-statefulset", "target-waypoint-gateway", "target-waypoint-parameters"):
        assert {"istio-istiod", "istio-cni", "istio-ztunnel"} <= depends_on(waypoint_lab, name), name


def test_the_labs_gateway_api_release_is_the_one_the_api_server_tests_install(waypoint_lab):
    from tests.gateway_api import standard_crds

    url = resource(waypoint_lab, "istio-gateway-api")["inputs"]["file"]
    bundle = {c["metadata"]["annotations"]["gateway.networking.k8s.io/bundle-version"] for c in standard_crds()}
    assert bundle == {url.split("/download/")[1].split("/")[0]}


def test_a_gateway_lab_installs_the_crds_but_not_ambient():
    lab = evaluate("lab", "target=gateway")
    names = {r["name"] for r in lab["resources"]}
    assert "istio-gateway-api" in names and not names & {"istio-cni", "istio-ztunnel"}
    assert "profile" not in resource(lab, "istio-istiod")["inputs"]["values"]
