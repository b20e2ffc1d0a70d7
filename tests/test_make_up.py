"""`make up` on a machine with none of the lab's tools: it installs what it can (kind, checked against its
pinned checksum) and, where it must stop, says what to install — never a stack trace.

The real Makefile runs under GNU make, in a scratch HOME, with a PATH of this machine's basic tools and
stand-ins for the network (curl: kind's download, Pulumi's installer) and for Docker (its CLI's `info`).
No kind and no Pulumi CLI are on that PATH, as on a newcomer's laptop.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT, require_tool

# What the Makefile and tools/install-kind.sh run besides the stand-ins.
BASIC_TOOLS = ("bash", "sh", "env", "grep", "uname", "mktemp", "cut", "sha256sum", "chmod", "mv", "rm", "mkdir",
               "cat", "id", "touch", "python3", "cp")
STAND_IN_KIND = "#!/bin/sh\necho 'kind v0.32.0 (stand-in) linux/amd64'\n"

CURL = r"""#!/usr/bin/env bash
# Stands in for the network: kind's download answers from $KIND_BYTES (when set), anything else fails as an
# offline machine does.
out= url=
while [ $# -gt 0 ]; do
  case "$1" in
    -o) out=$2; shift ;;
    -*) ;;
    *) url=$1 ;;
  esac
  shift
done
echo "$url" >>"$CURL_LOG"
if [[ $url == */kind-linux-* && -n "${KIND_BYTES:-}" ]]; then cp "$KIND_BYTES" "$out"; exit 0; fi
echo "curl: (6) Could not resolve host: ${url#*://}" >&2
exit 6
"""

DOCKER = "#!/bin/sh\n[ \"$1\" = info ] && exit 0\necho \"docker stand-in: $*\" >&2\nexit 1\n"


class Machine:
    """A scratch HOME and a PATH with the basic tools and the chosen stand-ins."""

    def __init__(self, tmp: Path, *, docker: bool = True):
        require_tool("make")
        self.home = tmp / "home"
        self.home.mkdir()
        self.bin = tmp / "bin"
        self.bin.mkdir()
        for tool in BASIC_TOOLS:
            found = shutil.which(tool)
            assert found, f"{tool} is missing on this machine"
            (self.bin / tool).symlink_to(found)
        self._stand_in("curl", CURL)
        if docker:
            self._stand_in("docker", DOCKER)
        self.curl_log = tmp / "curl.log"
        self.env = {"HOME": str(self.home), "PATH": str(self.bin), "CURL_LOG": str(self.curl_log),
                    "LANG": "C.UTF-8"}

    def _stand_in(self, name: str, text: str) -> None:
        path = self.bin / name
        path.write_text(text)
        path.chmod(0o755)

    def make(self, *args: str, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run([shutil.which("make"), "--no-print-directory", "-C", str(ROOT), *args],
                              env={**self.env, **env}, capture_output=True, text=True, timeout=120)

    @property
    def installed_kind(self) -> Path:
        return self.home / ".local" / "bin" / "kind"

    def downloads(self) -> list[str]:
        return self.curl_log.read_text().splitlines() if self.curl_log.exists() else []


def friendly(done: subprocess.CompletedProcess) -> str:
    """The failure's message, after checking it is one: a non-zero exit, no Python traceback."""
    assert done.returncode != 0, done.stdout + done.stderr
    output = done.stdout + done.stderr
    assert "Traceback" not in output, output
    return output


@pytest.fixture
def deps_installed() -> None:
    """The Makefile's `make up` needs the virtualenv; `make test` makes it before the tests run."""
    if not (ROOT / ".venv" / ".installed").exists():
        pytest.skip("make deps has not run (make test runs it first)")


@pytest.fixture
def machine(tmp_path: Path, deps_installed) -> Machine:
    return Machine(tmp_path)


def test_the_lab_is_what_make_up_brings_up():
    assert re.search(r"^STACK \?= lab$", (ROOT / "Makefile").read_text(), flags=re.MULTILINE)
    assert "istio-proxy-debug:cluster: kind" in (ROOT / "Pulumi.lab.yaml").read_text()


def test_without_docker_make_up_says_to_install_it(tmp_path, deps_installed):
    bare = Machine(tmp_path, docker=False)
    output = friendly(bare.make("up"))
    assert "needs Docker (20.10 or later)" in output and "install Docker" in output, output
    assert bare.downloads() == [], "nothing is downloaded before Docker is known to be there"


def test_offline_without_kind_make_up_says_how_to_install_kind(machine):
    output = friendly(machine.make("up"))
    assert "could not download https://kind.sigs.k8s.io/dl/v0.32.0/kind-linux-" in output, output
    assert "install kind v0.32.0 yourself (https://kind.sigs.k8s.io/docs/user/quick-start/#installation)" in output
    assert not machine.installed_kind.exists()
    assert list((machine.home / ".local" / "bin").iterdir()) == [], "no partial download is left behind"


def test_a_kind_download_with_another_checksum_is_refused(machine, tmp_path):
    tampered = tmp_path / "kind-download"
    tampered.write_text(STAND_IN_KIND)
    output = friendly(machine.make("up", KIND_BYTES=str(tampered)))
    actual = hashlib.sha256(tampered.read_bytes()).hexdigest()
    assert f"has SHA-256 {actual}, not the pinned 50030de2" in output or \
        f"has SHA-256 {actual}, not the pinned b92cd615" in output, output
    assert "not installed" in output
    assert not machine.installed_kind.exists()
    assert list((machine.home / ".local" / "bin").iterdir()) == []


def test_kind_with_its_pinned_checksum_is_installed_then_the_missing_pulumi_cli_is_named(machine, tmp_path):
    release = tmp_path / "kind-download"
    release.write_text(STAND_IN_KIND)
    digest = hashlib.sha256(release.read_bytes()).hexdigest()
    pins = [f"KIND_SHA256_linux_{arch}={digest}" for arch in ("amd64", "arm64")]
    output = friendly(machine.make("up", *pins, KIND_BYTES=str(release)))
    assert machine.installed_kind.exists() and os.access(machine.installed_kind, os.X_OK)
    assert "kind v0.32.0 (stand-in)" in output, "the installed kind ran"
    pulumi_version = re.search(r"^PULUMI_VERSION \?= (\S+)$", (ROOT / "Makefile").read_text(), re.M).group(1)
    assert f"could not install the Pulumi CLI {pulumi_version}" in output
    assert "https://www.pulumi.com/docs/install/" in output
    assert machine.downloads()[-1] == "https://get.pulumi.com"
    # The next run finds kind on PATH (~/.local/bin) and downloads it no more.
    before = len(machine.downloads())
    friendly(machine.make("up"))
    assert not any("kind" in url for url in machine.downloads()[before:])
