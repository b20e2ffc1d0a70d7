# shellcheck shell=sh
# istio-init in startup mode (S11), run by /bin/sh (dash in proxyv2) as `sh -c <this> istio-init <args…>`: the
# arguments are this release's own `istio-iptables …` (with the debugger ports among its excluded inbound
# ports, through the traffic.sidecar.istio.io/excludeInboundPorts annotation), run by pilot-agent as the
# injected container would. Then outbound capture is narrowed to the app: ISTIO_REDIRECT, the chain that sends
# outbound TCP to Envoy's 15001, first returns every connection not of APP_UID's uid and gid, so root, a
# developer's shell and lldb-server in the pod reach the network directly.
set -eu
: "${APP_UID:?}"
/usr/local/bin/pilot-agent "$@"
for backend in legacy nft; do
  if "iptables-$backend-save" -t nat 2>/dev/null | grep -q '^:ISTIO_REDIRECT '; then
    "iptables-$backend" -t nat -I ISTIO_REDIRECT 1 -m owner ! --uid-owner "$APP_UID" -j RETURN
    "iptables-$backend" -t nat -I ISTIO_REDIRECT 2 -m owner ! --gid-owner "$APP_UID" -j RETURN
    "iptables-$backend-save" -t nat
    exit 0
  fi
done
echo "istio-init: istio-iptables left no ISTIO_REDIRECT chain (iptables legacy or nft) to narrow to uid $APP_UID" >&2
exit 1
