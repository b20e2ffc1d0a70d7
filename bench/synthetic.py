"""A synthetic debug ELF: many template-heavy C++ translation units compiled like Envoy's debug build
(-g -O0), large enough to stand in for Envoy in the benchmarks."""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
from pathlib import Path

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
    """Compiles `units` translation units (on every core) and links them into work/envoy, which parks in
    park() when SYNTHETIC_PARK is set (a process to attach to)."""
    sources = []
    for n in range(units):
        source = work / f"unit{n}.cc"
        source.write_text(UNIT.format(n=n, ks=", ".join(str(n * 40 + k) for k in range(40))))
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
        subprocess.run(["g++", "-std=c++17", "-g", "-O0", "-c", str(source), "-o", str(obj)], check=True)
        return obj

    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        objects = list(pool.map(compile_one, sources))
    elf = work / "envoy"
    subprocess.run(["g++", "-o", str(elf), *map(str, objects)], check=True)
    return elf
