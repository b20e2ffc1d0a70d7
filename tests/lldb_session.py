"""Real lldb on loopback for the tests: a debuggee, an `lldb-server platform`, and the `lldb` client."""

from __future__ import annotations

import contextlib
import os
import queue
import random
import re
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from components.debug_ports import USER_PORT_RANGE, DebuggerPorts
from tests.conftest import ROOT, require_tool

# A debuggee whose stack is known: main → demo::handle_request → demo::wait_for_debugger → pause().
DEBUGGEE_SOURCE = """\
#include <unistd.h>
namespace demo {
[[gnu::noinline]] void wait_for_debugger() {
  pause();  // parked here
}
[[gnu::noinline]] void handle_request(int n) {
  if (n > 0) wait_for_debugger();  // called here
}
}  // namespace demo
int main() { demo::handle_request(1); }
"""


def source_line(marker: str, source: str = DEBUGGEE_SOURCE) -> int:
    return next(i for i, line in enumerate(source.splitlines(), 1) if marker in line)


def compile_debuggee(directory: Path, name: str = "prog", extra: tuple[str, ...] = ()) -> Path:
    """Compiles the debuggee with -g; `extra` may pin the build-id (-Wl,--build-id=0x…)."""
    require_tool("g++")
    source = directory / "prog.cc"
    source.write_text(DEBUGGEE_SOURCE)
    binary = directory / name
    subprocess.run(["g++", "-g", "-O0", *extra, "-o", str(binary), str(source)], check=True)
    return binary


def build_id(path: Path) -> str:
    notes = subprocess.run(["readelf", "-n", str(path)], check=True, capture_output=True, text=True).stdout
    return next(line.split()[-1] for line in notes.splitlines() if "Build ID:" in line)


def free_port_block(count: int) -> int:
    """The first of `count` consecutive loopback ports that are free now."""
    for _ in range(200):
        first = random.randint(20000, USER_PORT_RANGE[1] - count)
        with contextlib.ExitStack() as stack:
            try:
                for port in range(first, first + count):
                    sock = stack.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return first
    raise RuntimeError("no free block of loopback ports")


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


@contextlib.contextmanager
def running(args: list[str], **kwargs) -> Iterator[subprocess.Popen]:
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kwargs)
    try:
        yield process
    finally:
        process.kill()
        process.wait()


@contextlib.contextmanager
def platform_server(server: str | None = None, lldb_major: int = 14) -> Iterator[DebuggerPorts]:
    """`lldb-server platform` on loopback with its gdbserver ports pinned as the project pins them.

    Started by its real path: through Debian's /usr/bin symlink it cannot find the gdbserver it spawns.
    """
    server = server or os.path.realpath(require_tool("lldb-server"))
    ports = DebuggerPorts(free_port_block(1 + len(DebuggerPorts(0).gdbserver)))
    args = [server, "platform", "--server", "--listen", f"127.0.0.1:{ports.platform}",
            *ports.lldb_server_args(lldb_major)]
    with running(args):
        wait_for_port(ports.platform)
        yield ports


def lldb_environment() -> dict[str, str]:
    """Debian's lldb 14 looks for its Python module in the wrong place; point it at the right one."""
    env = dict(os.environ)
    for candidate in sorted(Path("/usr/lib").glob("llvm-*/lib/python3*/dist-packages")):
        if (candidate / "lldb" / "embedded_interpreter.py").exists():
            env["PYTHONPATH"] = str(candidate)
    return env


@dataclass(frozen=True)
class LldbClient:
    name: str
    lldb: str
    env: dict[str, str]


def debian_lldb(major: int) -> LldbClient | None:
    """Debian's lldb-<major> with its libraries, unpacked into .cache by `make lldb-clients` (beside lldb 14,
    which its packages would replace): the LLVM releases CodeLLDB bundles. None when it is not there."""
    root = ROOT / ".cache" / f"lldb-{major}" / "root"
    llvm = root / "usr" / "lib" / f"llvm-{major}"
    if not (root.parent / ".unpacked").exists():
        return None
    python = next(llvm.glob("lib/python3*/*-packages"))
    libraries = f"{llvm / 'lib'}:{root / 'usr' / 'lib' / 'x86_64-linux-gnu'}"
    env = {**os.environ, "LD_LIBRARY_PATH": libraries, "PYTHONPATH": str(python)}
    version = subprocess.run([str(llvm / "bin" / "lldb"), "--version"], capture_output=True, text=True, env=env,
                             check=True).stdout
    return LldbClient(f"Debian lldb {version.split()[2]}", str(llvm / "bin" / "lldb"), env)


