"""S6 for real. The containerd-mirror scripts run for real, with real tools, never on this machine's own /etc.

Each run happens inside a private mount namespace. There, the scripts' default places (/etc/containerd,
/etc/rancher, /var/lib/istio-proxy-debug, /run/lock) are empty read-only tmpfs mounts where they exist, so a
stray write to them fails, and /opt is a writable one for containerd's opt plugin. The scripts' paths point
into a temporary tree seeded with a starting point. `systemctl` on PATH is a recorder. On
`restart containerd` it (re)starts a real containerd (Debian's 1.6) on the produced config, with its own
root, state and socket under the temporary folder. The health check is the script's own `ctr plugins ls`
against that socket. The pull test runs a real registry on loopback (Debian's docker-registry), pushes a
small image with skopeo, and pulls it with `ctr --hosts-dir <produced certs.d>` and no --plain-http.
Two stacks that share one node each undo only their own change.
containerd 2.x (config version 3) is not packaged here. Its output is checked structurally with tomllib:
a stand-in `containerd` reports 2.x and dumps the file as it is.

Expected values come from the issue and from containerd's documented formats, not from the code under test.
"""

from __future__ import annotations

import copy
import gzip
import hashlib
import io
import json
import os
import platform
import re
import shlex
import signal
import socket
import subprocess
import sys
import tarfile
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest
import yaml

from components import containerd_mirror
from tests.conftest import ROOT, evaluate, require_tool

SCRIPTS = ROOT / "components" / "scripts"
# The walkthrough's lab (Pulumi.dev.yaml): the nodes pull from the developer host.
DEV_HOST, DEV_PORT = "192.168.122.1", 5000
DEV_REGISTRY = f"{DEV_HOST}:{DEV_PORT}"
DEV_ENDPOINT = f"http://{DEV_REGISTRY}"
CRI_V2 = "io.containerd.grpc.v1.cri"
CRI_V3_IMAGES = "io.containerd.cri.v1.images"
CRI_LOAD_FAILURE = "failed to load plugin io.containerd.grpc.v1.cri"
# What the namespace hides from the scripts and from containerd (whose opt plugin creates /opt/containerd).
HIDDEN = {"/etc/containerd": "ro", "/etc/rancher": "ro", "/var/lib/istio-proxy-debug": "ro", "/run/lock": "ro",
          "/opt": "rw"}
REAL_STATE = Path("/var/lib/istio-proxy-debug")
# The pull test's registry name (.test is reserved: it never resolves outside the test's /etc/hosts).
REGISTRY_NAME = "registry.istio-proxy-debug.test"

FAKE_SYSTEMCTL = r"""#!/usr/bin/env bash
# Stands in for systemd: records every call. On `restart containerd` it (re)starts a real containerd on
# $CONTAINERD_CONFIG, with its own root, state and socket under $FAKE_DIR; it does not wait for it to be
# ready (the script's health check does).
: "${FAKE_DIR:?}" "${CONTAINERD_CONFIG:?}" "${CONTAINERD_ADDRESS:?}" "${CONTAINERD_LOG_FILE:?}"
echo "$*" >> "$FAKE_DIR/systemctl.log"
case "$1" in
  restart)
    if [ "$2" = containerd ]; then
      if [ -s "$FAKE_DIR/containerd.pid" ]; then
        pid=$(cat "$FAKE_DIR/containerd.pid")
        # SIGKILL: a graceful stop takes a second, and no container runs here.
        kill -9 "$pid" 2>/dev/null
        # Until it is gone or a zombie (its parent, an earlier systemctl, is gone: init reaps it later).
        while [ -r "/proc/$pid/stat" ] && ! grep -q ') Z ' "/proc/$pid/stat"; do sleep 0.02; done
      fi
      # As containerd.service does, without --config: with no config file, the defaults apply.
      config=()
      [ -f "$CONTAINERD_CONFIG" ] && config=(--config "$CONTAINERD_CONFIG")
      containerd "${config[@]}" --root "$FAKE_DIR/containerd/root" --state "$FAKE_DIR/containerd/state" \
        --address "$CONTAINERD_ADDRESS" </dev/null >>"$CONTAINERD_LOG_FILE" 2>&1 &
      echo $! > "$FAKE_DIR/containerd.pid"
    fi
    ;;
  is-active) [ "${*: -1}" = "${FAKE_ACTIVE_UNIT:-}" ] ;;
esac
"""

# `ctr plugins ls` of a healthy node, for the runtimes that do not run here (k3s, containerd 2.x).
FAKE_CTR_OK = """#!/bin/sh
printf 'TYPE                    ID     PLATFORMS      STATUS\\n'
printf 'io.containerd.grpc.v1   cri    linux/amd64    ok\\n'
"""

# containerd 2.x as far as the script asks: its version, and `config dump` (here: the file as it is).
FAKE_CONTAINERD_2 = """#!/bin/sh
case "$*" in
  --version) echo "containerd github.com/containerd/containerd/v2 v2.1.4 75cb2b7193e4e490e9fbdc236c0e811ccaba3376" ;;
  "--config "*" config dump") cat "$2" ;;
  *) echo "fake containerd 2.x: unexpected $*" >&2; exit 2 ;;
esac
"""

FAKE_K3S = """#!/bin/sh
echo "fake k3s: unexpected $*" >&2
exit 2
"""


# --- where the script text comes from ------------------------------------------------------------------------


def _wired_commands(evaluation: dict) -> list[dict]:
    components = {r["name"] for r in evaluation["resources"] if r["type"].endswith(":ContainerdMirror")}
    return [r for r in evaluation["resources"]
            if r["type"] == "command:remote:Command" and r["options"].get("parent") in components]


