#!/usr/bin/env bash
# S8: on the node, as root, right after lldb-server-stop.sh has stopped a previous instance: the program
# feeds the parameter assignments, then elf-facts.sh, container-process.sh, lldb-server-stop.sh and this, on stdin
# to `bash -s`. Finds
# the pod's process, starts lldb-server platform inside that process's UTS, PID and mount namespaces but on the
# node's network, pinned to the declared ports, taking connections from LISTEN_ADDRESS only (for a host other
# than loopback, LLDB listens on every address and rejects other peers), detached with a pidfile; prints the
# process's pid as the pod sees it (NSpid) as the last line of stdout.
#
# attachTo (CONTAINER_ID set): the process is the named container's, found by the container id its cgroup
# carries; lldb-server is the bundle at LLDB_SERVER_BUNDLE on the node (the pod runs no debug image), run through
# file descriptor 9 so that it is found inside the pod's mount namespace, where nothing of the pod changes; and
# before the pid, textDigest= (the SHA-256 of the running executable's .text) and loadSlide= (where it is loaded).
# shellcheck disable=SC2154 # pidfile, logfile and stop_lldb_server come from lldb-server-stop.sh
set -euo pipefail

: "${POD_NAME:?}" "${POD_NAMESPACE:?}" "${PROCESS_NAME:?}" "${LISTEN_ADDRESS:?}" "${PLATFORM_PORT:?}" "${STATE_DIR:?}"
: "${INSTANCE:?}"
: "${GDBSERVER_ARGS:?}" "${GDBSERVER_ARGS_BEFORE_LLDB20:?}" "${LLDB_SERVER:?}" "${LISTEN_ALL:?}"
: "${CONTAINER_ID:=}" "${LLDB_SERVER_BUNDLE:=}"

die() {
  echo "lldb-server: $*" >&2
  exit 1
}

listening() {
  ss -Hltn "sport = :$PLATFORM_PORT" 2>/dev/null | grep -q .
}

case "$LISTEN_ADDRESS" in
  0.0.0.0 | '*' | :: | '[::]')
    [ "$LISTEN_ALL" = true ] || die "refusing to serve every peer ($LISTEN_ADDRESS) without lldbServerListenAll"
    ;;
esac

