"""The rules a setting's value must keep beside the other settings, one small function each, checked in the
order of `RULES` after every setting has been read (components/settings.py).

A rule sees each setting's typed value, None where unset or already refused, and returns its problems; a
setting it refuses counts as refused for the rules after it."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from components.bazel_args import bazel_compilation_mode, bazel_fission_modes, lld_options_without_lld
from components.debug_ports import DebuggerPorts
from components.iptables import ISTIO_PROXY_UID
from components.mesh_gateway import deployment_name, longest_workload
from components.node_agent import LONGEST_NODE_NAME
from components.settings import (
    MIN_CODE_SERVER_PASSWORD,
    Problem,
    Values,
    is_docker_name,
    is_host,
    is_node_name,
    local_folder,
    memory_bytes,
    release,
)

# Ports the sidecar itself uses: Envoy's outbound and inbound listeners, HBONE, prometheus, health, status.
ISTIO_PROXY_PORTS = frozenset({15000, 15001, 15004, 15006, 15008, 15009, 15020, 15021, 15053, 15090})
# A NodePort Service takes its port from the API server's default --service-node-port-range.
NODE_PORT_RANGE = (30000, 32767)
# The first release whose gateway deployment controller applies a Gateway's spec.infrastructure.parametersRef
# ConfigMap to the Deployment it generates (deploymentcontroller.go, applyOverlay): how the debug image, its
# memory and the ptrace capability reach a waypoint's or gateway's Envoy.
FIRST_CUSTOMIZABLE_GATEWAY = (1, 26)

Rule = Callable[[Values], Iterator[Problem]]


def kind_runs_on_the_host(v: Values) -> Iterator[Problem]:
    if v["cluster"] == "kind" and v["placement"] == "cluster":
        yield Problem("placement", "expected host with cluster kind: the kind cluster has no ReadWriteMany storage "
                                   "for the workspace; pulumi config set placement host")


def kind_nodes_are_containers(v: Values) -> Iterator[Problem]:
    if v["cluster"] == "kind" and v["nodeAccess"] in ("ssh", "kubernetes"):
        yield Problem("nodeAccess", "expected docker with cluster kind: kind's nodes are containers on this host; "
                                    "pulumi config rm nodeAccess")


def node_containers_need_the_host_placement(v: Values) -> Iterator[Problem]:
    if v["nodeAccess"] == "docker" and v["placement"] == "cluster":
        yield Problem("nodeAccess", "expected ssh with placement cluster: nodeAccess docker puts the registry and "
                                    "the debugger on the nodes' Docker network, on this host")


def work_dir_is_required_on_the_host(v: Values) -> Iterator[Problem]:
    if v["placement"] == "host" and not v.is_set("workDir"):
        yield Problem("workDir", "set an absolute folder on the developer host, e.g. /home/me/istio-testing",
                      missing=True)


def bazel_builds_for_debugging(v: Values) -> Iterator[Problem]:
    if v["bazelBuildArgs"] is not None and bazel_compilation_mode(v["bazelBuildArgs"]) != "dbg":
        yield Problem("bazelBuildArgs",
                      "expected a debug build: keep --config=debug (or -c dbg) so the ELF has debug info")


def debug_info_stays_in_the_elf(v: Values) -> Iterator[Problem]:
    if v["bazelBuildArgs"] is not None and "dbg" in bazel_fission_modes(v["bazelBuildArgs"]):
        yield Problem("bazelBuildArgs",
                      "expected --fission=no: istio/proxy's envoy.bazelrc (--fission=dbg,opt) would leave a debug "
                      "build's DWARF in .dwo files beside the objects, which lldb finds only when run from the "
                      "execution root")


def lld_options_link_with_lld(v: Values) -> Iterator[Problem]:
    if v["bazelBuildArgs"] is not None and (lld_only := lld_options_without_lld(v["bazelBuildArgs"])):
        yield Problem("bazelBuildArgs",
                      f"--linkopt={lld_only[0]} is an lld option: keep --linkopt=-fuse-ld=lld beside it, or drop it")


def node_containers_pull_from_the_registry_by_name(v: Values) -> Iterator[Problem]:
    if v["nodeAccess"] == "docker" and v.is_set("registryHost"):
        yield Problem("registryHost", "expected no value with nodeAccess docker: the nodes pull from the registry "
                                      "container by name on nodeNetwork; pulumi config rm registryHost")


def the_cluster_registry_is_a_node_port(v: Values) -> Iterator[Problem]:
    low, high = NODE_PORT_RANGE
    if v["placement"] == "cluster" and v["registryPort"] is not None and not low <= v["registryPort"] <= high:
        yield Problem("registryPort", f"expected with placement cluster, the registry Service's NodePort: an "
                                      f"integer from {low} to {high}, e.g. pulumi config set registryPort 30500")


def kind_has_its_own_node(v: Values) -> Iterator[Problem]:
    if v["cluster"] == "kind" and v.raw.get("nodes") not in (None, "", "[]"):
        yield Problem("nodes", f"expected no value: cluster kind has one node, {v['nodes'][0]}, which the stack "
                               "creates; pulumi config rm nodes")


def _has_an_agent_name(node: str) -> bool:
    """A node name whose agent's pod name, which carries it, is still a pod name."""
    return len(node) <= LONGEST_NODE_NAME and is_node_name(node)


