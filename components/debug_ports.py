"""The debugger's ports, declared in one place: the lldb-server platform port and its gdbserver ports.

Every debug session through `lldb-server platform` opens a second connection to a gdbserver the
platform spawns. Unpinned, that port is random; pinned, a firewall, an iptables exclusion or a
port-forward can open exactly these ports. LLDB < 20 takes a range (--min/--max-gdbserver-port, max
exclusive); LLDB >= 20 serves every session on one port (--gdbserver-port), the first of the range.
"""

from __future__ import annotations

from dataclasses import dataclass

# Enough for a few debug sessions at once (each attach holds one gdbserver port until it detaches).
GDBSERVER_PORT_COUNT = 4
# lldb-server refuses gdbserver ports outside the "user port range" ("port number N is not in the valid
# user port range of 1024 - 49151"), so the platform port, which they follow, is bounded too.
USER_PORT_RANGE = (1024, 49151)
PLATFORM_PORT_RANGE = (USER_PORT_RANGE[0] - 1, USER_PORT_RANGE[1] - GDBSERVER_PORT_COUNT)


@dataclass(frozen=True)
class DebuggerPorts:
    platform: int

    @property
    def gdbserver(self) -> tuple[int, ...]:
        return tuple(range(self.platform + 1, self.platform + 1 + GDBSERVER_PORT_COUNT))

    @property
    def all(self) -> tuple[int, ...]:
        """Every port a firewall or a port-forward must open, ascending."""
        return (self.platform, *self.gdbserver)

    def lldb_server_args(self, lldb_major: int) -> list[str]:
        """The gdbserver-port arguments of `lldb-server platform` for an LLDB of that major version."""
        if lldb_major >= 20:
            return ["--gdbserver-port", str(self.gdbserver[0])]
        return ["--min-gdbserver-port", str(self.gdbserver[0]), "--max-gdbserver-port", str(self.gdbserver[-1] + 1)]
