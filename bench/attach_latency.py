"""Time from connecting to the first full backtrace, through lldb-server on loopback, cold and warm.

Builds a large synthetic C++ program the way the stack builds Envoy (bench/synthetic.py: clang, -g -O0,
and bazelBuildArgs' --copt and --linkopt options, which add a DWARF 5 name index, .debug_names, and mark
the addresses of discarded inline copies dead), runs its stripped copy, serves it with `lldb-server
platform` (Debian's lldb 14, as the debug image ships it; gdbserver ports pinned as the stack pins them),
and times each lldb client through what a debug session starts with: connect, target = the unstripped
ELF, attach, a full backtrace.
  cold:        the walkthrough: its ELF (the same objects linked by the same linker without the stack's
               additions to the debug info, .debug_names removed), lldb as it comes (its default
               settings), empty caches;
  cache only:  that same ELF with the stack's lldb settings (components/launch.py), caches filled —
               what the settings alone give;
  first:       the stack: its ELF and its settings, empty caches — the stack's first attach;
  warm:        the stack: its ELF and its settings, caches filled — every later attach to the same build.
Goal: warm at least 5x faster than cold, from `platform connect` to the end of `bt`. lldb's own clock
takes that time (a `script` line before the connect and after the backtrace); the whole client process,
its start-up and teardown included, is printed beside it.

The clients: Debian's `lldb` (14: the debugger container's terminal lldb) and, with --debian-lldb 19 (or 22),
that Debian release of lldb beside it, unpacked with its libraries by `make lldb-clients` (python3-lldb-19
conflicts with lldb 14's) — the LLVM release CodeLLDB 1.11.0–1.11.4 bundle, which is what runs on F5 with them
(1.11.5 and later bundle LLVM 20, 1.12 LLVM 21).

    .venv/bin/python bench/attach_latency.py [--units 1000] [--keep DIR] [--debian-lldb 19 ...]

1000 units are a 520 MB ELF (460 MB of debug info) and take about 8 minutes to build on 2 cores; 2400 are
about the walkthrough's 1.2 GB. --keep DIR keeps both ELFs (under a name that changes with everything
they are built from) there for reruns.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from synthetic import build_debug_elf, fingerprint, relink, walkthrough_linkopts  # noqa: E402

from components.launch import lldb_settings, platform_commands  # noqa: E402
from tests.lldb_session import LldbClient, debian_lldb, lldb_environment, platform_server, running  # noqa: E402

GOAL = 5.0
REPEAT = 5
ELAPSED = "connect-to-backtrace:"


class Timing(NamedTuple):
    connect_to_backtrace: float
    process: float


def debian_client() -> LldbClient:
    lldb = shutil.which("lldb")
    if lldb is None:
        sys.exit("lldb is missing: apt-get install lldb (make test installs it)")
    version = subprocess.run([lldb, "--version"], capture_output=True, text=True, env=lldb_environment()).stdout
    return LldbClient(f"Debian lldb {version.split()[2]}", lldb, lldb_environment())


def session(client: LldbClient, elf: Path, pid: int, port: int, home: Path, cache: Path | None) -> Timing:
    """One client session; `cache` None means lldb's own defaults instead of the stack's settings."""
    settings = lldb_settings(str(cache)) if cache else []
    commands = [*settings, "script import time; connect_started = time.perf_counter()",
                *platform_commands(f"connect://127.0.0.1:{port}"), f"target create {elf}",
                f"process attach --pid {pid}", "bt",
                f"script print('{ELAPSED} %.6f' % (time.perf_counter() - connect_started))", "detach"]
    args = [client.lldb, "--batch", "--no-lldbinit"]
    for command in commands:
        args += ["-o", command]
    start = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True, env={**client.env, "HOME": str(home)})
    process = time.perf_counter() - start
    transcript = done.stdout + done.stderr
    measured = re.search(rf"^{ELAPSED} ([0-9.]+)$", transcript, re.MULTILINE)
    if "park() at main.cc" not in transcript or "error:" in transcript or measured is None:
        sys.exit(f"{client.name}: the session did not reach the backtrace:\n{transcript[-3000:]}")
    return Timing(float(measured.group(1)), process)


def median(timings: list[Timing]) -> Timing:
    # This machine's timings vary by tens of percent from run to run.
    return Timing(statistics.median(t.connect_to_backtrace for t in timings),
                  statistics.median(t.process for t in timings))


class Debuggee(NamedTuple):
    elf: Path  # the unstripped ELF lldb is given
    pid: int  # its stripped copy, running


def measure(client: LldbClient, walkthrough: Debuggee, stack: Debuggee, port: int, work: Path) -> None:
    """Prints the four timings for one client; `work` is a folder of its own."""
    work.mkdir()
    fresh = iter(range(1000))

    def home() -> Path:
        path = work / f"home-{next(fresh)}"
        path.mkdir()
        return path

    def once(debuggee: Debuggee, home_for_run: Path, cache: Path | None) -> Timing:
        return session(client, debuggee.elf, debuggee.pid, port, home_for_run, cache)

    def repeated(debuggee: Debuggee, home_for_run, cache: Path | None) -> Timing:
        return median([once(debuggee, home_for_run(), cache) for _ in range(REPEAT)])

    cold = repeated(walkthrough, home, None)
    walkthrough_home, walkthrough_cache = home(), work / "walkthrough-cache"
    once(walkthrough, walkthrough_home, walkthrough_cache)
    cache_only = repeated(walkthrough, lambda: walkthrough_home, walkthrough_cache)
    stack_home, cache = home(), work / "stack-cache"
    first = once(stack, stack_home, cache)
    warm = repeated(stack, lambda: stack_home, cache)
    cached = sum(p.stat().st_size for p in cache.rglob("*") if p.is_file())
    print(f"  {client.name} ({client.lldb}): connect → target → attach → full backtrace "
          "[the whole lldb process beside it]")
    rows = [(f"cold        (walkthrough ELF, lldb's defaults, empty caches, median of {REPEAT})", cold),
            ("cache only  (walkthrough ELF, the stack's settings, cache filled, median)", cache_only),
            ("first       (the stack's ELF and settings, empty caches)", first),
            (f"warm        (the stack's ELF and settings, {cached:,} B cache, median)", warm)]
    for label, timing in rows:
        print(f"    {label:<78} {timing.connect_to_backtrace:6.2f} s   [{timing.process:6.2f} s]")
    def over(timing: Timing) -> float:
        return cold.connect_to_backtrace / timing.connect_to_backtrace

    verdict = "within" if over(warm) >= GOAL else "UNDER"
    print(f"    ratio cold/warm: {over(warm):.1f}x (goal >= {GOAL:.0f}x: {verdict}); whole process "
          f"{cold.process / warm.process:.1f}x; cold/first {over(first):.1f}x; cold/cache only {over(cache_only):.1f}x")


def section_sizes(elf: Path) -> dict[str, int]:
    sections = subprocess.run(["size", "-A", str(elf)], capture_output=True, text=True, check=True).stdout
    return {line.split()[0]: int(line.split()[1]) for line in sections.splitlines() if line.startswith(".")}


def built_elfs(units: int, keep: Path, work: Path) -> tuple[Path, Path]:
    """The stack's ELF and the walkthrough's, from the same objects, kept under a name that changes with
    everything they are built from (the stack's options included)."""
    stack = keep / f"envoy-{units}-{fingerprint(units)}"
    walkthrough = stack.with_name(stack.name + "-walkthrough")
    if not (stack.exists() and walkthrough.exists()):
        keep.mkdir(parents=True, exist_ok=True)
        work.mkdir()
        built = build_debug_elf(work, units)
        # The walkthrough's: the same link without what the stack adds to the debug info, and no name index.
        plain = relink(work, units, work / "envoy-plain", walkthrough_linkopts())
        subprocess.run(["objcopy", "--remove-section", ".debug_names", str(plain), str(walkthrough)], check=True)
        shutil.copy2(built, stack)
    return stack, walkthrough


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=1000, help="translation units of the synthetic ELF")
    parser.add_argument("--keep", type=Path, help="a folder that keeps the ELFs for reruns")
    parser.add_argument("--debian-lldb", type=int, action="append", default=[], metavar="MAJOR",
                        help="also measure Debian's lldb-MAJOR, as `make lldb-clients` unpacks it (19 or 22)")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        keep = options.keep or work / "kept"
        clients = [debian_client(), *(debian_lldb(major) or sys.exit(f"lldb-{major} is not unpacked: make lldb-clients")
                                      for major in options.debian_lldb)]
        start = time.perf_counter()
        elf, walkthrough_elf = built_elfs(options.units, keep, work / "build")
        built = time.perf_counter() - start
        sizes = section_sizes(elf)
        if ".debug_names" not in sizes:
            sys.exit(f"{elf} has no .debug_names: the stack's bazelBuildArgs no longer add a name index")
        debug = sum(size for name, size in sizes.items() if name.startswith(".debug"))
        print(f"synthetic debug ELF: {options.units} units, {elf.stat().st_size:,} B, of which {debug:,} B debug "
              f"info ({sizes['.debug_names']:,} B .debug_names; built in {built:.0f} s); the walkthrough's: "
              f"{walkthrough_elf.stat().st_size:,} B")
        stripped = {}
        for name, unstripped in (("walkthrough", walkthrough_elf), ("stack", elf)):
            stripped[name] = work / name / "envoy"
            stripped[name].parent.mkdir()
            subprocess.run(["objcopy", "--strip-debug", str(unstripped), str(stripped[name])], check=True)
        parked = {**os.environ, "SYNTHETIC_PARK": "1"}
        with running([str(stripped["walkthrough"])], env=parked) as walkthrough, \
                running([str(stripped["stack"])], env=parked) as stack, platform_server() as ports:
            time.sleep(0.5)
            for number, client in enumerate(clients):
                measure(client, Debuggee(walkthrough_elf, walkthrough.pid), Debuggee(elf, stack.pid), ports.platform,
                        work / f"client-{number}")


if __name__ == "__main__":
    main()
