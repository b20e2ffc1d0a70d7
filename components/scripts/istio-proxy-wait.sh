# shellcheck shell=sh
# istio-proxy in startup mode (S11), run by /bin/sh (dash in proxyv2) as `sh -c <this> <start file> <args…>`:
# the arguments are the ones this release's injector gave pilot-agent (the kubelet has expanded $(POD_NAMESPACE)).
# They are written out, quoted, as the command that starts pilot-agent exactly as the injected container would
# have ($0 is that file); then the container waits, with no pilot-agent and no Envoy, until the developer runs
# it (the stack's startCommand). SIGTERM ends the wait at once.
sleeper=
trap 'kill $sleeper 2>/dev/null; exit 0' TERM INT
start_file=$0
{
  printf 'exec /usr/local/bin/pilot-agent'
  for arg in "$@"; do
    printf " '%s'" "$(printf '%s' "$arg" | sed "s/'/'\\\\''/g")"
  done
  printf '\n'
} >"$start_file.partial"
# Whole or absent: a start that races the write never runs half a command.
mv "$start_file.partial" "$start_file"
sleep infinity &
sleeper=$!
wait
