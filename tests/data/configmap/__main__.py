"""One ConfigMap, as the JSON file the stack's `manifest` setting names holds it (the object a stack of this
project renders), through the kubernetes provider into the cluster KUBECONFIG names."""

import json
from pathlib import Path

import pulumi
import pulumi_kubernetes as k8s

manifest = json.loads(Path(pulumi.Config().require("manifest")).read_text())
k8s.core.v1.ConfigMap("target-waypoint-parameters", metadata=manifest["metadata"], data=manifest["data"])
