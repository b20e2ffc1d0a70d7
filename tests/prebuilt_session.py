"""A prebuilt Envoy on the developer's side, made by the stack's own scripts, and lldb sessions against it.

`developer_side` publishes a synthetic Envoy made like Istio's (tests/istio_envoy.py) on a loopback HTTP server,
then runs the program's rendered commands for real — the Envoy checkout, the download, the staging of the image's
stripped copy — with this machine's folders standing for /work and /home/.cache. `attach_and_stop` runs the image's
Envoy on loopback behind Debian's `lldb-server platform` and drives an lldb client through the session the stack
gives the developer: lldbCommands, or launchJson's CodeLLDB configuration applied the way CodeLLDB applies it.
Used by tests/test_prebuilt_lldb.py and bench/dwp_support.py.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from components.launch import LLDB_CACHE_DIR, SourceMap, launch_json, lldb_commands, prebuilt_source_map
from components.prebuilt_envoy import parse_checkout_result, parse_fetch_result
from tests.conftest import run_rendered
from tests.http_origin import Origin, publish
from tests.istio_envoy import build, envoy_origin, proxy_checkout
from tests.lldb_session import LldbClient, platform_server, run_lldb, running

# istio/proxy's commit: the <SHA> of the published files.
SHA = "4f1e006e2db1c4263924993bc1dae3ed9e3b886a"
# The program's commands this needs, by resource name.
COMMANDS = ("envoy-source", "envoy-fetch", "debug-image-context")


def succeeded(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 0, done.stderr
    return done.stdout


@dataclass(frozen=True)
class DeveloperSide:
    elf: Path
    dwp: Path
    # The image's copy, stripped by the stack's staging script.
    image_envoy: Path
    source_map: SourceMap
    source_dir: Path
    envoy_dir: Path
    lldb_cache: Path


def developer_side(work: Path, rendered: dict[str, dict], clang: str = "clang++",
                   dwp_tool: str = "llvm-dwp") -> DeveloperSide:
    """`rendered`: the inputs of COMMANDS as the program renders them with envoySource prebuilt."""
    envoy = build(work / "ci", clang, dwp_tool)
    publish(work / "bucket", SHA, envoy.elf, envoy.dwp)
    origin, pinned = envoy_origin(work / "envoy-origin")
    source_dir = proxy_checkout(work / "work", pinned)
    cache = work / "home" / ".cache"
    # The stack passes ENVOY_REPOSITORY only when envoyRepository is set; here it is the local origin.
    source = rendered["envoy-source"]
    source = {**source, "environment": {**source["environment"], "ENVOY_REPOSITORY": ""}}
    checkout = parse_checkout_result(succeeded(run_rendered(
        source, SOURCE_DIR=str(source_dir), ENVOY_DIR=str(cache / "envoy"), ENVOY_REPOSITORY=f"file://{origin}")))
    with Origin(work / "bucket") as bucket:
        fetched = parse_fetch_result(succeeded(run_rendered(
            rendered["envoy-fetch"], BASE_URL=bucket.url, SHA=SHA, DEST_DIR=str(cache / "prebuilt"))))
    context = cache / "proxyv2-debug"
    succeeded(run_rendered(rendered["debug-image-context"], ELF=fetched.elf, CONTEXT_DIR=str(context),
                           BUILD_ID=fetched.build_id))
    return DeveloperSide(
        elf=Path(fetched.elf), dwp=Path(fetched.dwp), image_envoy=context / "envoy",
        # As PrebuiltEnvoy computes it, with this machine's folders for /work and the Envoy checkout.
        source_map=prebuilt_source_map(list(fetched.prefixes), str(source_dir), checkout.external,
                                       str(cache / "envoy")),
        source_dir=source_dir, envoy_dir=cache / "envoy", lldb_cache=cache / "lldb",
    )


def codelldb_commands(configuration: dict) -> list[str]:
    """What CodeLLDB does with an attach configuration, as lldb commands: initCommands, then the sourceMap as one
    target.source-map setting in the configuration's order (codelldb launch.rs, init_source_map), then a target
    of `program` and the attach."""
    mapping = " ".join(f'"{source}" "{target}"' for source, target in configuration["sourceMap"].items())
    return [*configuration["initCommands"], f"settings set target.source-map {mapping}",
            f"target create {configuration['program']}", f"process attach --pid {configuration['pid']}"]


def attach_and_stop(side: DeveloperSide, breakpoints: list[str], after: list[str], client: LldbClient | None = None,
                    launch: bool = False) -> str:
    """The stack's session (lldbCommands, or with `launch` launchJson's CodeLLDB configuration) against the image's
    Envoy running on loopback, then breakpoints set by path as VS Code sets them, a continue to the first, and
    `after`; what the client printed."""
    with running([str(side.image_envoy)]) as debuggee, platform_server() as ports:
        stack = {"mode": "attach", "elf": str(side.elf), "pid": debuggee.pid, "source_map": side.source_map,
                 "connect_url": f"connect://127.0.0.1:{ports.platform}"}
        if launch:
            configurations = launch_json(**stack, pod="fortio-server-0")["configurations"]
            commands = codelldb_commands(next(c for c in configurations if c["type"] == "lldb"))
        else:
            commands = lldb_commands(**stack)
        # lldb's caches in this side's folder, not in the machine's /home/.cache.
        commands = [c.replace(LLDB_CACHE_DIR, str(side.lldb_cache)) for c in commands]
        return run_lldb([*commands, *breakpoints, "continue", *after, "process detach"], home=side.elf.parent,
                        client=client)