def nodes_are_what_node_access_reaches(v: Values) -> Iterator[Problem]:
    if v["nodes"] is None or v["cluster"] == "kind":
        return
    if v["nodeAccess"] == "docker" and (bad := [n for n in v["nodes"] if not is_docker_name(n)]):
        yield Problem("nodes", f"expected Docker container names (docker ps); not valid: {', '.join(bad)}")
    elif v["nodeAccess"] == "ssh" and (bad := [n for n in v["nodes"] if not is_host(n)]):
        yield Problem("nodes", f"expected IP addresses or DNS names; not valid: {', '.join(bad)}")
    elif v["nodeAccess"] == "kubernetes" and (bad := [n for n in v["nodes"] if not _has_an_agent_name(n)]):
        yield Problem("nodes", f"expected Kubernetes node names as kubectl get nodes shows them (DNS-1123 "
                               f"subdomains of at most {LONGEST_NODE_NAME} characters); not valid: {', '.join(bad)}")


def ssh_settings_only_over_ssh(v: Values) -> Iterator[Problem]:
    if v["nodeAccess"] != "kubernetes":
        return
    if v["sshUser"] not in (None, "root"):
        yield Problem("sshUser", "expected no value with nodeAccess kubernetes: the nodes are reached through the "
                                 "Kubernetes API, as root in their agent pods; pulumi config rm sshUser")
    if v.is_set("sshPrivateKey"):
        yield Problem("sshPrivateKey", "expected no value with nodeAccess kubernetes: nothing connects over SSH; "
                                       "pulumi config rm sshPrivateKey")


def the_pod_node_is_found_with_kubernetes(v: Values) -> Iterator[Problem]:
    if v["nodeAccess"] == "kubernetes" and v.is_set("targetNodeAddress"):
        yield Problem("targetNodeAddress", "expected no value with nodeAccess kubernetes: lldb-server runs on the "
                                           "node the target pod was scheduled on (pin it with targetNodeName); "
                                           "pulumi config rm targetNodeAddress")


def each_node_once(v: Values) -> Iterator[Problem]:
    if v["nodes"] is not None and len(set(v["nodes"])) != len(v["nodes"]):
        yield Problem("nodes", "expected each node once")


def the_memory_request_fits_the_limit(v: Values) -> Iterator[Problem]:
    request, limit = v["proxyMemory"], v["proxyMemoryLimit"]
    if request and limit and memory_bytes(request) > memory_bytes(limit):
        yield Problem("proxyMemoryLimit", f"expected at least proxyMemory ({request})")


