"""S11: the pod's traffic capture, as `iptables-restore` input, and the init container command that applies it.

`nat_rules` renders the *nat table exactly as `iptables-save` prints it after Istio 1.17's `istio-iptables`
(`-p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x "" -b '*' -d 15090,15021,15020`) has run, with the two
changes of the walkthrough's startup-debugging pod:

- every debugger port gets its own RETURN in ISTIO_INBOUND, after Istio's own excluded ports, so an
  lldb-server inside the pod is reached directly instead of landing on Envoy's inbound listener;
- outbound capture only for the app user: `! --uid-owner <app>` and `! --gid-owner <app>` RETURN rules, at
  the places the walkthrough puts them, so only connections of that uid *and* gid go to Envoy's 15001. A
  developer's shell, lldb-server or root in the pod reach the network directly.

The text is in iptables-save's canonical form (counters zeroed, no comments), so `iptables-save -t nat` in
the pod prints exactly these lines again; the tests check that against a real network namespace.
"""

from __future__ import annotations

from collections.abc import Iterable

# istio-iptables 1.17 defaults (istio@1.17:tools/istio-iptables, pkg/kube/inject injection template).
ISTIO_PROXY_UID = 1337
ISTIO_PROXY_GID = 1337
OUTBOUND_CAPTURE_PORT = 15001  # -p: Envoy's outbound listener
INBOUND_CAPTURE_PORT = 15006  # -z: Envoy's inbound listener
# Never captured inbound: the HBONE tunnel port 15008 (always first), then -d 15090,15021,15020.
ISTIO_EXCLUDED_INBOUND_PORTS = (15008, 15090, 15021, 15020)
# The source address Envoy uses for inbound passthrough connections to the app.
INBOUND_PASSTHROUGH_SOURCE = "127.0.0.6/32"
# The init container's script ends its here-document with this line; the rules never contain it.
_HEREDOC_END = "RULES"


def _check_id(what: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**31:
        raise ValueError(f"{what} must be an integer id from 0 to 2147483647, not {value!r}")


def nat_rules(excluded_inbound_ports: Iterable[int] = (), app_uid: int | None = None) -> str:
    """The *nat table of the pod, as `iptables-restore` input and as `iptables-save -t nat` prints it.

    `excluded_inbound_ports`: ports never redirected inbound (the debugger's), in the given order.
    `app_uid`: the only uid and gid whose outbound TCP is captured; None keeps Istio's default capture
    (everything but the proxy's own traffic).
    """
    ports = list(excluded_inbound_ports)
    for port in ports:
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise ValueError(f"an excluded inbound port must be an integer from 1 to 65535, not {port!r}")
    if len(set(ports)) != len(ports):
        raise ValueError(f"excluded inbound ports must not repeat: {ports}")
    clash = sorted(set(ports) & {*ISTIO_EXCLUDED_INBOUND_PORTS, OUTBOUND_CAPTURE_PORT, INBOUND_CAPTURE_PORT})
    if clash:
        raise ValueError(f"ports {clash} are Istio's own; choose debugger ports outside them")
    if app_uid is not None:
        _check_id("app_uid", app_uid)
        if app_uid in (ISTIO_PROXY_UID, ISTIO_PROXY_GID):
            raise ValueError(f"app_uid {app_uid} is the proxy's own uid/gid; its traffic is never captured")

    uid, gid = ISTIO_PROXY_UID, ISTIO_PROXY_GID
    lines = [
        "*nat",
        ":PREROUTING ACCEPT [0:0]",
        ":INPUT ACCEPT [0:0]",
        ":OUTPUT ACCEPT [0:0]",
        ":POSTROUTING ACCEPT [0:0]",
        ":ISTIO_INBOUND - [0:0]",
        ":ISTIO_IN_REDIRECT - [0:0]",
        ":ISTIO_OUTPUT - [0:0]",
        ":ISTIO_REDIRECT - [0:0]",
        "-A PREROUTING -p tcp -j ISTIO_INBOUND",
        "-A OUTPUT -p tcp -j ISTIO_OUTPUT",
    ]
    lines += [f"-A ISTIO_INBOUND -p tcp -m tcp --dport {p} -j RETURN" for p in (*ISTIO_EXCLUDED_INBOUND_PORTS, *ports)]
    lines += [
        "-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT",
        f"-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports {INBOUND_CAPTURE_PORT}",
        f"-A ISTIO_OUTPUT -s {INBOUND_PASSTHROUGH_SOURCE} -o lo -j RETURN",
        f"-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -o lo -m owner --uid-owner {uid} -j ISTIO_IN_REDIRECT",
        f"-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner {uid} -j RETURN",
        f"-A ISTIO_OUTPUT -m owner --uid-owner {uid} -j RETURN",
    ]
    if app_uid is not None:
        lines.append(f"-A ISTIO_OUTPUT -m owner ! --uid-owner {app_uid} -j RETURN")
    lines += [
        f"-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -o lo -m owner --gid-owner {gid} -j ISTIO_IN_REDIRECT",
        f"-A ISTIO_OUTPUT -o lo -m owner ! --gid-owner {gid} -j RETURN",
    ]
    if app_uid is not None:
        lines.append(f"-A ISTIO_OUTPUT -m owner ! --gid-owner {app_uid} -j RETURN")
    lines += [
        f"-A ISTIO_OUTPUT -m owner --gid-owner {gid} -j RETURN",
        "-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN",
        "-A ISTIO_OUTPUT -j ISTIO_REDIRECT",
        f"-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports {OUTBOUND_CAPTURE_PORT}",
        "COMMIT",
    ]
    return "\n".join(lines) + "\n"


def init_command(rules: str) -> list[str]:
    """The init container's command: apply `rules` with iptables-restore, then log the table as applied.

    Plain POSIX sh with a quoted here-document, so the rules reach iptables-restore byte for byte. The
    proxyv2 image (and so the debug image) has iptables, set to iptables-legacy, as istio-iptables uses it.
    iptables-restore replaces the whole nat table, so a re-run gives the same table.
    """
    if not rules.endswith("\n") or _HEREDOC_END in rules.splitlines():
        raise ValueError("the rules must end with a newline and contain no here-document delimiter line")
    script = f"set -e\niptables-restore <<'{_HEREDOC_END}'\n{rules}{_HEREDOC_END}\niptables-save -t nat\n"
    return ["/bin/sh", "-c", script]
