"""nodeAccess kubernetes on a real node, timed: the real kubelet's node joining the tests' control plane, the
stack's agent pod Ready there, the stack's port-forward forwarding every debugger port, and the real lldb's attach
through it (connect, attach, backtrace, detach), as tests/test_kubelet_node.py and
tests/test_node_agent_on_a_kubelet.py run them (they write each figure where IPD_FIGURES says).

Each round runs both modules; the first with --first after removing the node and pause images from the tests'
Docker engine, so that join includes building the node image (the Debian base stand-in and Docker's layer cache
stay). Medians over the rounds.

    .venv/bin/python bench/node_agent.py [--rounds 3] [--first]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.rounds import one_round, print_medians  # noqa: E402
from tests.docker_engine import engine  # noqa: E402
from tests.kubelet_node import NODE_IMAGE, PAUSE_IMAGE  # noqa: E402

MODULES = ("tests/test_kubelet_node.py", "tests/test_node_agent_on_a_kubelet.py")


def remove_node_images(docker) -> None:
    listed = docker.docker("images", "--format", "{{.Repository}}:{{.Tag}}", NODE_IMAGE).stdout.split()
    for reference in (*listed, PAUSE_IMAGE):
        docker.docker("rmi", "--force", reference, check=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--first", action="store_true", help="build the node image in the first round")
    args = parser.parse_args()
    rounds = []
    with engine() as docker:
        for number in range(args.rounds):
            if args.first and number == 0:
                remove_node_images(docker)
            rounds.append(one_round(MODULES))
            print(f"round {number + 1}: {json.dumps(rounds[-1])}", flush=True)
    if args.first:
        first = rounds[0]
        print(f"first join (node image built, then Ready): {first['node image'] + first['node ready']:.1f} s")
        rounds = rounds[1:] or rounds
    print_medians(rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
