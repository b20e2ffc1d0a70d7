"""The debugger part of the debug image: lldb-server's closure (what the image ships) against the whole
lldb toolchain (what the walkthrough's `apt install lldb` ships), measured on this machine's Debian lldb.

"The base" stands for the proxyv2 base image (Ubuntu): the packages of priority `required`. The closure
is made by the Dockerfile's own collector (its COLLECT_LLDB_SERVER heredoc) against that base; the
toolchain is every package `apt-get install --no-install-recommends lldb` needs beyond that base.

    .venv/bin/python bench/debugger_layer.py
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "components" / "docker" / "debug-image.Dockerfile"


def dpkg(*args: str) -> str:
    return subprocess.run(["dpkg-query", *args], check=True, capture_output=True, text=True).stdout


def required_packages() -> set[str]:
    rows = dpkg("-W", "-f", "${Package}:${Architecture} ${Priority} ${Status}\n").splitlines()
    return {r.split()[0].split(":")[0] for r in rows if " required " in r and r.endswith("installed")}


def dependency_closure(package: str) -> set[str]:
    """The installed packages `package` needs (Depends and Pre-Depends, recursively)."""
    seen: set[str] = set()
    todo = [package]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        fields = dpkg("-W", "-f", "${Depends}, ${Pre-Depends}", name)
        seen.add(name)
        for alternative in filter(None, (d.strip() for d in fields.split(","))):
            for candidate in (a.strip().split(" ")[0].split(":")[0] for a in alternative.split("|")):
                if subprocess.run(["dpkg-query", "-W", candidate], capture_output=True).returncode == 0:
                    todo.append(candidate)
                    break
    return seen


def installed_bytes(packages: set[str]) -> int:
    return sum(int(dpkg("-W", "-f", "${Installed-Size}", p) or 0) * 1024 for p in packages)


def base_libraries(packages: set[str]) -> list[str]:
    names = set()
    for package in packages:
        for path in dpkg("-L", package).splitlines():
            if re.search(r"\.so(\.|$)", os.path.basename(path)):
                names.add(os.path.basename(path))
    return sorted(names)


def main() -> None:
    for tool in ("lldb-server", "patchelf", "dpkg-query"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is missing: make test installs it")
    base = required_packages()
    toolchain = dependency_closure("lldb") - base
    collector = re.search(r"<<'COLLECT_LLDB_SERVER'\n(.*?)\nCOLLECT_LLDB_SERVER\n", DOCKERFILE.read_text(),
                          flags=re.DOTALL).group(1)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "base-libs").write_text("".join(f"{n}\n" for n in base_libraries(base)))
        out = Path(tmp) / "out"
        subprocess.run(["bash", "-euo", "pipefail"], input=collector, text=True, check=True, capture_output=True,
                       env={**os.environ, "OUT": str(out), "BASE_LIBS": str(Path(tmp) / "base-libs")})
        files = [p for p in out.rglob("*") if p.is_file() and not p.is_symlink()]
        closure = sum(p.stat().st_size for p in files)
    full = installed_bytes(toolchain)
    version = subprocess.run(["lldb-server", "version"], capture_output=True, text=True)
    print(f"lldb on this machine: {(version.stdout + version.stderr).strip()}")
    print(f"  whole toolchain (apt install lldb, {len(toolchain)} packages beyond the base): {full:>13,} B")
    print(f"  lldb-server closure shipped by the image ({len(files)} files):          {closure:>13,} B")
    print(f"  ratio: {closure / full:.2f} ({full / closure:.1f}x smaller); shipped once per Istio version, "
          "not per Envoy build")


if __name__ == "__main__":
    main()
