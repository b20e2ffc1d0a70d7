#!/usr/bin/env bash
# S8, on delete (and first thing on create): stops the lldb-server the pidfile names, its whole process
# group, and removes what a start left on the node. Fed on stdin to `bash -s`, after the parameter
# assignments the program prepends.
set -euo pipefail

: "${STATE_DIR:?}" "${INSTANCE:?}"

pidfile="$STATE_DIR/lldb-server-$INSTANCE.pid"
logfile="$STATE_DIR/lldb-server-$INSTANCE.log"

stop_lldb_server() {
  local group
  if [ -f "$pidfile" ]; then
    group=$(cat "$pidfile")
    # Only a process group we started: the pid may have been reused since.
    if [[ "$group" =~ ^[0-9]+$ ]] && tr '\0' ' ' <"/proc/$group/cmdline" 2>/dev/null | grep -q "lldb-server platform"; then
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
