"""A real Docker engine for the tests (Debian's docker.io), kept off the machine's own network configuration.

dockerd runs in a network namespace of its own (`ipd-docker`), so its bridges, NAT and iptables rules live
there and the machine's root iptables are never touched. Its only link is a veth pair to the root namespace;
nothing forwards across it. Builds and containers reach Debian's archive through a forward proxy that
listens on the root side of that pair (tests/forward_proxy.py): the docker client's own `proxies` setting
(DOCKER_CONFIG) hands it to every build and container as http_proxy, as Docker documents for hosts behind a
proxy. A dockerd that is already serving the default socket is used as it is and left running; the tests
use the `ci` stack's names (suffixed `-ci`), never the walkthrough's, so a developer's own containers on
that engine are not touched. Its runtime is Debian's runc behind tests/runc_within_bounds.py, which keeps
a privileged container's capabilities within this machine's own bounding set, so the stack's privileged
debugger starts here as it would on a developer's machine.

No image can be pulled here: `base_image` makes a Debian bookworm root with debootstrap (from Debian's own
archive, cached under .cache/) and imports it under the name an image of the stack asks for — a stand-in,
named so in its label.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import resource, run_rendered, stop

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "docker-engine"
NETNS = "ipd-docker"
HOST_SIDE, ENGINE_SIDE = "10.203.0.1", "10.203.0.2"
# The default socket: the stack's builder and debugger mount it (docker.sock), so the engine must serve it.
SOCKET = Path("/var/run/docker.sock")
RUNTIME = Path("/run/ipd-docker")
# Debian's client (20.10) uses the engine's built-in BuildKit; the machine may put a newer client without the
# buildx plugin first on PATH, with which DOCKER_BUILDKIT=1 fails.
CLIENT = "/usr/bin/docker"
STAND_IN_LABEL = "istio-proxy-debug.stand-in"
# The engine's runtime: Debian's runc, with a container's capabilities kept within this machine's bounding set.
RUNTIME_NAME = "runc-within-bounds"


@dataclass
class Engine:
    env: dict[str, str]
    # In the tests' network namespace (started here, or by an earlier session that keeps it running).
    in_netns: bool

    @property
    def address(self) -> str:
        """Where this machine reaches the engine's published ports: its namespace's end of the veth, or
        loopback for the machine's own engine."""
        return ENGINE_SIDE if self.in_netns else "127.0.0.1"

    def docker(self, *args: str, check: bool = True, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
        done = subprocess.run([CLIENT, *args], env=self.env, capture_output=True, text=True, timeout=timeout,
                              **kwargs)
        if check and done.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)}: {done.stderr}")
        return done


def _run(*args: str) -> None:
    done = subprocess.run(list(args), capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(args)}: {done.stderr.strip()}")


def _clear_leftovers() -> None:
    """Removes the namespace and veth of an earlier session that ended without its cleanup (killed, or the
    machine's processes restarted): they outlive their dockerd, and `ip netns add` would then refuse. Called only
    when no engine answers, so nothing serves from them."""
    if Path(f"/run/netns/{NETNS}").exists():
        _run("ip", "netns", "del", NETNS)
    if Path("/sys/class/net/ipd-dk0").exists():
        _run("ip", "link", "del", "ipd-dk0")


def _engine_env(config: Path) -> dict[str, str]:
    # /usr/bin first: Debian's docker client, whatever else is on PATH.
    path = "/usr/bin:/usr/sbin:/bin:/sbin:" + os.environ.get("PATH", "")
    return {**os.environ, "PATH": path, "DOCKER_HOST": f"unix://{SOCKET}", "DOCKER_CONFIG": str(config)}


def _serving_from_netns() -> bool:
    """Whether the engine that answers is one of these tests' (dockerd in NETNS, say kept running by a developer
    between test sessions) rather than the machine's own."""
    try:
        pid = int((RUNTIME / "pid").read_text())
        return os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(f"/run/netns/{NETNS}").st_ino
    except (OSError, ValueError):
        return False


