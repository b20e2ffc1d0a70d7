#!/usr/bin/env bash
# S6, undone: puts back every file containerd-mirror-create.sh changed for REGISTRY, byte for byte, from
# the backups under STATE_ROOT, and removes the files and folders that create made. The runtime's
# configuration file comes back byte for byte once no other registry (another stack's) relies on it;
# until then only REGISTRY's own entry is taken out of it. containerd (or k3s) is restarted only if that
# file changed. Nothing to restore (never configured, or already undone) is not an error.
# REGISTRY is assigned above this text by components/containerd_mirror.py. Pulumi runs this delete command
# from its state, so it restores what the create of that time did, whatever the program says now.
# stdout: a one-line summary; stderr: what was done, step by step.
# shellcheck disable=SC2154 # the settings and helpers come from containerd-mirror-common.sh
set -euo pipefail


if [ ! -d "$STATE_DIR" ] && ! grep -qxF -e "$REGISTRY" "$NODE_STATE/users" 2>/dev/null; then
  echo "$REGISTRY: nothing to restore"
  exit 0
fi
changed=$(undo_registry)
count=$(grep -c . <<<"$changed" || true)
unit=$(unit_reading <<<"$changed")
if [ -z "$unit" ]; then
  echo "$REGISTRY: put back $count file(s); no restart needed"
  exit 0
fi
if ! why=$(restart_and_check "$unit"); then
  die "the configuration without $REGISTRY is back, but $unit's CRI plugin did not come up. $why"
fi
echo "$REGISTRY: put back $count file(s); $unit restarted, CRI plugin ok"