def node_commands(host: str = DEV_HOST, port: int = DEV_PORT) -> tuple[str, str]:
    """(create, delete) exactly as the program renders them for the dev stack with this registry."""
    commands = _wired_commands(evaluate("dev", f"registryHost={host}", f"registryPort={port}"))
    assert len(commands) == 1, "the dev stack has one node, so one remote command"
    return commands[0]["inputs"]["create"], commands[0]["inputs"]["delete"]


# --- a node in a mount namespace -------------------------------------------------------------------------------


class Node:
    """A temporary node: its /etc tree, the script's state, a recording systemctl and a real containerd."""

    def __init__(self, tmp: Path, host: str = DEV_HOST, port: int = DEV_PORT):
        for tool in ("unshare", "containerd", "ctr", "bash"):
            require_tool(tool)
        self.tmp = tmp
        self.etc = tmp / "etc"
        self.etc.mkdir()
        self.config = self.etc / "containerd" / "config.toml"
        self.certs = self.etc / "containerd" / "certs.d"
        self.k3s_registries = self.etc / "rancher" / "k3s" / "registries.yaml"
        self.state = tmp / "var" / "lib" / "istio-proxy-debug"
        self.bin = tmp / "bin"
        self.bin.mkdir()
        self._tool("systemctl", FAKE_SYSTEMCTL)
        self._tool("fake-ctr-ok", FAKE_CTR_OK)
        self.create, self.delete = node_commands(host, port)
        # A file bind-mounted over /etc/hosts in the namespace (the pull test's registry name).
        self.hosts_file: Path | None = None
        self.env = {
            **os.environ,
            "PATH": f"{self.bin}:{os.environ['PATH']}",
            "FAKE_DIR": str(tmp),
            "CONTAINERD_CONFIG": str(self.config),
            "CERTS_DIR": str(self.certs),
            "K3S_REGISTRIES": str(self.k3s_registries),
            "STATE_ROOT": str(self.state),
            "LOCK_FILE": str(tmp / "containerd-mirror.lock"),
            "CONTAINERD_ADDRESS": str(tmp / "containerd.sock"),
            "CONTAINERD_LOG_FILE": str(tmp / "containerd.log"),
            "CHECK_TIMEOUT": "20",
        }

    def _tool(self, name: str, text: str) -> None:
        path = self.bin / name
        path.write_text(text)
        path.chmod(0o755)

    def as_k3s(self, active_unit: str = "k3s") -> None:
        self._tool("k3s", FAKE_K3S)
        self.env["K3S_CTR"] = str(self.bin / "fake-ctr-ok")
        self.env["FAKE_ACTIVE_UNIT"] = active_unit

    def as_containerd_2(self) -> None:
        self._tool("containerd", FAKE_CONTAINERD_2)
        self.env["CTR"] = str(self.bin / "fake-ctr-ok")

    def run(self, command: str) -> subprocess.CompletedProcess:
        """`command` as the node's login shell runs it over SSH, in a private mount namespace."""
        mounts = "".join(
            f"if [ -d {p} ]; then mount -t tmpfs -o {mode},size=1m istio-proxy-debug-test {p}; fi\n"
            for p, mode in HIDDEN.items()
        )
        if self.hosts_file is not None:
            mounts += f"mount --bind {shlex.quote(str(self.hosts_file))} /etc/hosts\n"
        return subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "sh", "-ec", mounts + 'exec sh -c "$0"', command],
            env=self.env, capture_output=True, text=True, timeout=120,
        )

    def systemctl_calls(self) -> list[str]:
        log = self.tmp / "systemctl.log"
        return log.read_text().splitlines() if log.exists() else []

    def restarts(self) -> int:
        return self.systemctl_calls().count("restart containerd")

    def start_containerd(self) -> str:
        """(Re)starts the real containerd on the node's config; returns its `ctr plugins ls`, once it answers."""
        done = self.run("systemctl restart containerd")
        assert done.returncode == 0, done.stderr
        for _ in range(200):
            plugins = self.ctr("plugins", "ls")
            if plugins.returncode == 0:
                return plugins.stdout
            time.sleep(0.05)
        pytest.fail(f"containerd did not answer: {self.log()}")

    def ctr(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["ctr", "--address", self.env["CONTAINERD_ADDRESS"], *args],
                              capture_output=True, text=True, timeout=60)

    def log(self) -> str:
        log = self.tmp / "containerd.log"
        return log.read_text() if log.exists() else ""

    def stop_containerd(self) -> None:
        """Stops the containerd this test started (by its pid); it is not our child, so poll /proc."""
        pidfile = self.tmp / "containerd.pid"
        if not pidfile.exists():
            return
        pid = int(pidfile.read_text())
        pidfile.unlink()
        stat = Path(f"/proc/{pid}/stat")
        try:
            os.kill(pid, signal.SIGKILL)
            for _ in range(100):
                if ") Z " in stat.read_text():
                    return
                time.sleep(0.05)
        except (ProcessLookupError, FileNotFoundError):
            pass


@pytest.fixture
def node(tmp_path: Path):
    state_existed = REAL_STATE.exists()
    made = []

    def make(host: str = DEV_HOST, port: int = DEV_PORT) -> Node:
        made.append(Node(tmp_path, host, port))
        return made[-1]

    yield make
    for n in made:
        n.stop_containerd()
    assert state_existed or not REAL_STATE.exists(), "a script wrote this machine's own /var/lib"


