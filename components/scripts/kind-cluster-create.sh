#!/usr/bin/env bash
# The lab's kind cluster, on the developer host: created from the stack's kind config (KIND_CONFIG) with its
# kubeconfig written to KUBECONFIG_FILE only (never the developer's own kubeconfig or context), its node
# containers on NODE_NETWORK. A cluster of that name that exists already (an earlier `up` that stopped
# half-way) is kept. Prints the cluster's kubeconfig on stdout; everything else goes to stderr.
set -euo pipefail

: "${KIND_CLUSTER:?}" "${KIND_CONFIG:?}" "${KUBECONFIG_FILE:?}" "${NODE_NETWORK:?}" "${KIND_VERSION:?}"

die() {
  echo "kind cluster: $*" >&2
  exit 1
}

command -v kind >/dev/null ||
  die "the kind CLI is not installed: \`make up\` installs kind $KIND_VERSION, or see https://kind.sigs.k8s.io/docs/user/quick-start/#installation"
docker info >/dev/null 2>&1 || die "Docker does not answer (docker info): start Docker, or add yourself to the docker group"

mkdir -p "$(dirname "$KUBECONFIG_FILE")"
if kind get clusters 2>/dev/null | grep -qxF "$KIND_CLUSTER"; then
  echo "kind cluster $KIND_CLUSTER exists already: keeping it" >&2
  kind export kubeconfig --name "$KIND_CLUSTER" --kubeconfig "$KUBECONFIG_FILE" >&2
else
  # kind puts its nodes on the network this variable names (its own `kind` by default).
  printf '%s\n' "$KIND_CONFIG" |
    KIND_EXPERIMENTAL_DOCKER_NETWORK=$NODE_NETWORK kind create cluster --name "$KIND_CLUSTER" --config=- \
      --kubeconfig "$KUBECONFIG_FILE" --wait 5m >&2
fi
kind get kubeconfig --name "$KIND_CLUSTER"
