"""Writes tests/data/istio-gateways/<version>/ for each release of tests/data/istio-releases, from a git clone of
istio/istio that has the release tags: the gateway deployment controller's golden files (simple, waypoint,
customizations), the customizations case's ConfigMap `deployment` overlay as its Go test gives it, and facts read
from deploymentcontroller.go. Usage: python tools/extract_gateway_goldens.py <istio/istio git dir>
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

RELEASES = Path("tests/data/istio-releases")
OUT = Path("tests/data/istio-gateways")
GOLDENS = ("simple.yaml", "waypoint.yaml", "customizations.yaml")


def show(repo: str, tag: str, path: str) -> str | None:
    done = subprocess.run(["git", "-C", repo, "show", f"{tag}:{path}"], capture_output=True, text=True)
    return done.stdout if done.returncode == 0 else None


def extract(repo: str, tag: str) -> dict:
    base = "pilot/pkg/config/kube/gatewaycommon"
    if show(repo, tag, f"{base}/deploymentcontroller.go") is None:
        base = "pilot/pkg/config/kube/gateway"
    controller = show(repo, tag, f"{base}/deploymentcontroller.go")
    test = show(repo, tag, f"{base}/deploymentcontroller_test.go")
    out = OUT / tag
    out.mkdir(parents=True, exist_ok=True)
    files, sources = [], {}
    for name in GOLDENS:
        # The controller's test writes testdata/deployment/<case>.yaml; at 1.30 the move into gatewaycommon left
        # an empty file there for some cases and the rendered one in testdata/.
        for path in (f"{base}/testdata/deployment/{name}", f"{base}/testdata/{name}"):
            text = show(repo, tag, path)
            if text:
                (out / name).write_text(text)
                files.append(name)
                sources[name] = path
                break
    case = re.search(r'name:\s*"customizations",(.*?)\n\t\t},\n\t\t\{', test, re.S)
    if case:
        overlay = re.search(r'"deployment":\s*`(.*?)`', case.group(1), re.S).group(1)
        (out / "customizations.deployment-overlay.yaml").write_text(overlay.lstrip("\n") + "\n")
        files.append("customizations.deployment-overlay.yaml")
    overlays = controller.split("supportedOverlays = sets.New(")
    facts = {
        "istioVersion": tag,
        "deploymentController": f"{base}/deploymentcontroller.go",
        "goldenFolder": f"{base}/testdata/deployment",
        "parametersRefConfigMap": "parametersRef targeting configmap" in controller,
        "overlayIsStrategicMergePatch": "strategicMergePatchYAML" in controller,
        "supportedOverlays": re.findall(r'^\t"(\w+)",$', overlays[1].split(")")[0], re.M) if len(overlays) > 1 else [],
        "files": files,
        "sources": sources,
    }
    (out / "facts.json").write_text(json.dumps(facts, indent=1) + "\n")
    return facts


if __name__ == "__main__":
    for folder in sorted(RELEASES.iterdir()):
        if folder.is_dir():
            facts = extract(sys.argv[1], folder.name)
            print(folder.name, facts["parametersRefConfigMap"], facts["files"], file=sys.stderr)
