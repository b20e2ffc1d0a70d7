"""S10: what the developer pastes or types to debug — `.vscode/launch.json` and plain lldb commands.

Pure functions from plain values. The CodeLLDB configuration follows the walkthrough's (attach,
`program` = the unstripped ELF as the debugger container sees it, `sourceMap` from the source prefixes the
debug info records to where the sources are, `initCommands` that select and connect the remote platform);
the lldb-dap one says the same in that adapter's schema.

A source map is a list of (prefix in the debug info, folder in the debugger) pairs, most specific first: lldb
takes the first pair whose prefix matches, and CodeLLDB keeps a `sourceMap` object's order.
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass
from typing import NamedTuple

import pulumi

from components.workspace import CONTAINER_CACHE_DIR

# Bazel runs every C++ action with PWD=/proc/self/cwd, which the compiler records as the compilation dir.
BAZEL_CWD = "/proc/self/cwd"
# lldb's caches, in the cache folder the debugger container mounts (its ~/.lldb is not kept).
LLDB_CACHE_DIR = posixpath.join(CONTAINER_CACHE_DIR, "lldb")
MODULE_CACHE = "module-cache"
LLDB_MODULE_CACHE_DIR = posixpath.join(LLDB_CACHE_DIR, MODULE_CACHE)
WAIT_FOR_ENVOY = "process attach --name envoy --waitfor"


SourceMap = list[tuple[str, str]]


def built_source_map(execroot: str, sandbox_roots: list[str]) -> SourceMap:
    """envoySource build: every build-time source prefix found in the debug info, mapped to the execution root
    (which holds istio/proxy's files and, under external/, Envoy's)."""
    return [(BAZEL_CWD, execroot), *((root, execroot) for root in sorted(sandbox_roots))]


def prebuilt_source_map(prefixes: list[str], source_dir: str, envoy_external: str, envoy_dir: str) -> SourceMap:
    """envoySource prebuilt: for every prefix the downloaded ELF records (its units' compilation directories,
    bazel sandbox roots of Istio's CI), Envoy's files (`<prefix>/<envoy_external>`, bazel's external/envoy) in
    the Envoy checkout, and the rest in the istio/proxy checkout. In the prefixes' order: lldb shows a stop's
    source through whichever pair finds the file, but a breakpoint set by path (as VS Code sets them) reaches a
    unit only through the first pair mapped to its folder, so the prefix most units record comes first."""
    pairs: SourceMap = []
    for prefix in dict.fromkeys(prefixes):
        pairs += [(posixpath.join(prefix, envoy_external), envoy_dir), (prefix, source_dir)]
    return pairs


def lldb_settings(cache_dir: str = LLDB_CACHE_DIR) -> list[str]:
    """Settings that make attaching to a 1 GB debug ELF fast the second time and bearable the first."""
    return [
        # The ELF's symbol table and DWARF index, keyed by its build-id: parsed once per build.
        "settings set symbols.enable-lldb-index-cache true",
        f"settings set symbols.lldb-index-cache-path {posixpath.join(cache_dir, 'index-cache')}",
        # The pod's shared libraries (libc, …), keyed by build-id: copied over the platform connection, at
        # about 1 MB/s (llvm#62750), once rather than after every restart of the debugger container.
        f"settings set platform.module-cache-directory {posixpath.join(cache_dir, MODULE_CACHE)}",
        # Don't parse every compile unit up front; lldb loads what a stop or a breakpoint needs.
        "settings set target.preload-symbols false",
        # The remote's modules (libc, …) are fetched once into the module cache; give slow links time.
        "settings set plugin.process.gdb-remote.packet-timeout 60",
    ]


def platform_commands(connect_url: str) -> list[str]:
    return ["platform select remote-linux", f"platform connect {connect_url}"]


def launch_json(
    *, mode: str, elf: str, pid: int | None, source_map: SourceMap, connect_url: str, pod: str,
) -> dict:
    """A complete launch.json: a CodeLLDB and an lldb-dap attach configuration."""
    init = [*lldb_settings(), *platform_commands(connect_url)]
    mapping = dict(source_map)
    what = "the next envoy to start" if mode == "startup" else f"envoy (pid {pid} in the pod)"
    codelldb = {
        "name": f"Attach to {what} in {pod} (CodeLLDB)",
        "type": "lldb",
        "request": "attach",
        "program": elf,
        "sourceMap": mapping,
        "initCommands": init,
    }
    dap = {
        "name": f"Attach to {what} in {pod} (lldb-dap)",
        "type": "lldb-dap",
        "request": "attach",
        "program": elf,
        "sourceMap": [[source, target] for source, target in source_map],
        "initCommands": init,
    }
    if mode == "startup":
        # CodeLLDB's and lldb-dap's own waitFor are documented for macOS only: say the attach in lldb's words.
        codelldb["processCreateCommands"] = [WAIT_FOR_ENVOY]
        dap["attachCommands"] = [WAIT_FOR_ENVOY]
    else:
        codelldb["pid"] = pid
        dap["pid"] = pid
    return {"version": "0.2.0", "configurations": [codelldb, dap]}


def lldb_commands(*, mode: str, elf: str, pid: int | None, source_map: SourceMap, connect_url: str) -> list[str]:
    """The same session as plain lldb commands, for `lldb` in a terminal of the debugger container."""
    remaps = [f"settings append target.source-map {source} {target}" for source, target in source_map]
    attach = WAIT_FOR_ENVOY if mode == "startup" else f"process attach --pid {pid}"
    return [*lldb_settings(), *platform_commands(connect_url), f"target create {elf}", *remaps, attach]


class LaunchOutputs(NamedTuple):
    launch_json: pulumi.Output[str]
    lldb_commands: pulumi.Output[str]


def launch_outputs(*, mode: str, pod: pulumi.Input[str], elf: pulumi.Input[str],
                   source_map: pulumi.Input[SourceMap], connect_url: pulumi.Input[str],
                   pid: pulumi.Input[int]) -> LaunchOutputs:
    """launch.json (as text) and the lldb commands, once Envoy and the node-side server are known."""
    session = pulumi.Output.all(elf=elf, connect_url=connect_url, pid=pid if mode == "attach" else None,
                                source_map=pulumi.Output.from_input(source_map).apply(
                                    lambda pairs: [tuple(pair) for pair in pairs]))
    return LaunchOutputs(
        launch_json=pulumi.Output.all(pod=pod, session=session).apply(
            lambda v: json.dumps(launch_json(mode=mode, pod=v["pod"], **v["session"]), indent=2)
        ),
        lldb_commands=session.apply(lambda s: "\n".join(lldb_commands(mode=mode, **s))),
    )


# --- attachTo: the running Envoy, in place ------------------------------------------------------------------------


@dataclass(frozen=True)
class SymbolFile:
    """Istio's unstripped twin of the running Envoy, and where the running one is loaded."""

    elf: str
    slide: str


def symbol_file_commands(symbols: SymbolFile | None) -> list[str]:
    """A symbol file whose build-id differs from the running executable's (one link stripped, one not) cannot be
    matched by build-id: it is added as a module of its own and loaded where the running Envoy is."""
    if symbols is None:
        return []
    return [f"target modules add {symbols.elf}", f"target modules load --file {symbols.elf} --slide {symbols.slide}"]


def in_place_lldb_commands(*, pid: int, connect_url: str, source_map: SourceMap,
                           symbols: SymbolFile | None) -> list[str]:
    """Attach, load the symbols, and let Envoy run again at once: a production Envoy stalls only for the attach."""
    remaps = [f"settings append target.source-map {source} {target}" for source, target in source_map]
    return [*lldb_settings(), *platform_commands(connect_url), *remaps, f"process attach --pid {pid}",
            *symbol_file_commands(symbols), "process continue"]


def in_place_launch_json(*, pid: int, connect_url: str, source_map: SourceMap, symbols: SymbolFile | None,
                         pod: str) -> dict:
    """CodeLLDB and lldb-dap attach to the pid (no `program`: the running executable is the pod's) and load the
    symbol file before the process runs on; neither stops it on entry."""
    init = [*lldb_settings(), *platform_commands(connect_url)]
    post = symbol_file_commands(symbols)
    name = f"Attach to envoy (pid {pid}) in {pod}, in place"
    return {"version": "0.2.0", "configurations": [
        {"name": f"{name} (CodeLLDB)", "type": "lldb", "request": "attach", "pid": pid,
         "sourceMap": dict(source_map), "initCommands": init, "postRunCommands": post},
        {"name": f"{name} (lldb-dap)", "type": "lldb-dap", "request": "attach", "pid": pid,
         "sourceMap": [[source, target] for source, target in source_map], "initCommands": init,
         "postRunCommands": post},
    ]}


@dataclass(frozen=True)
class SymbolsVerdict:
    symbols: SymbolFile | None
    # One line for the developer: what was compared, and what it means.
    line: str


def symbols_verdict(*, artifact: str, elf: str, missing: str | None, symbol_digest: str, running_digest: str,
                    slide: str) -> SymbolsVerdict:
    """Whether Istio's symbol file is the running Envoy's code: their .text bytes, by SHA-256."""
    if missing:
        return SymbolsVerdict(None, f"no symbols: no {artifact} for the running Envoy ({missing}); attached "
                                    "without Envoy's symbols")
    if symbol_digest != running_digest:
        return SymbolsVerdict(None, f"no symbols: {elf} is not the running Envoy's code (.text SHA-256 "
                                    f"{symbol_digest[:16]}…, the running executable's {running_digest[:16]}…: a "
                                    "custom build or a patched image); attached without Envoy's symbols")
    return SymbolsVerdict(SymbolFile(elf, slide), f"symbols: {elf} is the running Envoy's code (.text SHA-256 "
                                                  f"{running_digest[:16]}…), loaded at slide {slide}")


def in_place_outputs(*, pod: pulumi.Input[str], connect_url: pulumi.Input[str], pid: pulumi.Input[int],
                     source_map: pulumi.Input[SourceMap], verdict: pulumi.Input[SymbolsVerdict]) -> LaunchOutputs:
    session = pulumi.Output.all(pid=pid, connect_url=connect_url, verdict=verdict,
                                source_map=pulumi.Output.from_input(source_map).apply(
                                    lambda pairs: [tuple(pair) for pair in pairs]))

    def kwargs(s: dict) -> dict:
        # The source map only matters with the symbols: the running Envoy has no line tables of its own.
        symbols = s["verdict"].symbols
        return {"pid": s["pid"], "connect_url": s["connect_url"], "symbols": symbols,
                "source_map": s["source_map"] if symbols else []}

    return LaunchOutputs(
        launch_json=pulumi.Output.all(pod=pod, session=session).apply(
            lambda v: json.dumps(in_place_launch_json(pod=v["pod"], **kwargs(v["session"])), indent=2)),
        lldb_commands=session.apply(lambda s: "\n".join(in_place_lldb_commands(**kwargs(s)))),
    )
