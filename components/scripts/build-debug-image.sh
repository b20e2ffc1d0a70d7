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
# The registry container was started moments ago: a started server is not a listening one. Retry while the
# push cannot reach it (bounded), and fail at once on anything else.
wait_seconds=${REGISTRY_WAIT_SECONDS:-60}
deadline=$((SECONDS + wait_seconds))
push_log=$(mktemp)
trap 'rm -f "$push_log"' EXIT
# pipefail: the pipeline fails when the push does.
until docker push "$IMAGE" 2>&1 | tee "$push_log" >&2; do
  # What a registry says while it starts: nothing listens, or its port is published and the connection is dropped.
  grep -qiE 'connection refused|connection reset|EOF|server closed idle connection|503 Service Unavailable' \
    "$push_log" ||
    die "docker push of $IMAGE failed: $(tail -n 1 "$push_log")"
  [ "$SECONDS" -lt "$deadline" ] ||
    die "the registry at ${IMAGE%%/*} did not take the push of $IMAGE within ${wait_seconds} s ($(tail -n 1 "$push_log")): is the registry container running? (docker ps; docker logs <registry container>)"
  echo "build-debug-image: the registry at ${IMAGE%%/*} does not answer yet; retrying the push" >&2
  sleep 1
done

repository=${IMAGE%:*}
digest=$(docker image inspect --format '{{range .RepoDigests}}{{println .}}{{end}}' "$IMAGE" |
  grep -m1 "^$repository@sha256:" || true)
[ -n "$digest" ] || die "docker knows no digest of $repository after the push"
echo "$digest"
