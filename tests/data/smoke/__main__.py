"""One ConfigMap in the cluster KUBECONFIG names, holding the stack's `value`."""

import pulumi
import pulumi_kubernetes as k8s

config = pulumi.Config()
smoke = k8s.core.v1.ConfigMap(
    "smoke",
    metadata={"name": "toolchain-smoke", "namespace": "default"},
    data={"value": config.require("value")},
)
pulumi.export("uid", smoke.metadata.uid)
