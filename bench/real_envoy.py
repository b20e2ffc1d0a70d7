"""A real Envoy under the debugger on the real node, timed, as tests/test_real_envoy_on_a_kubelet.py runs it (it
writes each figure where IPD_FIGURES says): `pulumi up` of the nodeAccess kubernetes stack from an empty stack to
"Envoy serving, lldb-server listening", the `up` with nothing to change, lldb's attach to the real Envoy through the
port-forward (connect, attach, thread list), the time from a request's send to lldb's stop at the breakpoint on
accept4, and lldb's resident memory attached to the real Envoy. Medians over the rounds (the stand-in images and
Docker's layer cache are built in the first round, when missing).

    .venv/bin/python bench/real_envoy.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.rounds import medians_of_rounds  # noqa: E402

MODULES = ("tests/test_real_envoy_on_a_kubelet.py",)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    medians_of_rounds(MODULES, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
