#!/usr/bin/env bash
# S8, on delete (and first thing on create): stops the lldb-server the pidfile names, its whole process
# group, and removes what a start left on the node. Fed on stdin to `bash -s`, after the parameter
# assignments the program prepends.
set -euo pipefail

: "${STATE_DIR:?}" "${INSTANCE:?}"

pidfile="$STATE_DIR/lldb-server-$INSTANCE.pid"
logfile="$STATE_DIR/lldb-server-$INSTANCE.log"

# The processes below $1, deepest first.
descendants() {
  local child
  for child in $(ps -o pid= --ppid "$1" 2>/dev/null); do
    descendants "$child"
    echo "$child"
  done
}

stop_lldb_server() {
  local group pid
  if [ -f "$pidfile" ]; then
    group=$(cat "$pidfile")
    # Only a process group we started: the pid may have been reused since.
    if [[ "$group" =~ ^[0-9]+$ ]] && tr '\0' ' ' <"/proc/$group/cmdline" 2>/dev/null | grep -q "lldb-server platform"; then
      # attachTo: lldb-server's own processes first (a session's gdbserver has its own group), so that tini, still
      # there, reaps them in the pod's PID namespace; then tini and the rest of the group.
      for pid in $(descendants "$group"); do
        if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = lldb-server ]; then kill -TERM "$pid" 2>/dev/null || true; fi
      done
      for _ in $(seq 50); do
        descendants "$group" | while read -r pid; do cat "/proc/$pid/comm" 2>/dev/null; done | grep -qx lldb-server || break
        sleep 0.1
      done
      kill -TERM -- "-$group" 2>/dev/null || true
      for _ in $(seq 50); do
        kill -0 -- "-$group" 2>/dev/null || break
        sleep 0.1
      done
      kill -KILL -- "-$group" 2>/dev/null || true
      echo "stopped lldb-server (process group $group)" >&2
    fi
  fi
  rm -f "$pidfile" "$logfile"
  rmdir "$STATE_DIR" 2>/dev/null || true
}

stop_lldb_server
