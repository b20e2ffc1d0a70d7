"""A stand-in for `pilot-agent istio-iptables …` (istio-init's command), for tests: the *nat table the
flags of a release's injected istio-init ask for, applied with iptables-restore.

The rules are Istio 1.17's (istio@1.17.8 tools/istio-iptables/pkg/capture/run.go, and the table the
walkthrough captured; ../shared/research/istio-lldb-containerd.md §2), for the flags every release's
injector writes for a REDIRECT sidecar: -p, -z, -u, -g, -m REDIRECT, -i '*', -x "", -b '*', -d. Any other
flag or value is refused, so a release that asks for more is noticed rather than emulated wrongly. Later
releases add `! --dport 15008` conditions to some owner rules; no test traffic here goes to 15008.

    python3 tests/istio_iptables.py BACKEND istio-iptables FLAGS…   (BACKEND: legacy or nft)
"""

from __future__ import annotations

import subprocess
import sys

HBONE_PORT = 15008  # never captured inbound, always first
INBOUND_PASSTHROUGH_SOURCE = "127.0.0.6/32"
# The flags every release's template writes, with the only values this stand-in knows how to apply.
FIXED = {"-m": "REDIRECT", "-i": "*", "-x": "", "-b": "*"}
IGNORED_PREFIXES = ("--log_output_level=", "--log_as_json")


def parse(args: list[str]) -> dict[str, str]:
    if not args or args[0] != "istio-iptables":
        raise SystemExit(f"istio-iptables stand-in: expected `istio-iptables FLAGS…`, got {args[:1]}")
    flags, rest = {}, args[1:]
    while rest:
        flag = rest.pop(0)
        if flag.startswith(IGNORED_PREFIXES):
            continue
        if flag not in ("-p", "-z", "-u", "-g", "-d", *FIXED) or not rest:
            raise SystemExit(f"istio-iptables stand-in: flag {flag!r} is not emulated")
        flags[flag] = rest.pop(0)
    for flag, value in FIXED.items():
        if flags.get(flag, value) != value:
            raise SystemExit(f"istio-iptables stand-in: {flag} {flags[flag]!r} is not emulated")
    return flags


def nat_rules(args: list[str]) -> str:
    """The *nat table as iptables-save prints it after istio-iptables ran with these arguments."""
    flags = parse(args)
    outbound, inbound, uid = flags["-p"], flags["-z"], flags["-u"]
    gid = flags.get("-g", uid)
    excluded = [HBONE_PORT, *(int(p) for p in flags.get("-d", "").split(",") if p)]
    lines = [
        "*nat", ":PREROUTING ACCEPT [0:0]", ":INPUT ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]",
        ":POSTROUTING ACCEPT [0:0]", ":ISTIO_INBOUND - [0:0]", ":ISTIO_IN_REDIRECT - [0:0]", ":ISTIO_OUTPUT - [0:0]",
        ":ISTIO_REDIRECT - [0:0]", "-A PREROUTING -p tcp -j ISTIO_INBOUND", "-A OUTPUT -p tcp -j ISTIO_OUTPUT",
        *(f"-A ISTIO_INBOUND -p tcp -m tcp --dport {port} -j RETURN" for port in excluded),
        "-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT",
        f"-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports {inbound}",
        f"-A ISTIO_OUTPUT -s {INBOUND_PASSTHROUGH_SOURCE} -o lo -j RETURN",
        f"-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -o lo -m owner --uid-owner {uid} -j ISTIO_IN_REDIRECT",
        f"-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner {uid} -j RETURN",
        f"-A ISTIO_OUTPUT -m owner --uid-owner {uid} -j RETURN",
        f"-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -o lo -m owner --gid-owner {gid} -j ISTIO_IN_REDIRECT",
        f"-A ISTIO_OUTPUT -o lo -m owner ! --gid-owner {gid} -j RETURN",
        f"-A ISTIO_OUTPUT -m owner --gid-owner {gid} -j RETURN",
        "-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN",
        "-A ISTIO_OUTPUT -j ISTIO_REDIRECT",
        f"-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports {outbound}",
        "COMMIT",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    backend, args = argv[0], argv[1:]
    subprocess.run([f"iptables-{backend}-restore"], input=nat_rules(args), text=True, check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