def tree(root: Path) -> dict[str, tuple]:
    """Every folder and file under root: kind, mode and bytes."""
    found = {}
    for path in sorted(root.rglob("*")):
        mode = path.stat().st_mode & 0o7777
        found[str(path.relative_to(root))] = ("file", mode, path.read_bytes()) if path.is_file() else ("dir", mode)
    return found


def cri_status(plugins: str) -> str:
    rows = [line.split() for line in plugins.splitlines()]
    statuses = [row[-1] for row in rows if row[:2] == ["io.containerd.grpc.v1", "cri"]]
    assert len(statuses) == 1, plugins
    return statuses[0]


def parsed_hosts_toml(path: Path) -> dict:
    return tomllib.loads(path.read_text())


# --- starting points (containerd 1.6, config version 1 and 2) -------------------------------------------------

def default_v2_config() -> str:
    return subprocess.run(["containerd", "config", "default"], check=True, capture_output=True, text=True).stdout


def kind_like_config(etc: Path) -> str:
    """A node whose config already sets config_path (as kind's and most new installs do), as a list."""
    return f"""version = 2

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.9"

[plugins."io.containerd.grpc.v1.cri".containerd]
  default_runtime_name = "runc"
  snapshotter = "overlayfs"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = "{etc}/containerd/registries.d:{etc}/docker/certs.d"
"""


MIRRORS_V2 = """# mirrors, as the walkthrough writes them
version = 2

[plugins."io.containerd.grpc.v1.cri".registry]
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors]
    [plugins.'io.containerd.grpc.v1.cri'.registry.mirrors."docker.io"]
      endpoint = [
        "https://mirror.gcr.io",   # first
        "https://registry-1.docker.io",
      ]
  [plugins."io.containerd.grpc.v1.cri".registry.configs."mirror.gcr.io".tls]
    insecure_skip_verify = false
"""

V1_CONFIG = """# no version key: containerd 1.x reads it as version 1
oom_score = -999

[plugins.cri]
  sandbox_image = "registry.k8s.io/pause:3.6"

[plugins.cri.containerd]
  snapshotter = "overlayfs"
"""

# Already broken (no runtime named like the default): the restart after the change cannot bring CRI up.
BROKEN_V2 = """version = 2

[plugins."io.containerd.grpc.v1.cri".containerd]
  default_runtime_name = "crun"
"""

# registry as an inline table: appending a [..registry] table would be invalid TOML.
INLINE_REGISTRY_V2 = """version = 2

[plugins."io.containerd.grpc.v1.cri"]
  registry = { configs = {} }
"""


def seed(n: Node, start: str) -> bytes | None:
    text = {
        "no file": None,
        "default v2": default_v2_config(),
        "config_path set": kind_like_config(n.etc),
        "mirrors": MIRRORS_V2,
        "v1": V1_CONFIG,
        "broken": BROKEN_V2,
        "inline registry": INLINE_REGISTRY_V2,
    }[start]
    if text is None:
        return None
    n.config.parent.mkdir(parents=True, exist_ok=True)
    n.config.write_text(text)
    return n.config.read_bytes()


def with_key(document: dict, keys: list[str], value) -> dict:
    result = copy.deepcopy(document)
    table = result
    for key in keys[:-1]:
        table = table.setdefault(key, {})
    table[keys[-1]] = value
    return result


STARTS = ["no file", "default v2", "config_path set", "mirrors", "v1"]
# How the issue says each starting point is handled.
HANDLING = {
    "no file": "set config_path",
    "default v2": "set config_path",
    "config_path set": "hosts.toml only",
    "mirrors": "mirror entry",
    "v1": "set config_path",
}


@pytest.mark.parametrize("start", STARTS)
def test_create_configures_each_starting_point_and_containerd_loads_cri_on_it(node, start):
    n = node()
    original = seed(n, start)
    before = tomllib.loads(original.decode()) if original else {}
    done = n.run(n.create)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("\n") == 1, "one summary line on stdout"
    handling = HANDLING[start]

    if handling == "hosts.toml only":
        assert n.config.read_bytes() == original, "a config with config_path is not touched"
        hosts_dir = n.etc / "containerd" / "registries.d"  # the first folder of config_path
        assert n.restarts() == 0, "hosts.toml needs no restart"
        assert not n.certs.exists()
    else:
        after = tomllib.loads(n.config.read_text())
        assert n.restarts() == 1
        if handling == "mirror entry":
            assert after == with_key(before, ["plugins", CRI_V2, "registry", "mirrors", DEV_REGISTRY, "endpoint"],
                                     [DEV_ENDPOINT])
            hosts_dir = None
        else:
            cri = "cri" if start == "v1" else CRI_V2
            expected = with_key(before, ["plugins", cri, "registry", "config_path"], str(n.certs))
            if start == "no file":
                expected["version"] = 2
            assert after == expected, "only config_path is added; every other key stays"
            hosts_dir = n.certs
    if hosts_dir is not None:
        hosts = parsed_hosts_toml(hosts_dir / DEV_REGISTRY / "hosts.toml")
        assert hosts["server"] == DEV_ENDPOINT
        assert set(hosts["host"][DEV_ENDPOINT]["capabilities"]) == {"pull", "resolve"}
    else:
        assert not any(n.etc.rglob("hosts.toml")), "the mirrors form writes no hosts.toml"

    plugins = n.start_containerd()
    assert cri_status(plugins) == "ok", n.log()
    assert CRI_LOAD_FAILURE not in n.log()
    # The CRI plugin logs the registry config it runs with: the change is in effect.
    started = [line for line in n.log().splitlines() if "Start cri plugin with config" in line][-1]
    if handling == "mirror entry":
        ours = rf"{re.escape(DEV_REGISTRY)}:\{{Endpoints:\[{re.escape(DEV_ENDPOINT)}\]"
        assert re.search(rf"Mirrors:map\[.*{ours}", started)
        assert "ConfigPath: " in started
    else:
        assert f"ConfigPath:{hosts_dir}" in started
        assert "Mirrors:map[]" in started


