"""The bytes an Envoy rebuild ships: the debug image's last layer, with and without stripping.

Builds a real debug ELF here — a synthetic C++ program of many template-heavy translation units,
compiled like Envoy's debug build (-g -O0) — then stages it for the image with the project's own step
(components/scripts/prepare-image-context.sh, as the program renders it), once stripped and once not,
and measures the layer `COPY envoy /usr/local/bin/envoy` makes: its tar, and the gzip stream a push
sends. Goal: the shipped layer at most 15% of the unstripped ELF.

    .venv/bin/python bench/image_delta.py [translation units, default 48]
"""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
import sys
import tarfile
import tempfile
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from components.debug_image import DOCKERFILE  # noqa: E402
from components.scripts import dockerfile, script  # noqa: E402

GOAL = 0.15

UNIT = """\
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <variant>
#include <vector>
namespace unit{n} {{
template <int K> struct Filter {{
  std::map<std::string, std::vector<std::variant<int, double, std::string>>> headers;
  std::unordered_map<int, std::function<std::string(const std::string&)>> callbacks;
  using Stats = std::vector<std::pair<std::string, int>>;
  std::shared_ptr<Stats> stats = std::make_shared<Stats>();
  std::string onData(const std::string& in) {{
    headers[in].emplace_back(K);
    callbacks.emplace(K, [](const std::string& s) {{ return s + std::to_string(K); }});
    stats->emplace_back(in, K);
    return callbacks[K](in) + std::to_string(headers.size());
  }}
}};
template <int... Ks> std::string run(const std::string& in) {{ return (Filter<Ks>().onData(in) + ...); }}
std::string entry(const std::string& in) {{
  return run<{ks}>(in);
}}
}}  // namespace unit{n}
"""


def build_debug_elf(work: Path, units: int) -> Path:
    sources = []
    for n in range(units):
        source = work / f"unit{n}.cc"
        source.write_text(UNIT.format(n=n, ks=", ".join(str(n * 40 + k) for k in range(40))))
        sources.append(source)
    main = work / "main.cc"
    main.write_text(
        "#include <string>\n"
        + "".join(f"namespace unit{n} {{ std::string entry(const std::string&); }}\n" for n in range(units))
        + "int main(int argc, char**) { std::string s;\n"
        + "".join(f"  if (argc > 99) s += unit{n}::entry(s);\n" for n in range(units))
        + "  return (int)s.size(); }\n"
    )
    sources.append(main)

    def compile_one(source: Path) -> Path:
        obj = source.with_suffix(".o")
        subprocess.run(["g++", "-std=c++17", "-g", "-O0", "-c", str(source), "-o", str(obj)], check=True)
        return obj

    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        objects = list(pool.map(compile_one, sources))
    elf = work / "envoy"
    subprocess.run(["g++", "-o", str(elf), *map(str, objects)], check=True)
    return elf


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
