"""One Docker network through pulumi-docker's default provider, and nothing of the project's program: what the
provider itself does when no Docker daemon answers (tests/test_engine_preview.py). Only ever previewed."""

import pulumi_docker as docker

docker.Network("network", name="ipd-provider-check")
