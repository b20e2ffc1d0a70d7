#!/usr/bin/env bash
# S3: runs inside the builder container (fed on stdin to `docker exec -i … bash -s`). Builds Envoy with
# debug info exactly as the walkthrough does (unless BUILD_ENVOY=false), then finds what the build made
# through the workspace's bazel-out symlink rather than a per-machine hash path.
# The build's own output goes to stderr (streamed to the pulumi up log); stdout carries only the result,
# one key=value per line: elf, execroot, buildId, sandboxRoots.
set -euo pipefail

: "${BUILD_ENVOY:?}" "${BAZEL_BUILD_ARGS?}" "${BAZEL_TARGET:?}" "${ENVOY_OUTPUT:?}"
WORKSPACE_DIR=${WORKSPACE_DIR:-/work}

die() {
  echo "build-envoy: $*" >&2
  exit 1
}

# bazel gives every --linkopt to the final link, hours into the build: try them first on a one-line
# program with the compiler bazel's own toolchain takes ($CC, else gcc), so a builder that lacks the
# linker they name fails now.
check_link_options() {
  local options probe
  mapfile -t options <<<"$LINK_CHECK_OPTIONS"
  probe=$(mktemp -d)
  if printf 'int main(void) { return 0; }\n' |
    "${CC:-gcc}" -x c - -o "$probe/a.out" "${options[@]}" 2>"$probe/errors" >&2; then
    rm -rf "$probe"
    return
  fi
  echo "build-envoy: ${CC:-gcc} cannot link with bazelBuildArgs' --linkopt ${options[*]}:" >&2
  cat "$probe/errors" >&2
  rm -rf "$probe"
  die "install the linker they name in the builder image, or change those --linkopt in bazelBuildArgs"
}

cd "$WORKSPACE_DIR"
if [ "$BUILD_ENVOY" = true ]; then
  [ -z "${LINK_CHECK_OPTIONS:-}" ] || check_link_options
  echo "make build BAZEL_BUILD_ARGS='$BAZEL_BUILD_ARGS' BAZEL_TARGETS='$BAZEL_TARGET' in $WORKSPACE_DIR" >&2
  # stdin is this script: keep make and bazel away from it.
  make build BAZEL_STARTUP_ARGS='' BAZEL_BUILD_ARGS="$BAZEL_BUILD_ARGS" BAZEL_TARGETS="$BAZEL_TARGET" \
    </dev/null >&2 || die "make build failed (see the build output above)"
fi

[ -L "$WORKSPACE_DIR/bazel-out" ] ||
  die "no Envoy build in $WORKSPACE_DIR (no bazel-out link): set buildEnvoy to true, or build it in the builder first"
bazel_out=$(readlink -f "$WORKSPACE_DIR/bazel-out")
[ -d "$bazel_out" ] ||
  die "$WORKSPACE_DIR/bazel-out points to $bazel_out, which does not exist: the bazel cache folder is not the one the build used"
elf="$bazel_out/$ENVOY_OUTPUT"
[ -f "$elf" ] ||
  die "the debug ELF $elf is missing: set buildEnvoy to true, or build $BAZEL_TARGET with $BAZEL_BUILD_ARGS"

build_id=$(LC_ALL=C readelf -n "$elf" 2>/dev/null | awk '/Build ID:/ { print $3; exit }')
[ -n "$build_id" ] || die "$elf has no GNU build-id note; lldb could not match a stripped copy to it"

# Objects compiled in a bazel sandbox carry its execroot in their debug info (walkthrough: …/sandbox/
# linux-sandbox/263/execroot/io_istio_proxy); the debugger maps each such prefix to the real execroot.
sandbox_roots=$(LC_ALL=C grep -a -o -E '/[^[:space:][:cntrl:]"]*/sandbox/[a-z-]+/[0-9]+/execroot/[A-Za-z0-9_.-]+' "$elf" |
  sort -u | tr '\n' ' ' || true)

printf 'elf=%s\nexecroot=%s\nbuildId=%s\nsandboxRoots=%s\n' "$elf" "$(dirname "$bazel_out")" "$build_id" "${sandbox_roots% }"
