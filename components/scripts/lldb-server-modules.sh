#!/usr/bin/env bash
# attachTo, on the node, as root, after lldb-server-start.sh: every ELF file the container's PROCESS_NAME maps (its
# executable, its libraries) as a tar on stdout, laid out as lldb's module cache lays out a remote-linux module
# (.cache/<UUID>/<name>, the UUID its GNU build-id). Unpacked into the debugger's module cache before it attaches,
# they are not copied over the platform connection while the process is stopped (about 1 MB/s, llvm#62750): a
# release Envoy of 100 MB would stall a production pod for a minute. Run by `bash -c` after the parameter
# assignments, elf-facts.sh and container-process.sh.
set -euo pipefail

: "${CONTAINER_ID:?}" "${PROCESS_NAME:?}" "${STATE_DIR:?}" "${INSTANCE:?}"

target=$(container_pids "$CONTAINER_ID" "$PROCESS_NAME" | head -n 1)
if [ -z "$target" ]; then
  echo "lldb-server modules: no $PROCESS_NAME in container ${CONTAINER_ID:0:12} on this node" >&2
  exit 1
fi
stage="$STATE_DIR/modules-$INSTANCE"
rm -rf "$stage"
mkdir -p "$stage/.cache"
trap 'rm -rf "$stage"; rmdir "$STATE_DIR" 2>/dev/null || true' EXIT
count=0
while read -r path; do
  file="/proc/$target/root$path"
  id=$(elf_build_id "$file")
  [ -n "$id" ] || continue
  uuid=$(lldb_uuid "$id")
  mkdir -p "$stage/.cache/$uuid"
  ln -sfn "$file" "$stage/.cache/$uuid/$(basename "$path")"
  count=$((count + 1))
done < <(awk 'NF == 6 && $6 ~ /^\// { print $6 }' "/proc/$target/maps" | sort -u)
echo "lldb-server modules: $count files of $PROCESS_NAME (node pid $target) for the debugger's module cache" >&2
tar -chf - -C "$stage" .cache
