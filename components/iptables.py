"""S11: the pod's traffic capture in startup mode, as the pod asks the cluster's own injector for it.

Istio's `istio-init` runs `istio-iptables` with flags its template derives from the pod's annotations. The
walkthrough's capture differs from the default in two ways, each expressed where Istio can express it:

- the debugger ports are never captured inbound, so an lldb-server inside the pod is reached directly:
  `traffic.sidecar.istio.io/excludeInboundPorts` puts them in that release's own `-d` list;
- outbound capture only for the app user: istio-iptables has no flag for it (`-u`/`-g` exclude the proxy's
  ids, not everyone else's), so the pod's `istio-init` override runs the release's own istio-iptables, then
  components/scripts/istio-init-capture.sh returns every other uid and gid from ISTIO_REDIRECT, the chain
  that redirects to Envoy's outbound listener. A developer's shell, lldb-server or root reach the network
  directly; the table's other rules (loopback, the proxy's own traffic, inbound) stay the release's.
"""

from __future__ import annotations

from collections.abc import Iterable

from components.scripts import script

# istio-iptables' proxy uid and gid (-u/-g): the istio-proxy container's user, never captured.
ISTIO_PROXY_UID = 1337
EXCLUDED_INBOUND_PORTS_ANNOTATION = "traffic.sidecar.istio.io/excludeInboundPorts"


def excluded_inbound_ports_annotation(ports: Iterable[int]) -> dict[str, str]:
    """The annotation that adds ports to the template's `-d` (never captured inbound)."""
    return {EXCLUDED_INBOUND_PORTS_ANNOTATION: ",".join(str(port) for port in ports)}


def capture_override(name: str, image: str, app_uid: int) -> dict:
    """The init container as the pod declares it: the injector keeps its own image, args (`istio-iptables …`),
    security context and resources, and takes this command, which runs them and then narrows the capture."""
    valid = isinstance(app_uid, int) and not isinstance(app_uid, bool) and 0 < app_uid < 2**31
    if not valid or app_uid == ISTIO_PROXY_UID:
        raise ValueError(f"app uid {app_uid!r} must be an integer id from 1 to 2147483647 other than the "
                         f"proxy's {ISTIO_PROXY_UID}")
    return {
        "name": name,
        "image": image,
        "command": ["/bin/sh", "-c", script("istio-init-capture.sh"), name],
        "env": [{"name": "APP_UID", "value": str(app_uid)}],
    }
