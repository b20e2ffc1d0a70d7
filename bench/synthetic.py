"""A synthetic debug ELF: many template-heavy C++ translation units compiled and linked like Envoy's debug
build (clang, -g -O0, plus the compiler and linker options the stack's bazelBuildArgs add), large enough
to stand in for Envoy in the benchmarks."""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from components.bazel_args import marks_dead_code  # noqa: E402
from tests.mock_stack import default_bazel_options  # noqa: E402

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


def walkthrough_linkopts() -> list[str]:
    """The stack's link without what it adds to the debug info (dead code's addresses marked dead): the
    same linker, so that only the debug info differs."""
    return [o for o in default_bazel_options("linkopt") if not marks_dead_code(o)]


def fingerprint(units: int) -> str:
    """Changes with everything the ELF is built from: the unit's source, the compiler, the stack's options."""
    version = subprocess.run([clang(), "--version"], capture_output=True, text=True, check=True).stdout
    made_of = [UNIT, SHARED, OWN, units, version, default_bazel_options("copt"), default_bazel_options("linkopt")]
    return hashlib.sha256(repr(made_of).encode()).hexdigest()[:12]


def build_debug_elf(work: Path, units: int) -> Path:
    """Compiles `units` translation units (on every core) as the stack builds Envoy and links them into
    work/envoy, which parks in park() when SYNTHETIC_PARK is set (a process to attach to). The objects
    stay in `work` for `relink`."""
    compiler = clang()
    flags = ["-std=c++17", "-g", "-O0", *default_bazel_options("copt")]
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
        list(pool.map(compile_one, sources))
    return relink(work, units, work / "envoy", default_bazel_options("linkopt"))


def relink(work: Path, units: int, elf: Path, linkopts: list[str]) -> Path:
    """Links the objects build_debug_elf compiled in `work` into `elf` with these linker options."""
    objects = [str(work / f"unit{n}.o") for n in range(units)] + [str(work / "main.o")]
    subprocess.run([clang(), *linkopts, "-o", str(elf), *objects], check=True)
    return elf
