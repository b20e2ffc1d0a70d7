#!/usr/bin/env bash
# S9: builds the debugger image from the Dockerfile on stdin (no build context) and prints its image id,
# so the debugger container is replaced exactly when the image changes.
set -euo pipefail

: "${IMAGE:?}" "${PLATFORM:?}"

DOCKER_BUILDKIT=1 docker build --platform "$PLATFORM" --tag "$IMAGE" - >&2
docker image inspect --format '{{.Id}}' "$IMAGE"
