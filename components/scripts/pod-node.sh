#!/usr/bin/env bash
# nodeAccess kubernetes: the node the target pod (POD_NAMESPACE/POD_NAME) was scheduled on, where lldb-server must
# run; it must be one of NODES (the nodes with the stack's containerd entry and an agent). Waits for the scheduler,
# bounded by WAIT_SECONDS, saying every 10 s what it sees; prints the node's name as the last line of stdout.
set -euo pipefail

: "${POD_NAME:?}" "${POD_NAMESPACE:?}" "${NODES:?}" "${WAIT_SECONDS:?}"

errors=$(mktemp)
trap 'rm -f "$errors"' EXIT
deadline=$((SECONDS + WAIT_SECONDS))
next_report=$((SECONDS + 10))
seen="no answer yet"
while :; do
  # --request-timeout: an API server that takes the connection but never answers must not hold the loop.
  if node=$(kubectl get pod "$POD_NAME" -n "$POD_NAMESPACE" -o 'jsonpath={.spec.nodeName}' \
    --request-timeout=20s 2>"$errors"); then
    if [ -n "$node" ]; then
      for known in $NODES; do
        if [ "$known" = "$node" ]; then
          echo "pod node: $POD_NAMESPACE/$POD_NAME runs on $node" >&2
          echo "$node"
          exit 0
        fi
      done
      echo "pod node: $POD_NAMESPACE/$POD_NAME was scheduled on node $node, which is not one of nodes ($NODES):" \
        "only those have the containerd entry and an agent; add it (pulumi config set --path 'nodes[N]' $node)" \
        "or pin the pod to one of them with targetNodeName" >&2
      exit 1
    fi
    seen="not scheduled yet"
  else
    seen="kubectl failed: $(cat "$errors")"
  fi
  if [ "$SECONDS" -ge "$deadline" ]; then
    echo "pod node: $POD_NAMESPACE/$POD_NAME is on no node after ${WAIT_SECONDS}s ($seen);" \
      "kubectl -n $POD_NAMESPACE describe pod $POD_NAME says why" >&2
    exit 1
  fi
  if [ "$SECONDS" -ge "$next_report" ]; then
    echo "pod node: waiting for $POD_NAMESPACE/$POD_NAME ($seen), ${SECONDS}s of ${WAIT_SECONDS}s" >&2
    next_report=$((SECONDS + 10))
  fi
  sleep 2
done
