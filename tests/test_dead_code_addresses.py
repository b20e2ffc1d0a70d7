"""The stack's link marks the addresses of discarded inline copies as dead, and lldb still debugs the ELF.

At -O0 every translation unit emits its own copy of each inline function and template it uses; the linker
keeps one. The debug info of every other copy still claims an address range: lld writes 0 for it (GNU ld
the kept copy's address), so lldb's address → compile-unit table holds every unit's copy of every inline
function (about 2 million ranges in bench/synthetic.py's 1000 units) and builds and sorts it on every
attach. The `-z dead-reloc-in-nonalloc=.debug_addr=…` of bazelBuildArgs makes lld write the DWARF 5
tombstone (-1) instead, which LLVM's range reader, and so lldb, skips. Here real clang and lld link
exactly as bazelBuildArgs says, and the real lldb debugs the result.
"""

from __future__ import annotations

import re
import subprocess

import pytest

from components.bazel_args import marks_dead_code
from tests.conftest import require_tool
from tests.lldb_session import run_lldb, source_line
from tests.mock_stack import default_bazel_options

TOMBSTONE = "ffffffffffffffff"
HEADER = """\
#pragma once
inline int shared_work(int n) {
  return n * 2 + 1;  // shared line
}
"""
UNITS = {
    "a.cc": '#include "shared.h"\nint a_entry(int n) { return shared_work(n); }\n',
    "b.cc": '#include "shared.h"\nint b_entry(int n) { return shared_work(n) + 1; }\n',
    "main.cc": "int a_entry(int);\nint b_entry(int);\n"
               "int main(int argc, char**) { return a_entry(argc) + b_entry(argc); }\n",
}


@pytest.fixture(scope="module")
def linked(module_tmp):
    """The same objects linked as the stack links Envoy, and by lld as it comes (the control)."""
    compiler = require_tool("clang++")
    require_tool("ld.lld")
    require_tool("readelf")
    work = module_tmp("dead-code")
    (work / "shared.h").write_text(HEADER)
    objects = []
    for name, text in UNITS.items():
        (work / name).write_text(text)
        subprocess.run([compiler, "-g", "-O0", *default_bazel_options("copt"), "-c", name], cwd=work, check=True)
        objects.append(name.replace(".cc", ".o"))
    linkopts = default_bazel_options("linkopt")
    plain = [o for o in linkopts if not marks_dead_code(o)]
    for name, options in (("stack", linkopts), ("plain", plain)):
        subprocess.run([compiler, *options, "-o", name, *objects], cwd=work, check=True)
    return work


def debug_addresses(elf) -> list[str]:
    dump = subprocess.run(["readelf", "--debug-dump=addr", str(elf)], capture_output=True, text=True, check=True)
    return re.findall(r"^\s+\d+:\s+([0-9a-f]{16})$", dump.stdout, re.MULTILINE)


def test_the_default_build_args_link_with_lld_and_mark_dead_addresses():
    linkopts = default_bazel_options("linkopt")
    assert "-fuse-ld=lld" in linkopts
    assert f"-Wl,-z,dead-reloc-in-nonalloc=.debug_addr=0x{TOMBSTONE}" in linkopts


def test_the_discarded_copy_is_marked_dead_where_lld_alone_says_zero(linked):
    stack, plain = debug_addresses(linked / "stack"), debug_addresses(linked / "plain")
    assert len(stack) == len(plain) > 0
    # One of the two units' copies of shared_work is discarded: its address, and nothing else, differs.
    differing = [(s, p) for s, p in zip(stack, plain, strict=True) if s != p]
    assert differing == [(TOMBSTONE, "0" * 16)], differing


def test_lldb_resolves_and_stops_in_the_kept_copy_from_both_units(linked):
    require_tool("lldb")
    shared = source_line("shared line", HEADER)
    transcript = run_lldb([
        f"target create {linked / 'stack'}",
        f"breakpoint set --file shared.h --line {shared}",
        "breakpoint set --name b_entry",
        "process launch",
        "bt",
        "process continue",
        "process continue",
        "bt",
        "process kill",
    ])
    assert re.search(rf"Breakpoint 1: where = stack`shared_work\(int\) \+ \d+ at shared\.h:{shared}", transcript), \
        transcript
    assert "Breakpoint 2: where = stack`b_entry(int) + " in transcript and "at b.cc:2" in transcript, transcript
    backtraces = transcript.split("(lldb) bt")[1:]
    assert len(backtraces) == 2, transcript
    # Called from a.cc's unit, then (after b_entry's own stop) from b.cc's: one kept copy serves both.
    assert f"shared_work(n=1) at shared.h:{shared}" in backtraces[0] and "a_entry(n=1) at a.cc:2" in backtraces[0]
    assert f"shared_work(n=1) at shared.h:{shared}" in backtraces[1] and "b_entry(n=1) at b.cc:2" in backtraces[1]
    assert "main(argc=1" in backtraces[1]
