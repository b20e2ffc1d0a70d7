"""The binaries tools/toolchain.sh built (`make toolchain`), and the Pulumi CLI run as a user runs it: a file
backend in the test's folder, a passphrase secrets provider, the plugins from the tests' PULUMI_HOME, and
nothing fetched from outside (no update check, no plugin download)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT

TOOLCHAIN_SCRIPT = ROOT / "tools" / "toolchain.sh"
PULUMI_HOME = ROOT / ".cache" / "pulumi-home"
PASSPHRASE = "tests-passphrase"


def script_value(name: str) -> str:
    """A version the toolchain script pins (NAME=value)."""
    return re.search(rf"^{name}=(\S+)$", TOOLCHAIN_SCRIPT.read_text(), re.M).group(1)


def toolchain_dir() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return Path(os.environ.get("TOOLCHAIN_DIR", cache / "istio-proxy-debug" / "toolchain"))


def toolchain_bin() -> Path:
    """TOOLCHAIN_DIR/bin with every binary the tests run; a skip outside CI (a failure in CI) when `make
    toolchain` has not built them."""
    bin_dir = toolchain_dir() / "bin"
    wanted = ("pulumi", "etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "kubelet",
              "kwok")
    missing = [name for name in wanted if not os.access(bin_dir / name, os.X_OK)]
    if missing:
        pytest.skip(f"{', '.join(missing)} not built in {bin_dir}: run `make toolchain`")
    return bin_dir


@dataclass
class Pulumi:
    """The CLI in one project folder, with the environment a user's shell would give it."""

    bin_dir: Path
    project: Path
    env: dict[str, str]

    def __call__(self, *args: str, check: bool = True, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
        done = subprocess.run([str(self.bin_dir / "pulumi"), *args, "--non-interactive"], cwd=self.project,
                              env=self.env, capture_output=True, text=True, timeout=timeout, **kwargs)
        if check and done.returncode != 0:
            raise AssertionError(f"pulumi {' '.join(args)} exited {done.returncode}:\n{done.stdout[-4000:]}\n"
                                 f"{done.stderr[-4000:]}")
        return done

    def make_stack(self, name: str, *new_stack_args: str) -> None:
        """`make stack NAME=name …` (the Makefile's `stack` target): tools/new_stack.py writes Pulumi.<name>.yaml,
        then `pulumi stack init` with a passphrase secrets provider."""
        made = subprocess.run([sys.executable, "tools/new_stack.py", name, *new_stack_args], cwd=self.project,
                              capture_output=True, text=True, timeout=60)
        assert made.returncode == 0, made.stderr
        self("stack", "init", name, "--secrets-provider", "passphrase")


def pulumi_env(bin_dir: Path, state: Path, **extra: str) -> dict[str, str]:
    """A user's environment for the CLI: its folder first on PATH (the language host is found beside it), the
    backend and passphrase set, and the CLI kept from reaching out (update check, plugin downloads)."""
    state.mkdir(parents=True, exist_ok=True)
    return {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}",
        "PULUMI_HOME": str(PULUMI_HOME),
        "PULUMI_BACKEND_URL": f"file://{state}",
        "PULUMI_CONFIG_PASSPHRASE": PASSPHRASE,
        "PULUMI_SKIP_UPDATE_CHECK": "true",
        "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
        **extra,
    }


def user_project(folder: Path) -> Path:
    """This project as a user's clone has it, in `folder`: Pulumi.yaml, the committed stack files, the program,
    its components and tools, and the virtualenv `make` made (.venv, linked), so stacks made there stay there."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in (*ROOT.glob("Pulumi*.yaml"), ROOT / "__main__.py", ROOT / "requirements.txt"):
        shutil.copy2(path, folder)
    for tree in ("components", "tools"):
        shutil.copytree(ROOT / tree, folder / tree, ignore=shutil.ignore_patterns("__pycache__", "toolchain"))
    (folder / ".venv").symlink_to(ROOT / ".venv")
    return folder


def program_project(name: str, bin_dir: Path, folder: Path, **env: str) -> Pulumi:
    """tests/data/<name>/__main__.py as a user's project in `folder`: Pulumi.yaml naming the project's
    virtualenv, one stack (`name`) on a file backend with a passphrase, `env` added."""
    project = folder / "project"
    project.mkdir(parents=True)
    shutil.copy(ROOT / "tests" / "data" / name / "__main__.py", project)
    (project / "Pulumi.yaml").write_text(
        f"name: {name}\nruntime:\n  name: python\n  options:\n    toolchain: pip\n"
        f"    virtualenv: {ROOT / '.venv'}\n")
    pulumi = Pulumi(bin_dir, project, pulumi_env(bin_dir, folder / "state", **env))
    pulumi("stack", "init", name, "--secrets-provider", "passphrase")
    return pulumi
