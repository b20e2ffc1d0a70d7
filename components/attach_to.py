"""attachTo's value: the pod whose running Envoy is debugged in place, `<namespace>/<pod>[/<container>]`."""

from __future__ import annotations

import re
from dataclasses import dataclass

# The sidecar's container, and a waypoint's or a gateway's: where Istio runs Envoy.
DEFAULT_CONTAINER = "istio-proxy"
_LABEL = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
_SUBDOMAIN = rf"{_LABEL}(\.{_LABEL})*"
_ATTACH_TO = re.compile(rf"^(?P<namespace>{_LABEL})/(?P<pod>{_SUBDOMAIN})(/(?P<container>{_LABEL}))?$")


@dataclass(frozen=True)
class AttachTo:
    namespace: str
    pod: str
    container: str = DEFAULT_CONTAINER

    def __str__(self) -> str:
        return f"{self.namespace}/{self.pod}/{self.container}"


def parse_attach_to(value: str) -> AttachTo | None:
    """`<namespace>/<pod>[/<container>]`, each as Kubernetes names them; None when it is not that."""
    match = _ATTACH_TO.match(value)
    if match is None or len(match["pod"]) > 253:
        return None
    return AttachTo(match["namespace"], match["pod"], match["container"] or DEFAULT_CONTAINER)
