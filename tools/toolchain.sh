#!/usr/bin/env bash
# The real toolchain the tests run the user's commands on, built with `go` from the Go module proxy at pinned
# versions (no registry ships these binaries): the Pulumi CLI and its Python language host, the provider
# plugins requirements.txt pins, and a Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl) with KWOK's controller for its stand-in nodes, and a real kubelet of the same release
# for one real node. The command and docker plugins, which the module proxy does not serve, come from a plugin
# mirror (PULUMI_PLUGIN_MIRROR) or Pulumi's downloads.
#
# Each binary is built once per machine, into TOOLCHAIN_DIR/<name>-<version>/, with Go's module and build caches
# beside them; TOOLCHAIN_DIR/bin links the current ones. A second run compiles nothing. The provider plugins are
# then installed (`pulumi plugin install … --file`) into PULUMI_HOME, so the engine never downloads one.
#
# usage: tools/toolchain.sh            build what is missing, print TOOLCHAIN_DIR/bin
#        TOOLCHAIN_DIR=… PULUMI_HOME=…   where the binaries and the plugins go
#        PULUMI_PLUGIN_MIRROR=/folder    the plugin archives and their SHA256SUMS (unset: ../shared/pulumi-plugins
#                                        beside the checkout, when it exists; empty: download them)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MODULES="$ROOT/tools/toolchain"
TOOLCHAIN_DIR=${TOOLCHAIN_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/istio-proxy-debug/toolchain}
PULUMI_HOME=${PULUMI_HOME:-$ROOT/.cache/pulumi-home}

# The versions. The Pulumi CLI is the Makefile's PULUMI_VERSION (the users' `make up` installs that release);
# the plugins are requirements.txt's pins (tests/test_toolchain.py holds the three files in step).
PULUMI_VERSION=3.274.0
# The newest release whose language host the module proxy serves (tools/toolchain/pulumi-language-python/go.mod).
PYTHON_LANGUAGE_HOST_VERSION=3.184.0
KUBERNETES_PROVIDER_VERSION=4.25.0
# pulumi-kubernetes tags only its repository root: its provider/ module is reached by the release commit.
KUBERNETES_PROVIDER_MODULE=github.com/pulumi/pulumi-kubernetes/provider/v4@v4.0.0-20260115033456-f47bc2d6f199
KUBERNETES_VERSION=1.34.4
ETCD_VERSION=3.6.4
KWOK_VERSION=0.7.0
# The plugins the module proxy does not serve: installed from a plugin mirror, a folder of Pulumi's plugin
# archives (pulumi-resource-<name>-v<version>-<os>-<arch>.tar.gz) with their SHA256SUMS, as an air-gapped site
# keeps one; with none, downloaded by `pulumi plugin install` as on a user's machine.
COMMAND_PROVIDER_VERSION=1.2.1
DOCKER_PROVIDER_VERSION=5.1.0
DEFAULT_PLUGIN_MIRROR="$ROOT/../shared/pulumi-plugins"
# Unset: that folder when it exists; set empty: no mirror.
if [ -z "${PULUMI_PLUGIN_MIRROR+set}" ] && [ -d "$DEFAULT_PLUGIN_MIRROR" ]; then
  PULUMI_PLUGIN_MIRROR=$(cd "$DEFAULT_PLUGIN_MIRROR" && pwd)
fi

export GOMODCACHE="$TOOLCHAIN_DIR/go/mod" GOCACHE="$TOOLCHAIN_DIR/go/build"
# The committed go.mod and go.sum decide every version and checksum; the machine's own Go decides nothing else.
export GOFLAGS=-mod=readonly GOTOOLCHAIN=local
unset GOPATH GOBIN GOWORK

die() {
  echo "toolchain: $*" >&2
  exit 1
}

command -v go >/dev/null || die "go is not installed: install Go 1.26 or later (https://go.dev/dl/)"
mkdir -p "$TOOLCHAIN_DIR/bin" "$TOOLCHAIN_DIR/src"

# build NAME VERSION BINARY… -- COMMAND…: runs COMMAND (which writes the binaries into $out) unless
# TOOLCHAIN_DIR/NAME-VERSION holds them all already.
build() {
  local name=$1 version=$2 binaries=() started missing=false binary
  shift 2
  while [ "$1" != -- ]; do binaries+=("$1"); shift; done
  shift
  local final="$TOOLCHAIN_DIR/$name-$version"
  for binary in "${binaries[@]}"; do [ -x "$final/$binary" ] || missing=true; done
  if $missing; then
    echo "toolchain: building $name $version" >&2
    started=$SECONDS
    # The build functions write into $out; a build stopped halfway leaves only the .partial folder.
    local out="$final.partial"
    rm -rf "$out" && mkdir -p "$out"
    "$@" || die "the build of $name $version failed (see above)"
    rm -rf "$final" && mv "$out" "$final"
    echo "$name $version $((SECONDS - started))" >>"$TOOLCHAIN_DIR/build-times"
    echo "toolchain: built $name $version in $((SECONDS - started)) s" >&2
  fi
}

