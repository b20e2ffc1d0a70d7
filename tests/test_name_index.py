"""The stack's build adds a DWARF name index (.debug_names) that the real lldb uses instead of indexing.

Without an accelerator table lldb indexes every DIE of the ELF itself (ManualDWARFIndex) on the first name
lookup of every session that has no index cache: minutes for Envoy. The --copt options in bazelBuildArgs'
default make clang emit .debug_names; here clang compiles a program with exactly those options and lldb
14 (the version CodeLLDB and the debugger image bring or newer) resolves names from it with no indexing.
"""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from tests.conftest import require_tool
from tests.lldb_session import DEBUGGEE_SOURCE, run_lldb
from tests.mock_stack import default_bazel_options


def index_statistics(elf) -> dict:
    """lldb's own account of the module after a breakpoint by name (a name lookup over all the DWARF)."""
    transcript = run_lldb([f"target create {elf}", "breakpoint set --name demo::wait_for_debugger",
                           "statistics dump"])
    assert "Breakpoint 1: where = " in transcript and "prog.cc:4" in transcript, transcript[-2000:]
    dump = json.loads(transcript[transcript.index("{", transcript.index("statistics dump")):])
    return next(m for m in dump["modules"] if m["path"].endswith(elf.name))


@pytest.fixture(scope="module")
def built(module_tmp):
    compiler = require_tool("clang++")
    require_tool("objcopy")
    work = module_tmp("name-index")
    (work / "prog.cc").write_text(DEBUGGEE_SOURCE)
    with_index = work / "with-index"
    subprocess.run([compiler, "-g", "-O0", *default_bazel_options("copt"), "-o", str(with_index),
                    str(work / "prog.cc")], check=True)
    without_index = work / "without-index"
    subprocess.run(["objcopy", "--remove-section", ".debug_names", str(with_index), str(without_index)], check=True)
    return with_index, without_index


def sections(elf) -> set[str]:
    out = subprocess.run(["readelf", "-S", "-W", str(elf)], capture_output=True, text=True, check=True).stdout
    return set(re.findall(r"\] (\.\S+)", out))


def test_the_default_build_args_ask_clang_for_a_dwarf5_name_index():
    assert {"-gdwarf-5", "-gpubnames"} <= set(default_bazel_options("copt"))


def test_clang_emits_the_name_index_and_lldb_looks_names_up_in_it(built):
    with_index, without_index = built
    assert ".debug_names" in sections(with_index)
    assert ".debug_names" not in sections(without_index)
    indexed = index_statistics(with_index)
    manual = index_statistics(without_index)
    # lldb times its own indexing: none with the table, some without it (the control).
    assert indexed["debugInfoIndexTime"] == 0, indexed
    assert manual["debugInfoIndexTime"] > 0, manual
