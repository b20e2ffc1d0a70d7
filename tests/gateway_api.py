"""The Gateway API CRDs of the lab's release (components.istio.GATEWAY_API_VERSION), standard channel, in the
tests' control plane: the same CustomResourceDefinitions as that release's `standard-install.yaml` (which the
stack applies), read from the release's Go module (`sigs.k8s.io/gateway-api`, config/crd/standard) as the Go
module proxy serves it, checksummed by Go, and kept in the toolchain's module cache beside the binaries
tools/toolchain.sh builds, so a second session downloads nothing."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import yaml

from components.istio import GATEWAY_API_VERSION
from tests.conftest import require_tool
from tests.control_plane import ControlPlane
from tests.toolchain import toolchain_dir

MODULE = "sigs.k8s.io/gateway-api"
GROUP = "gateway.networking.k8s.io"
# The release's own labels of each CRD (config/crd/standard/*.yaml, metadata.annotations).
BUNDLE_VERSION = f"{GROUP}/bundle-version"
CHANNEL = f"{GROUP}/channel"
ESTABLISH_TIMEOUT = 120


def module_dir(version: str = GATEWAY_API_VERSION) -> Path:
    """The module's extracted tree at `version`, downloaded into the toolchain's module cache if missing."""
    go = require_tool("go")
    env = {**os.environ, "GOMODCACHE": str(toolchain_dir() / "go" / "mod"), "GOFLAGS": "-mod=mod",
           "GOTOOLCHAIN": "local"}
    env.pop("GOWORK", None)
    # Outside any Go module: `go mod download` of a module@version needs no go.mod then.
    with tempfile.TemporaryDirectory(prefix="gateway-api-") as outside:
        done = subprocess.run([go, "mod", "download", "-json", f"{MODULE}@{version}"], cwd=outside, env=env,
                              capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"go mod download {MODULE}@{version} exited {done.returncode}: " \
                                 f"{done.stdout[-2000:]}{done.stderr[-2000:]}"
    info = json.loads(done.stdout)
    assert info.get("Version") == version and info.get("Dir"), info
    return Path(info["Dir"])


def standard_crds(version: str = GATEWAY_API_VERSION) -> list[dict]:
    """The standard channel's CRDs of `version`, each checked to be that release's standard channel."""
    folder = module_dir(version) / "config" / "crd" / "standard"
    crds = [doc for path in sorted(folder.glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text()) if doc]
    assert crds, f"no CRDs in {folder}"
    for crd in crds:
        annotations = crd["metadata"].get("annotations", {})
        assert crd["kind"] == "CustomResourceDefinition" and crd["spec"]["group"] == GROUP, crd["metadata"]
        assert annotations.get(BUNDLE_VERSION) == version, (crd["metadata"]["name"], annotations)
        assert annotations.get(CHANNEL) == "standard", (crd["metadata"]["name"], annotations)
    return crds


def _established(plane: ControlPlane, names: list[str]) -> dict[str, str]:
    """Each CRD not yet Established and served, with why (its conditions, or the listing's error)."""
    done = plane.kubectl("get", "customresourcedefinitions", *names, "-o", "json", check=False, timeout=30)
    if done.returncode != 0:
        return {name: done.stderr.strip() for name in names}
    waiting = {}
    for crd in json.loads(done.stdout)["items"]:
        conditions = {c["type"]: c["status"] for c in crd.get("status", {}).get("conditions", [])}
        if conditions.get("Established") != "True":
            waiting[crd["metadata"]["name"]] = f"conditions {conditions}"
            continue
        # Established, and its resource answers a list (discovery has caught up).
        listed = plane.kubectl("get", crd["metadata"]["name"], "-A", "--request-timeout=10s", check=False,
                               timeout=30)
        if listed.returncode != 0:
            waiting[crd["metadata"]["name"]] = f"established but not listed: {listed.stderr.strip()}"
    return waiting


def install(plane: ControlPlane, crds: list[dict], timeout: float = ESTABLISH_TIMEOUT) -> None:
    """`crds` applied server-side; returns once every one is Established and its resource listed, or fails
    naming those that are not after `timeout` seconds."""
    document = "\n---\n".join(yaml.safe_dump(crd) for crd in crds)
    # Server-side: the HTTPRoute CRD is larger than the annotation client-side apply would store.
    plane.kubectl("apply", "--server-side", "--field-manager=istio-proxy-debug-tests", "-f", "-", stdin=document,
                  timeout=120)
    names = [crd["metadata"]["name"] for crd in crds]
    deadline = time.monotonic() + timeout
    while waiting := _established(plane, names):
        if time.monotonic() > deadline:
            raise AssertionError(f"Gateway API CRDs not Established within {timeout:.0f} s: {waiting}")
        time.sleep(0.5)