def the_target_node_is_one_of_the_nodes(v: Values) -> Iterator[Problem]:
    if v["targetNodeAddress"] is not None and v["nodes"] is not None and v["targetNodeAddress"] not in v["nodes"]:
        yield Problem("targetNodeAddress", f"expected one of nodes: {', '.join(v['nodes'])}")


def the_pinned_node_has_an_agent(v: Values) -> Iterator[Problem]:
    node, nodes = v["targetNodeName"], v["nodes"]
    if v["nodeAccess"] == "kubernetes" and node is not None and nodes is not None and node not in nodes:
        yield Problem("targetNodeName", f"expected one of nodes with nodeAccess kubernetes ({', '.join(nodes)}): "
                                        "only they have the containerd entry and an agent for lldb-server")


def gateways_take_the_debug_image_from_1_26(v: Values) -> Iterator[Problem]:
    version = v["istioVersion"]
    if v["target"] in ("waypoint", "gateway") and version is not None and release(version) < FIRST_CUSTOMIZABLE_GATEWAY:
        first = ".".join(map(str, FIRST_CUSTOMIZABLE_GATEWAY))
        yield Problem("target", f"expected sidecar with istioVersion {version}: the debug image, its memory and the "
                                "ptrace capability reach the Envoy istiod deploys for a Gateway only through the "
                                "Gateway's spec.infrastructure.parametersRef ConfigMap, which istiod applies from "
                                f"Istio {first}.0 on; set istioVersion {first}.0 or later, or target sidecar")


def gateway_pods_keep_their_name_as_hostname(v: Values) -> Iterator[Problem]:
    target, workload = v["target"], v["workload"]
    if target in ("waypoint", "gateway") and workload is not None and len(workload) > longest_workload(target):
        yield Problem("workload", f"expected at most {longest_workload(target)} characters with target {target}: "
                                  f"istiod's Deployment {deployment_name(workload, target)} names pods longer than a "
                                  "hostname's 63 characters, and lldb-server finds the pod by its hostname")


def the_cluster_downloads_over_http(v: Values) -> Iterator[Problem]:
    url = v["prebuiltBaseUrl"]
    if v["placement"] == "cluster" and url is not None and local_folder(url) is not None:
        yield Problem("prebuiltBaseUrl", "expected an http(s) URL with placement cluster: the download runs in the "
                                         "cluster, which does not see the developer host's folders; serve the "
                                         "folder over http, e.g. from a bucket")


def the_cluster_debugger_reaches_lldb_server_from_any_address(v: Values) -> Iterator[Problem]:
    if v["placement"] == "cluster" and v["lldbServerListenAll"] is False:
        yield Problem("lldbServerListenAll",
                      "expected true with placement cluster: lldb-server takes connections from the debugger's "
                      "address only, and code-server's, as the node sees it, is its pod's (or, behind some CNIs, its "
                      "node's) and changes with it; pulumi config set lldbServerListenAll true, and keep "
                      "debuggerPorts firewalled to the cluster")


def the_app_is_not_istio_proxy(v: Values) -> Iterator[Problem]:
    if v["appUid"] == ISTIO_PROXY_UID:
        yield Problem("appUid", f"expected a uid other than {ISTIO_PROXY_UID}, which is istio-proxy's own")


def debugger_ports_clear_of_the_sidecars(v: Values) -> Iterator[Problem]:
    if v["lldbServerPort"] is not None and ISTIO_PROXY_PORTS & set(DebuggerPorts(v["lldbServerPort"]).all):
        own = ", ".join(map(str, sorted(ISTIO_PROXY_PORTS)))
        yield Problem("lldbServerPort", f"expected debugger ports clear of the sidecar's own ({own})")


def debugger_ports_clear_of_the_registry(v: Values) -> Iterator[Problem]:
    if v["registryPort"] is not None and v["lldbServerPort"] is not None:
        debugger = DebuggerPorts(v["lldbServerPort"]).all
        if v["registryPort"] in debugger:
            yield Problem("lldbServerPort",
                          f"expected the debugger ports {debugger[0]}-{debugger[-1]} not to include registryPort")