def _answers(env: dict[str, str]) -> bool:
    done = subprocess.run([CLIENT, "info", "--format", "{{.ServerVersion}}"], env=env, capture_output=True,
                          text=True, timeout=30)
    return done.returncode == 0


@contextlib.contextmanager
def engine() -> Iterator[Engine]:
    """The engine: the one serving SOCKET, or one started here in its own network namespace and stopped after.
    `python -m tests.docker_engine` starts one and keeps it until interrupted, for test sessions side by side."""
    config = CACHE / "client-config"
    config.mkdir(parents=True, exist_ok=True)
    env = _engine_env(config)
    if _answers(env):
        # The client config (its proxy's port) is the one written by whoever started this engine: kept.
        yield Engine(env, in_netns=_serving_from_netns())
        return
    _clear_leftovers()
    with contextlib.ExitStack() as stack:
        _run("ip", "netns", "add", NETNS)
        stack.callback(subprocess.run, ["ip", "netns", "del", NETNS], capture_output=True)
        _run("ip", "link", "add", "ipd-dk0", "type", "veth", "peer", "name", "ipd-dk1", "netns", NETNS)
        stack.callback(subprocess.run, ["ip", "link", "del", "ipd-dk0"], capture_output=True)
        _run("ip", "addr", "add", f"{HOST_SIDE}/30", "dev", "ipd-dk0")
        _run("ip", "link", "set", "ipd-dk0", "up")
        for command in (["addr", "add", f"{ENGINE_SIDE}/30", "dev", "ipd-dk1"], ["link", "set", "ipd-dk1", "up"],
                        ["link", "set", "lo", "up"], ["route", "add", "default", "via", HOST_SIDE]):
            _run("ip", "-n", NETNS, *command)
        # On a port the kernel chooses: a fixed one (apt-cacher-ng's 3142, say) may be held by a listener on every
        # address of this machine.
        proxy_log = CACHE / "forward-proxy.log"
        with open(proxy_log, "w") as proxy_errors:
            proxy_process = subprocess.Popen(
                [sys.executable, str(ROOT / "tests" / "forward_proxy.py"), HOST_SIDE, "0"],
                stdout=subprocess.PIPE, stderr=proxy_errors, text=True)
        stack.callback(stop, proxy_process)
        ready = proxy_process.stdout.readline().split()
        assert ready[:1] == ["ready"] and len(ready) == 2, (
            f"the forward proxy did not start: {proxy_log.read_text()[-2000:]}")
        proxy = f"http://{HOST_SIDE}:{ready[1]}"
        (config / "config.json").write_text(json.dumps({"proxies": {"default": {"httpProxy": proxy}}}))
        RUNTIME.mkdir(parents=True, exist_ok=True)
        log = open(CACHE / "dockerd.log", "w")  # noqa: SIM115 (closed by the exit stack)
        stack.callback(log.close)
        daemon = subprocess.Popen(
            # nsenter, not `ip netns exec`: that remounts /sys, hiding the cgroup mounts dockerd needs.
            ["nsenter", f"--net=/run/netns/{NETNS}", "dockerd", f"--host=unix://{SOCKET}",
             f"--pidfile={RUNTIME}/pid", f"--exec-root={RUNTIME}/exec", f"--data-root={CACHE / 'data'}",
             # Privileged containers (the stack's debugger) start on a machine that withholds a capability.
             f"--add-runtime={RUNTIME_NAME}={ROOT / 'tests' / 'runc_within_bounds.py'}",
             f"--default-runtime={RUNTIME_NAME}"],
            stdout=log, stderr=subprocess.STDOUT)
        stack.callback(stop, daemon)
        deadline = time.monotonic() + 60
        while not _answers(env):
            assert daemon.poll() is None, (CACHE / "dockerd.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "dockerd did not answer within 60 s"
            time.sleep(0.5)
        yield Engine(env, in_netns=True)


def made_by(engine: Engine, kind: str, name: str, label: str) -> bool | None:
    """Whether the container or network `name` carries `label` (key=value): made by the test that uses it, say an
    earlier run's leftover; None when there is none of that name."""
    labels = ".Config.Labels" if kind == "container" else ".Labels"
    key, value = label.split("=", 1)
    done = engine.docker(kind, "inspect", "--format", f'{{{{index {labels} "{key}"}}}}', name, check=False)
    return None if done.returncode != 0 else done.stdout.strip() == value


def _rootfs_tar(name: str, include: tuple[str, ...]) -> Path:
    """A Debian bookworm minbase root (with `include`), made once by debootstrap and cached as a tar."""
    tar = CACHE / f"{name}.tar"
    if tar.exists():
        return tar
    work = CACHE / f"{name}.root"
    shutil.rmtree(work, ignore_errors=True)
    args = ["debootstrap", "--variant=minbase"]
    if include:
        args.append("--include=" + ",".join(include))
    subprocess.run([*args, "bookworm", str(work), "http://deb.debian.org/debian"], check=True, capture_output=True,
                   text=True, timeout=900)
    # apt inside the images finds the archive as the host does.
    shutil.copy("/etc/apt/sources.list.d/debian.sources", work / "etc/apt/sources.list.d/debian.sources")
    (work / "etc/apt/sources.list").unlink(missing_ok=True)
    subprocess.run(["tar", "-C", str(work), "-cf", str(tar) + ".partial", "."], check=True, timeout=300)
    os.replace(str(tar) + ".partial", tar)
    shutil.rmtree(work)
    return tar


def base_image(engine: Engine, reference: str, *, include: tuple[str, ...] = (), changes: tuple[str, ...] = ()) -> str:
    """`reference` in the engine, as a stand-in made from Debian bookworm; returns the reference."""
    if engine.docker("image", "inspect", reference, check=False).returncode == 0:
        return reference
    tar = _rootfs_tar("bookworm" + "".join(f"-{p}" for p in include), include)
    args = ["import", "--change", f"LABEL {STAND_IN_LABEL}=debootstrap-bookworm"]
    for change in changes:
        args += ["--change", change]
    engine.docker(*args, str(tar), reference)
    return reference


# --- the stack's Docker side, as its resources give it ---------------------------------------------------------

BOOKWORM = "istio-proxy-debug-stand-in/bookworm:latest"
# The official registry:2 image's own configuration (distribution's cmd/registry/config-example.yml).
REGISTRY_CONFIG = """version: 0.1
log:
  fields:
    service: registry
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: /var/lib/registry
http:
  addr: :5000
  headers:
    X-Content-Type-Options: [nosniff]
"""
# registry:2 stand-in: Debian's docker-registry is the same distribution registry.
REGISTRY_STAND_IN = f"""FROM {BOOKWORM}
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends docker-registry \\
 && rm -rf /var/lib/apt/lists/*
COPY config.yml /etc/docker/registry/config.yml
EXPOSE 5000
ENTRYPOINT ["/usr/bin/docker-registry", "serve", "/etc/docker/registry/config.yml"]
"""


def run_args(inputs: dict) -> list[str]:
    """`docker run` arguments for a docker.Container's inputs: each provider argument the stack sets, as the
    CLI spells it, so the engine itself judges them."""
    args = ["--detach", "--name", inputs["name"]]
    if inputs.get("hostname"):
        args += ["--hostname", inputs["hostname"]]
    if inputs.get("restart"):
        args += ["--restart", inputs["restart"]]
    for env in inputs.get("envs", []):
        args += ["--env", env]
    for port in inputs.get("ports", []):
        bound = f"{port['ip']}:" if port.get("ip") else ""
        args += ["--publish", f"{bound}{int(port['external'])}:{int(port['internal'])}"]
    for mount in inputs.get("mounts", []):
        assert mount["type"] == "bind", mount
        args += ["--mount", f"type=bind,source={mount['source']},target={mount['target']}"
                 + (",readonly" if mount.get("readOnly") else "")]
    return args


def registry_stand_in(engine: Engine, context: Path) -> str:
    """registry:2, made here."""
    base_image(engine, BOOKWORM)
    (context / "config.yml").write_text(REGISTRY_CONFIG)
    (context / "Dockerfile").write_text(REGISTRY_STAND_IN)
    engine.docker("build", "--tag", "registry:2", str(context))
    return "registry:2"


def start_registry(engine: Engine, evaluation: dict) -> dict:
    """The stack's registry container (its inputs), replacing one of the same name, once it answers."""
    inputs = resource(evaluation, "registry-container")["inputs"]
    Path(inputs["mounts"][0]["source"]).mkdir(parents=True, exist_ok=True)
    engine.docker("rm", "--force", inputs["name"], check=False)
    engine.docker("run", *run_args(inputs), resource(evaluation, "registry-image")["inputs"]["name"])
    wait_for_registry(engine, inputs)
    return inputs


def wait_for_registry(engine: Engine, inputs: dict, timeout: float = 60) -> None:
    """A started container is not a listening registry: poll its API root until it answers 200."""
    url = f"http://{engine.address}:{int(inputs['ports'][0]['external'])}/v2/"
    deadline = time.monotonic() + timeout
    while True:
        done = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5", url],
                              capture_output=True, text=True, timeout=30)
        if done.stdout == "200":
            return
        if time.monotonic() > deadline:
            logs = engine.docker("logs", "--tail", "20", inputs["name"], check=False)
            raise AssertionError(f"the registry {inputs['name']} did not answer {url} within {timeout:.0f} s "
                                 f"(last: {done.stdout} {done.stderr.strip()}); its log: {logs.stderr[-1500:]}")
        time.sleep(0.2)


