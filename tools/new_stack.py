"""Writes Pulumi.<name>.yaml for a new developer stack: the dev stack's values, with everything that two
stacks on one Docker host and one cluster must not share made the developer's own.

    python tools/new_stack.py NAME --work-dir DIR          (what `make stack NAME=…` runs)
    python tools/new_stack.py NAME --placement cluster     (`make stack NAME=… PLACEMENT=cluster`)

Shared on purpose: the cluster, the nodes and their containerd (each stack adds its own registry entry),
the Docker host, its docker.sock and the pulled images. Per stack: the registry (its own container, host
port and data under the developer's workDir), the Docker network and its subnet, the containers, the
Kubernetes namespace, and the node-side lldb-server port and pidfile. Values are picked so that they
collide with none of the stack files already in the project.
"""

from __future__ import annotations

import argparse
import ipaddress
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PROJECT = "istio-proxy-debug"
TEMPLATE = "dev"
# Each stack takes one step: registry 5000, 5001, …; lldb-server 2159, 2164, … (it uses 5 ports);
# the Docker network 172.18.0.0/16, 172.19.0.0/16, …
REGISTRY_PORT, LLDB_SERVER_PORT, LLDB_PORTS_PER_STACK = 5000, 2159, 5
# With placement cluster the registry port is its Service's NodePort, unique in the whole cluster.
REGISTRY_NODE_PORT, NODE_PORT_MAX = 30500, 32767
FIRST_SUBNET = ipaddress.ip_network("172.18.0.0/16")
STACK_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,30}[a-z0-9])?$")


def stack_files(root: Path = ROOT) -> dict[str, dict]:
    """Every stack's own config, by stack name, without the project prefix."""
    stacks = {}
    for path in sorted(root.glob("Pulumi.*.yaml")):
        config = (yaml.safe_load(path.read_text()) or {}).get("config") or {}
        stacks[path.name.split(".")[1]] = {k.split(":", 1)[-1]: v for k, v in config.items()}
    return stacks


def defaults(root: Path = ROOT) -> dict:
    project = yaml.safe_load((root / "Pulumi.yaml").read_text())
    return {k: d["default"] for k, d in project["config"].items() if "default" in d}


def allocate(name: str, work_dir: str | None, existing: dict[str, dict], project_defaults: dict,
             placement: str = "host") -> dict:
    """The new stack's config: the template's, with a free registry port, subnet, lldb-server port and
    namespace. With placement cluster: no workDir, and the registry port a free NodePort."""
    if not STACK_NAME.match(name) or name == TEMPLATE:
        raise ValueError(f"stack name {name!r}: expected lowercase letters, digits and '-' (at most 32), "
                         f"other than {TEMPLATE}")
    if name in existing:
        raise ValueError(f"Pulumi.{name}.yaml exists already")

    def used(key: str) -> set:
        return {str(stack.get(key, project_defaults.get(key))) for stack in existing.values()}

    def first_free(key: str, candidates) -> object:
        taken = used(key)
        return next(c for c in candidates if str(c) not in taken)

    if placement not in ("host", "cluster"):
        raise ValueError(f"placement {placement!r}: expected host or cluster")
    if placement == "host" and not work_dir:
        raise ValueError("a host stack needs --work-dir: the folder for the source, the cache and the registry")
    template = dict(existing.get(TEMPLATE, {}))
    # The walkthrough's own choices stay with it: a new stack has its own folder and downloads the Envoy
    # of the project's default Istio release.
    for walkthrough_only in ("workDir", "envoySource", "istioVersion"):
        template.pop(walkthrough_only, None)
    namespace = f"{project_defaults['namespace']}-{name}"[:63].rstrip("-")
    registry_ports = (range(REGISTRY_NODE_PORT, NODE_PORT_MAX + 1) if placement == "cluster"
                      else range(REGISTRY_PORT, REGISTRY_PORT + 1000))
    config = {
        **template,
        # In the cluster lldb-server must take code-server's connections, whose address moves with its pod.
        **({"workDir": work_dir} if placement == "host" else {"placement": placement}),
        "namespace": namespace,
        "registryPort": first_free("registryPort", registry_ports),
        "lldbServerPort": first_free("lldbServerPort", range(LLDB_SERVER_PORT, 40000, LLDB_PORTS_PER_STACK)),
        "dockerNetworkSubnet": first_free("dockerNetworkSubnet", _subnets_from(FIRST_SUBNET)),
    }
    return config


def _subnets_from(first: ipaddress.IPv4Network):
    """172.18.0.0/16, 172.19.0.0/16, … up to 172.31.0.0/16 (the private 172.16.0.0/12 block)."""
    block = ipaddress.ip_network("172.16.0.0/12")
    for subnet in block.subnets(new_prefix=first.prefixlen):
        if subnet >= first:
            yield str(subnet)


def write(name: str, config: dict, root: Path = ROOT) -> Path:
    path = root / f"Pulumi.{name}.yaml"
    lines = {f"{PROJECT}:{k}": v for k, v in config.items()}
    header = f"# {name}'s own stack, made by `make stack NAME={name}` from the {TEMPLATE} stack's values.\n"
    path.write_text(header + yaml.safe_dump({"config": lines}, sort_keys=True))
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name")
    parser.add_argument("--work-dir", help="host placement: absolute folder for the source, cache and registry")
    parser.add_argument("--placement", default="host", choices=("host", "cluster"))
    args = parser.parse_args()
    try:
        config = allocate(args.name, args.work_dir, stack_files(), defaults(), args.placement)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    path = write(args.name, config)
    print(f"wrote {path.name}: namespace {config['namespace']}, registry port {config['registryPort']}, "
          f"network {config['dockerNetworkSubnet']}, lldb-server port {config['lldbServerPort']}")
    if args.placement == "cluster":
        print(f"set registryHost to a node's address, and: pulumi config set --stack {args.name} --secret "
              "codeServerPassword <at least 12 characters>")
    return 0


if __name__ == "__main__":
    sys.exit(main())
