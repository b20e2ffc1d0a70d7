"""What istio-proxy and its pod get wherever the Envoy under debug runs: an injected sidecar
(components/target.py) or the pod istiod deploys for a waypoint or gateway (components/mesh_gateway.py)."""

from __future__ import annotations

from components.scripts import script

# Where the waiting istio-proxy writes the command that starts pilot-agent as its template would have.
START_FILE = "/tmp/start-pilot-agent.sh"


def waiting_command() -> list[str]:
    """startup mode: istio-proxy waits instead of running pilot-agent; the template's args follow as "$@"."""
    return ["/bin/sh", "-c", script("istio-proxy-wait.sh"), START_FILE]


def debugger_security_context() -> dict:
    """For lldb-server run inside the container as root through the image's sudo (walkthrough S11): ptrace of
    Envoy, which is not its child, and sudo's own uid and gid switch, over the template's drop ALL; a writable
    root for the start file. Never privileged."""
    return {
        "allowPrivilegeEscalation": True,
        "capabilities": {"add": ["SYS_PTRACE", "SETUID", "SETGID"]},
        "readOnlyRootFilesystem": False,
    }


def node_affinity(node: str) -> dict:
    """Pins the pod to a node by its exact name (matchFields metadata.name), through the scheduler: where
    lldb-server is started."""
    term = {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}}}
