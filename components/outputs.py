"""What each stack output is, for the reader: the outputs table of docs/configuration.md is generated from `OUTPUTS`
(`make config-docs`, tools/config_docs.py), and tests/test_docs.py checks that the outputs the program exports, over
the stacks it can make, are exactly these. Pure data: the program's exports are in __main__.py.
"""

from __future__ import annotations

# Output name → what it is: where it applies first (`kind`, `build`, `attachTo`, … only), then what it holds.
OUTPUTS: dict[str, str] = {
    "cluster": "`cluster: kind` only: the kind cluster's name, `istio-proxy-debug-<stack>`",
    "kubeconfigFile": "`cluster: kind` only: that cluster's own kubeconfig, `workDir/kind/<cluster>.kubeconfig` (your "
                      "`~/.kube/config` is never touched)",
    "attachedPod": "`attachTo` only: the pod and container debugged in place, `<namespace>/<pod>/<container>`",
    "attachedNode": "`attachTo` only: the node that pod runs on, where lldb-server runs (read once by `up`)",
    "attachedImage": "`attachTo` only: the image the container runs, as the pod names it",
    "istioVersion": "`attachTo` only: the Istio release that image's tag names (else the stack's `istioVersion`): the "
                    "istio/proxy tag checked out, and the release whose symbols are looked for",
    "symbols": "`attachTo` only: one line, also printed by `up`: Istio's release symbols are the running Envoy's code "
               "and loaded at a slide, or why they are not (none published: HTTP 404; another build's)",
    "sourceCommit": "the istio/proxy commit checked out in `workDir/work` (with `prebuilt`, the `<SHA>` downloaded; "
                    "with `attachTo`, the release's)",
    "envoySource": "`prebuilt` or `build`",
    "builderContainer": "`build` only: the builder container's name (`cluster`: the builder pod)",
    "dockerNetwork": "the Docker network of the builder and the debugger (`docker` node access: the nodes' network; "
                     "`cluster`: none)",
    "envoyElf": "the debug ELF as the builder and the debugger see it (`attachTo`: Istio's `envoy-symbol-<SHA>` when "
                "it is the running Envoy's code, else none)",
    "envoyElfHostPath": "the same on the developer host (`cluster`: inside the workspace claim)",
    "envoyDwp": "`prebuilt` and `attachTo`: the `.dwp` beside the ELF",
    "envoyCheckout": "`prebuilt` and `attachTo`: the Envoy checkout",
    "envoyCommit": "`prebuilt` and `attachTo`: the Envoy commit istio/proxy pins",
    "bazelExecroot": "`build` only: the bazel execution root as the builder and the debugger see it",
    "bazelExecrootHostPath": "`build` only: the same on the developer host (`cluster`: inside the workspace claim)",
    "envoyBuildId": "the ELF's GNU build-id (lldb matches a stripped copy to it)",
    "registryPushAddress": "`localhost:<port>`, where the host pushes to the registry",
    "registryPullAddress": "`<registryHost>:<port>`, where the nodes pull from it",
    "debugImage": "the debug proxyv2 as the nodes pull it, by digest: `<registryHost>:<port>/proxyv2@sha256:…`",
    "debugImagePushed": "the same as pushed through `localhost`",
    "debugImageEnvoyBytes": "the size of the Envoy the debug image ships",
    "debuggerContainer": "the debugger container's name (`lldb-vscode-server` on `dev`; `cluster`: the code-server "
                         "pod)",
    "debuggerAttachConfig": "VS Code's attached-container configuration for the debugger container (`cluster`: none)",
    "debuggerAttachConfigPath": "where that configuration goes below VS Code's user folder (`~/.config/Code/User/` on "
                                "Linux)",
    "codeServerUrl": "`cluster` only: the URL that opens the workspace with the stack's launch configurations",
    "codeServerPortForward": "`cluster` only: the `kubectl port-forward` that reaches code-server",
    "containerdMirror": "per node, what the containerd command did (or found already done)",
    "connectUrl": "`connect://<targetNodeAddress>:<lldbServerPort>`, the node-side lldb-server platform (`kubernetes`: "
                  "`127.0.0.1` through `lldbServerPortForward`, or in the cluster the agent's address)",
    "lldbServerPortForward": "`kubernetes` with `host` only: the `kubectl port-forward` to the target node's agent "
                             "that puts lldb-server's ports on this host's loopback; run it before attaching",
    "debuggerPorts": "every port a firewall or port-forward must open: the platform port and its 4 gdbserver ports",
    "launchJson": "a complete `.vscode/launch.json`: a CodeLLDB and an lldb-dap attach configuration (`attachTo`: "
                  "they attach, load the symbols and let Envoy run on)",
    "launchJsonFile": "placement host: the file they are merged into, `workDir/work/.vscode/launch.json` (the debugger "
                      "container's `/work`); `destroy` puts your file back",
    "lldbCommands": "the same session as plain lldb commands, for `lldb` in a terminal of the debugger container",
    "podName": "the pod whose Envoy is debugged: `<workload>-0`; with `waypoint`/`gateway` the pod istiod runs for the "
               "Gateway; with `attachTo` the pod named there",
    "startCommand": "startup mode: the `kubectl exec` that starts pilot-agent (and so Envoy) in the waiting "
                    "istio-proxy",
    "portForwardCommand": "the `kubectl port-forward` that puts the target app's HTTP port 8080 on localhost "
                          "(`gateway`: the gateway's Service port 80; `waypoint`: none)",
    "requestCommand": "`waypoint`/`gateway` only: one request through the Envoy under debug (`waypoint`: `fortio curl` "
                      "from the ambient app pod to its own Service; `gateway`: `curl` to the port-forward)",
}