def registry_blobs(inputs: dict) -> dict[str, int]:
    """The registry's stored blobs, by digest, with their sizes: what pushes put on the wire and it kept."""
    blobs = Path(inputs["mounts"][0]["source"]) / "docker" / "registry" / "v2" / "blobs"
    return {p.parent.name: p.stat().st_size for p in blobs.rglob("data")}


def build_id(path: Path) -> str:
    out = subprocess.run(["readelf", "-n", str(path)], check=True, capture_output=True, text=True).stdout
    return re.search(r"Build ID: (\w+)", out).group(1)


def stage_and_build(engine: Engine, evaluation: dict, elf: Path, context: Path) -> tuple[str, str]:
    """The stack's staging script, then its build-and-push command, exactly as rendered (this machine's ELF and
    context folder in place of the lab's): (the staging report, the pushed reference by digest)."""
    staged = run_rendered(resource(evaluation, "debug-image-context")["inputs"], ELF=str(elf),
                          CONTEXT_DIR=str(context), BUILD_ID=build_id(elf))
    assert staged.returncode == 0, staged.stderr
    done = build_and_push(engine, evaluation, context)
    assert done.returncode == 0, done.stderr[-3000:]
    return staged.stdout, done.stdout.strip().splitlines()[-1]


def build_and_push(engine: Engine, evaluation: dict, context: Path, **env: str) -> subprocess.CompletedProcess:
    """The stack's build-and-push command, exactly as rendered, on a staged context (`env` added)."""
    inputs = resource(evaluation, "debug-image-build")["inputs"]
    env = {**engine.env, **inputs["environment"], "CONTEXT_DIR": str(context), **env}
    return subprocess.run([*inputs["interpreter"], inputs["create"]], input=inputs["stdin"], env=env,
                          capture_output=True, text=True, timeout=1800)


if __name__ == "__main__":
    import signal

    # A background job ignores SIGINT: SIGTERM stops it as cleanly.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with engine() as running:
        print(f"the tests' Docker engine serves {SOCKET} (published ports at {running.address}); ^C or SIGTERM "
              "stops it", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()
