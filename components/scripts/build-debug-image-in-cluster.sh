#!/usr/bin/env bash
# S5, step 2, with placement: cluster — there is no Docker. A one-off rootless BuildKit pod (POD_OVERRIDES,
# rendered by components/debug_image.py) builds the image from the Dockerfile on stdin and the context the
# builder staged on the workspace volume (mounted in the pod at CONTEXT_DIR), pushes it to the registry
# Service over plain HTTP, and prints the pushed reference by digest, as build-debug-image.sh does.
set -euo pipefail

: "${NAMESPACE:?}" "${POD:?}" "${POD_OVERRIDES:?}" "${BUILDKIT_IMAGE:?}" "${CONTEXT_DIR:?}"
: "${BASE_IMAGE:?}" "${IMAGE:?}" "${PLATFORM:?}"

die() {
  echo "build-debug-image-in-cluster: $*" >&2
  exit 1
}

# Runs in the pod (the image's busybox sh) with $1 context, $2 image, $3 base image, $4 platform. Only the
# digest goes to stdout. buildctl-daemonless.sh starts rootless buildkitd for this one build
# (moby/buildkit examples/buildctl-daemonless); the flags are buildctl's (docs/reference/buildctl.md):
# --local context/dockerfile name the two folders the dockerfile.v0 frontend reads, --opt build-arg:… and
# --opt platform=… are its options (docs/dockerfile-frontend-options.md), registry.insecure=true pushes
# over plain HTTP and --metadata-file records containerimage.digest (README, "Image/Registry", "Metadata").
in_pod=$(
  cat <<'IN_POD'
set -eu
fail() {
  echo "build-debug-image-in-cluster: $*" >&2
  exit 1
}
[ -e "$1/envoy" ] || fail "no envoy in the build context $1: the staging step (-context) did not run"
[ -r "$1/envoy" ] || fail "$1/envoy is not readable by uid $(id -u): the staging step must leave it world-readable"
work=$(mktemp -d)
cat >"$work/Dockerfile"
buildctl-daemonless.sh build --frontend dockerfile.v0 \
  --local "context=$1" --local "dockerfile=$work" \
  --opt "build-arg:BASE_IMAGE=$3" --opt "platform=$4" \
  --output "type=image,name=$2,push=true,registry.insecure=true" \
  --metadata-file "$work/metadata.json" >&2 || fail "BuildKit's build or push of $2 failed"
digest=$(grep -o '"containerimage\.digest": *"sha256:[0-9a-f]*"' "$work/metadata.json" |
  grep -o 'sha256:[0-9a-f]*' || true)
[ -n "$digest" ] || fail "no containerimage.digest in BuildKit's metadata: $(cat "$work/metadata.json")"
echo "$digest"
IN_POD
)

# A pod left by an interrupted run holds the name.
kubectl delete pod "$POD" --namespace "$NAMESPACE" --ignore-not-found --wait >&2 ||
  die "cannot remove the leftover pod $POD in namespace $NAMESPACE"
# -i feeds our stdin (the Dockerfile) to the pod and, with --restart=Never, returns the container's exit
# code; --quiet keeps --rm's "pod deleted" off stdout (kubernetes#73266). The override is merged
# strategically: by name into the container kubectl generates, which keeps this command.
out=$(kubectl run "$POD" --namespace "$NAMESPACE" --rm -i --quiet --restart=Never \
  --image "$BUILDKIT_IMAGE" --overrides "$POD_OVERRIDES" --override-type=strategic \
  --pod-running-timeout=5m --command -- sh -c "$in_pod" sh "$CONTEXT_DIR" "$IMAGE" "$BASE_IMAGE" "$PLATFORM") ||
  die "the BuildKit pod $POD in namespace $NAMESPACE failed (exit $?): see its messages above"
# The digest line, whatever else kubectl printed.
digest=$(printf '%s\n' "$out" | grep -E '^sha256:[0-9a-f]{64}$' | tail -n 1 || true)
[ -n "$digest" ] || die "the BuildKit pod printed no image digest; its output: $out"
echo "${IMAGE%:*}@$digest"
