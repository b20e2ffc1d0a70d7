"""Time from connecting to the first full backtrace, through lldb-server on loopback, cold and warm.

Builds a large synthetic C++ program the way the stack builds Envoy (bench/synthetic.py: clang, -g -O0,
and bazelBuildArgs' --copt options, which add a DWARF 5 name index, .debug_names), runs its stripped copy,
serves it with `lldb-server platform` (gdbserver ports pinned as the stack pins them), and times the lldb
client through what a debug session starts with: connect, target = the unstripped ELF, attach, a full
backtrace.
  cold:        the walkthrough: an ELF without a name index (the same ELF, .debug_names removed), lldb as
               it comes (its default settings), empty caches;
  cache only:  that same ELF with the stack's lldb settings (components/launch.py), index cache filled —
               what the settings alone give;
  first:       the stack: its ELF and its settings, empty caches — the stack's first attach;
  warm:        the stack: its ELF and its settings, caches filled — every later attach to the same build.
Goal: warm at least 5x faster than cold.

    .venv/bin/python bench/attach_latency.py [translation units, default 1000] [folder to keep the ELF in]

1000 units are about 460 MB of debug info and take about 25 minutes to build on 2 cores; keep the ELF for
reruns with the second argument.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from synthetic import build_debug_elf  # noqa: E402

from components.launch import lldb_settings, platform_commands  # noqa: E402
from tests.lldb_session import lldb_environment, platform_server, running  # noqa: E402

GOAL = 5.0
REPEAT = 3


def session(elf: Path, pid: int, port: int, home: Path, cache: Path | None) -> float:
    """Seconds for one client session; `cache` None means lldb's own defaults instead of the stack's."""
    settings = lldb_settings(str(cache)) if cache else []
    commands = [*settings, *platform_commands(f"connect://127.0.0.1:{port}"), f"target create {elf}",
                f"process attach --pid {pid}", "bt", "detach"]
    args = ["lldb", "--batch", "--no-lldbinit"]
    for command in commands:
        args += ["-o", command]
    start = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True, env={**lldb_environment(), "HOME": str(home)})
    elapsed = time.perf_counter() - start
    transcript = done.stdout + done.stderr
    if "park() at main.cc" not in transcript or "error:" in transcript:
        sys.exit(f"the session did not reach the backtrace:\n{transcript[-3000:]}")
    return elapsed


def main() -> None:
    units = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    kept = Path(sys.argv[2]) if len(sys.argv) > 2 else None
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        start = time.perf_counter()
        if kept and (kept / f"envoy-{units}").exists():
            elf = kept / f"envoy-{units}"
        else:
            elf = build_debug_elf(work, units)
            if kept:
                kept.mkdir(parents=True, exist_ok=True)
                elf = Path(shutil.copy2(elf, kept / f"envoy-{units}"))
        built = time.perf_counter() - start
        sections = subprocess.run(["size", "-A", str(elf)], capture_output=True, text=True).stdout
        sizes = {line.split()[0]: int(line.split()[1]) for line in sections.splitlines() if line.startswith(".")}
        if ".debug_names" not in sizes:
            sys.exit(f"{elf} has no .debug_names: the stack's bazelBuildArgs no longer add a name index")
        debug = sum(size for name, size in sizes.items() if name.startswith(".debug"))
        print(f"synthetic debug ELF: {units} units, {elf.stat().st_size:,} B, of which {debug:,} B debug info "
              f"({sizes['.debug_names']:,} B .debug_names; built in {built:.0f} s)")
        walkthrough = work / "walkthrough" / elf.name
        walkthrough.parent.mkdir()
        subprocess.run(["objcopy", "--remove-section", ".debug_names", str(elf), str(walkthrough)], check=True)
        stripped = work / "stripped" / "envoy"
        stripped.parent.mkdir()
        subprocess.run(["objcopy", "--strip-debug", str(elf), str(stripped)], check=True)
        fresh_home = iter(range(100))

        def home() -> Path:
            path = work / f"home-{next(fresh_home)}"
            path.mkdir()
            return path

        walkthrough_home, stack_home = home(), home()
        with running([str(stripped)], env={**os.environ, "SYNTHETIC_PARK": "1"}) as debuggee, \
                platform_server() as ports:
            time.sleep(0.5)

            def median(target: Path, home_for_run, cache: Path | None) -> float:
                # This machine's timings vary by tens of percent from run to run.
                return statistics.median(session(target, debuggee.pid, ports.platform, home_for_run(), cache)
                                         for _ in range(REPEAT))

            cold = median(walkthrough, home, None)
            walkthrough_cache = work / "walkthrough-cache"
            session(walkthrough, debuggee.pid, ports.platform, walkthrough_home, walkthrough_cache)
            cache_only = median(walkthrough, lambda: walkthrough_home, walkthrough_cache)
            cache = work / "index-cache"
            first = session(elf, debuggee.pid, ports.platform, stack_home, cache)
            warm = median(elf, lambda: stack_home, cache)
        cached = sum(p.stat().st_size for p in cache.rglob("*") if p.is_file())
        print("  connect → target → attach → full backtrace, through lldb-server on loopback:")
        print(f"  cold        (walkthrough ELF, lldb's defaults, empty caches, median of {REPEAT}): {cold:7.2f} s")
        print(f"  cache only  (walkthrough ELF, the stack's settings, cache filled, median):  {cache_only:7.2f} s")
        print(f"  first       (the stack's ELF and settings, empty caches):                  {first:7.2f} s")
        print(f"  warm        (the stack's ELF and settings, {cached:,} B cache, median): {warm:7.2f} s")
        verdict = "within" if cold / warm >= GOAL else "UNDER"
        print(f"  ratio cold/warm: {cold / warm:.1f}x (goal >= {GOAL:.0f}x: {verdict}); cold/first: "
              f"{cold / first:.1f}x; cold/cache only: {cold / cache_only:.1f}x")


if __name__ == "__main__":
    main()
