#!/usr/bin/python3
"""A stand-in for Istio's pilot-agent, as /usr/local/bin/pilot-agent of the tests' proxyv2 image
(tests/mesh_images.py): what the injected containers run, where no istiod can serve it. Standard library only.

- `pilot-agent istio-iptables FLAGS…` (istio-init): the release's capture, applied by tests/istio_iptables.py
  (installed beside it) with iptables-legacy.
- `pilot-agent proxy sidecar …` (istio-proxy): writes an Istio-shaped static bootstrap to
  /etc/istio/proxy/envoy-rev.json and runs the real Envoy, /usr/local/bin/envoy, as its child with the arguments
  pilot-agent gives it; forwards SIGTERM and SIGINT, and exits as Envoy does. The bootstrap has what a sidecar
  serves before istiod pushes anything more: admin on 127.0.0.1:15000, `virtualOutbound` on 15001 (every captured
  outbound connection passed through to its original destination), `virtualInbound` on 15006 (each of the pod's
  ports, from ISTIO_META_POD_PORTS, an HTTP chain to the app on localhost, with Istio's stat prefix
  `inbound_0.0.0.0_<port>`; any other port passed through), and readiness on 15021, `/healthz/ready` answered by
  Envoy's own `/ready`.
- `pilot-agent request …` (the preStop hook) asks Envoy to drain its listeners; `pilot-agent wait` (a postStart
  hook) waits until 15021 answers.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ADMIN_PORT, OUTBOUND_PORT, INBOUND_PORT, READINESS_PORT = 15000, 15001, 15006, 15021
ENVOY = os.environ.get("ISTIO_PROXY_DEBUG_ENVOY", "/usr/local/bin/envoy")
BOOTSTRAP = Path(os.environ.get("ISTIO_PROXY_DEBUG_BOOTSTRAP", "/etc/istio/proxy/envoy-rev.json"))
IPTABLES = Path(__file__).resolve().with_name("istio_iptables.py")
# pilot-agent's own Envoy arguments (pkg/envoy/proxy.go), with its defaults: two workers.
ENVOY_ARGS = ["--drain-time-s", "45", "--drain-strategy", "immediate", "--local-address-ip-version", "v4",
              "--file-flush-interval-msec", "1000", "--disable-hot-restart", "--allow-unknown-static-fields",
              "--concurrency", "2", "-l", "warning", "--component-log-level", "misc:error"]
ROUTER = {"name": "envoy.filters.http.router",
          "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}


def address(host: str, port: int) -> dict:
    return {"socket_address": {"address": host, "port_value": port}}


def http_chain(stat_prefix: str, cluster: str, prefix: str = "/", rewrite: str | None = None) -> dict:
    route = {"cluster": cluster, **({"prefix_rewrite": rewrite} if rewrite else {})}
    manager = {
        "@type": ("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
                  "HttpConnectionManager"),
        "stat_prefix": stat_prefix,
        "route_config": {"name": stat_prefix, "virtual_hosts": [
            {"name": stat_prefix, "domains": ["*"], "routes": [{"match": {"prefix": prefix}, "route": route}]}]},
        "http_filters": [ROUTER],
    }
    return {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": manager}]}


def passthrough(stat_prefix: str, cluster: str) -> dict:
    proxy = {"@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
             "stat_prefix": stat_prefix, "cluster": cluster}
    return {"filters": [{"name": "envoy.filters.network.tcp_proxy", "typed_config": proxy}]}


def static_cluster(name: str, host: str, port: int) -> dict:
    return {"name": name, "type": "STATIC", "connect_timeout": "1s",
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": address(host, port)}}]}]}}


def original_destination(name: str, source: str | None = None) -> dict:
    cluster = {"name": name, "type": "ORIGINAL_DST", "lb_policy": "CLUSTER_PROVIDED", "connect_timeout": "1s"}
    if source:
        # Istio's inbound passthrough leaves from 127.0.0.6, which its iptables let through.
        cluster["upstream_bind_config"] = {"source_address": {"address": source, "port_value": 0}}
    return cluster


def pod_ports(value: str) -> list[int]:
    """The pod's container ports, from ISTIO_META_POD_PORTS as the injector writes it."""
    return sorted({int(p["containerPort"]) for p in json.loads(value or "[]")})