@pytest.mark.parametrize("start", STARTS)
def test_create_twice_changes_nothing_and_delete_restores_every_file(node, start):
    n = node()
    seed(n, start)
    pristine = tree(n.etc)
    first = n.run(n.create)
    assert first.returncode == 0, first.stderr
    configured, restarts = tree(n.etc), n.restarts()
    second = n.run(n.create)
    assert second.returncode == 0, second.stderr
    assert tree(n.etc) == configured, "a second create changes no file"
    assert n.restarts() == restarts, "a second create restarts nothing"
    assert "restarted" not in second.stdout

    done = n.run(n.delete)
    assert done.returncode == 0, done.stderr
    assert tree(n.etc) == pristine, "delete restores every file byte for byte and removes what create made"
    assert not n.state.exists(), "no state is left behind"
    config_changed = pristine.get("containerd/config.toml") != configured.get("containerd/config.toml")
    assert n.restarts() == restarts + (1 if config_changed else 0), "delete restarts only if config.toml changed"
    if config_changed:
        assert cri_status(n.ctr("plugins", "ls").stdout) == "ok"

    again = n.run(n.delete)
    assert again.returncode == 0, again.stderr
    assert tree(n.etc) == pristine


def test_delete_puts_back_the_original_even_after_later_edits_and_says_so(node):
    n = node()
    original = seed(n, "default v2")
    assert n.run(n.create).returncode == 0
    n.config.write_text(n.config.read_text() + "\n# a later edit\n")
    done = n.run(n.delete)
    assert done.returncode == 0, done.stderr
    assert n.config.read_bytes() == original
    assert "was changed after it was configured" in done.stderr and "+# a later edit" in done.stderr


def test_a_failed_restart_restores_the_backup_restarts_again_and_fails_with_the_log_lines(node):
    n = node()
    original = seed(n, "broken")
    done = n.run(n.create)
    assert done.returncode == 1
    assert CRI_LOAD_FAILURE in done.stderr, "the containerd log lines that say why"
    assert "default_runtime_name" in done.stderr
    assert "original configuration is back" in done.stderr
    assert n.restarts() == 2, "once with the change, once with the original"
    assert n.config.read_bytes() == original
    assert not n.certs.exists() and not n.state.exists()


def test_the_roll_back_brings_containerd_back_when_the_original_config_works(node):
    """A stand-in ctr reports the CRI plugin failed while our config_path is in force, as a node might."""
    n = node()
    original = seed(n, "default v2")
    n._tool("ctr-guard", f"""#!/bin/sh
if grep -q 'config_path = "{n.certs}"' "$CONTAINERD_CONFIG"; then
  printf 'io.containerd.grpc.v1 cri linux/amd64 error\\n'
  echo 'level=warning msg="failed to load plugin io.containerd.grpc.v1.cri" error="stand-in"' >> "$CONTAINERD_LOG_FILE"
  exit 0
fi
exec ctr "$@"
""")
    n.env["CTR"] = str(n.bin / "ctr-guard")
    done = n.run(n.create)
    assert done.returncode == 1
    assert 'error="stand-in"' in done.stderr
    assert "CRI plugin is up again" in done.stderr
    assert n.config.read_bytes() == original
    assert cri_status(n.ctr("plugins", "ls").stdout) == "ok"


def test_an_edit_that_would_not_load_is_refused_before_anything_changes(node):
    n = node()
    original = seed(n, "inline registry")
    pristine = tree(n.etc)
    done = n.run(n.create)
    assert done.returncode == 1
    assert "would not load" in done.stderr
    assert tree(n.etc) == pristine and n.config.read_bytes() == original
    assert n.restarts() == 0 and not n.state.exists()


def test_a_mirror_entry_of_someone_else_for_the_registry_is_not_overwritten(node):
    n = node()
    seed(n, "mirrors")
    n.config.write_text(n.config.read_text() + f'\n[plugins."{CRI_V2}".registry.mirrors."{DEV_REGISTRY}"]\n'
                                                f'  endpoint = ["https://{DEV_REGISTRY}"]\n')
    original = n.config.read_bytes()
    done = n.run(n.create)
    assert done.returncode == 1
    assert "already mirrors" in done.stderr
    assert n.config.read_bytes() == original and n.restarts() == 0


def test_an_edit_that_an_imported_file_overrides_is_refused(node):
    """containerd 1.x replaces a plugin's whole section with an imported file's: config_path set in
    config.toml would not be in effect, so the script refuses it rather than restart for nothing."""
    n = node()
    drop_in = n.etc / "containerd" / "conf.d" / "cri.toml"
    drop_in.parent.mkdir(parents=True)
    drop_in.write_text(f'version = 2\n[plugins."{CRI_V2}"]\n  sandbox_image = "registry.k8s.io/pause:3.9"\n')
    n.config.write_text(f'version = 2\nimports = ["{drop_in.parent}/*.toml"]\n')
    pristine = tree(n.etc)
    done = n.run(n.create)
    assert done.returncode == 1
    assert "does an imported file set it?" in done.stderr
    assert tree(n.etc) == pristine and n.restarts() == 0 and not n.state.exists()


