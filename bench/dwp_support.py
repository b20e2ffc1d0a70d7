"""Which lldb reads a .dwp beside the ELF: file:line breakpoints, the checkout's source, and variables.

For each compiler and llvm-dwp this machine has (clang++-N, /usr/lib/llvm-N/bin/llvm-dwp), a synthetic Envoy made
like Istio's envoy-debug-<SHA> (tests/istio_envoy.py: split DWARF 5, type units, llvm-dwp) goes through the
stack's own scripts (tests/prebuilt_session.py: Envoy checkout, download, staging of the image's stripped copy),
and each lldb client attaches through Debian's lldb-server 14 on loopback with the stack's session (lldbCommands)
and is asked to:
  file:line  resolve a breakpoint set by path in Envoy's own file to a function of the debug info,
  stop       stop there in the running process,
  source     show that line from the Envoy checkout,
  variables  show the frame's variables, which live only in the .dwp,
  control    with the .dwp moved away, show no variables (the .dwp is what lldb read).
The clients: Debian's lldb (14, the debugger container's) and the Debian releases `make lldb-clients` unpacked
(19 and 22 by default; more with `make lldb-clients LLDB_CLIENTS="13 15 16 19 22"`).

    .venv/bin/python bench/dwp_support.py
"""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import evaluate, resource  # noqa: E402
from tests.istio_envoy import WORKER_CC, line_of  # noqa: E402
from tests.lldb_session import LldbClient, debian_lldb  # noqa: E402
from tests.prebuilt_session import COMMANDS, DeveloperSide, attach_and_stop, developer_side  # noqa: E402

LINE = line_of(WORKER_CC, "envoy: stop here")
MAJORS = range(13, 30)


def checks(side: DeveloperSide, client: LldbClient | None) -> tuple[dict[str, bool], str]:
    """The five answers, and the first error lldb printed (a client that rejects one of the stack's commands
    stops there: lldb --batch ends at the first error)."""
    worker = side.envoy_dir / "source" / "common" / "worker.cc"
    breakpoint_set = [f"breakpoint set --file {worker} --line {LINE}"]
    transcript = attach_and_stop(side, breakpoint_set, ["frame variable request"], client)
    hidden = side.dwp.with_name("elsewhere.dwp")
    side.dwp.rename(hidden)
    try:
        control = attach_and_stop(side, breakpoint_set, ["frame variable request"], client)
    finally:
        hidden.rename(side.dwp)
    errors = [line for line in transcript.splitlines() if line.startswith("error:")]
    return {
        "file:line": bool(re.search(rf"Breakpoint 1: where = envoy`Envoy::handle\(.*\) \+ \d+ at worker\.cc:{LINE}",
                                    transcript)),
        "stop": "stop reason = breakpoint 1.1" in transcript,
        "source": bool(re.search(rf"-> {LINE}\s+int doubled = request\.id \* 2;", transcript)),
        "variables": "id = 21" in transcript and '"/healthz"' in transcript,
        "control": "id = 21" not in control,
    }, (errors[0] if errors else "")


def main() -> None:
    clients: list[tuple[str, LldbClient | None]] = [("lldb 14 (Debian's lldb)", None)]
    clients += [(client.name, client) for client in map(debian_lldb, MAJORS) if client is not None]
    if shutil.which("lldb") is None:
        sys.exit("lldb is missing: make test installs it")
    toolchains = [(f"clang++-{n}", f"/usr/lib/llvm-{n}/bin/llvm-dwp") for n in MAJORS
                  if shutil.which(f"clang++-{n}") and Path(f"/usr/lib/llvm-{n}/bin/llvm-dwp").exists()]
    if not toolchains:
        sys.exit("no clang++-N with its llvm-dwp: apt-get install clang llvm")
    evaluation = evaluate("dev", "envoySource=prebuilt")
    rendered = {name: resource(evaluation, name)["inputs"] for name in COMMANDS}
    names = ["file:line", "stop", "source", "variables", "control"]
    print(f"{'compiler, packer':32} {'client':22} " + " ".join(f"{n:>9}" for n in names))
    with tempfile.TemporaryDirectory() as tmp:
        for number, (clang, dwp_tool) in enumerate(toolchains):
            side = developer_side(Path(tmp) / str(number), rendered, clang, dwp_tool)
            for name, client in clients:
                found, error = checks(side, client)
                print(f"{clang + ', ' + Path(dwp_tool).parents[1].name + ' llvm-dwp':32} {name:22} "
                      + " ".join(f"{'yes' if found[n] else 'NO':>9}" for n in names) + f"  {error}", flush=True)


if __name__ == "__main__":
    main()
