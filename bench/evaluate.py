"""Wall time of one full evaluation of the program under Pulumi mocks for the dev stack (goal: under 2 s).

Each evaluation runs in a fresh interpreter, as `pulumi preview` starts one: the figure includes
importing the SDKs. Prints the median and the spread of N runs.

    .venv/bin/python bench/evaluate.py [N]
"""

import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOAL_SECONDS = 2.0


def one_evaluation() -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "tests.mock_stack", "dev"], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    one_evaluation()  # warm the file cache
    times = sorted(one_evaluation() for _ in range(runs))
    median = statistics.median(times)
    print(f"dev stack, full program evaluation under mocks, {runs} runs in fresh interpreters:")
    print(f"  median {median:.3f} s  min {times[0]:.3f} s  max {times[-1]:.3f} s  (goal < {GOAL_SECONDS:.1f} s)")
    print("  within goal" if median < GOAL_SECONDS else "  OVER GOAL")


if __name__ == "__main__":
    main()