def script_functions(*names: str) -> str:
    text = (SCRIPTS / "containerd-mirror-common.sh").read_text() + (SCRIPTS / "containerd-mirror-create.sh").read_text()
    found = [re.search(rf"^{name}\(\) {{\n.*?^}}\n", text, re.MULTILINE | re.DOTALL) for name in names]
    assert all(found), names
    tables = re.search(r"^REGISTRY_TABLES=.*$", text, re.MULTILINE)
    return tables.group(0) + "\n" + "".join(f.group(0) for f in found)


def test_the_guard_names_every_setting_an_edit_would_change_besides_ours(tmp_path):
    """Defense in depth behind the text edits: two real dumps compared, our keys excepted."""
    require_tool("containerd")
    default = default_v2_config()
    edited = default.replace('sandbox_image = "registry.k8s.io/pause:3.6"', 'sandbox_image = "pause:other"')
    edited = edited.replace('config_path = ""', f'config_path = "{tmp_path}"', 1)
    edited += f'\n[plugins."{CRI_V2}".registry.mirrors."{DEV_REGISTRY}"]\n  endpoint = ["{DEV_ENDPOINT}"]\n'
    assert edited.count("pause:other") == 1 and str(tmp_path) in edited
    dumps = []
    for name, text in (("before.toml", default), ("after.toml", edited)):
        (tmp_path / name).write_text(text)
        dumps.append(subprocess.run(["containerd", "--config", str(tmp_path / name), "config", "dump"],
                                    check=True, capture_output=True, text=True).stdout)
    program = script_functions("toml_listing", "foreign_changes") + (
        'foreign_changes "$(toml_listing <<<"$1")" "$(toml_listing <<<"$2")"')
    done = subprocess.run(["bash", "-c", program, "guard", *dumps], env={**os.environ, "REGISTRY": DEV_REGISTRY},
                          capture_output=True, text=True, check=True)
    assert sorted(done.stdout.splitlines()) == sorted([
        f'plugins|{CRI_V2}\tsandbox_image\t"registry.k8s.io/pause:3.6"',
        f'plugins|{CRI_V2}\tsandbox_image\t"pause:other"',
    ])


# --- two stacks, one node ------------------------------------------------------------------------------------

OTHER_PORT = 5001  # a second developer's stack: same node, its own registryPort
OTHER_REGISTRY = f"{DEV_HOST}:{OTHER_PORT}"


def registries_in_effect(n: Node, k3s: bool) -> set[str]:
    """The registries the node's configuration makes it pull over plain HTTP."""
    if k3s:
        mirrors = yaml.safe_load(n.k3s_registries.read_text()).get("mirrors") or {}
        return {reg for reg, entry in mirrors.items() if entry["endpoint"] == [f"http://{reg}"]}
    registry = tomllib.loads(n.config.read_text())["plugins"][CRI_V2]["registry"]
    mirrors = {reg for reg, entry in registry.get("mirrors", {}).items() if entry["endpoint"] == [f"http://{reg}"]}
    if registry.get("config_path"):
        folder = Path(registry["config_path"].split(":")[0])
        mirrors |= {p.parent.name for p in folder.glob("*/hosts.toml")
                    if parsed_hosts_toml(p)["server"] == f"http://{p.parent.name}"}
    return mirrors


@pytest.mark.parametrize("first_out", ["first in", "last in"])
@pytest.mark.parametrize("start", ["default v2", "mirrors", "k3s"])
def test_two_stacks_on_one_node_each_undo_only_their_own(node, start, first_out):
    n = node()
    k3s = start == "k3s"
    if k3s:
        n.as_k3s()
    else:
        seed(n, start)
    pristine = tree(n.etc)
    other_create, other_delete = node_commands(DEV_HOST, OTHER_PORT)
    for command in (n.create, other_create):
        done = n.run(command)
        assert done.returncode == 0, done.stderr
    assert registries_in_effect(n, k3s) >= {DEV_REGISTRY, OTHER_REGISTRY}
    first, second = (n.delete, other_delete) if first_out == "first in" else (other_delete, n.delete)
    stays = OTHER_REGISTRY if first_out == "first in" else DEV_REGISTRY
    done = n.run(first)
    assert done.returncode == 0, done.stderr
    assert stays in registries_in_effect(n, k3s), "the other stack's registry still works"
    assert ({DEV_REGISTRY, OTHER_REGISTRY} - {stays}).isdisjoint(registries_in_effect(n, k3s))
    if not k3s:
        assert cri_status(n.start_containerd()) == "ok"
    done = n.run(second)
    assert done.returncode == 0, done.stderr
    assert tree(n.etc) == pristine, "the last one out puts back the original, byte for byte"
    assert not n.state.exists()


