#!/usr/bin/env bash
# target waypoint or gateway: the pod istiod runs for the stack's Gateway, found by the label istiod gives it
# (SELECTOR) once it carries the current overlay (its annotation OVERLAY_ANNOTATION is OVERLAY, so a pod of the
# previous rollout is never taken), is Running and is not being deleted, and (READY=true, attach mode) whose
# istio-proxy is ready: Envoy runs. In startup mode nothing runs Envoy yet. Waits, bounded by WAIT_SECONDS (the
# debug image is about 2 GB); prints the pod's name as the last line of stdout.
set -euo pipefail

: "${NAMESPACE:?}" "${SELECTOR:?}" "${OVERLAY_ANNOTATION:?}" "${OVERLAY:?}" "${WAIT_SECONDS:?}" "${READY:?}"

# name, phase, deletion time (empty unless terminating), overlay, istio-proxy's image and readiness: one pod per
# line.
columns="{range .items[*]}{.metadata.name}{'\t'}{.status.phase}{'\t'}{.metadata.deletionTimestamp}{'\t'}"
columns+="{.metadata.annotations['${OVERLAY_ANNOTATION}']}{'\t'}"
columns+="{.spec.containers[?(@.name=='istio-proxy')].image}{'\t'}"
columns+="{.status.containerStatuses[?(@.name=='istio-proxy')].ready}{'\n'}{end}"
errors=$(mktemp)
trap 'rm -f "$errors"' EXIT
deadline=$((SECONDS + WAIT_SECONDS))
seen=none
while :; do
  # --request-timeout: kubectl waits for an answer without end otherwise (discovery comes from its cache), and
  # an API server that takes the connection but never answers would hold the loop past its deadline.
  if listing=$(kubectl get pods -n "$NAMESPACE" -l "$SELECTOR" -o "jsonpath=$columns" --request-timeout=20s \
    2>"$errors"); then
    seen=${listing:-none}
    ready=$(awk -F'\t' -v overlay="$OVERLAY" -v need_ready="$READY" \
      '$2 == "Running" && $3 == "" && $4 == overlay && (need_ready != "true" || $6 == "true") { print $1 }' \
      <<<"$listing")
    count=$(grep -c . <<<"$ready" || true)
    if [ "$count" -eq 1 ]; then
      echo "gateway pod: $ready runs overlay $OVERLAY" >&2
      echo "$ready"
      exit 0
    fi
  else
    seen="kubectl failed: $(cat "$errors")"
  fi
  if [ "$SECONDS" -ge "$deadline" ]; then
    echo "gateway pod: no single Running pod (with istio-proxy ready: READY=$READY) with $SELECTOR in namespace $NAMESPACE has $OVERLAY_ANNOTATION=$OVERLAY" \
      "after ${WAIT_SECONDS}s (does istiod accept the Gateway? kubectl -n $NAMESPACE describe gateway);" \
      "pods seen (name, phase, deleted, overlay, image, ready):" >&2
    echo "$seen" >&2
    exit 1
  fi
  sleep 2
done
