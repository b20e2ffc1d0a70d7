"""The toolchain's build (tools/toolchain.sh) as a new machine meets it: every binary's first-run build time
and their total with empty module and build caches, the time of a second run (which compiles nothing), and the
disk the caches and binaries take.

    python bench/toolchain_build.py                 # into a new temporary TOOLCHAIN_DIR, removed afterwards
    python bench/toolchain_build.py --dir DIR --keep

A first run downloads every module from the Go module proxy and compiles everything: tens of minutes on two
cores. Run it on an otherwise idle machine; the figures are wall time.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(toolchain_dir: Path) -> float:
    env = {**os.environ, "TOOLCHAIN_DIR": str(toolchain_dir), "PULUMI_HOME": str(toolchain_dir / "pulumi-home")}
    started = time.monotonic()
    done = subprocess.run(["bash", str(ROOT / "tools" / "toolchain.sh")], env=env, capture_output=True, text=True)
    elapsed = time.monotonic() - started
    if done.returncode != 0:
        sys.exit(f"tools/toolchain.sh failed:\n{done.stderr[-3000:]}")
    return elapsed


def disk(path: Path) -> int:
    return int(subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=True).stdout.split()[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, help="TOOLCHAIN_DIR to build into (empty for a first run)")
    parser.add_argument("--keep", action="store_true", help="keep the folder afterwards")
    args = parser.parse_args()
    toolchain_dir = args.dir or Path(tempfile.mkdtemp(prefix="toolchain-bench-"))
    try:
        first = run(toolchain_dir)
        builds = [line.rsplit(" ", 2) for line in (toolchain_dir / "build-times").read_text().splitlines()]
        second = run(toolchain_dir)
        print(f"first run, cores: {os.cpu_count()}")
        for name, version, seconds in builds:
            print(f"  {name} {version}: {int(seconds):>5} s")
        print(f"  total (with module downloads, links and plugin install): {first:.0f} s")
        print(f"second run: {second:.1f} s")
        go = toolchain_dir / "go"
        print(f"disk: Go module cache {disk(go / 'mod') / 2**20:,.0f} MiB, Go build cache "
              f"{disk(go / 'build') / 2**20:,.0f} MiB, everything {disk(toolchain_dir) / 2**20:,.0f} MiB")
    finally:
        if not args.keep:
            # The module cache is read-only, as Go makes it.
            subprocess.run(["chmod", "-R", "u+w", str(toolchain_dir)], check=False)
            shutil.rmtree(toolchain_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
