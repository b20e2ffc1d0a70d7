#!/usr/bin/python3
"""runc for the tests' Docker engine on a machine whose own capability bounding set lacks some capabilities.

A privileged container (the stack's debugger, as `docker run --privileged` makes it) asks runc for every
capability the kernel knows; where the sandbox this machine runs in withholds one (CAP_SYS_RESOURCE here), runc
cannot apply it and the container does not start ("unable to apply caps"). The tests' dockerd takes this as its
runtime: it removes from a container's (or an exec's) process the capabilities outside this process's own bounding
set, then runs Debian's runc with the same arguments. Nothing else of the spec changes, so everything else
privileged means (devices, no seccomp or AppArmor profile) stays as the engine made it.
"""

import json
import os
import re
import sys

RUNC = "/usr/sbin/runc"
CAPABILITY_NAMES = (
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP",
    "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER",
    "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
    "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP",
    "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF",
    "CHECKPOINT_RESTORE",
)


def withheld() -> set[str]:
    """The capabilities this process may never hold (absent from its bounding set)."""
    with open("/proc/self/status") as status:
        bounding = int(re.search(r"CapBnd:\s*([0-9a-f]+)", status.read()).group(1), 16)
    return {f"CAP_{name}" for bit, name in enumerate(CAPABILITY_NAMES) if not bounding >> bit & 1}


def bound(process: dict, outside: set[str]) -> None:
    capabilities = process.get("capabilities") or {}
    for kind, names in capabilities.items():
        capabilities[kind] = [name for name in names if name not in outside]


def rewrite(path: str, process_of) -> None:
    with open(path) as f:
        spec = json.load(f)
    bound(process_of(spec), withheld())
    with open(path, "w") as f:
        json.dump(spec, f)


def argument(args: list[str], flag: str) -> str | None:
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def main() -> None:
    args = sys.argv[1:]
    if "create" in args or "run" in args:
        bundle = argument(args, "--bundle") or argument(args, "-b") or "."
        rewrite(os.path.join(bundle, "config.json"), lambda spec: spec.get("process") or {})
    elif "exec" in args and (process := argument(args, "--process") or argument(args, "-p")):
        rewrite(process, lambda spec: spec)
    os.execv(RUNC, [RUNC, *args])


if __name__ == "__main__":
    main()
