# The debugger container (S9): the lldb client and clangd beside the sources, for VS Code to attach to.
# CodeLLDB brings its own lldb; this one serves `lldb` in a terminal and the lldbCommands output. With
# envoySource prebuilt there is no builder and the stack's scripts run here: git (the checkouts), curl and
# pigz (the download), binutils (readelf, objcopy); patchelf and tini, for the lldb-server attachTo puts on a node.
FROM docker.io/library/ubuntu:22.04
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      lldb clangd git ca-certificates less procps curl pigz binutils patchelf tini \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /work