def bootstrap(*, pod: str, namespace: str, ip: str, workload: str, ports: list[int]) -> dict:
    original_dst = {"name": "envoy.filters.listener.original_dst", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst"}}
    inbound_chains = [{"filter_chain_match": {"destination_port": port},
                       **http_chain(f"inbound_0.0.0.0_{port}", f"inbound|{port}||")} for port in ports]
    return {
        "node": {"id": f"sidecar~{ip}~{pod}.{namespace}~{namespace}.svc.cluster.local",
                 "cluster": f"{workload}.{namespace}"},
        "admin": {"address": address("127.0.0.1", ADMIN_PORT)},
        "static_resources": {
            "listeners": [
                {"name": "virtualOutbound", "address": address("0.0.0.0", OUTBOUND_PORT), "use_original_dst": True,
                 "filter_chains": [passthrough("PassthroughCluster", "PassthroughCluster")]},
                {"name": "virtualInbound", "address": address("0.0.0.0", INBOUND_PORT),
                 "listener_filters": [original_dst], "filter_chains": inbound_chains,
                 "default_filter_chain": passthrough("InboundPassthroughCluster", "InboundPassthroughCluster")},
                {"name": f"0.0.0.0_{READINESS_PORT}", "address": address("0.0.0.0", READINESS_PORT),
                 "filter_chains": [http_chain("readiness", "agent", "/healthz/ready", "/ready")]},
            ],
            "clusters": [
                *(static_cluster(f"inbound|{port}||", "127.0.0.1", port) for port in ports),
                static_cluster("agent", "127.0.0.1", ADMIN_PORT),
                original_destination("PassthroughCluster"),
                original_destination("InboundPassthroughCluster", source="127.0.0.6"),
            ],
        },
    }


def run_proxy() -> int:
    env = os.environ
    config = bootstrap(pod=env["POD_NAME"], namespace=env["POD_NAMESPACE"], ip=env.get("INSTANCE_IP", "127.0.0.1"),
                       workload=env.get("ISTIO_META_WORKLOAD_NAME", env["POD_NAME"]),
                       ports=pod_ports(env.get("ISTIO_META_POD_PORTS", "[]")))
    BOOTSTRAP.parent.mkdir(parents=True, exist_ok=True)
    BOOTSTRAP.write_text(json.dumps(config, indent=1))
    envoy = subprocess.Popen([ENVOY, "-c", str(BOOTSTRAP), *ENVOY_ARGS])

    def forward(signum, _frame) -> None:
        envoy.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, forward)
    return envoy.wait()


def admin(method: str, path: str, timeout: float = 5) -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{ADMIN_PORT}{path}", method=method)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.status


def wait_ready(timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{READINESS_PORT}/healthz/ready", timeout=2) as response:
                if response.status == 200:
                    return 0
        except OSError:
            pass
        time.sleep(0.5)
    print(f"pilot-agent wait: 127.0.0.1:{READINESS_PORT}/healthz/ready did not answer within {timeout:.0f} s",
          file=sys.stderr)
    return 1


def main(argv: list[str]) -> int:
    command = argv[0] if argv else ""
    if command == "istio-iptables":
        os.execv(sys.executable, [sys.executable, str(IPTABLES), "legacy", *argv])
    if command == "proxy":
        return run_proxy()
    if command == "request":
        # `request --debug-port=15020 POST drain`: drain as pilot-agent's own drain handler asks Envoy to.
        return 0 if admin("POST", "/drain_listeners?graceful") == 200 else 1
    if command == "wait":
        return wait_ready()
    print(f"pilot-agent stand-in: {command!r} is not emulated", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
