"""A synthetic debug ELF: many template-heavy C++ translation units compiled like Envoy's debug build
(clang, -g -O0, plus the extra compiler options the stack's bazelBuildArgs add), large enough to stand in
for Envoy in the benchmarks."""

from __future__ import annotations

import concurrent.futures
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from components.config import bazel_copts  # noqa: E402

# Shaped like Envoy's translation units: each includes the same headers, so its debug info repeats their
# types and inline functions (the linker keeps one copy of the code, and one symbol), and adds a few
# functions of its own. Per unit, SHARED instantiations common to all and OWN unique ones.
SHARED, OWN = 40, 4
UNIT = """\
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <variant>
#include <vector>
namespace shared {{
struct Common {{}};
template <class Tag, int K> struct Filter {{
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
template <class Tag, int... Ks> std::string run(const std::string& in) {{
  return (Filter<Tag, Ks>().onData(in) + ...);
}}
}}  // namespace shared
namespace unit{n} {{
struct Own {{}};
std::string entry(const std::string& in) {{
  return shared::run<shared::Common, {shared}>(in) + shared::run<Own, {own}>(in);
}}
}}  // namespace unit{n}
"""


def clang() -> str:
    """Envoy is built with clang; Debian's `clang` package provides clang++."""
    found = shutil.which("clang++") or shutil.which("clang++-14")
    if found is None:
        sys.exit("clang++ is missing: apt-get install clang")
    return found


def stack_copts() -> list[str]:
    """The compiler options the stack's default bazelBuildArgs pass with --copt (Pulumi.yaml)."""
    return bazel_copts(yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["config"]["bazelBuildArgs"]["default"])


def build_debug_elf(work: Path, units: int) -> Path:
    """Compiles `units` translation units (on every core) as the stack builds Envoy and links them into
    work/envoy, which parks in park() when SYNTHETIC_PARK is set (a process to attach to)."""
    compiler = clang()
    flags = ["-std=c++17", "-g", "-O0", *stack_copts()]
    sources = []
    for n in range(units):
        source = work / f"unit{n}.cc"
        source.write_text(UNIT.format(n=n, shared=", ".join(map(str, range(SHARED))),
                                      own=", ".join(map(str, range(OWN)))))
        sources.append(source)
    main = work / "main.cc"
    main.write_text(
        "#include <cstdlib>\n#include <string>\n#include <unistd.h>\n"
        + "".join(f"namespace unit{n} {{ std::string entry(const std::string&); }}\n" for n in range(units))
        + "[[gnu::noinline]] void park() { pause(); }\n"
        + "int main(int argc, char**) { std::string s;\n"
        + "".join(f"  if (argc > 99) s += unit{n}::entry(s);\n" for n in range(units))
        + "  if (std::getenv(\"SYNTHETIC_PARK\")) park();\n"
        + "  return (int)s.size(); }\n"
    )
    sources.append(main)

    def compile_one(source: Path) -> Path:
        obj = source.with_suffix(".o")
        subprocess.run([compiler, *flags, "-c", str(source), "-o", str(obj)], check=True)
        return obj

    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        objects = list(pool.map(compile_one, sources))
    elf = work / "envoy"
    subprocess.run([compiler, "-o", str(elf), *map(str, objects)], check=True)
    return elf
