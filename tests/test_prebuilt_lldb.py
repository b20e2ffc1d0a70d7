"""envoySource prebuilt end to end with the real tools: a synthetic Envoy made like Istio's (split DWARF, type
units, llvm-dwp; tests/istio_envoy.py) is published on a loopback HTTP server; the stack's own scripts, as the
program renders them, check out istio/proxy's Envoy and download the ELF and its .dwp, and stage the image's
stripped copy; that copy runs, served by Debian's `lldb-server platform`; and the real lldb client, with the
session the stack gives the developer (its settings, the source map it derives from the download, the attach),
stops at a file:line breakpoint in Envoy's own file, shows that line from the Envoy checkout and reads the
variables that only the .dwp holds. Three clients: Debian's lldb 14 (the debugger container's) with lldbCommands,
and Debian's lldb 19 and 22 (the LLVM releases around those CodeLLDB bundles: 19 in 1.11, 21 in 1.12) with the
CodeLLDB configuration of launchJson, its sourceMap applied the way CodeLLDB applies it.

Paths: the stack's folders (/work, /home/.cache/istio-proxy-debug/…) are this test's temporary ones; the source
map is built by the stack's own function from what its scripts printed.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from components.launch import LLDB_CACHE_DIR, launch_json, lldb_commands, prebuilt_source_map
from components.prebuilt_envoy import parse_checkout_result, parse_fetch_result
from tests.conftest import evaluate, require_tool, resource
from tests.http_origin import Origin, publish
from tests.istio_envoy import MAIN_CC, PROXY_CONFIG_CC, WORKER_CC, build, envoy_origin, line_of, proxy_checkout
from tests.lldb_session import debian_lldb, platform_server, run_lldb, running

SHA = "4f1e006e2db1c4263924993bc1dae3ed9e3b886a"
ENVOY_LINE = line_of(WORKER_CC, "envoy: stop here")
ISTIO_LINE = line_of(MAIN_CC, "Istio::istioConfig(")
ISTIO_CONFIG_LINE = line_of(PROXY_CONFIG_CC, "istio config")


def run_rendered(inputs: dict, **values: str) -> subprocess.CompletedProcess:
    assert set(values) <= set(inputs["environment"]) | {"ENVOY_REPOSITORY"}
    env = {**os.environ, **inputs["environment"], **values}
    done = subprocess.run(["bash", "-s"], input=inputs["stdin"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done


@pytest.fixture(scope="module")
def session(tmp_path_factory) -> dict:
    """What the stack leaves on the developer's side (the checkouts, the ELF and its .dwp) and in the image."""
    for tool in ("curl", "tar", "readelf", "objcopy", "git", "lldb", "lldb-server"):
        require_tool(tool)
    work = tmp_path_factory.mktemp("prebuilt")
    envoy = build(work / "ci")
    publish(work / "bucket", SHA, envoy.elf, envoy.dwp)
    origin, pinned = envoy_origin(work / "envoy-origin")
    source_dir = proxy_checkout(work / "work", pinned)
    cache = work / "home" / ".cache"
    evaluation = evaluate("dev", "envoySource=prebuilt")
    inputs = {name: resource(evaluation, name)["inputs"] for name in ("envoy-source", "envoy-fetch",
                                                                       "debug-image-context")}
    checkout = parse_checkout_result(run_rendered(
        inputs["envoy-source"], SOURCE_DIR=str(source_dir), ENVOY_DIR=str(cache / "envoy"),
        ENVOY_REPOSITORY=f"file://{origin}").stdout)
    with Origin(work / "bucket") as bucket:
        fetched = parse_fetch_result(run_rendered(inputs["envoy-fetch"], BASE_URL=bucket.url, SHA=SHA,
                                                  DEST_DIR=str(cache / "prebuilt")).stdout)
    context = cache / "proxyv2-debug"
    run_rendered(inputs["debug-image-context"], ELF=fetched.elf, CONTEXT_DIR=str(context),
                 BUILD_ID=fetched.build_id)
    return {
        "elf": Path(fetched.elf), "dwp": Path(fetched.dwp), "image_envoy": context / "envoy",
        "source_map": prebuilt_source_map(list(fetched.prefixes), str(source_dir), checkout.external,
                                          str(cache / "envoy")),
        "source_dir": source_dir, "envoy_dir": cache / "envoy", "lldb_cache": cache / "lldb",
    }