def run_lldb(commands: list[str], timeout: float = 120, cwd: Path | None = None, home: Path | None = None,
             client: LldbClient | None = None) -> str:
    """Runs an lldb client (by default Debian's lldb, 14) in batch mode with these commands (in `cwd`, with
    `home` as its HOME); returns what it printed."""
    lldb, environment = (client.lldb, client.env) if client else (require_tool("lldb"), lldb_environment())
    args = [lldb, "--batch", "--no-lldbinit"]
    for command in commands:
        args += ["-o", command]
    env = environment if home is None else {**environment, "HOME": str(home)}
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env)
    return done.stdout + done.stderr


def in_debugger_view(work: Path, command: list[str], tools: dict[str, Path] | None = None) -> list[str]:
    """`command` on this machine as in the stack's debugger container: in a mount namespace of its own where the
    workspace under `work` is where the container mounts it (/work and /home/.cache). `tools`: folders of this
    machine the command needs, by name, at /mnt/<name> (the workspace's /work may hide where they are here)."""
    from components.workspace import CONTAINER_CACHE_DIR, CONTAINER_SOURCE_DIR

    binds = "".join(f"mkdir /mnt/{name}; mount --bind {folder} /mnt/{name}; "
                    for name, folder in (tools or {}).items())
    script = (f"set -e; mount --make-rprivate /; mount -t tmpfs tmpfs /mnt; {binds}"
              f"mount --bind {work / 'work'} {CONTAINER_SOURCE_DIR}; "
              f"mount -t tmpfs tmpfs /home; mkdir -p {CONTAINER_CACHE_DIR}; "
              f"mount --bind {work / 'home' / '.cache'} {CONTAINER_CACHE_DIR}; "
              'exec "$@"')
    return ["unshare", "--mount", "--", "/bin/bash", "-c", script, "debugger", *command]


class InteractiveLldb:
    """The lldb CLI driven as a developer types into it: each command on its stdin, its output read as it comes.
    lldb echoes every line it reads after the previous one is done, so the end of a command's output is where the
    comment line sent after it comes back. Fed by a pipe, lldb runs the process asynchronously: `continue` returns
    at once, and a stop is printed when it happens (`wait_for`)."""

    def __init__(self, command: list[str], env: dict[str, str]):
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True, env=env, bufsize=1)
        self.transcript = ""
        self._unread = ""
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._count = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def wait_for(self, pattern: str, timeout: float) -> str:
        """Everything printed up to the first line matching `pattern` (a regular expression) since the last read."""
        deadline = time.monotonic() + timeout
        compiled = re.compile(pattern)
        while True:
            for index, line in enumerate(lines := self._unread.splitlines(keepends=True)):
                if compiled.search(line):
                    self._unread = "".join(lines[index + 1:])
                    return "".join(lines[:index + 1])
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"lldb did not print /{pattern}/ within {timeout:.0f} s:\n"
                                     f"{self.transcript[-4000:]}")
            with contextlib.suppress(queue.Empty):
                line = self._lines.get(timeout=min(remaining, 0.5))
                if line is None:
                    raise AssertionError(f"lldb exited ({self.process.wait()}) before /{pattern}/:\n"
                                         f"{self.transcript[-4000:]}")
                self.transcript += line
                self._unread += line

    def run(self, command: str, timeout: float = 120) -> str:
        """`command`, then what it printed once lldb has finished it."""
        self._count += 1
        marker = f"# ipd-done-{self._count}"
        self.process.stdin.write(f"{command}\n{marker}\n")
        self.process.stdin.flush()
        return self.wait_for(re.escape(marker), timeout)

    def continue_after_attach_wait(self, settle: float = 5) -> str:
        """`continue` after `process attach --waitfor`, and once more if the process stops again by SIGSTOP within
        `settle` seconds. The attach-wait finds the process by name, which the kernel sets inside execve: attached
        before the exec is done, lldb-server takes the exec's SIGTRAP for its attach stop, and its own SIGSTOP, still
        pending, stops the process again where it was. A developer sees that stop, and continues."""
        said = self.run("continue")
        if "stop reason" not in said:
            with contextlib.suppress(AssertionError):
                said += self.wait_for(r"stop reason = ", timeout=settle)
        if "stop reason" in said:
            assert "stop reason = signal SIGSTOP" in said, said
            said += self.run("continue")
        return said

    def detach(self, timeout: float = 60) -> str:
        """`detach`, and what lldb said of it: "Process N detached" comes asynchronously, maybe after the marker."""
        said = self.run("detach", timeout)
        return said if "detached" in said else said + self.wait_for(r"Process \d+ detached", timeout)

    def close(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(OSError):
                self.process.stdin.write("quit\n")
                self.process.stdin.close()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)
