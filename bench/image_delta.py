"""The bytes an Envoy rebuild pushes, measured at the real registry.

Builds a real debug ELF here (a synthetic C++ program of many template-heavy translation units, compiled like
Envoy's debug build: bench/synthetic.py), then runs the stack's own steps against a real Docker engine
(tests/docker_engine.py: Debian's docker.io in its own network namespace, stand-in base images from
debootstrap): the registry container with the stack's arguments, the staging script (stripped, the default)
and the build-and-push command, exactly as the program renders them. A second ELF — one translation unit
more, so every address moves, as a real change does — is staged, built and pushed the same way. The figure
is what the second push added to the registry's blob store (the layer, the image config, the manifest), as
a share of the unstripped debug ELF. Goal: at most 3 %.

    .venv/bin/python bench/image_delta.py [translation units, default 48]      (as root)
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from synthetic import build_debug_elf  # noqa: E402

from tests.conftest import evaluate, resource  # noqa: E402
from tests.docker_engine import (  # noqa: E402
    base_image,
    engine,
    registry_blobs,
    registry_stand_in,
    stage_and_build,
    start_registry,
)

GOAL = 0.03


def main() -> None:
    units = int(sys.argv[1]) if len(sys.argv) > 1 else 48
    with tempfile.TemporaryDirectory() as tmp, engine() as docker:
        work = Path(tmp)
        evaluation = evaluate("ci", f"workDir={work / 'istio-testing'}", "envoySource=build")
        base_image(docker, resource(evaluation, "debug-image-build")["inputs"]["environment"]["BASE_IMAGE"])
        registry_stand_in(docker, Path(tempfile.mkdtemp(dir=tmp)))
        registry = start_registry(docker, evaluation)
        try:
            (work / "first").mkdir()
            (work / "second").mkdir()
            first = build_debug_elf(work / "first", units)
            stage_and_build(docker, evaluation, first, work / "first" / "context")
            before = registry_blobs(registry)
            second = build_debug_elf(work / "second", units + 1)
            staged, pushed = stage_and_build(docker, evaluation, second, work / "second" / "context")
            added = {d: size for d, size in registry_blobs(registry).items() if d not in before}
            full = second.stat().st_size
        finally:
            docker.docker("rm", "--force", registry["name"], check=False)
    total = sum(added.values())
    print(f"debug ELF built here: {units + 1} template-heavy C++ units, -g -O0: {full:,} bytes")
    print(f"staged for the image (stripped, the default): {staged.split('bytes=')[1].split()[0]} bytes")
    print(f"second push, measured in the registry's blob store: {len(added)} new blobs, {total:,} bytes "
          f"({', '.join(f'{size:,}' for size in sorted(added.values(), reverse=True))})")
    print(f"pushed: {pushed}")
    verdict = "within" if total <= GOAL * full else "OVER"
    print(f"bytes pushed for an Envoy change: {total / full:.2%} of the debug ELF; goal <= {GOAL:.0%}: {verdict}")


if __name__ == "__main__":
    main()
