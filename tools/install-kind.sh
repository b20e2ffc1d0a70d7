#!/usr/bin/env bash
# make kind-cli: downloads kind VERSION for this OS and CPU from BASE_URL into DEST_DIR, checks it against the
# pinned SHA-256 (one per platform, from the release's .sha256sum files) and only then makes it executable.
# Every failure says what to do instead; nothing half-downloaded is left on PATH.
set -euo pipefail

version=$1 base_url=$2 dest_dir=$3
manual="or install kind $version yourself (https://kind.sigs.k8s.io/docs/user/quick-start/#installation) and run make up again"

fail() {
  echo "make: $*" >&2
  exit 1
}

case "$(uname -s)" in
  Linux) os=linux ;;
  Darwin) os=darwin ;;
  *) fail "kind: no pinned kind build for $(uname -s); $manual" ;;
esac
case "$(uname -m)" in
  x86_64 | amd64) arch=amd64 ;;
  aarch64 | arm64) arch=arm64 ;;
  *) fail "kind: no pinned kind build for $(uname -m); $manual" ;;
esac
platform=$os-$arch
# Positional, not an associative array: macOS's bash is 3.2.
case "$platform" in
  linux-amd64) expected=$4 ;;
  linux-arm64) expected=$5 ;;
  darwin-amd64) expected=$6 ;;
  darwin-arm64) expected=$7 ;;
esac
url="$base_url/$version/kind-$platform"

sha256() {
  if command -v sha256sum >/dev/null; then sha256sum "$1"; else shasum -a 256 "$1"; fi | cut -d' ' -f1
}

command -v curl >/dev/null || fail "kind is not installed, and curl (to install it) is missing: install curl, $manual"
mkdir -p "$dest_dir"
partial=$(mktemp "$dest_dir/.kind.XXXXXX")
trap 'rm -f "$partial"' EXIT
echo "installing kind $version ($platform) into $dest_dir"
curl -fsSL --retry 2 -o "$partial" "$url" || fail "kind: could not download $url (see above): check your network, $manual"
actual=$(sha256 "$partial")
[ "$actual" = "$expected" ] ||
  fail "kind: $url has SHA-256 $actual, not the pinned $expected: not installed; $manual"
chmod 0755 "$partial"
mv "$partial" "$dest_dir/kind"
trap - EXIT
"$dest_dir/kind" version
