"""The Kubernetes objects of a waypoint or gateway target as the stack renders them (the JSON file the `objects`
setting names: the ConfigMap, the Gateway and a gateway's HTTPRoute), through the kubernetes provider in the
stack's order and with its options (components/mesh_gateway.py); with `crds`, the Gateway API CRDs first, as a
yaml/v2 ConfigFile of that file, as the lab installs them (components/istio.py). The pod lookup is not here:
it is a command, tested on its own (tests/test_gateway_pod.py)."""

import json
from pathlib import Path

import pulumi
import pulumi_kubernetes as k8s

config = pulumi.Config()
objects = {o["kind"]: o for o in json.loads(Path(config.require("objects")).read_text())}
crds = config.get("crds")
first = [k8s.yaml.v2.ConfigFile("gateway-api", file=crds)] if crds else []

parameters = objects["ConfigMap"]
config_map = k8s.core.v1.ConfigMap(
    "parameters", metadata=parameters["metadata"], data=parameters["data"],
    opts=pulumi.ResourceOptions(delete_before_replace=True, depends_on=first),
)
gateway = objects["Gateway"]
created = k8s.apiextensions.CustomResource(
    "gateway", api_version=gateway["apiVersion"], kind=gateway["kind"], metadata=gateway["metadata"],
    spec=gateway["spec"], opts=pulumi.ResourceOptions(depends_on=[config_map, *first]),
)
if "HTTPRoute" in objects:
    route = objects["HTTPRoute"]
    k8s.apiextensions.CustomResource(
        "route", api_version=route["apiVersion"], kind=route["kind"], metadata=route["metadata"], spec=route["spec"],
        opts=pulumi.ResourceOptions(depends_on=[created]),
    )
pulumi.export("configMapUid", config_map.metadata.apply(lambda m: m.uid))
pulumi.export("gatewayUid", created.metadata.apply(lambda m: m.get("uid")))