# --- the pull: a real registry on loopback ---------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def oci_layout(directory: Path) -> None:
    """A one-layer image in an OCI layout, made here (no network)."""
    def blob(data: bytes, media_type: str) -> dict:
        digest = hashlib.sha256(data).hexdigest()
        (directory / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (directory / "blobs" / "sha256" / digest).write_bytes(data)
        return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data)}

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        content = b"pulled over plain HTTP\n"
        info = tarfile.TarInfo("hello.txt")
        info.size, info.mode = len(content), 0o644
        tar.addfile(info, io.BytesIO(content))
    layer = gzip.compress(raw.getvalue(), mtime=0)
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    diff_id = f"sha256:{hashlib.sha256(raw.getvalue()).hexdigest()}"
    config = json.dumps({"architecture": arch, "os": "linux", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": [diff_id]}})
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": blob(config.encode(), "application/vnd.oci.image.config.v1+json"),
        "layers": [blob(layer, "application/vnd.oci.image.layer.v1.tar+gzip")],
    })
    index = {"schemaVersion": 2, "manifests": [
        {**blob(manifest.encode(), "application/vnd.oci.image.manifest.v1+json"),
         "annotations": {"org.opencontainers.image.ref.name": "1"}}]}
    (directory / "index.json").write_text(json.dumps(index))
    (directory / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')


@pytest.fixture
def loopback_registry(tmp_path: Path):
    """Debian's docker-registry on 127.0.0.1, holding tiny:1 (pushed with skopeo)."""
    registry = require_tool("docker-registry")
    skopeo = require_tool("skopeo")
    port = free_port()
    config = tmp_path / "registry.yml"
    config.write_text(f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
                      f"    rootdirectory: {tmp_path / 'registry-data'}\nhttp:\n  addr: 127.0.0.1:{port}\n")
    process = subprocess.Popen([registry, "serve", str(config)], stdout=subprocess.DEVNULL,
                               stderr=open(tmp_path / "registry.log", "w"))  # noqa: SIM115
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1)
                break
            except OSError:
                time.sleep(0.05)
        layout = tmp_path / "image"
        oci_layout(layout)
        subprocess.run([skopeo, "--insecure-policy", "copy", "--dest-tls-verify=false", f"oci:{layout}:1",
                        f"docker://127.0.0.1:{port}/tiny:1"], check=True, capture_output=True, timeout=60)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.mark.parametrize("start", ["no file", "config_path set"])
def test_the_produced_hosts_toml_alone_makes_the_plain_http_pull_work(node, loopback_registry, start, tmp_path):
    """The registry is reached by a name (in the namespace's /etc/hosts, on 127.0.0.1): containerd lets any
    loopback address or `localhost` fall back to plain HTTP by itself, which would prove nothing."""
    n = node(REGISTRY_NAME, loopback_registry)
    n.hosts_file = tmp_path / "hosts"
    n.hosts_file.write_text(f"127.0.0.1 localhost\n127.0.0.1 {REGISTRY_NAME}\n")
    seed(n, start)
    done = n.run(n.create)
    assert done.returncode == 0, done.stderr
    hosts_files = list(n.etc.rglob("hosts.toml"))
    assert [p.parent.name for p in hosts_files] == [f"{REGISTRY_NAME}:{loopback_registry}"]
    certs_d = hosts_files[0].parent.parent
    image = f"{REGISTRY_NAME}:{loopback_registry}/tiny:1"
    n.start_containerd()
    pull = ["ctr", "--address", n.env["CONTAINERD_ADDRESS"], "--namespace", "test", "images", "pull"]
    # Without the hosts folder (and without --plain-http) the client speaks HTTPS, and fails.
    plain = n.run(shlex.join([*pull, image]))
    assert plain.returncode != 0
    assert "server gave HTTP response to HTTPS client" in plain.stderr
    pulled = n.run(shlex.join([*pull, "--hosts-dir", str(certs_d), image]))
    assert pulled.returncode == 0, pulled.stderr
    assert image in n.ctr("--namespace", "test", "images", "ls", "-q").stdout.split()


# --- containerd 2.x (config version 3): structural checks ---------------------------------------------------------

# As containerd 2.x's `config default` writes it (go-toml v2: single-quoted keys and strings).
DEFAULT_V3 = """version = 3
root = '/var/lib/containerd'
state = '/run/containerd'

[plugins]
  [plugins.'io.containerd.cri.v1.images']
    snapshotter = 'overlayfs'
    max_concurrent_downloads = 3

    [plugins.'io.containerd.cri.v1.images'.pinned_images]
      sandbox = 'registry.k8s.io/pause:3.10'

    [plugins.'io.containerd.cri.v1.images'.registry]
      config_path = ''

  [plugins.'io.containerd.cri.v1.runtime']
    enable_cdi = true
    cdi_spec_dirs = ['/etc/cdi', '/var/run/cdi']

  [plugins.'io.containerd.grpc.v1.cri']
    stream_server_address = '127.0.0.1'
"""

MIRRORS_V3 = """version = 3

[plugins]
    [plugins.'io.containerd.cri.v1.images'.pinned_images]
      sandbox = 'registry.k8s.io/pause:3.10'

      [plugins."io.containerd.cri.v1.images".registry.mirrors]
        [plugins."io.containerd.cri.v1.images".registry.mirrors."host-gateway:5000"]
          endpoint = ["http://host-gateway:5000"]

    [plugins.'io.containerd.cri.v1.runtime'.containerd]
      default_runtime_name = 'runc'
"""


def config_path_v3(etc: Path, folders: str) -> str:
    return f"""version = 3

[plugins."io.containerd.cri.v1.images".registry]
config_path = "{folders}"
"""


V3_STARTS = ["no file", "default v3", "mirrors v3", "config_path set v3", "config_path list v3"]


