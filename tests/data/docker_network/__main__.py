"""One Docker network through pulumi-docker's default provider, and nothing of the project's program: what the
provider itself does when no Docker daemon answers (tests/test_engine_preview.py). Made on the tests' engine
once (with the label that tells a leftover of an earlier run from another's network), otherwise only previewed."""

import pulumi_docker as docker

# tests/test_engine_preview.py's NETWORK and NETWORK_LABEL.
docker.Network("network", name="ipd-provider-check",
               labels=[docker.NetworkLabelArgs(label="istio-proxy-debug.test", value="engine-preview")])
