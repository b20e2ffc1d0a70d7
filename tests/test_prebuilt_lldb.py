"""envoySource prebuilt end to end with the real tools: a synthetic Envoy made like Istio's (split DWARF, type
units, llvm-dwp; tests/istio_envoy.py) is published on a loopback HTTP server; the stack's own scripts, as the
program renders them, check out istio/proxy's Envoy, download the ELF and its .dwp and stage the image's stripped
copy; that copy runs, served by Debian's `lldb-server platform`; and the real lldb client, with the session the
stack gives the developer (its settings, the source map it derives from the download, the attach), stops at a
file:line breakpoint in Envoy's own file, shows that line from the Envoy checkout and reads the variables that
only the .dwp holds (tests/prebuilt_session.py). Three clients: Debian's lldb 14 (the debugger container's) with
lldbCommands, and Debian's lldb 19 and 22 (the LLVM releases around those CodeLLDB bundles: 19 in 1.11, 21 in
1.12) with launchJson's CodeLLDB configuration.
"""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.conftest import evaluate, require_tool, resource
from tests.istio_envoy import MAIN_CC, PROXY_CONFIG_CC, WORKER_CC, line_of
from tests.lldb_session import debian_lldb
from tests.prebuilt_session import COMMANDS, attach_and_stop, developer_side

ENVOY_LINE = line_of(WORKER_CC, "envoy: stop here")
ISTIO_LINE = line_of(MAIN_CC, "Istio::istioConfig(")
ISTIO_CONFIG_LINE = line_of(PROXY_CONFIG_CC, "istio config")
CLIENTS = {"lldb 14, lldbCommands": None, "lldb 19, launchJson": 19, "lldb 22, launchJson": 22}


@pytest.fixture(scope="module")
def side(module_tmp):
    """What the stack leaves on the developer's side (the checkouts, the ELF and its .dwp) and in the image."""
    for tool in ("curl", "tar", "readelf", "objcopy", "git", "lldb", "lldb-server"):
        require_tool(tool)
    evaluation = evaluate("dev", "envoySource=prebuilt")
    return developer_side(module_tmp("prebuilt"),
                          {name: resource(evaluation, name)["inputs"] for name in COMMANDS})


@pytest.fixture(params=sorted(CLIENTS))
def session(request, side):
    """The session and a client for it: lldb 14 with lldbCommands, or lldb 19/22 with launchJson."""
    major = CLIENTS[request.param]
    if major is None:
        return lambda breakpoints, after: attach_and_stop(side, breakpoints, after)
    client = debian_lldb(major)
    if client is None:
        pytest.skip(f"Debian's lldb-{major} is not unpacked: make lldb-clients")
    return lambda breakpoints, after: attach_and_stop(side, breakpoints, after, client, launch=True)


def test_the_image_ships_envoy_without_its_debug_info_and_the_developer_keeps_both_files(side):
    sections = subprocess.run(["readelf", "-S", str(side.image_envoy)], capture_output=True, text=True,
                              check=True).stdout
    assert ".debug_" not in sections
    assert side.dwp == side.elf.with_name("envoy.dwp"), "beside the ELF, where lldb looks"


def test_lldb_stops_in_envoys_own_file_shows_the_checkouts_line_and_reads_the_dwps_variables(side, session):
    worker = side.envoy_dir / "source" / "common" / "worker.cc"
    transcript = session([f"breakpoint set --file {worker} --line {ENVOY_LINE}"], ["frame variable"])
    # The location comes from the .dwp's function; its line from the ELF's line table.
    assert re.search(rf"Breakpoint 1: where = envoy`Envoy::handle\(Envoy::Request const&\) \+ \d+ at "
                     rf"worker\.cc:{ENVOY_LINE}", transcript), transcript
    assert "stop reason = breakpoint 1.1" in transcript, transcript
    # The line as the Envoy checkout has it: the build tree is gone.
    assert re.search(rf"-> {ENVOY_LINE}\s+int doubled = request\.id \* 2;  // envoy: stop here", transcript), \
        transcript
    assert "id = 21" in transcript and '"/healthz"' in transcript, transcript


def test_istio_proxys_units_land_in_its_checkout_whatever_prefix_they_record(side, session):
    config = side.source_dir / "source" / "istio" / "config.cc"
    transcript = session([f"breakpoint set --file {config} --line {ISTIO_CONFIG_LINE}"],
                         ["up", "frame variable request"])
    # Two config.cc, one in each tree: the path names istio/proxy's, and only it.
    assert re.search(rf"Breakpoint 1: where = envoy`Istio::istioConfig\(int\) \+ \d+ at config\.cc:"
                     rf"{ISTIO_CONFIG_LINE}", transcript), transcript
    assert re.search(rf"-> {ISTIO_CONFIG_LINE}\s+return value \+ 2;  // istio config", transcript), transcript
    # Its caller was compiled in a bazel sandbox of the CI, which it records as its compilation directory: the
    # frame's source still comes from the istio/proxy checkout.
    assert re.search(rf"frame #1: .* envoy`main at main\.cc:{ISTIO_LINE}", transcript), transcript
    assert re.search(rf"-> {ISTIO_LINE}\s+Istio::istioConfig\(Envoy::envoyConfig\(request\.id\)\);", transcript), \
        transcript
    assert "id = 21" in transcript, transcript


def test_without_the_dwp_beside_the_elf_there_are_no_variables(side, session):
    """The control: the same session with the package moved away."""
    hidden = side.dwp.with_name("elsewhere.dwp")
    side.dwp.rename(hidden)
    try:
        worker = side.envoy_dir / "source" / "common" / "worker.cc"
        transcript = session([f"breakpoint set --file {worker} --line {ENVOY_LINE}"], ["frame variable request"])
    finally:
        hidden.rename(side.dwp)
    assert "stop reason = breakpoint 1.1" in transcript, "the line table is the ELF's own"
    # The location, from the symbol table alone: no function of the debug info.
    assert re.search(r"Breakpoint 1: where = envoy`Envoy::handle\(Envoy::Request const&\) \+ \d+, address",
                     transcript), transcript
    assert "id = 21" not in transcript
