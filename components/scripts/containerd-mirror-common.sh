#!/usr/bin/env bash
# S6: what containerd-mirror-create.sh and -delete.sh share. components/containerd_mirror.py renders each
# command as: the parameter assignments, this text, then the create or delete script.
# shellcheck disable=SC2034 # some of these settings are used by only one of the two scripts
set -euo pipefail
export LC_ALL=C

die() {
  echo "containerd-mirror: $*" >&2
  exit 1
}
note() { echo "containerd-mirror: $*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
  # The program runs this as `bash -c TEXT`: run the same text again as root.
  [ -n "${BASH_EXECUTION_STRING:-}" ] || die "must run as root"
  exec sudo -n -- bash -c "$BASH_EXECUTION_STRING"
fi

: "${REGISTRY:?}"


CONTAINERD_CONFIG=${CONTAINERD_CONFIG:-/etc/containerd/config.toml}
# Where hosts.toml files go when config_path is set here (a single folder: see docs/your-cluster.md, S6).
CERTS_DIR=${CERTS_DIR:-/etc/containerd/certs.d}
K3S_REGISTRIES=${K3S_REGISTRIES:-/etc/rancher/k3s/registries.yaml}
STATE_ROOT=${STATE_ROOT:-/var/lib/istio-proxy-debug}
# What this registry changed: its hosts.toml (and the folders made for it), backed up, and the text it added
# to the runtime's configuration file.
STATE_DIR=$STATE_ROOT/containerd-mirror/registries/$REGISTRY
# The runtime's configuration file (config.toml or registries.yaml) is shared by every registry configured
# on the node (several stacks can use one node). Its original is kept once, here, with the registries that
# rely on the change. The last of them to go puts the original back, byte for byte.
NODE_STATE=$STATE_ROOT/containerd-mirror/config
# The folders made on the way (certs.d, …), whichever registry made them: each undo removes those that
# have become empty.
MADE_DIRS=$STATE_ROOT/containerd-mirror/made-dirs
LOCK_FILE=${LOCK_FILE:-/run/lock/istio-proxy-debug-containerd-mirror.lock}
CHECK_TIMEOUT=${CHECK_TIMEOUT:-60}
# The journal is read unless CONTAINERD_LOG_FILE names the runtime's log file.
CONTAINERD_LOG_FILE=${CONTAINERD_LOG_FILE:-}
read -ra CTR_CMD <<<"${CTR:-ctr}"
CONTAINERD_ADDRESS=${CONTAINERD_ADDRESS:-/run/containerd/containerd.sock}
read -ra K3S_CTR_CMD <<<"${K3S_CTR:-k3s ctr}"
K3S_CONTAINERD_ADDRESS=${K3S_CONTAINERD_ADDRESS:-/run/k3s/containerd/containerd.sock}

[[ "$REGISTRY" =~ ^[]A-Za-z0-9.:[-]+$ ]] || die "REGISTRY $REGISTRY is not host:port"

# One run at a time on a node: two stacks may configure the same node at once.
if command -v flock >/dev/null && [ -d "$(dirname "$LOCK_FILE")" ]; then
  exec 9>>"$LOCK_FILE"
  flock -w 600 9 || die "another run still holds $LOCK_FILE after 10 minutes"
fi

# Restarts UNIT (containerd, k3s or k3s-agent) and waits until its CRI plugin reports ok.
# If the plugin does not come up, it prints why (including the log lines since the restart) and returns 1.
restart_and_check() {
  local unit=$1 deadline plugins status log_mark
  command -v systemctl >/dev/null || {
    echo "there is no systemctl on this node: restart $unit by hand"
    return 1
  }
  if [ -n "$CONTAINERD_LOG_FILE" ]; then
    log_mark=$(($(wc -c 2>/dev/null <"$CONTAINERD_LOG_FILE" || echo 0) + 1))
  else
    log_mark=$(date +%s)
  fi
  note "restarting $unit"
  # Not with the lock: a daemon started from here must not hold it.
  systemctl restart "$unit" 9>&- >&2 || true
  deadline=$((SECONDS + CHECK_TIMEOUT))
  while :; do
    status=
    if plugins=$(cri_ctl "$unit" plugins ls 2>/dev/null); then
      status=$(awk '$1 == "io.containerd.grpc.v1" && $2 == "cri" { print $NF }' <<<"$plugins")
      [ "$status" != ok ] || return 0
      # It answers, and the CRI plugin did not load: waiting longer will not change that.
      [ -z "$status" ] || break
    fi
    [ "$SECONDS" -lt "$deadline" ] || break
    sleep 0.2
  done
  if [ -n "$status" ]; then
    echo "$unit is up, but its CRI plugin is $status. Its log says:"
  else
    echo "$unit did not answer within ${CHECK_TIMEOUT}s. Its log says:"
  fi
  if [ -n "$CONTAINERD_LOG_FILE" ]; then
    tail -c "+$log_mark" "$CONTAINERD_LOG_FILE" 2>/dev/null
  else
    journalctl -u "$unit" --since "@$log_mark" --no-pager -o cat 2>/dev/null
  fi | grep -E 'failed to load plugin io\.containerd\.(grpc\.v1\.cri|cri\.)|level=(error|fatal)' | tail -n 20 || true
  return 1
}

# ctr, pointed at the unit's containerd (k3s embeds its own containerd, at another address).
cri_ctl() {
  local unit=$1
  shift
  case "$unit" in
    k3s*) "${K3S_CTR_CMD[@]}" --address "$K3S_CONTAINERD_ADDRESS" "$@" ;;
    *) "${CTR_CMD[@]}" --address "$CONTAINERD_ADDRESS" "$@" ;;
  esac
}

