#!/usr/bin/env bash
# Run by the debug image's Dockerfile (its build context holds it: the engine's own Dockerfile frontend,
# without heredocs, builds it).
# shellcheck disable=SC2016 # $ORIGIN is for the dynamic loader, not the shell
set -euo pipefail
: "${OUT:?}" "${BASE_LIBS:?}"
# Copies lldb-server into $OUT/opt/lldb-server with the libraries missing from $BASE_LIBS beside it, each
# with an $ORIGIN rpath so the copy finds them wherever the image puts it.
server=$(readlink -f "${LLDB_SERVER:-/usr/bin/lldb-server}")
prefix=/opt/lldb-server
mkdir -p "$OUT$prefix/bin" "$OUT$prefix/lib" "$OUT/usr/local/bin"
cp "$server" "$OUT$prefix/bin/lldb-server"
# Debian's build spawns its gdbserver as lldb-server-<version> from its own folder: keep those names.
for alias in "$(dirname "$server")"/lldb-server-*; do
  if [ -e "$alias" ]; then ln -sfn lldb-server "$OUT$prefix/bin/$(basename "$alias")"; fi
done
ldd "$server" | awk '$2 == "=>" && $3 ~ /^\// { print $3 }' | while read -r lib; do
  name=$(basename "$lib")
  grep -qxF "$name" "$BASE_LIBS" && continue
  cp -L "$lib" "$OUT$prefix/lib/$name"
  patchelf --set-rpath '$ORIGIN' "$OUT$prefix/lib/$name"
done
patchelf --set-rpath '$ORIGIN/../lib' "$OUT$prefix/bin/lldb-server"
# Run by a symlink elsewhere it would look for that gdbserver in the wrong folder: exec the real path.
printf '#!/bin/sh\nexec %s "$@"\n' "$prefix/bin/lldb-server" > "$OUT/usr/local/bin/lldb-server"
chmod 0755 "$OUT/usr/local/bin/lldb-server"
"$OUT$prefix/bin/lldb-server" version
