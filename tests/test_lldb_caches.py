"""The stack's lldb settings keep lldb's caches in the debugger container's kept cache folder.

The pod's shared libraries are not in the debugger container, so lldb copies each one over the platform
connection (slowly: llvm#62750) into its module cache; the ELF's symbol table goes into the index cache.
Here a "pod" is a mount namespace in which the debuggee loads a library found only there, served by a
real `lldb-server platform` started in it; the real lldb attaches with the stack's own settings.
"""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from components.launch import lldb_settings, platform_commands
from tests.conftest import require_tool
from tests.lldb_session import free_port_block, run_lldb, running, wait_for_port

LIBRARY = "int pod_only_work(int n) { return n + 1; }\n"
PROGRAM = """\
#include <unistd.h>
int pod_only_work(int);
int main() { pause(); return pod_only_work(1); }
"""


@pytest.fixture
def pod(tmp_path):
    """A debuggee and an lldb-server platform in mount and PID namespaces of their own, where `lib` is
    mounted on a folder that is empty outside them."""
    if os.geteuid() != 0:
        pytest.skip("needs root for a mount namespace")
    for tool in ("unshare", "g++", "lldb", "lldb-server"):
        require_tool(tool)
    library_dir, mount_point = tmp_path / "lib", tmp_path / "pod-libs"
    library_dir.mkdir()
    mount_point.mkdir()
    (tmp_path / "libpod.cc").write_text(LIBRARY)
    (tmp_path / "prog.cc").write_text(PROGRAM)
    subprocess.run(["g++", "-g", "-shared", "-fPIC", "-o", str(library_dir / "libpod.so"),
                    str(tmp_path / "libpod.cc")], check=True)
    program = tmp_path / "prog"
    subprocess.run(["g++", "-g", "-o", str(program), str(tmp_path / "prog.cc"), f"-L{library_dir}", "-lpod",
                    f"-Wl,-rpath,{mount_point}"], check=True)
    port = free_port_block(5)
    server = os.path.realpath(require_tool("lldb-server"))
    pid_file = tmp_path / "debuggee.pid"
    inside = (f'mount --bind "{library_dir}" "{mount_point}"; "{program}" & echo $! > "{pid_file}"; '
              f'exec "{server}" platform --server --listen 127.0.0.1:{port} '
              f"--min-gdbserver-port {port + 1} --max-gdbserver-port {port + 5}")
    # Its own PID namespace too, as a pod has: the debuggee dies with the server when the test ends.
    with running(["unshare", "--mount", "--propagation", "private", "--pid", "--mount-proc", "--kill-child",
                  "sh", "-c", inside]):
        wait_for_port(port)
        deadline = time.monotonic() + 10
        while not pid_file.exists() or not pid_file.read_text().strip():
            assert time.monotonic() < deadline, "the debuggee did not start"
            time.sleep(0.05)
        assert not (mount_point / "libpod.so").exists(), "outside the pod the library is not there"
        yield {"port": port, "pid": int(pid_file.read_text()), "program": program, "home": tmp_path / "home",
               "cache": tmp_path / "cache"}


def attach(pod: dict) -> str:
    commands = [*lldb_settings(str(pod["cache"])), "log enable gdb-remote packets",
                *platform_commands(f"connect://127.0.0.1:{pod['port']}"), f"target create {pod['program']}",
                f"process attach --pid {pod['pid']}", "image list", "detach"]
    pod["home"].mkdir(exist_ok=True)
    return run_lldb(commands, home=pod["home"])


def opened_remotely(transcript: str, name: str) -> bool:
    """Whether the client opened the file on the platform (vFile:open, its path hex-encoded)."""
    return any("vFile:open:" in line and name.encode().hex() in line for line in transcript.splitlines())


def test_the_pods_libraries_are_copied_once_into_the_kept_module_cache(pod):
    first = attach(pod)
    assert "error:" not in first, first
    assert opened_remotely(first, "libpod.so"), "the first attach copies the pod's library"
    # Kept by build-id (remote-linux/.cache/<UUID>/), and linked by the remote host's path beside that.
    cached = list((pod["cache"] / "module-cache" / "remote-linux" / ".cache").glob("*/libpod.so"))
    assert len(cached) == 1, list(pod["cache"].rglob("*"))
    assert not list(pod["home"].rglob("libpod.so")), "nothing lands in the container's ~/.lldb"
    second = attach(pod)
    assert "error:" not in second, second
    assert str(cached[0]) in second, "the second attach loads the library from the module cache"
    assert not opened_remotely(second, "libpod.so"), "and copies nothing"


def test_the_elfs_symbol_table_goes_into_the_kept_index_cache(pod):
    attach(pod)
    assert list((pod["cache"] / "index-cache").glob("llvmcache-*prog*-symtab-*"))
