# syntax=docker/dockerfile:1
# The debug proxyv2 (S5): Istio's own image, plus lldb-server, plus the Envoy built with debug info.
# Layers in the order they change: the debugger part once per Istio version, Envoy on every build — so a
# rebuild ships only the last layer. The image's Envoy is stripped of debug info (its build-id kept): lldb
# reads the symbols from the unstripped ELF on the developer's side, matched by build-id.
ARG BASE_IMAGE

# lldb-server and only the shared libraries it needs that the base image lacks (not the lldb toolchain).
FROM ${BASE_IMAGE} AS lldb-server
USER root
RUN find / -xdev \( -name '*.so' -o -name '*.so.*' \) -printf '%f\n' | sort -u > /base-libs
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends lldb patchelf \
 && rm -rf /var/lib/apt/lists/*
RUN OUT=/out BASE_LIBS=/base-libs bash -euo pipefail <<'COLLECT_LLDB_SERVER'
# Copies lldb-server into $OUT/opt/lldb-server with the libraries missing from $BASE_LIBS beside it, each
# with an $ORIGIN rpath so the copy finds them wherever the image puts it.
server=$(readlink -f "${LLDB_SERVER:-/usr/bin/lldb-server}")
prefix=/opt/lldb-server
mkdir -p "$OUT$prefix/bin" "$OUT$prefix/lib" "$OUT/usr/local/bin"
cp "$server" "$OUT$prefix/bin/lldb-server"
# Debian's build spawns its gdbserver as lldb-server-<version> from its own folder: keep those names.
for alias in "$(dirname "$server")"/lldb-server-*; do
  if [ -e "$alias" ]; then ln -sfn lldb-server "$OUT$prefix/bin/$(basename "$alias")"; fi
done
ldd "$server" | awk '$2 == "=>" && $3 ~ /^\// { print $3 }' | while read -r lib; do
  name=$(basename "$lib")
  grep -qxF "$name" "$BASE_LIBS" && continue
  cp -L "$lib" "$OUT$prefix/lib/$name"
  patchelf --set-rpath '$ORIGIN' "$OUT$prefix/lib/$name"
done
patchelf --set-rpath '$ORIGIN/../lib' "$OUT$prefix/bin/lldb-server"
# Run by a symlink elsewhere it would look for that gdbserver in the wrong folder: exec the real path.
printf '#!/bin/sh\nexec %s "$@"\n' "$prefix/bin/lldb-server" > "$OUT/usr/local/bin/lldb-server"
chmod 0755 "$OUT/usr/local/bin/lldb-server"
"$OUT$prefix/bin/lldb-server" version
COLLECT_LLDB_SERVER

FROM ${BASE_IMAGE}
COPY --from=lldb-server /out/ /
COPY envoy /usr/local/bin/envoy
