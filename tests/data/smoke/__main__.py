"""In the cluster KUBECONFIG names: a ConfigMap holding the stack's `value`, and a Deployment of one pod, which
the provider awaits until it is available (the pod scheduled and reported Ready)."""

import pulumi
import pulumi_kubernetes as k8s

config = pulumi.Config()
smoke = k8s.core.v1.ConfigMap(
    "smoke",
    metadata={"name": "toolchain-smoke", "namespace": "default"},
    data={"value": config.require("value")},
)
labels = {"app": "toolchain-smoke"}
deployment = k8s.apps.v1.Deployment(
    "smoke",
    metadata={"name": "toolchain-smoke", "namespace": "default"},
    spec={
        "replicas": 1,
        "selector": {"matchLabels": labels},
        "template": {"metadata": {"labels": labels},
                     "spec": {"containers": [{"name": "app", "image": "fortio/fortio:1.69.5"}]}},
    },
)
pulumi.export("uid", smoke.metadata.uid)
pulumi.export("readyReplicas", deployment.status.ready_replicas)
