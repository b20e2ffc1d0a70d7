"""Throughput of the stack's download of a prebuilt Envoy (fetch-prebuilt-envoy.sh), against curl, on loopback.

A synthetic envoy-debug-<SHA>.tar.gz of about 1 GB (a real ELF with a build-id, padded with random bytes, so
gzip cannot shrink it: usr/local/bin/envoy as Istio packs it) and a small .dwp are served by the tests' HTTP
server (tests/http_origin.py, sendfile) on loopback. In one run, median of --repeat:
  curl -o /dev/null   the transfer alone (the issue's yardstick);
  curl -o FILE        the transfer and one copy on disk, the least any download must do;
  the stack's script  as the program renders it (envoy-fetch), fetching, hashing and extracting in one pass;
                      its time is that of a first run less a second, cached run's (which reads the files'
                      build-id and debug info and requests nothing), so it is the download's own.
Unthrottled (loopback is faster than any link, so this shows the pipeline's own ceiling) and with the server
held to a user's link (--rate, MB/s; 125 = 1 Gbit/s), where the question is whether the pipeline keeps up.

    .venv/bin/python bench/prebuilt_fetch.py [--size-mb 1000] [--repeat 3] [--rate 125 --rate 1250]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import evaluate, resource, run_rendered  # noqa: E402
from tests.http_origin import Origin  # noqa: E402
from tests.istio_envoy import build  # noqa: E402
from tests.prebuilt_session import SHA, succeeded  # noqa: E402

GOAL = 0.7
CHUNK = 1 << 24


def payload_archive(folder: Path, size: int) -> None:
    """envoy-debug-SHA.tar.gz (a real ELF padded to `size` with random bytes, gzip -1 by pigz when there is
    one), its .sha256 and a real .dwp, as the bucket holds them."""
    envoy = build(folder / "ci")
    elf = folder / "envoy"
    shutil.copy(envoy.elf, elf)
    with elf.open("ab") as f:
        left = size - elf.stat().st_size
        while left > 0:
            f.write(os.urandom(min(CHUNK, left)))
            left -= CHUNK
    bucket = folder / "bucket"
    bucket.mkdir()
    archive = bucket / f"envoy-debug-{SHA}.tar.gz"
    with tarfile.open(folder / "envoy.tar", "w") as tar:
        tar.add(elf, arcname="./usr/local/bin/envoy")
    compress = [shutil.which("pigz") or "gzip", "-1", "-c", str(folder / "envoy.tar")]
    with archive.open("wb") as out:
        subprocess.run(compress, stdout=out, check=True)
    (folder / "envoy.tar").unlink()
    elf.unlink()
    digest = subprocess.run(["sha256sum", str(archive)], capture_output=True, text=True, check=True).stdout.split()[0]
    (bucket / f"envoy-debug-{SHA}.sha256").write_text(f"{digest}  /home/prow/envoy-debug-{SHA}.tar.gz\n")
    shutil.copy(envoy.dwp, bucket / f"envoy-debug-{SHA}.dwp")


def timed(command: list[str], **env: str) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, env={**os.environ, **env})
    return time.perf_counter() - start


def curl(url: str, output: str) -> list[str]:
    return ["curl", "--silent", "--show-error", "--fail", "--output", output, url]


def script(fetch: dict, cache: Path, base_url: str) -> float:
    """Seconds of one run of the stack's script, as the program renders it."""
    start = time.perf_counter()
    succeeded(run_rendered(fetch, BASE_URL=base_url, SHA=SHA, DEST_DIR=str(cache)))
    return time.perf_counter() - start


def measure(bucket: Path, work: Path, fetch: dict, rate: float | None, repeat: int) -> dict[str, float]:
    """Median seconds of each way to fetch the tar.gz."""
    times: dict[str, list[float]] = {"curl -o /dev/null": [], "curl -o FILE": [], "the stack's script": []}
    name = f"envoy-debug-{SHA}.tar.gz"
    copy, cache = work / "copy", work / "cache"
    with Origin(bucket, rate=rate) as origin:
        # The server's ETags and MD5s, and the page cache, before anything is timed.
        for served in bucket.iterdir():
            origin.identity(served)
        timed(curl(f"{origin.url}/{name}", "/dev/null"))
        for _ in range(repeat):
            times["curl -o /dev/null"].append(timed(curl(f"{origin.url}/{name}", "/dev/null")))
            times["curl -o FILE"].append(timed(curl(f"{origin.url}/{name}", str(copy))))
            copy.unlink()
            first = script(fetch, cache, origin.url)
            times["the stack's script"].append(first - script(fetch, cache, origin.url))
            shutil.rmtree(cache)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1000, help="size of the tar.gz, in MB (10^6 B)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rate", type=float, action="append", default=[], metavar="MB_PER_S",
                        help="also hold the server to this rate (125 = 1 Gbit/s)")
    options = parser.parse_args()
    fetch = resource(evaluate("dev", "envoySource=prebuilt"), "envoy-fetch")["inputs"]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        payload_archive(work, options.size_mb * 10**6)
        size = (work / "bucket" / f"envoy-debug-{SHA}.tar.gz").stat().st_size
        tools = "pigz" if shutil.which("pigz") else "gzip"
        print(f"envoy-debug-<SHA>.tar.gz: {size:,} B (random content; inflated by {tools}), loopback, "
              f"median of {options.repeat}")
        for rate in [None, *options.rate]:
            found = measure(work / "bucket", work, fetch, rate * 10**6 if rate else None, options.repeat)
            print(f"  server {'unthrottled' if rate is None else f'held to {rate:g} MB/s'}:")
            for name, seconds in found.items():
                print(f"    {name:20} {seconds:7.2f} s  {size / seconds / 10**6:8.0f} MB/s")
            baseline = found["curl -o /dev/null"]
            ratio = baseline / found["the stack's script"]
            verdict = "met" if ratio >= GOAL else "UNDER"
            to_file = found["curl -o FILE"] / found["the stack's script"]
            print(f"    the stack's script / curl -o /dev/null: {ratio:.2f}x (goal >= {GOAL}x: {verdict}); "
                  f"/ curl -o FILE: {to_file:.2f}x")


if __name__ == "__main__":
    main()
