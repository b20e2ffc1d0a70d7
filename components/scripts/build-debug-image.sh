#!/usr/bin/env bash
# S5, step 2: on the developer host. Builds the debug image from the Dockerfile on stdin and the context
# the builder prepared, pushes it through localhost (Docker allows plain HTTP there), and prints the
# pushed reference by digest — the only name that changes exactly when the image does.
set -euo pipefail

: "${CONTEXT_DIR:?}" "${BASE_IMAGE:?}" "${IMAGE:?}" "${PLATFORM:?}"

die() {
  echo "build-debug-image: $*" >&2
  exit 1
}

[ -f "$CONTEXT_DIR/envoy" ] || die "no envoy in the build context $CONTEXT_DIR"
DOCKER_BUILDKIT=1 docker build --platform "$PLATFORM" --build-arg "BASE_IMAGE=$BASE_IMAGE" \
  --tag "$IMAGE" --file - "$CONTEXT_DIR" >&2 || die "docker build of $IMAGE failed"
docker push "$IMAGE" >&2 || die "docker push of $IMAGE failed: is the registry container up?"

repository=${IMAGE%:*}
digest=$(docker image inspect --format '{{range .RepoDigests}}{{println .}}{{end}}' "$IMAGE" |
  grep -m1 "^$repository@sha256:" || true)
[ -n "$digest" ] || die "docker knows no digest of $repository after the push"
echo "$digest"