def codelldb_commands(configuration: dict) -> list[str]:
    """What CodeLLDB does with an attach configuration, as lldb commands: initCommands, then the sourceMap as one
    target.source-map setting in the configuration's order (codelldb launch.rs, init_source_map), then a target
    of `program` and the attach."""
    mapping = " ".join(f'"{source}" "{target}"' for source, target in configuration["sourceMap"].items())
    return [*configuration["initCommands"], f"settings set target.source-map {mapping}",
            f"target create {configuration['program']}", f"process attach --pid {configuration['pid']}"]


CLIENTS = {"lldb 14, lldbCommands": None, "lldb 19, launchJson": 19, "lldb 22, launchJson": 22}


@pytest.fixture(params=sorted(CLIENTS))
def client(request):
    """A client and the stack's session for it: lldbCommands, or the CodeLLDB configuration of launchJson."""
    major = CLIENTS[request.param]
    if major is None:
        return None
    found = debian_lldb(major)
    if found is None:
        pytest.skip(f"Debian's lldb-{major} is not unpacked: make lldb-clients")
    return found


def attach_and_stop(session: dict, breakpoints: list[str], after: list[str], client=None) -> str:
    """The stack's session against the image's Envoy running on loopback, then breakpoints set by path as VS Code
    sets them, a continue to the first, and `after`."""
    with running([str(session["image_envoy"])]) as debuggee, platform_server() as ports:
        stack = {"mode": "attach", "elf": str(session["elf"]), "pid": debuggee.pid, "source_map": session["source_map"],
                 "connect_url": f"connect://127.0.0.1:{ports.platform}"}
        if client is None:
            commands = lldb_commands(**stack)
        else:
            configurations = launch_json(**stack, pod="fortio-server-0")["configurations"]
            commands = codelldb_commands(next(c for c in configurations if c["type"] == "lldb"))
        # lldb's caches in this test's folder, not in the machine's /home/.cache.
        commands = [c.replace(LLDB_CACHE_DIR, str(session["lldb_cache"])) for c in commands]
        return run_lldb([*commands, *breakpoints, "continue", *after, "process detach"], home=session["elf"].parent,
                        client=client)


def test_the_image_ships_envoy_without_its_debug_info_and_the_developer_keeps_both_files(session):
    sections = subprocess.run(["readelf", "-S", str(session["image_envoy"])], capture_output=True, text=True,
                              check=True).stdout
    assert ".debug_" not in sections
    assert session["dwp"] == session["elf"].with_name("envoy.dwp"), "beside the ELF, where lldb looks"


def test_lldb_stops_in_envoys_own_file_shows_the_checkouts_line_and_reads_the_dwps_variables(session, client):
    worker = session["envoy_dir"] / "source" / "common" / "worker.cc"
    transcript = attach_and_stop(session, [f"breakpoint set --file {worker} --line {ENVOY_LINE}"],
                                 ["frame variable"], client)
    # The location comes from the .dwp's function; its line from the ELF's line table.
    assert re.search(rf"Breakpoint 1: where = envoy`Envoy::handle\(Envoy::Request const&\) \+ \d+ at "
                     rf"worker\.cc:{ENVOY_LINE}", transcript), transcript
    assert "stop reason = breakpoint 1.1" in transcript, transcript
    # The line as the Envoy checkout has it: the build tree is gone.
    assert re.search(rf"-> {ENVOY_LINE}\s+int doubled = request\.id \* 2;  // envoy: stop here", transcript), \
        transcript
    assert "id = 21" in transcript and '"/healthz"' in transcript, transcript


def test_istio_proxys_units_land_in_its_checkout_whatever_prefix_they_record(session, client):
    config = session["source_dir"] / "source" / "istio" / "config.cc"
    transcript = attach_and_stop(session, [f"breakpoint set --file {config} --line {ISTIO_CONFIG_LINE}"],
                                 ["up", "frame variable request"], client)
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


def test_without_the_dwp_beside_the_elf_there_are_no_variables(session, client):
    """The control: the same session with the package moved away."""
    hidden = session["dwp"].with_name("elsewhere.dwp")
    session["dwp"].rename(hidden)
    try:
        worker = session["envoy_dir"] / "source" / "common" / "worker.cc"
        transcript = attach_and_stop(session, [f"breakpoint set --file {worker} --line {ENVOY_LINE}"],
                                     ["frame variable request"], client)
    finally:
        hidden.rename(session["dwp"])
    assert "stop reason = breakpoint 1.1" in transcript, "the line table is the ELF's own"
    # The location, from the symbol table alone: no function of the debug info.
    assert re.search(r"Breakpoint 1: where = envoy`Envoy::handle\(Envoy::Request const&\) \+ \d+, address",
                     transcript), transcript
    assert "id = 21" not in transcript
