"""Why bazelBuildArgs turns fission off (--fission=no).

istio/proxy's envoy.bazelrc sets `--fission=dbg,opt`: a debug build's DWARF would stay in one .dwo file per
object, which the ELF names relative to the compilation dir bazel records, /proc/self/cwd — the cwd of the
debugger, not of the build. Here real clang builds a bazel-shaped execution root both ways, and the real
lldb, started elsewhere (as VS Code starts it) with the stack's own settings and source map, loses the
function's source in the split build and has it in the whole one.
"""

from __future__ import annotations

import subprocess

import pytest

from components.launch import LLDB_CACHE_DIR, built_source_map, lldb_commands
from tests.conftest import require_tool
from tests.lldb_session import run_lldb

SOURCE = "int work(int n) {\n  return n + 1;\n}\nint main() { return work(1); }\n"


def build(root, split: bool):
    """An execution root with source/m.cc compiled as bazel compiles (PWD=/proc/self/cwd) into bazel-out."""
    compiler = require_tool("clang++")
    (root / "source").mkdir(parents=True)
    (root / "source" / "m.cc").write_text(SOURCE)
    out = root / "bazel-out" / "k8-dbg" / "bin"
    (out / "_objs").mkdir(parents=True)
    flags = ["-g", "-O0", "-gdwarf-5", "-fdebug-compilation-dir=/proc/self/cwd", *(["-gsplit-dwarf"] if split else [])]
    subprocess.run([compiler, *flags, "-c", "source/m.cc", "-o", "bazel-out/k8-dbg/bin/_objs/m.o"], cwd=root,
                   check=True)
    subprocess.run([compiler, "-o", str(out / "envoy"), str(out / "_objs" / "m.o")], check=True)
    return out / "envoy"


def breakpoint_line(elf, execroot, cwd, cache) -> str:
    session = lldb_commands(mode="attach", elf=str(elf), pid=1, source_map=built_source_map(str(execroot), []),
                            connect_url="connect://127.0.0.1:1")
    # lldb's caches in the test's folder, not in the machine's /home/.cache.
    local = [c.replace(LLDB_CACHE_DIR, str(cache)) for c in session if c.startswith(("settings ", "target create "))]
    transcript = run_lldb([*local, "breakpoint set --name work"], cwd=cwd)
    return next(line for line in transcript.splitlines() if line.startswith("Breakpoint 1:"))


@pytest.mark.parametrize(("split", "from_execroot", "has_source"), [
    (True, False, False),  # fission, as envoy.bazelrc has it: lost
    (True, True, True),  # found only when lldb happens to run in the execution root
    (False, False, True),  # --fission=no: the ELF holds it all
])
def test_lldb_finds_a_split_builds_source_only_from_the_execroot(tmp_path, split, from_execroot, has_source):
    execroot = tmp_path / "execroot"
    elf = build(execroot, split)
    assert (execroot / "bazel-out" / "k8-dbg" / "bin" / "_objs" / "m.dwo").exists() == split
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    line = breakpoint_line(elf, execroot, execroot if from_execroot else elsewhere, tmp_path / "lldb-cache")
    assert line.startswith("Breakpoint 1: where = envoy`work(int) + "), line
    assert (" at m.cc:2" in line) == has_source, line
