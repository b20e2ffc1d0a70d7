"""attachTo, timed.

1. On the real node, as tests/test_attach_in_place_on_a_kubelet.py runs it (it writes each figure where
   IPD_FIGURES says): the stall a stream of requests to the production pod sees while the stack's lldbCommands
   attach and continue (and meanwhile `up`, `detach`, `destroy`), the time from `pulumi up` to lldb-server
   listening, and lldbCommands from the first to the running Envoy again. Medians over --rounds.
2. Istio's symbols for a release, 1 GB of them: a release built as istio/proxy builds one (tests/istio_envoy.py,
   envoy-symbol and envoy-alpha from the same objects), its symbol ELF padded to --size-mb with a section nothing
   loads, published on loopback as the bucket publishes envoy-symbol-<SHA>; the stack's own download (its script,
   as the program renders it), then lldb 14 loading it for the stripped release at its slide and resolving a
   breakpoint by name. Medians of --repeat.

    .venv/bin/python bench/attach_in_place.py [--rounds 3] [--size-mb 1000] [--repeat 3] [--skip-node]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.rounds import medians_of_rounds  # noqa: E402
from components.prebuilt_envoy import parse_fetch_result  # noqa: E402
from tests.conftest import evaluate, resource, run_rendered  # noqa: E402
from tests.http_origin import Origin, publish  # noqa: E402
from tests.istio_envoy import build  # noqa: E402
from tests.lldb_session import lldb_environment  # noqa: E402

MODULES = ("tests/test_attach_in_place_on_a_kubelet.py",)
SHA = "d799381810ae54f1cccb2a9ae79d9c6191ca2c83"
CHUNK = 1 << 24


def padded(elf: Path, size: int, folder: Path) -> Path:
    """`elf` with a section of random bytes that makes it `size` bytes: nothing reads it, everything moves it."""
    padding = folder / "padding"
    with padding.open("wb") as out:
        left = size - elf.stat().st_size
        while left > 0:
            out.write(os.urandom(min(CHUNK, left)))
            left -= CHUNK
    out_elf = folder / "envoy-symbol"
    subprocess.run(["objcopy", "--add-section", f".ipd_padding={padding}", str(elf), str(out_elf)], check=True)
    padding.unlink()
    return out_elf


def symbols(size: int, repeat: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        release = build(work / "release", release=True)
        elf = padded(release.elf, size, work)
        publish(work / "bucket", SHA, elf, release.dwp, name="envoy-symbol")
        fetch = resource(evaluate("dev", "attachTo=mesh/app-0", "nodeAccess=kubernetes", "nodes=",
                                  "targetNodeAddress=", "registryHost=", "envoySource=prebuilt"),
                         "release-envoy-fetch")["inputs"]
        downloads, loads = [], []
        with Origin(work / "bucket") as origin:
            for round_ in range(repeat):
                cache = work / f"cache-{round_}"
                started = time.perf_counter()
                done = run_rendered(fetch, BASE_URL=origin.url, SHA=SHA, DEST_DIR=str(cache))
                downloads.append(time.perf_counter() - started)
                if done.returncode != 0:
                    raise SystemExit(done.stderr)
                symbol = parse_fetch_result(done.stdout).elf
                started = time.perf_counter()
                said = subprocess.run(
                    ["lldb", "--batch", "--no-lldbinit", "-o", f"target create {release.stripped}",
                     "-o", f"target modules add {symbol}", "-o", f"target modules load --file {symbol} --slide 0",
                     "-o", "breakpoint set --name Envoy::handle"],
                    capture_output=True, text=True, env=lldb_environment(), timeout=600)
                loads.append(time.perf_counter() - started)
                if "where = envoy-symbol`Envoy::handle" not in said.stdout:
                    raise SystemExit(f"lldb did not resolve the breakpoint in the symbols:\n{said.stdout}{said.stderr}")
        return {f"download of a {size >> 20} MiB envoy-symbol (s)": statistics.median(downloads),
                "lldb: add, load at the slide, resolve a breakpoint by name (s)": statistics.median(loads)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size-mb", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-node", action="store_true", help="only the symbol download and load")
    args = parser.parse_args()
    for figure, value in symbols(args.size_mb << 20, args.repeat).items():
        print(f"{figure}: median {value:.2f} over {args.repeat}")
    if not args.skip_node:
        medians_of_rounds(MODULES, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
