# The debug proxyv2 (S5): Istio's own image, plus lldb-server, plus the Envoy built with debug info.
# Layers in the order they change: the debugger part once per Istio version, Envoy on every build — so a
# rebuild ships only the last layer. The image's Envoy is stripped of debug info (its build-id kept): lldb
# reads the symbols from the unstripped ELF on the developer's side, matched by build-id. No heredoc and no
# `# syntax` line: the engine's built-in frontend (Docker 20.10's BuildKit, which pulls nothing) and older
# engines build it; the collector is a file of the build context (collect-lldb-server.sh, staged with Envoy).
ARG BASE_IMAGE

# lldb-server and only the shared libraries it needs that the base image lacks (not the lldb toolchain).
FROM ${BASE_IMAGE} AS lldb-server
USER root
RUN find / -xdev \( -name '*.so' -o -name '*.so.*' \) -printf '%f\n' | sort -u > /base-libs
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends lldb patchelf \
 && rm -rf /var/lib/apt/lists/*
COPY collect-lldb-server.sh /collect-lldb-server.sh
RUN OUT=/out BASE_LIBS=/base-libs bash /collect-lldb-server.sh

FROM ${BASE_IMAGE}
COPY --from=lldb-server /out/ /
COPY envoy /usr/local/bin/envoy
