#!/usr/bin/env bash
# S9 in the cluster: the code-server pod's command, as root. Installs clangd, and binutils and pigz (which the
# download of a prebuilt Envoy runs here with: readelf, a fast gunzip), from the image's Debian release
# and the extensions given as arguments (id@version, from Open VSX), then runs code-server on
# 0.0.0.0:CODE_SERVER_PORT behind the password in PASSWORD. What it installs lives under STATE_DIR on the
# workspace volume, so a restarted pod finds it there and installs nothing again.
set -euo pipefail

: "${STATE_DIR:?}" "${CODE_SERVER_PORT:?}" "${PASSWORD:?}"

extensions_dir="$STATE_DIR/extensions"
user_data_dir="$STATE_DIR/user-data"
apt_dir="$STATE_DIR/apt"
mkdir -p "$extensions_dir" "$user_data_dir/User" "$apt_dir/lists/partial" "$apt_dir/archives/partial"

# A restarted container has a new root filesystem, so apt's package lists and the packages it fetched stay on
# the volume: after the first start they are reinstalled from them, without `apt-get update` or a download.
apt_get() {
  DEBIAN_FRONTEND=noninteractive apt-get -o "Dir::State::Lists=$apt_dir/lists" \
    -o "Dir::Cache::Archives=$apt_dir/archives" -y --no-install-recommends "$@"
}
packages=(clangd binutils pigz)
if ! command -v clangd >/dev/null || ! command -v readelf >/dev/null || ! command -v pigz >/dev/null; then
  apt_get install --no-download "${packages[@]}" >/dev/null 2>&1 || { apt_get update && apt_get install "${packages[@]}"; }
fi

# The pinned versions hold only while VS Code does not update the extensions behind them (written once: the
# user's later changes stay).
settings="$user_data_dir/User/settings.json"
[ -e "$settings" ] || printf '{\n  "extensions.autoUpdate": false\n}\n' >"$settings"

code_server_cli() {
  code-server --extensions-dir "$extensions_dir" --user-data-dir "$user_data_dir" "$@"
}
installed=$(code_server_cli --list-extensions --show-versions)
for extension in "$@"; do
  grep -qixF -- "$extension" <<<"$installed" || code_server_cli --force --install-extension "$extension"
done

exec code-server --bind-addr "0.0.0.0:$CODE_SERVER_PORT" --auth password \
  --extensions-dir "$extensions_dir" --user-data-dir "$user_data_dir" \
  --disable-telemetry --disable-update-check --disable-workspace-trust
