#!/usr/bin/env bash
# S5, step 1: runs in the workbench (fed on stdin to `docker exec -i … bash -s`) — the builder, or the debugger
# when Envoy was downloaded — which has binutils and sees the ELF where the build or the download left it. Puts the Envoy for the image into the build context:
# stripped of debug info (STRIP=true: objcopy --strip-debug keeps the symbol table and the build-id note)
# or the full ELF, hard-linked when it can be. Refuses a result whose build-id is not BUILD_ID, since lldb
# could then not match it to the unstripped ELF. Writes the Dockerfile's lldb-server collector (COLLECTOR)
# beside it. Prints envoy's size, build-id and form on stdout.
set -euo pipefail

: "${ELF:?}" "${CONTEXT_DIR:?}" "${STRIP:?}" "${BUILD_ID:?}" "${COLLECTOR:?}"

die() {
  echo "prepare-image-context: $*" >&2
  exit 1
}

build_id_of() {
  LC_ALL=C readelf -n "$1" 2>/dev/null | awk '/Build ID:/ { print $3; exit }'
}

[ -f "$ELF" ] || die "the debug ELF $ELF is missing: run the build again (buildEnvoy: true)"
mkdir -p "$CONTEXT_DIR"
staged="$CONTEXT_DIR/.envoy.staged"
rm -f "$staged"
if [ "$STRIP" = true ]; then
  objcopy --strip-debug "$ELF" "$staged"
else
  ln -f "$ELF" "$staged" 2>/dev/null || cp "$ELF" "$staged"
fi
found=$(build_id_of "$staged")
if [ "$found" != "$BUILD_ID" ]; then
  rm -f "$staged"
  die "$ELF has build-id '${found:-none}', not $BUILD_ID: the ELF changed since the build; run pulumi up again"
fi
# The Dockerfile's lldb-server collector (components/docker/collect-lldb-server.sh), beside Envoy.
printf '%s' "$COLLECTOR" >"$CONTEXT_DIR/collect-lldb-server.sh"
# In the cluster a rootless BuildKit pod (uid 1000) reads the context: whatever the builder's umask.
chmod a+rX "$CONTEXT_DIR" "$staged" "$CONTEXT_DIR/collect-lldb-server.sh"
mv -f "$staged" "$CONTEXT_DIR/envoy"
printf 'bytes=%s\nbuildId=%s\nstripped=%s\n' "$(stat -c %s "$CONTEXT_DIR/envoy")" "$found" "$STRIP"
