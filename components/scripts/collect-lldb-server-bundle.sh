#!/usr/bin/env bash
# attachTo: lldb-server for a pod that runs no debug image, from the debugger's own lldb (fed on stdin to
# `… bash -s` in the debugger container). BUNDLE_DIR gets bin/lldb-server and lib/ with every shared library it
# loads, the C library and its loader too, so it runs in any container's mount namespace whatever that container
# has (a distroless one too): the node opens the bundle as file descriptor 9 before it enters the pod's
# namespaces, and the server's program interpreter is read through it (/proc/self/fd/9/lib/…), its libraries
# from LD_LIBRARY_PATH=/proc/self/fd/9/lib. Beside it tini (static): lldb-server runs under it in the pod's PID
# namespace, so the processes it leaves behind (a session's gdbserver, its finished connection handlers) are reaped
# there, never left as zombies of the pod's own init. Made again only when the debugger's lldb-server changes.
# Prints bundle= (the folder) and digest= (of its files) on stdout.
set -euo pipefail

: "${BUNDLE_DIR:?}"

die() {
  echo "lldb-server bundle: $*" >&2
  exit 1
}
for tool in lldb-server ldd patchelf sha256sum tini-static; do
  command -v "$tool" >/dev/null || die "$tool is missing in the debugger: its image installs lldb, patchelf and tini"
done
server=$(readlink -f "$(command -v lldb-server)")
source_digest=$(sha256sum "$server" | cut -d' ' -f1)

if [ "$(cat "$BUNDLE_DIR/.source" 2>/dev/null)" != "$source_digest" ]; then
  work="$BUNDLE_DIR.partial"
  rm -rf "$work"
  mkdir -p "$work/bin" "$work/lib"
  cp "$server" "$work/bin/lldb-server"
  cp "$(command -v tini-static)" "$work/bin/tini"
  # Every library, the loader among them (ldd prints it without "=>").
  ldd "$server" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | while read -r lib; do
    cp -L "$lib" "$work/lib/$(basename "$lib")"
  done
  loader=$(patchelf --print-interpreter "$server")
  patchelf --set-interpreter "/proc/self/fd/9/lib/$(basename "$loader")" "$work/bin/lldb-server"
  echo "$source_digest" >"$work/.source"
  rm -rf "$BUNDLE_DIR"
  mv "$work" "$BUNDLE_DIR"
  echo "lldb-server bundle: $(du -sh "$BUNDLE_DIR" | cut -f1) in $BUNDLE_DIR, from $server" >&2
fi
digest=$(cd "$BUNDLE_DIR" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)
printf 'bundle=%s\ndigest=%s\n' "$BUNDLE_DIR" "$digest"
