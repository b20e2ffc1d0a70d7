"""The Istio releases the tests run against, discovered from their folders (never listed), and the golden
injections of each sidecar form a release's injector produces.

The folders are a copy of ../shared/istio-releases (manifest.json and the golden files the tests read; see
tests/data/istio-releases/README.md); test_releases.py checks the copy against the original where it exists.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml

from tests.injector import PROXY, pod_template

DATA = Path(__file__).parent / "data" / "istio-releases"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "istio-releases"
# The golden injections of a workload with a sidecar, in both forms where the release has them.
FORM_GOLDENS = ("statefulset.yaml.injected", "statefulset-old-version.yaml.injected",
                "native-sidecar.yaml.injected", "native-sidecar-opt-out.yaml.injected")


@dataclass(frozen=True)
class Release:
    version: str
    folder: Path

    @property
    def manifest(self) -> dict:
        return json.loads((self.folder / "manifest.json").read_text())

    def golden(self, name: str) -> dict:
        return load(self.folder / "injection" / name)

    @property
    def sidecar_forms(self) -> dict[str, str]:
        """{"regular" | "native": the golden file that shows it}, first found in FORM_GOLDENS order."""
        forms: dict[str, str] = {}
        for name in FORM_GOLDENS:
            if (self.folder / "injection" / name).exists():
                forms.setdefault(sidecar_form(pod_template(self.golden(name))["spec"]), name)
        return forms


def load(path: Path) -> dict:
    return next(d for d in yaml.safe_load_all(path.read_text()) if d)


def sidecar_form(spec: dict) -> str:
    native = any(c["name"] == PROXY and c.get("restartPolicy") == "Always" for c in spec.get("initContainers", []))
    return "native" if native else "regular"


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


@cache
def releases() -> tuple[Release, ...]:
    folders = [f for f in DATA.iterdir() if (f / "manifest.json").exists()]
    return tuple(Release(f.name, f) for f in sorted(folders, key=lambda f: version_key(f.name)))