# link NAME-VERSION BINARY…: TOOLCHAIN_DIR/bin/BINARY, the one the tests put on PATH.
link() {
  local folder=$1 binary
  shift
  for binary in "$@"; do ln -sfn "../$folder/$binary" "$TOOLCHAIN_DIR/bin/$binary"; done
}

# The CLI; the Python language host, and beside it (where it looks) the CLI release's own
# pulumi-language-python-exec, the Python shim that starts the program: a file of the sdk module, as the CLI's
# release archive ships it.
build_pulumi() {
  go build -C "$MODULES/pulumi" -trimpath -o "$out/pulumi" \
    -ldflags "-s -w -X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=v$PULUMI_VERSION" \
    github.com/pulumi/pulumi/pkg/v3/cmd/pulumi
  go build -C "$MODULES/pulumi-language-python" -trimpath -o "$out/pulumi-language-python" \
    -ldflags "-s -w -X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=v$PYTHON_LANGUAGE_HOST_VERSION" \
    github.com/pulumi/pulumi/sdk/python/cmd/pulumi-language-python/v3
  local sdk
  sdk=$(go mod download -json "github.com/pulumi/pulumi/sdk/v3@v$PULUMI_VERSION" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
  install -m 0755 "$sdk/python/cmd/pulumi-language-python-exec" "$out/"
}

# The provider's module as the proxy serves it, writable, with the files its generate.go writes: the schema
# with the release's version and the Terraform mapping, both embedded by main.go.
build_kubernetes_provider() {
  local src="$TOOLCHAIN_DIR/src/pulumi-kubernetes-$KUBERNETES_PROVIDER_VERSION" dir
  dir=$(go mod download -json "$KUBERNETES_PROVIDER_MODULE" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
  [ -n "$dir" ] || die "the module proxy did not give $KUBERNETES_PROVIDER_MODULE"
  rm -rf "$src" && cp -r "$dir" "$src" && chmod -R u+w "$src"
  # Its go.mod takes the SDK from ../sdk, a folder of its repository: the release's tag instead (its go.sum
  # gains that module's checksum, checked against the checksum database).
  go mod edit -C "$src" -dropreplace github.com/pulumi/pulumi-kubernetes/sdk/v4 \
    -require "github.com/pulumi/pulumi-kubernetes/sdk/v4@v$KUBERNETES_PROVIDER_VERSION"
  (cd "$src/cmd/pulumi-resource-kubernetes" && VERSION=$KUBERNETES_PROVIDER_VERSION GOFLAGS=-mod=mod go run generate.go)
  GOFLAGS=-mod=mod go build -C "$src" -trimpath -o "$out/pulumi-resource-kubernetes" \
    -ldflags "-s -w -X github.com/pulumi/pulumi-kubernetes/provider/v4/pkg/version.Version=$KUBERNETES_PROVIDER_VERSION" \
    ./cmd/pulumi-resource-kubernetes
}

# build_kubernetes COMMAND…: k8s.io/kubernetes/cmd/COMMAND of the release, each.
build_kubernetes() {
  local minor=${KUBERNETES_VERSION#1.} flags=() packages=()
  minor=${minor%%.*}
  # What the release's own build stamps (hack/lib/version.sh), so servers and clients report their version.
  for package in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=("-X $package.gitVersion=v$KUBERNETES_VERSION" "-X $package.gitMajor=1" "-X $package.gitMinor=$minor"
      "-X $package.gitTreeState=clean")
  done
  for command in "$@"; do packages+=("k8s.io/kubernetes/cmd/$command"); done
  go build -C "$MODULES/kubernetes" -trimpath -o "$out/" -ldflags "-s -w ${flags[*]}" "${packages[@]}"
}

build_etcd() {
  go build -C "$MODULES/etcd" -trimpath -ldflags "-s -w" -o "$out/etcd" .
}

build_kwok() {
  go build -C "$MODULES/kwok" -trimpath -ldflags "-s -w" -o "$out/kwok" sigs.k8s.io/kwok/cmd/kwok
}

PULUMI_BUILD="$PULUMI_VERSION+python-$PYTHON_LANGUAGE_HOST_VERSION"
build pulumi "$PULUMI_BUILD" pulumi pulumi-language-python pulumi-language-python-exec -- build_pulumi
build pulumi-resource-kubernetes "$KUBERNETES_PROVIDER_VERSION" pulumi-resource-kubernetes -- build_kubernetes_provider
build etcd "$ETCD_VERSION" etcd -- build_etcd
CONTROL_PLANE=(kube-apiserver kube-controller-manager kube-scheduler kubectl)
build kubernetes "$KUBERNETES_VERSION" "${CONTROL_PLANE[@]}" -- build_kubernetes "${CONTROL_PLANE[@]}"
# The kubelet of the same release, for the tests' real node (beside KWOK's).
build kubelet "$KUBERNETES_VERSION" kubelet -- build_kubernetes kubelet
build kwok "$KWOK_VERSION" kwok -- build_kwok
# The binaries above are what is kept; Go's build cache (about 10 GB after these builds) would only speed up a
# rebuild, which a version change makes mostly anew. Emptied, so the machine's disk keeps room for the tests.
go clean -cache

# The language host stays beside the CLI (through the link the CLI resolves its own folder, where it looks for
# the runtimes it bundles). Plugins stay off PATH: the engine would take one from there over the installed one.
rm -f "$TOOLCHAIN_DIR"/bin/*
link "pulumi-$PULUMI_BUILD" pulumi
link "etcd-$ETCD_VERSION" etcd
link "kubernetes-$KUBERNETES_VERSION" "${CONTROL_PLANE[@]}"
link "kubelet-$KUBERNETES_VERSION" kubelet
link "kwok-$KWOK_VERSION" kwok

# The plugins, into the tests' PULUMI_HOME, so the engine finds them installed and never downloads one.
plugin_installed() {
  [ -x "$PULUMI_HOME/plugins/resource-$1-v$2/pulumi-resource-$1" ]
}

pulumi_cli() {
  PULUMI_HOME=$PULUMI_HOME PULUMI_SKIP_UPDATE_CHECK=true "$TOOLCHAIN_DIR/bin/pulumi" "$@"
}

# install_built_plugin NAME VERSION: the binary built here.
install_built_plugin() {
  local name=$1 version=$2
  plugin_installed "$name" "$version" && return
  pulumi_cli plugin install resource "$name" "$version" \
    --file "$TOOLCHAIN_DIR/pulumi-resource-$name-$version/pulumi-resource-$name" >&2 ||
    die "pulumi plugin install of $name $version failed"
}

# install_mirrored_plugin NAME VERSION: the mirror's archive, once its SHA-256 matches the mirror's SHA256SUMS;
# without a mirror, Pulumi's own download.
install_mirrored_plugin() {
  local name=$1 version=$2 platform archive expected actual
  plugin_installed "$name" "$version" && return
  platform=$(go env GOOS)-$(go env GOARCH)
  archive="pulumi-resource-$name-v$version-$platform.tar.gz"
  if [ -n "${PULUMI_PLUGIN_MIRROR:-}" ]; then
    [ -f "$PULUMI_PLUGIN_MIRROR/$archive" ] ||
      die "the plugin mirror $PULUMI_PLUGIN_MIRROR (PULUMI_PLUGIN_MIRROR) has no $archive"
    expected=$(awk -v file="$archive" '$2 == file || $2 == "*" file { print $1 }' \
      "$PULUMI_PLUGIN_MIRROR/SHA256SUMS" 2>/dev/null || true)
    [ -n "$expected" ] || die "the plugin mirror's SHA256SUMS ($PULUMI_PLUGIN_MIRROR/SHA256SUMS) lists no $archive"
    actual=$(sha256sum "$PULUMI_PLUGIN_MIRROR/$archive" | cut -d' ' -f1)
    [ "$actual" = "$expected" ] ||
      die "$PULUMI_PLUGIN_MIRROR/$archive has SHA-256 $actual, but SHA256SUMS says $expected: not installed"
    pulumi_cli plugin install resource "$name" "$version" --file "$PULUMI_PLUGIN_MIRROR/$archive" >&2 ||
      die "pulumi plugin install of $name $version from $PULUMI_PLUGIN_MIRROR/$archive failed"
  elif ! pulumi_cli plugin install resource "$name" "$version" >&2; then
    die "the $name plugin $version could not be downloaded (above), and there is no plugin mirror: set" \
      "PULUMI_PLUGIN_MIRROR to a folder holding $archive and its SHA256SUMS, or run where" \
      "\`pulumi plugin install resource $name $version\` can reach Pulumi's plugin downloads"
  fi
}

install_built_plugin kubernetes "$KUBERNETES_PROVIDER_VERSION"
install_mirrored_plugin command "$COMMAND_PROVIDER_VERSION"
install_mirrored_plugin docker "$DOCKER_PROVIDER_VERSION"

echo "$TOOLCHAIN_DIR/bin"