def code_server_needs_a_password(v: Values) -> Iterator[Problem]:
    if v["placement"] == "cluster" and not v.is_set("codeServerPassword"):
        yield Problem("codeServerPassword", "with placement cluster, to guard code-server: pulumi config set "
                                            f"--secret codeServerPassword <at least {MIN_CODE_SERVER_PASSWORD} "
                                            "characters>", missing=True)


def _in_place(v: Values) -> bool:
    return bool(v["attachTo"])


def in_place_from_this_host(v: Values) -> Iterator[Problem]:
    if _in_place(v) and v["placement"] == "cluster":
        yield Problem("placement", "expected host with attachTo: the debugger runs on this host, beside the "
                                   "lldb-server it puts on the pod's node; pulumi config set placement host")


def in_place_on_an_existing_cluster(v: Values) -> Iterator[Problem]:
    if _in_place(v) and v["cluster"] == "kind":
        yield Problem("cluster", "expected existing with attachTo: the pod runs in a cluster you have, which the "
                                 "stack neither makes nor deletes; pulumi config rm cluster")


def in_place_streams_lldb_server_to_the_node(v: Values) -> Iterator[Problem]:
    if _in_place(v) and v["nodeAccess"] == "ssh":
        yield Problem("nodeAccess", "expected kubernetes (or docker for node containers) with attachTo: the stack "
                                    "streams lldb-server to the pod's node through kubectl exec (or docker exec), "
                                    "since the pod runs no debug image; pulumi config set nodeAccess kubernetes")


# What only a deployed target uses, and what it must be for one: attachTo debugs the pod as it runs.
_DEPLOYED_ONLY = {
    "mode": ("attach", "the Envoy that runs is attached to, never started again; pulumi config rm mode"),
    "target": ("sidecar", "attachTo names the pod, a waypoint's or a gateway's too; pulumi config rm target"),
    "envoySource": ("prebuilt", "the pod runs its own Envoy, which nothing builds; Istio's release symbols are "
                                "loaded for it; pulumi config rm envoySource"),
}
_NODE_SETTINGS = ("nodes", "targetNodeName", "targetNodeAddress", "registryHost")


def in_place_deploys_nothing(v: Values) -> Iterator[Problem]:
    if not _in_place(v):
        return
    for key, (wanted, why) in _DEPLOYED_ONLY.items():
        if v[key] not in (None, wanted):
            yield Problem(key, f"expected {wanted} with attachTo: {why}")
    for key in _NODE_SETTINGS:
        if v.raw.get(key) not in (None, "", "[]"):
            yield Problem(key, f"expected no value with attachTo: lldb-server runs on the node the pod runs on, "
                               f"and nothing is pulled there; pulumi config rm {key}")


RULES: tuple[Rule, ...] = (
    in_place_from_this_host,
    in_place_on_an_existing_cluster,
    in_place_streams_lldb_server_to_the_node,
    in_place_deploys_nothing,
    kind_runs_on_the_host,
    kind_nodes_are_containers,
    node_containers_need_the_host_placement,
    work_dir_is_required_on_the_host,
    bazel_builds_for_debugging,
    debug_info_stays_in_the_elf,
    lld_options_link_with_lld,
    node_containers_pull_from_the_registry_by_name,
    the_cluster_registry_is_a_node_port,
    kind_has_its_own_node,
    nodes_are_what_node_access_reaches,
    ssh_settings_only_over_ssh,
    the_pod_node_is_found_with_kubernetes,
    each_node_once,
    the_memory_request_fits_the_limit,
    the_target_node_is_one_of_the_nodes,
    the_pinned_node_has_an_agent,
    gateways_take_the_debug_image_from_1_26,
    gateway_pods_keep_their_name_as_hostname,
    the_cluster_downloads_over_http,
    the_cluster_debugger_reaches_lldb_server_from_any_address,
    the_app_is_not_istio_proxy,
    debugger_ports_clear_of_the_sidecars,
    debugger_ports_clear_of_the_registry,
    code_server_needs_a_password,
)
