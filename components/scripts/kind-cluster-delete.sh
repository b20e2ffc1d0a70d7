#!/usr/bin/env bash
# `pulumi destroy` of the lab's kind cluster: its node containers go, and its entry in KUBECONFIG_FILE. Nothing
# under workDir is touched otherwise (the registry's images, the downloads and the source stay).
set -euo pipefail

: "${KIND_CLUSTER:?}" "${KUBECONFIG_FILE:?}"

if ! command -v kind >/dev/null; then
  echo "kind cluster: the kind CLI is not installed, so $KIND_CLUSTER cannot be deleted: install it (make up does), then destroy again" >&2
  exit 1
fi
kind delete cluster --name "$KIND_CLUSTER" --kubeconfig "$KUBECONFIG_FILE" >&2