@pytest.mark.parametrize("start", V3_STARTS)
def test_config_version_3_output_is_structurally_right(node, start):
    n = node()
    n.as_containerd_2()
    folder = n.etc / "containerd" / "registries.d"
    text = {"no file": None, "default v3": DEFAULT_V3, "mirrors v3": MIRRORS_V3,
            "config_path set v3": config_path_v3(n.etc, str(folder)),
            # as containerd 2.x's `config default` writes it
            "config_path list v3": config_path_v3(n.etc, f"{folder}:/etc/docker/certs.d")}[start]
    if text is not None:
        n.config.parent.mkdir(parents=True)
        n.config.write_text(text)
    before = tomllib.loads(text) if text else {}
    pristine = tree(n.etc)
    done = n.run(n.create)
    assert done.returncode == 0, done.stderr
    assert "containerd 2.x" in done.stdout
    after = tomllib.loads(n.config.read_text())
    images = after["plugins"][CRI_V3_IMAGES]
    assert "registry" not in after["plugins"].get(CRI_V2, {}), "2.x reads the registry from the images plugin"
    if start == "mirrors v3":
        assert "the node uses mirrors: host-gateway:5000)" in done.stdout
        assert after == with_key(before, ["plugins", CRI_V3_IMAGES, "registry", "mirrors", DEV_REGISTRY,
                                          "endpoint"], [DEV_ENDPOINT])
        assert "config_path" not in images["registry"]
        assert not any(n.etc.rglob("hosts.toml"))
    elif start == "config_path set v3":
        assert after == before and n.restarts() == 0
        assert parsed_hosts_toml(folder / DEV_REGISTRY / "hosts.toml")["server"] == DEV_ENDPOINT
    elif start == "config_path list v3":
        # containerd 2.x's transfer service reads a list as one folder (containerd#12808): one folder only.
        assert after == with_key(before, ["plugins", CRI_V3_IMAGES, "registry", "config_path"], str(folder))
        assert parsed_hosts_toml(folder / DEV_REGISTRY / "hosts.toml")["server"] == DEV_ENDPOINT
        assert n.restarts() == 1
    else:
        expected = with_key(before, ["plugins", CRI_V3_IMAGES, "registry", "config_path"], str(n.certs))
        expected["version"] = 3
        assert after == expected
        assert images["registry"].get("mirrors", {}) == {}
        assert parsed_hosts_toml(n.certs / DEV_REGISTRY / "hosts.toml")["server"] == DEV_ENDPOINT
        assert n.restarts() == 1
    assert n.run(n.delete).returncode == 0
    assert tree(n.etc) == pristine


# --- k3s ----------------------------------------------------------------------------------------------------------

K3S_REGISTRIES = """# k3s private registries
mirrors:
    docker.io:
        endpoint:
            - "https://mirror.gcr.io"
configs:
    "192.168.122.1:5000":
        tls:
            insecure_skip_verify: true
"""


@pytest.mark.parametrize("start", ["no file", "mirrors"])
def test_k3s_gets_a_mirror_in_registries_yaml(node, start):
    n = node()
    n.as_k3s()
    if start == "mirrors":
        n.k3s_registries.parent.mkdir(parents=True)
        n.k3s_registries.write_text(K3S_REGISTRIES)
    before = yaml.safe_load(K3S_REGISTRIES) if start == "mirrors" else {}
    pristine = tree(n.etc)
    done = n.run(n.create)
    assert done.returncode == 0, done.stderr
    after = yaml.safe_load(n.k3s_registries.read_text())
    assert after == with_key(before, ["mirrors", DEV_REGISTRY, "endpoint"], [DEV_ENDPOINT])
    assert "restart k3s" in n.systemctl_calls()
    assert not n.config.exists(), "k3s does not read /etc/containerd"
    configured = tree(n.etc)
    assert n.run(n.create).returncode == 0
    assert tree(n.etc) == configured and n.systemctl_calls().count("restart k3s") == 1
    assert n.run(n.delete).returncode == 0
    assert tree(n.etc) == pristine
    assert n.systemctl_calls().count("restart k3s") == 2


# --- the scripts themselves ---------------------------------------------------------------------------------------


