#!/usr/bin/env bash
# attachTo: the running pod the stack debugs in place, read once from the API server (never changed): its node,
# the named container's image and the containerd id its processes carry in their cgroup, and the Istio release its
# image's tag names (else FALLBACK_VERSION, the stack's istioVersion). Prints key=value lines on stdout; a pod that
# is not there, has no such container or whose container does not run stops the update with one line that names
# attachTo and what was found.
set -euo pipefail

: "${POD_NAMESPACE:?}" "${POD_NAME:?}" "${CONTAINER:?}" "${FALLBACK_VERSION:?}"

what="attachTo $POD_NAMESPACE/$POD_NAME"
errors=$(mktemp)
trap 'rm -f "$errors"' EXIT
die() {
  echo "$what: $*" >&2
  exit 1
}

template='node={.spec.nodeName}{"\n"}uid={.metadata.uid}{"\n"}'
template+='{range .spec.containers[*]}spec {.name} {.image}{"\n"}{end}'
template+='{range .spec.initContainers[*]}spec {.name} {.image}{"\n"}{end}'
template+='{range .status.containerStatuses[*]}status {.name} {.containerID} {.restartCount} {.state.running.startedAt}{"\n"}{end}'
template+='{range .status.initContainerStatuses[*]}status {.name} {.containerID} {.restartCount} {.state.running.startedAt}{"\n"}{end}'
# --request-timeout: an API server that takes the connection but never answers must not hold the update.
if ! facts=$(kubectl get pod "$POD_NAME" -n "$POD_NAMESPACE" -o "jsonpath=$template" --request-timeout=30s \
  2>"$errors"); then
  if grep -q NotFound "$errors"; then
    die "no such pod (kubectl -n $POD_NAMESPACE get pods lists the pods there); set attachTo to a running pod's" \
      "<namespace>/<pod>"
  fi
  die "cannot read the pod: $(cat "$errors")"
fi

containers=$(awk '$1 == "spec" { print $2 }' <<<"$facts" | tr '\n' ' ')
read -r _ _ image < <(awk -v c="$CONTAINER" '$1 == "spec" && $2 == c' <<<"$facts") ||
  die "no container $CONTAINER (its containers: ${containers% }); set attachTo to <namespace>/<pod>/<container>"
read -r _ _ id restarts started < <(awk -v c="$CONTAINER" '$1 == "status" && $2 == c' <<<"$facts") || true
if [ -z "${started:-}" ] || [ -z "${id:-}" ]; then
  die "its container $CONTAINER does not run (kubectl -n $POD_NAMESPACE describe pod $POD_NAME says why)"
fi

# docker.io/istio/proxyv2:1.30.3, or its -distroless/-debug variants: the release is the tag's x.y.z.
if [[ $image =~ :([0-9]+\.[0-9]+\.[0-9]+)([-_][A-Za-z0-9._-]*)?(@sha256:[0-9a-f]+)?$ ]]; then
  version=${BASH_REMATCH[1]} version_from="the image tag"
else
  version=$FALLBACK_VERSION version_from="istioVersion (the image $image names no release)"
fi
echo "$what: container $CONTAINER runs $image on node $(sed -n 's/^node=//p' <<<"$facts"), release $version from" \
  "$version_from" >&2
sed -n 's/^\(node\|uid\)=/&/p' <<<"$facts"
printf 'container=%s\nimage=%s\ncontainerId=%s\nrestartCount=%s\nistioVersion=%s\n' \
  "$CONTAINER" "$image" "${id#*://}" "$restarts" "$version"