# The pod's process: named PROCESS_NAME, in a UTS namespace whose hostname is the pod's, with the pod's
# namespace in its environment (Istio gives istio-proxy POD_NAMESPACE, and pilot-agent passes its environment
# on to Envoy: pods of one name in two namespaces, two developers' stacks, may share a node), and running from
# the debug image (the pod's other containers share its hostname but not its lldb-server). With attachTo, the
# named container's, by its id.
in_pod=()
elsewhere=()
if [ -n "$CONTAINER_ID" ]; then
  mapfile -t in_pod < <(container_pids "$CONTAINER_ID" "$PROCESS_NAME")
  if [ ${#in_pod[@]} -eq 0 ]; then
    die "attachTo $POD_NAMESPACE/$POD_NAME: its container (${CONTAINER_ID:0:12}) runs no $PROCESS_NAME on this" \
      "node (it runs: $(container_commands "$CONTAINER_ID")); attachTo names the container whose Envoy to debug" \
      "(<namespace>/<pod>/<container>)"
  fi
else
  for pid in $(pgrep -x "$PROCESS_NAME" || true); do
    # uname (coreutils) rather than hostname, which newer Debian (kind's node image) no longer always has.
    host=$(nsenter -t "$pid" -u uname -n 2>/dev/null) || continue
    namespace=$(tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | sed -n 's/^POD_NAMESPACE=//p' | head -n1 || true)
    if [ "$host" = "$POD_NAME" ] && [ "$namespace" = "$POD_NAMESPACE" ]; then
      in_pod+=("$pid")
    else
      elsewhere+=("$pid (${namespace:-no namespace}/$host)")
    fi
  done
fi
if [ ${#in_pod[@]} -eq 0 ]; then
  die "no $PROCESS_NAME process of pod $POD_NAMESPACE/$POD_NAME on this node (hostname $POD_NAME, POD_NAMESPACE" \
    "$POD_NAMESPACE); $PROCESS_NAME processes found: ${elsewhere[*]:-none}"
fi
targets=()
reaper=()
if [ -n "$LLDB_SERVER_BUNDLE" ]; then
  [ -x "$LLDB_SERVER_BUNDLE/bin/lldb-server" ] || die "no lldb-server bundle at $LLDB_SERVER_BUNDLE on this node"
  # Opened here, read inside the pod's mount namespace: the loader, the libraries and the server itself.
  exec 9<"$LLDB_SERVER_BUNDLE"
  LLDB_SERVER=/proc/self/fd/9/bin/lldb-server
  export LD_LIBRARY_PATH=/proc/self/fd/9/lib LLDB_DEBUGSERVER_PATH=$LLDB_SERVER
  # Under tini as the subreaper of what it starts in the pod's PID namespace: nothing is left to the pod's init.
  reaper=(/proc/self/fd/9/bin/tini -s --)
  targets=("${in_pod[@]}")
else
  for pid in "${in_pod[@]}"; do
    if [ -x "/proc/$pid/root$LLDB_SERVER" ]; then targets+=("$pid"); fi
  done
fi
if [ ${#targets[@]} -eq 0 ]; then
  die "$PROCESS_NAME in $POD_NAME (pid ${in_pod[*]}) has no $LLDB_SERVER: does the pod run the debug image?"
fi
if [ ${#targets[@]} -gt 1 ]; then
  die "several $PROCESS_NAME processes of pod $POD_NAMESPACE/$POD_NAME with lldb-server: pids ${targets[*]};" \
    "expected one"
fi
target=${targets[0]}

# In the pod's PID namespace too: the image's lldb-server finds its libraries through $ORIGIN, which the
# loader reads from /proc/self/exe, and the pod's /proc is its PID namespace's.
reported=$(nsenter -t "$target" -p -m -- "$LLDB_SERVER" version 2>&1) ||
  die "$LLDB_SERVER in $POD_NAME does not run: $reported"
version=$(sed -n 's/.*lldb version \([0-9]*\)\..*/\1/p' <<<"$reported" | head -n1)
[ -n "$version" ] || die "cannot tell the version of $LLDB_SERVER in $POD_NAME: $reported"
if [ "$version" -ge 20 ]; then gdbserver_args=$GDBSERVER_ARGS; else gdbserver_args=$GDBSERVER_ARGS_BEFORE_LLDB20; fi

listening && die "port $PLATFORM_PORT is already in use on this node (not by our lldb-server)"
mkdir -p "$STATE_DIR"
# setsid: its own session and process group, which the pidfile names, so a stop reaches nsenter, the
# server and every gdbserver it forked. No stream stays open to the SSH session.
# shellcheck disable=SC2086 # gdbserver_args is a list of words
setsid nsenter -t "$target" -u -p -m -- "${reaper[@]}" "$LLDB_SERVER" platform --server \
  --listen "$LISTEN_ADDRESS:$PLATFORM_PORT" $gdbserver_args </dev/null >"$logfile" 2>&1 &
echo $! >"$pidfile"

for _ in $(seq 100); do
  listening && break
  kill -0 "$!" 2>/dev/null || break
  sleep 0.1
done
if ! listening; then
  log=$(tail -n 20 "$logfile" 2>/dev/null || true)
  stop_lldb_server
  die "lldb-server did not start listening on $LISTEN_ADDRESS:$PLATFORM_PORT: $log"
fi
echo "lldb-server (LLDB $version) listens on port $PLATFORM_PORT for $LISTEN_ADDRESS, in the namespaces of $POD_NAME's $PROCESS_NAME (node pid $target)" >&2
if [ -n "$CONTAINER_ID" ]; then
  exec 9<&-
  # What the debugger compares a symbol file with, and where the running executable is loaded.
  exe=/proc/$target/exe
  inode=$(stat -L -c %i "$exe")
  base=$(awk -v inode="$inode" '$5 == inode && $3 ~ /^0+$/ { split($1, range, "-"); print range[1]; exit }' \
    "/proc/$target/maps")
  [ -n "$base" ] || die "cannot find where $PROCESS_NAME (node pid $target) is loaded in its /proc/$target/maps"
  printf 'textDigest=%s\nloadSlide=0x%x\n' "$(elf_text_digest "$exe")" $((16#$base - $(elf_first_load_vaddr "$exe")))
fi
awk '/^NSpid:/ { print $NF }' "/proc/$target/status"
