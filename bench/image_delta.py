"""The bytes an Envoy rebuild ships: the debug image's last layer, with and without stripping.

Builds a real debug ELF here — a synthetic C++ program of many template-heavy translation units,
compiled like Envoy's debug build (-g -O0) — then stages it for the image with the project's own step
(components/scripts/prepare-image-context.sh, as the program renders it), once stripped and once not,
and measures the layer `COPY envoy /usr/local/bin/envoy` makes: its tar, and the gzip stream a push
sends. Goal: the shipped layer at most 15% of the unstripped ELF.

    .venv/bin/python bench/image_delta.py [translation units, default 48]
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tempfile
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from synthetic import build_debug_elf  # noqa: E402

from components.debug_image import DOCKERFILE  # noqa: E402
from components.scripts import dockerfile, script  # noqa: E402

GOAL = 0.15

def build_id(path: Path) -> str:
    notes = subprocess.run(["readelf", "-n", str(path)], check=True, capture_output=True, text=True).stdout
    return next(line.split()[-1] for line in notes.splitlines() if "Build ID:" in line)


def stage(elf: Path, context: Path, strip: bool) -> Path:
    """The project's staging step, as the program runs it in the builder."""
    env = {**os.environ, "ELF": str(elf), "CONTEXT_DIR": str(context), "STRIP": "true" if strip else "false",
           "BUILD_ID": build_id(elf)}
    subprocess.run(["bash", "-s"], input=script("prepare-image-context.sh"), env=env, check=True, text=True,
                   stdout=subprocess.DEVNULL)
    return context / "envoy"


def layer_bytes(envoy: Path, work: Path) -> tuple[int, int]:
    """(tar, gzip) bytes of the layer holding usr/local/bin/envoy."""
    layer = work / "layer.tar"
    with tarfile.open(layer, "w") as tar:
        tar.add(envoy, arcname="usr/local/bin/envoy")
    compressed = 0
    packer = zlib.compressobj(6, zlib.DEFLATED, 31)  # gzip framing, the level a push uses by default
    with layer.open("rb") as raw:
        for chunk in iter(lambda: raw.read(1 << 24), b""):
            compressed += len(packer.compress(chunk))
    compressed += len(packer.flush())
    size = layer.stat().st_size
    layer.unlink()
    return size, compressed


def main() -> None:
    units = int(sys.argv[1]) if len(sys.argv) > 1 else 48
    last = [line for line in dockerfile(DOCKERFILE).splitlines() if line.strip()][-1]
    assert last == "COPY envoy /usr/local/bin/envoy", "the Envoy layer is no longer the last one"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        elf = build_debug_elf(work, units)
        full = elf.stat().st_size
        print(f"debug ELF built here: {units} template-heavy C++ units, -g -O0: {full:,} bytes")
        rows = []
        for strip in (True, False):
            shipped = stage(elf, work / ("stripped" if strip else "full"), strip)
            tar_bytes, gz_bytes = layer_bytes(shipped, work)
            rows.append((strip, tar_bytes, gz_bytes))
            label = "stripped (default)" if strip else "unstripped"
            print(f"  last layer, {label:18}: tar {tar_bytes:>13,} B   pushed (gzip) {gz_bytes:>13,} B"
                  f"   = {gz_bytes / full:6.1%} of the ELF")
        (_, _, stripped_gz), (_, _, full_gz) = rows
        print(f"  ratio stripped/unstripped pushed layer: {stripped_gz / full_gz:.3f}"
              f" ({full_gz / stripped_gz:.1f}x less per rebuild)")
        verdict = "within" if stripped_gz <= GOAL * full else "OVER"
        print(f"  goal: shipped layer <= {GOAL:.0%} of the unstripped ELF: {verdict} ({stripped_gz / full:.1%})")


if __name__ == "__main__":
    main()
