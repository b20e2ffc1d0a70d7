#!/usr/bin/env bash
# attachTo, on the node, as root: the lldb-server bundle (collect-lldb-server-bundle.sh), a tar on stdin, into
# BUNDLE_DIR, unless the node has that very bundle (DIGEST) already. Run by `bash -c` after the parameter
# assignments the program prepends; stdin is the tar.
set -euo pipefail

: "${BUNDLE_DIR:?}" "${DIGEST:?}"

if [ "$(cat "$BUNDLE_DIR/.digest" 2>/dev/null)" = "$DIGEST" ]; then
  cat >/dev/null
  echo "lldb-server bundle: the node has it ($BUNDLE_DIR)" >&2
  exit 0
fi
rm -rf "$BUNDLE_DIR.partial"
mkdir -p "$BUNDLE_DIR.partial"
tar -x -C "$BUNDLE_DIR.partial" --no-same-owner
echo "$DIGEST" >"$BUNDLE_DIR.partial/.digest"
rm -rf "$BUNDLE_DIR"
mv "$BUNDLE_DIR.partial" "$BUNDLE_DIR"
echo "lldb-server bundle: $(du -sh "$BUNDLE_DIR" | cut -f1) in $BUNDLE_DIR on the node" >&2
