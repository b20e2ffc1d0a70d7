"""Wall time of one full evaluation of the program under Pulumi mocks for the dev stack (goal: under 2 s).

Each evaluation runs in a fresh interpreter, as `pulumi preview` starts one, and is split into the
SDK imports (pulumi, pulumi-kubernetes, pulumi-docker, pulumi-command: the same cost for any program
that uses them) and the program's own evaluation. Prints the medians and the spread of N runs.

    .venv/bin/python bench/evaluate.py [N]
"""

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOAL_SECONDS = 2.0
# Run in the child: time the SDK imports, then the evaluation of the program by the test harness.
CHILD = """
import json, sys, time
start = time.perf_counter()
import pulumi, pulumi_command, pulumi_docker, pulumi_kubernetes.apps.v1, pulumi_kubernetes.core.v1
imported = time.perf_counter()
from tests.mock_stack import evaluate
evaluate("dev")
print(json.dumps({"imports": imported - start, "evaluation": time.perf_counter() - imported}))
"""


def one_evaluation() -> tuple[float, float, float]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", CHILD], cwd=ROOT, check=True, capture_output=True, text=True)
    total = time.perf_counter() - start
    parts = json.loads(done.stdout.splitlines()[-1])
    return total, parts["imports"], parts["evaluation"]


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    one_evaluation()  # warm the file cache
    totals, imports, evaluations = zip(*(one_evaluation() for _ in range(runs)), strict=True)
    median = statistics.median(totals)
    print(f"dev stack, full program evaluation under mocks, {runs} runs in fresh interpreters:")
    print(f"  total      median {median:.3f} s  min {min(totals):.3f} s  max {max(totals):.3f} s"
          f"  (goal < {GOAL_SECONDS:.1f} s)")
    print(f"  of which   SDK imports {statistics.median(imports):.3f} s, "
          f"the program's evaluation {statistics.median(evaluations):.3f} s (medians)")
    print("  within goal" if median < GOAL_SECONDS else "  OVER GOAL")


if __name__ == "__main__":
    main()
