"""The user's commands on the real engine, timed: `pulumi up`, an `up` with nothing to change, `preview`, `refresh`
and `destroy` of a developer's host stack (`envoySource: prebuilt`, `nodeAccess: docker`), on the machine
tests/engine_stack.py makes (the tests' Docker engine, a node container, the tests' control plane, local origins).

A first round starts from nothing: a new workDir, so istio/proxy is cloned and Envoy downloaded (unthrottled, from
loopback), with the Docker engine's image cache as it is. Then --rounds rounds, each from an empty stack after a
`destroy` (which keeps workDir, so nothing is downloaded again): up, up with no changes, preview, refresh, destroy.
Medians over the rounds.

The program's own share: the Python processes the language host starts, timed by a wrapper around the project
virtualenv's python (in the bench's clone of the project): the program's run (`pulumi-language-python-exec`) and,
apart, the host's other calls into Python. Wall time of the program's run is how long it lived (in an `up` it waits
for the engine's deployment); its CPU time (user + system, with its children) is the work it did.

    .venv/bin/python bench/engine_cycle.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.docker_engine import engine  # noqa: E402
from tests.engine_stack import (  # noqa: E402
    make_stack,
    node_container,
    node_plane,
    origins,
    project,
    stand_in_images,
)
from tests.kind_node import SandboxKubelet  # noqa: E402
from tests.toolchain import toolchain_bin  # noqa: E402

# The goals on this 2-core machine.
GOALS = {"up (no changes)": 6.0, "preview": 4.0}
COMMANDS = {
    "up": ("up", "--yes", "--skip-preview"),
    "up (no changes)": ("up", "--yes", "--skip-preview", "--expect-no-changes"),
    "preview": ("preview", "--expect-no-changes"),
    "refresh": ("refresh", "--yes", "--expect-no-changes"),
    "destroy": ("destroy", "--yes"),
}
WRAPPER = """#!/bin/bash
# bench/engine_cycle.py: times each Python process the language host starts, then passes its status on.
start=$EPOCHREALTIME
{python} "$@"
status=$?
end=$EPOCHREALTIME
# Not in a pipeline: there `times` would report a subshell's children, none.
times >{log}.$$
children=$(tail -n1 {log}.$$)
rm -f {log}.$$
printf '%s %s %s %s\\n' "$start" "$end" "$children" "$*" >>{log}
exit $status
"""


def timed_virtualenv(clone: Path, log: Path) -> None:
    """The clone's .venv (a link to the project's) replaced by one whose python is WRAPPER around the project's."""
    venv = clone / ".venv"
    venv.unlink()
    (venv / "bin").mkdir(parents=True)
    shutil.copy(ROOT / ".venv" / "pyvenv.cfg", venv)
    (venv / "lib").symlink_to(ROOT / ".venv" / "lib")
    for entry in (ROOT / ".venv" / "bin").iterdir():
        target = venv / "bin" / entry.name
        if entry.name.startswith("python"):
            target.write_text(WRAPPER.format(python=ROOT / ".venv" / "bin" / "python", log=log))
            target.chmod(0o755)
        else:
            target.symlink_to(entry)


def seconds(value: str) -> float:
    """bash's `times` figure, e.g. 1m2.345s."""
    minutes, _, rest = value.partition("m")
    return int(minutes) * 60 + float(rest.rstrip("s"))


def program_share(log: Path, since: int) -> dict[str, float]:
    """The Python processes logged after line `since`: the program's wall and CPU seconds, and the other calls'."""
    share = {"program wall": 0.0, "program cpu": 0.0, "other python wall": 0.0}
    for line in log.read_text().splitlines()[since:]:
        start, end, user, system, *argv = line.split()
        wall = float(end) - float(start)
        if any("pulumi-language-python-exec" in arg for arg in argv):
            share["program wall"] += wall
            share["program cpu"] += seconds(user) + seconds(system)
        else:
            share["other python wall"] += wall
    return share


def run(stack, log: Path, name: str) -> dict[str, float]:
    since = len(log.read_text().splitlines()) if log.exists() else 0
    started = time.monotonic()
    done = stack.streaming(*COMMANDS[name], timeout=3600)
    elapsed = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"pulumi {' '.join(COMMANDS[name])} failed:\n{done.output[-4000:]}")
    return {"wall": elapsed, **program_share(log, since)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the Docker engine, network namespaces and the node's containerd need it")
    bin_dir = toolchain_bin()
    with tempfile.TemporaryDirectory(prefix="engine-cycle-") as folder, contextlib.ExitStack() as stack_of:
        work = Path(folder)
        docker = stack_of.enter_context(engine())
        plane = stack_of.enter_context(node_plane(bin_dir, work / "plane"))
        node = stack_of.enter_context(node_container(docker, work / "node-image"))
        stack_of.enter_context(SandboxKubelet(docker, plane, node))
        stand_in_images(docker, work / "registry-image")
        bucket = stack_of.enter_context(origins(work / "origins"))
        clone = project(docker, plane, bin_dir, work / "developer")
        log = work / "python.log"
        timed_virtualenv(clone.project, log)
        developer = make_stack(clone, bucket, "bench", work / "bench-work")
        stack_of.callback(developer.tear_down)

        first = run(developer, log, "up")
        rounds: dict[str, list[dict[str, float]]] = {name: [] for name in COMMANDS}
        for _ in range(args.rounds):
            for name in ("up (no changes)", "preview", "refresh", "destroy", "up"):
                rounds[name].append(run(developer, log, name))
        developer.tear_down()

    print(f"first up from nothing (new workDir, Envoy downloaded): {first['wall']:.1f} s; the program "
          f"{first['program cpu']:.2f} s CPU over {first['program wall']:.1f} s, other Python "
          f"{first['other python wall']:.2f} s")
    print(f"medians of {args.rounds} rounds:")
    print(f"{'command':<18} {'wall s':>7} {'program CPU s':>14} {'program wall s':>15} {'other Python s':>15}  goal")
    for name in COMMANDS:
        samples = rounds[name]
        median = {key: statistics.median(s[key] for s in samples) for key in samples[0]}
        goal = GOALS.get(name)
        verdict = "" if goal is None else f"< {goal:.0f} s: {'met' if median['wall'] < goal else 'missed'}"
        label = "up (after destroy)" if name == "up" else name
        print(f"{label:<18} {median['wall']:>7.2f} {median['program cpu']:>14.2f} {median['program wall']:>15.2f} "
              f"{median['other python wall']:>15.2f}  {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
