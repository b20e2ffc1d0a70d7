# shellcheck shell=bash
# A container's processes on the node, by the container id their cgroup carries (containerd's, CRI-O's, docker's:
# each names a container's cgroup after its id), whatever their PID namespace or hostname.
# container_pids <container id> <name>: the node pids of its processes of that name, one a line.
container_pids() {
  local pid
  for pid in $(pgrep -x "$2" || true); do
    if grep -qF "$1" "/proc/$pid/cgroup" 2>/dev/null; then echo "$pid"; fi
  done
}
# container_commands <container id>: the names of all its processes, on one line.
container_commands() {
  grep -lF "$1" /proc/[0-9]*/cgroup 2>/dev/null | cut -d/ -f3 |
    while read -r pid; do cat "/proc/$pid/comm" 2>/dev/null; done | sort -u | tr '\n' ' ' || true
}