def test_a_non_root_ssh_user_runs_the_same_text_again_through_sudo(tmp_path):
    """The rendered command, run by sh as a non-root user: it must hand its whole text to `sudo -n bash -c`."""
    require_tool("bash")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "id").write_text('#!/bin/sh\n[ -n "$FAKE_ROOT" ] && echo 0 || echo 1000\n')
    (bin_dir / "sudo").write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {tmp_path}/sudo.args\n'
                                  'shift 2\nFAKE_ROOT=1 exec "$@"\n')
    for tool in ("id", "sudo"):
        (bin_dir / tool).chmod(0o755)
    # The delete script with nothing to restore: harmless as root, and it prints a summary.
    _, delete = node_commands()
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "STATE_ROOT": str(tmp_path / "state"),
           "LOCK_FILE": str(tmp_path / "lock")}
    done = subprocess.run(["sh", "-c", delete], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{DEV_REGISTRY}: nothing to restore\n"
    args = (tmp_path / "sudo.args").read_text()
    assert args.startswith("-n\n--\nbash\n-c\n")
    assert shlex.split(delete) == ["bash", "-c", args[len("-n\n--\nbash\n-c\n"):-1]]


def test_parameters_reach_the_script_intact_whatever_they_hold():
    parameters = {"REGISTRY": "h:1", "HOSTS_TOML": "a 'quoted' $HOME `x` \"y\"\nline two\n"}
    text = containerd_mirror.render_script("containerd-mirror-delete.sh", parameters)
    head = text[:text.index("#!/usr/bin/env bash")]
    done = subprocess.run(["bash", "-c", head + 'printf "%s|%s" "$REGISTRY" "$HOSTS_TOML"'],
                          capture_output=True, text=True, check=True)
    assert done.stdout == "h:1|" + parameters["HOSTS_TOML"]


def test_hosts_toml_is_the_documented_plain_http_form():
    hosts = tomllib.loads(containerd_mirror.hosts_toml(DEV_HOST, DEV_PORT))
    assert hosts == {"server": DEV_ENDPOINT, "host": {DEV_ENDPOINT: {"capabilities": ["pull", "resolve"]}}}
    entry = tomllib.loads(containerd_mirror.mirror_entry(DEV_HOST, DEV_PORT))
    assert entry == {"endpoint": [DEV_ENDPOINT]}
    assert containerd_mirror.registry_address("fd00::1", 5000) == "[fd00::1]:5000"


# --- the component under mocks ------------------------------------------------------------------------------------

COMPONENT_PROGRAM = r"""
import json, sys
import pulumi
from components.containerd_mirror import ContainerdMirror, ContainerdMirrorArgs
from components.node_access import NodeAccess

resources, options = [], {}
SECRET = "4dabf18193072939515e22adb298388d"

def plain(value):
    if isinstance(value, dict):
        if SECRET in value:
            return {"secret": plain(value["value"])}
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value

class Mocks(pulumi.runtime.Mocks):
    def new_resource(self, args):
        resources.append({"type": args.typ, "name": args.name, "inputs": plain(args.inputs)})
        return f"{args.name}-id", {**args.inputs, "stdout": "summary of " + args.name + "\n"}
    def call(self, args):
        return {}

pulumi.runtime.set_mocks(Mocks(), project="istio-proxy-debug", stack="dev", preview=False)

def record(args):
    options[args.name] = {"parent": args.opts.parent._name if args.opts.parent else None,
                          "deleteBeforeReplace": bool(args.opts.delete_before_replace)}

@pulumi.runtime.test
def program():
    pulumi.runtime.register_stack_transformation(record)
    key = pulumi.Output.secret("-----BEGIN OPENSSH PRIVATE KEY-----\nk\n-----END OPENSSH PRIVATE KEY-----\n")
    with_key = ContainerdMirror("containerd-mirror", ContainerdMirrorArgs(
        nodes=["192.168.122.55", "fd00::7"], access=NodeAccess("ssh", ssh_user="labile", ssh_private_key=key),
        registry_host="192.168.122.1", registry_port=5000))
    ContainerdMirror("agent-mirror", ContainerdMirrorArgs(
        nodes=["node-b.lab"], access=NodeAccess("ssh", ssh_user="root"), registry_host="192.168.122.1",
        registry_port=5000))
    ContainerdMirror("kind-mirror", ContainerdMirrorArgs(
        nodes=["lab-control-plane"], access=NodeAccess("docker"), registry_host="image-registry-lab",
        registry_port=5000))
    return with_key.summaries.apply(lambda s: print("summaries=" + json.dumps(s), file=sys.stderr))

program()
print(json.dumps([{**r, "options": options.get(r["name"])} for r in resources]))
"""


def test_the_component_runs_one_command_per_node_replaced_delete_first_on_a_new_registry():
    done = subprocess.run([sys.executable, "-c", COMPONENT_PROGRAM], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    resources = {r["name"]: r for r in json.loads(done.stdout)}
    assert resources.pop("containerd-mirror")["type"] == "istio-proxy-debug:containerd_mirror:ContainerdMirror"
    assert resources.pop("agent-mirror")["type"] == "istio-proxy-debug:containerd_mirror:ContainerdMirror"
    assert resources.pop("kind-mirror")["type"] == "istio-proxy-debug:containerd_mirror:ContainerdMirror"
    in_container = resources.pop("kind-mirror-lab-control-plane")
    assert in_container["type"] == "command:local:Command", "a node container is reached from this host"
    assert in_container["options"] == {"parent": "kind-mirror", "deleteBeforeReplace": True}
    assert in_container["inputs"]["create"] == "docker exec -i lab-control-plane bash -s"
    assert in_container["inputs"]["stdin"] == containerd_mirror.create_script("image-registry-lab", 5000)
    assert in_container["inputs"]["delete"] == (
        "docker exec -i lab-control-plane bash -s <<'STOP'\n"
        + containerd_mirror.delete_script("image-registry-lab", 5000) + "STOP\n")
    hosts = {"containerd-mirror-192.168.122.55": "192.168.122.55", "containerd-mirror-fd00--7": "fd00::7",
             "agent-mirror-node-b.lab": "node-b.lab"}
    assert set(resources) == set(hosts)
    for name, command in resources.items():
        assert command["type"] == "command:remote:Command"
        parent = "agent-mirror" if name.startswith("agent-mirror") else "containerd-mirror"
        assert command["options"] == {"parent": parent, "deleteBeforeReplace": True}
        inputs = command["inputs"]
        connection = inputs["connection"]["secret"] if "secret" in inputs["connection"] else inputs["connection"]
        assert connection["host"] == hosts[name]
        assert inputs["create"] == containerd_mirror.render_create(DEV_HOST, DEV_PORT)
        assert inputs["delete"] == containerd_mirror.render_delete(DEV_HOST, DEV_PORT)
        assert inputs["triggers"] == [DEV_REGISTRY], "a new registry replaces the command, delete first"
        assert "environment" not in inputs, "nothing relies on sshd's AcceptEnv"
    keyed = resources["containerd-mirror-192.168.122.55"]["inputs"]["connection"]
    assert "secret" in keyed, "the connection holds the key: it stays secret"
    assert keyed["secret"]["user"] == "labile" and "PRIVATE KEY" in keyed["secret"]["privateKey"]
    agent = resources["agent-mirror-node-b.lab"]["inputs"]["connection"]
    agent = agent.get("secret", agent)
    assert "privateKey" not in agent and agent["user"] == "root", "no key: the SSH agent"
    # Found by its marker: at exit Pulumi's runtime may print noise after it (e.g. "Invalid file descriptor").
    [line] = [line for line in done.stderr.splitlines() if line.startswith("summaries=")]
    summaries = json.loads(line.removeprefix("summaries="))
    assert summaries == {"192.168.122.55": "summary of containerd-mirror-192.168.122.55",
                         "fd00::7": "summary of containerd-mirror-fd00--7"}