# The k3s unit that runs on this node (server or agent), if any.
k3s_unit() {
  local unit
  for unit in k3s k3s-agent; do
    if systemctl is-active --quiet "$unit" 2>/dev/null; then
      echo "$unit"
      return
    fi
  done
}

# The unit that reads one of the files named on stdin (the files a run changed), if any.
unit_reading() {
  local paths
  paths=$(cat)
  if grep -qxF -e "$CONTAINERD_CONFIG" <<<"$paths"; then
    echo containerd
  elif grep -qxF -e "$K3S_REGISTRIES" <<<"$paths"; then
    k3s_unit
  fi
}

# Puts back every file that the manifest of state folder DIR lists, newest first.
# Prints the paths whose bytes changed.
restore_manifest() {
  local dir=$1 kind path how
  [ -f "$dir/manifest" ] || return 0
  tac "$dir/manifest" | while IFS=$'\t' read -r kind path how; do
    case "$kind/$how" in
      file/existed)
        if ! cmp -s "$dir/backup$path" "$path"; then
          if [ -f "$dir/ours$path" ] && [ -f "$path" ] && ! cmp -s "$dir/ours$path" "$path"; then
            note "warning: $path was changed after it was configured; restoring the original anyway. The changes were:"
            diff -u "$dir/ours$path" "$path" >&2 || true
          fi
          cp -p "$dir/backup$path" "$path"
          note "restored $path"
          echo "$path"
        fi
        ;;
      file/absent)
        if [ -e "$path" ]; then
          rm -f "$path"
          note "removed $path"
          echo "$path"
        fi
        ;;
    esac
  done
}

# Writes CONTENT to PATH through a temporary file beside it, keeping an existing file's mode and owner.
replace_content() {
  local path=$1 content=$2 tmp="$1.istio-proxy-debug.tmp"
  if [ -e "$path" ]; then
    cp -p "$path" "$tmp"
  else
    install -m 0644 /dev/null "$tmp"
  fi
  printf '%s' "$content" >"$tmp"
  mv -f "$tmp" "$path"
}

# A file's exact content (command substitution alone drops trailing newlines).
content_of() {
  local content
  content=$(
    cat "$1"
    printf x
  )
  printf '%s' "${content%x}"
}

# Undoes what REGISTRY changed on the node. The shared configuration file comes back byte for byte when no
# other registry relies on it; otherwise only the text REGISTRY added is taken out. REGISTRY's own files
# come back from its backups. Prints the paths whose bytes changed.
undo_registry() {
  local block='' path='' content users
  if [ -f "$STATE_DIR/added-to" ]; then
    path=$(cat "$STATE_DIR/added-to")
    block=$(content_of "$STATE_DIR/added")
  fi
  if [ -f "$NODE_STATE/users" ] && grep -qxF -e "$REGISTRY" "$NODE_STATE/users"; then
    users=$(grep -vxF -e "$REGISTRY" "$NODE_STATE/users" || true)
    if [ -z "$users" ]; then
      restore_manifest "$NODE_STATE"
      rm -rf "$NODE_STATE"
    else
      printf '%s\n' "$users" >"$NODE_STATE/users"
      note "keeping the configuration change in place for $(paste -sd ' ' <<<"$users")"
      if [ -n "$block" ] && [ -f "$path" ]; then
        content=$(content_of "$path")
        if [[ "$content" == *"$block"* ]]; then
          replace_content "$path" "${content/"$block"/}"
          cp -p "$path" "$NODE_STATE/ours$path"
          note "took the entry for $REGISTRY out of $path"
          echo "$path"
        else
          note "warning: the entry for $REGISTRY is no longer in $path as it was written; left $path as it is"
        fi
      fi
    fi
  fi
  restore_manifest "$STATE_DIR"
  rm -rf "$STATE_DIR"
  remove_empty_made_dirs
  rmdir "$STATE_ROOT/containerd-mirror/registries" "$STATE_ROOT/containerd-mirror" "$STATE_ROOT" 2>/dev/null || true
}

# Removes the made folders that are empty now, deepest first. Once nothing is configured any more, the
# list is dropped, and a folder still holding files that were not written here is named and kept.
remove_empty_made_dirs() {
  local dir kept=()
  [ -f "$MADE_DIRS" ] || return 0
  while IFS= read -r dir; do
    if [ -d "$dir" ] && ! rmdir "$dir" 2>/dev/null; then
      kept+=("$dir")
    fi
  done < <(awk '{ print length($0) "\t" $0 }' "$MADE_DIRS" | sort -rn | cut -f2-)
  if [ ${#kept[@]} -eq 0 ]; then
    rm -f "$MADE_DIRS"
  elif [ -d "$NODE_STATE" ] || [ -n "$(ls -A "$STATE_ROOT/containerd-mirror/registries" 2>/dev/null)" ]; then
    printf '%s\n' "${kept[@]}" >"$MADE_DIRS"
  else
    note "warning: kept ${kept[*]}, which hold files that were not written here"
    rm -f "$MADE_DIRS"
  fi
}
