#!/usr/bin/env bash
# S6: makes a node's container runtime pull REGISTRY (host:port) over plain HTTP. It uses the form the
# node already uses, so the CRI plugin keeps loading:
#   - containerd whose config sets config_path → only <config_path>/<REGISTRY>/hosts.toml (no restart);
#     on containerd 2.x a list of folders is first narrowed to its first folder (restart; containerd#12808)
#   - containerd with registry.mirrors in use → one more mirror entry in config.toml (restart)
#   - containerd with neither → config_path in config.toml plus hosts.toml (restart)
#   - k3s (the k3s binary is on PATH) → a mirror in /etc/rancher/k3s/registries.yaml (restart)
# containerd 1.x (config version 1 or 2) and 2.x (version 3) each get their own table names.
# config.toml is edited as text, and minimally. The result is read back through `containerd config dump`:
# it must load, carry the change, leave every other setting as it was, and never set config_path and
# mirrors together.
# Every file it changes is backed up first under STATE_ROOT; containerd-mirror-delete.sh puts them back.
# Several stacks (registries) may configure one node: the configuration file's original is kept once, and
# the last registry to go puts it back.
# Running it again changes nothing and restarts nothing. After a restart it waits for the CRI plugin.
# If the plugin does not load, it undoes its changes, restarts again and fails with containerd's
# log lines.
# The parameters (REGISTRY, ENDPOINT, HOSTS_TOML, MIRROR_TOML) are assigned above this text by
# components/containerd_mirror.py. The paths can be overridden from the environment (the tests do so).
# stdout: a one-line summary; stderr: what was done, step by step.
# shellcheck disable=SC2154 # the settings and helpers come from containerd-mirror-common.sh
set -euo pipefail

: "${ENDPOINT:?}" "${HOSTS_TOML:?}" "${MIRROR_TOML:?}"

# One line per TOML key: table path, key, raw value, line number. One line per table header: path, "", "",
# line number. Path segments are unquoted and joined by "|", so [a.'b.c'] and a."b.c" read the same.
# This is enough TOML for containerd configs and `containerd config dump` output: comments, quoted and
# dotted keys, and values spread over several lines. String escapes are not decoded.
toml_listing() {
  awk '
    function trim(s) { sub(/^[ \t]+/, "", s); sub(/[ \t\r]+$/, "", s); return s }
    # the position of the first ch outside quotes, or 0
    function find(s, ch,    i, c, q) {
      q = ""
      for (i = 1; i <= length(s); i++) {
        c = substr(s, i, 1)
        if (q != "") { if (c == "\\" && q == "\"") i++; else if (c == q) q = ""; continue }
        if (c == "\"" || c == sq) { q = c; continue }
        if (c == ch) return i
      }
      return 0
    }
    function nocomment(s,    h) { h = find(s, "#"); return trim(h ? substr(s, 1, h - 1) : s) }
    # how much deeper in brackets and braces s ends than it starts, outside quotes
    function depth(s,    i, c, q, d) {
      q = ""; d = 0
      for (i = 1; i <= length(s); i++) {
        c = substr(s, i, 1)
        if (q != "") { if (c == "\\" && q == "\"") i++; else if (c == q) q = ""; continue }
        if (c == "\"" || c == sq) { q = c; continue }
        if (c == "[" || c == "{") d++
        if (c == "]" || c == "}") d--
      }
      return d
    }
    function canon(s,    i, c, q, seg, out, n) {
      out = ""; seg = ""; q = ""; n = 0
      for (i = 1; i <= length(s); i++) {
        c = substr(s, i, 1)
        if (q != "") { if (c == q) q = ""; else seg = seg c; continue }
        if (c == "\"" || c == sq) { q = c; continue }
        if (c == ".") { out = out (n++ ? "|" : "") seg; seg = ""; continue }
        if (c == " " || c == "\t") continue
        seg = seg c
      }
      return out (n ? "|" : "") seg
    }
    function emit() { print vpath "\t" vkey "\t" value "\t" vline }
    open > 0 { value = value " " nocomment($0); open += depth(nocomment($0)); if (open <= 0) { open = 0; emit() }; next }
    multi != "" { value = value "\\n" $0; if (index($0, multi)) { multi = ""; emit() }; next }
    /^[ \t]*(#.*)?$/ { next }
    /^[ \t]*\[/ {
      line = nocomment($0)
      if (substr(line, 1, 2) == "[[") table = canon(substr(line, 3, length(line) - 4)) "[]"
      else table = canon(substr(line, 2, length(line) - 2))
      print table "\t\t\t" NR
      next
    }
    {
      eq = find($0, "=")
      if (!eq) next
      n = split(canon(substr($0, 1, eq - 1)), parts, "|")
      vpath = table; vkey = parts[n]; vline = NR
      for (i = 1; i < n; i++) vpath = (vpath == "" ? "" : vpath "|") parts[i]
      raw = trim(substr($0, eq + 1))
      quote = substr(raw, 1, 3)
      if ((quote == "\"\"\"" || quote == sq sq sq) && !index(substr(raw, 4), quote)) { multi = quote; value = raw; next }
      value = nocomment(raw)
      open = depth(value)
      if (open <= 0) { open = 0; emit() }
    }
  ' sq="'" "$@"
}

# The last value of KEY in table PATH of a listing on stdin, without its quotes.
toml_get() {
  awk -F '\t' -v path="$1" -v key="$2" -v sq="'" '
    $1 == path && $2 == key { v = $3 }
    END {
      q = substr(v, 1, 1)
      if (length(v) >= 2 && (q == "\"" || q == sq) && substr(v, length(v)) == q) v = substr(v, 2, length(v) - 2)
      print v
    }'
}

# The registry tables of containerd 1.x and 2.x. A 2.x dump shows a version 2 file migrated to version 3.
REGISTRY_TABLES=("plugins|io.containerd.grpc.v1.cri|registry" "plugins|io.containerd.cri.v1.images|registry")

# The hosts that registry.mirrors names in a listing on stdin, one per line.
mirror_hosts() {
  awk -F '\t' -v a="${REGISTRY_TABLES[0]}" -v b="${REGISTRY_TABLES[1]}" '
    index($1, a "|mirrors|") == 1 { split(substr($1, length(a "|mirrors|") + 1), seg, "|"); print seg[1] }
    index($1, b "|mirrors|") == 1 { split(substr($1, length(b "|mirrors|") + 1), seg, "|"); print seg[1] }
    # an inline mirrors = { … } that is not empty
    ($1 == a || $1 == b) && $2 == "mirrors" && $3 !~ /^\{[ \t]*\}$/ { print "(inline mirrors table)" }
  ' | sort -u
}

effective_config_path() {
  local table value
  for table in "${REGISTRY_TABLES[@]}"; do
    value=$(toml_get "$table" config_path <<<"$1")
    if [ -n "$value" ]; then
      echo "$value"
      return
    fi
  done
}

# The raw endpoint list of the mirror entry for REGISTRY in a listing, if there is one.
our_mirror_endpoints() {
  local table
  for table in "${REGISTRY_TABLES[@]}"; do
    toml_get "$table|mirrors|$REGISTRY" endpoint <<<"$1"
  done | grep -v '^$' || true
}

has_endpoint() { tr "'" '"' <<<"$1" | grep -qF "\"$ENDPOINT\""; }

# The (path, key, value) lines that differ between two listings and are not this script's to change.
foreign_changes() {
  comm -3 <(cut -f1-3 <<<"$1" | sed 's/^/@/' | sort) <(cut -f1-3 <<<"$2" | sed 's/^/@/' | sort) |
    sed 's/^\t//; s/^@//' |
    awk -F '\t' -v reg="$REGISTRY" -v a="${REGISTRY_TABLES[0]}" -v b="${REGISTRY_TABLES[1]}" '
      $1 == "" && ($2 == "imports" || $2 == "version") { next }
      {
        for (i = 1; i <= 2; i++) {
          t = i == 1 ? a : b
          if ($1 == t && ($2 == "config_path" || $2 == "")) next
          if ($1 == t "|mirrors" && $2 == "") next
          if ($1 == t "|mirrors|" reg || index($1, t "|mirrors|" reg "|") == 1) next
        }
        print
      }'
}

same_content() { [ -f "$2" ] && printf '%s' "$1" | cmp -s - "$2"; }

# Records PATH in the manifest of state folder DIR once, before its first change, with a backup copy when
# it exists.
remember_file() {
  local dir=$1 path=$2
  mkdir -p "$dir"
  if awk -F '\t' -v p="$path" '$1 == "file" && $2 == p { found = 1 } END { exit !found }' \
    "$dir/manifest" 2>/dev/null; then
    return
  fi
  if [ -e "$path" ]; then
    mkdir -p "$dir/backup$(dirname "$path")"
    cp -p "$path" "$dir/backup$path"
    printf 'file\t%s\texisted\n' "$path" >>"$dir/manifest"
  else
    printf 'file\t%s\tabsent\n' "$path" >>"$dir/manifest"
  fi
}

# mkdir -p that records every folder it creates, so that undoing removes exactly those.
make_dirs() {
  local folder=$1 missing=()
  while [ ! -d "$folder" ]; do
    missing=("$folder" ${missing[@]+"${missing[@]}"})
    folder=$(dirname "$folder")
  done
  for folder in ${missing[@]+"${missing[@]}"}; do
    mkdir -p "$(dirname "$MADE_DIRS")"
    mkdir -m 0755 "$folder"
    echo "$folder" >>"$MADE_DIRS"
  done
}

# Writes CONTENT to PATH after backing it up into state folder DIR. Returns 1 when PATH already holds
# exactly CONTENT.
write_file() {
  local dir=$1 path=$2 content=$3
  if same_content "$content" "$path"; then
    return 1
  fi
  make_dirs "$(dirname "$path")"
  remember_file "$dir" "$path"
  [ ! -e "$path" ] || note "replacing $path (its original is kept in $dir)"
  replace_content "$path" "$content"
  mkdir -p "$dir/ours$(dirname "$path")"
  cp -p "$path" "$dir/ours$path"
  note "wrote $path"
}

# Changes the runtime's configuration file to CONTENT, where BLOCK is the text added for REGISTRY (empty
# when the change is not REGISTRY's alone, as config_path is), and records REGISTRY as relying on it.
write_config() {
  local path=$1 content=$2 block=$3
  write_file "$NODE_STATE" "$path" "$content" || true
  if [ -n "$block" ]; then
    mkdir -p "$STATE_DIR"
    printf '%s' "$path" >"$STATE_DIR/added-to"
    printf '%s' "$block" >"$STATE_DIR/added"
  fi
  rely_on_config
}

# While this stack's change to the configuration file is in place, every registry configured on the node
# relies on it (a registry whose hosts.toml uses the config_path that another one set, too).
rely_on_config() {
  if [ -d "$NODE_STATE" ] && ! grep -qxF -e "$REGISTRY" "$NODE_STATE/users" 2>/dev/null; then
    echo "$REGISTRY" >>"$NODE_STATE/users"
  fi
}

# Undoes REGISTRY's changes (restarting again if its configuration file changed back), then fails with WHY.
roll_back() {
  local why=$1 unit
  unit=$(undo_registry | unit_reading)
  if [ -n "$unit" ]; then
    if restart_and_check "$unit" >/dev/null; then
      why+=$'\n'"The original configuration is back, and $unit's CRI plugin is up again."
    else
      why+=$'\n'"The original configuration is back, but $unit's CRI plugin is still not up."
    fi
  fi
  die "$why"
}

# Restarts after a configuration change, or rolls everything back when the CRI plugin does not come up.
restart_or_roll_back() {
  local why
  if ! why=$(restart_and_check "$1"); then
    roll_back "$1's CRI plugin did not come up after the change. $why"
  fi
}

# --- k3s ---------------------------------------------------------------------------------------------------

# The lines of REGISTRY's entry under the top-level mirrors key of registries.yaml (on stdin), if any.
k3s_entry() {
  awk -v reg="$REGISTRY" -v sq="'" '
    /^[^ \t#]/ { section = $0; sub(/:.*/, "", section); next }
    section != "mirrors" || /^[ \t]*(#.*)?$/ { next }
    {
      match($0, /^[ ]*/)
      if (level == 0) level = RLENGTH
      if (RLENGTH <= level) {
        key = substr($0, RLENGTH + 1); sub(/[ \t]*:[ \t]*(#.*)?$/, "", key); gsub(sq, "", key); gsub(/"/, "", key)
        inside = key == reg
      }
      if (inside) print
    }'
}

k3s_block() {
  local pad
  printf -v pad '%*s' "$1" ''
  printf '%s"%s":\n%sendpoint:\n%s- "%s"\n' "$pad" "$REGISTRY" "$pad$pad" "$pad$pad$pad" "$ENDPOINT"
}

configure_k3s() {
  local content='' entry indent line block unit head tail
  [ ! -f "$K3S_REGISTRIES" ] || content=$(content_of "$K3S_REGISTRIES")
  entry=$(k3s_entry <<<"$content")
  if [ -n "$entry" ]; then
    grep -qF "$ENDPOINT" <<<"$entry" ||
      die "$K3S_REGISTRIES already has a mirror for $REGISTRY with other endpoints; remove it, or point registryHost elsewhere"
    rely_on_config
    echo "k3s: $K3S_REGISTRIES already mirrors $REGISTRY to $ENDPOINT; nothing changed"
    return
  fi
  line=$(grep -nE '^mirrors:[ \t]*(#.*)?$' <<<"$content" | head -n 1 | cut -d: -f1 || true)
  if [ -n "$line" ]; then
    # Under the existing key, indented as its other entries are.
    indent=$(awk '/^mirrors:/ { on = 1; next } on && /^[ \t]*(#.*)?$/ { next } on { match($0, /^[ ]*/); print RLENGTH; exit }' \
      <<<"$content")
    [ "${indent:-0}" -gt 0 ] || indent=2
    block=$(k3s_block "$indent")$'\n'
    head=$(
      head -n "$line" "$K3S_REGISTRIES"
      printf x
    )
    head=${head%x}
    [[ "$head" == *$'\n' ]] || head+=$'\n'
    tail=$(
      tail -n "+$((line + 1))" "$K3S_REGISTRIES"
      printf x
    )
    content=$head$block${tail%x}
  elif grep -qE '^mirrors:' <<<"$content"; then
    die "$K3S_REGISTRIES writes mirrors in flow style ({…}); rewrite it in block style, then run this again"
  else
    block=$(k3s_block 2)$'\n'
    [ -z "$content" ] || [[ "$content" == *$'\n' ]] || content+=$'\n'
    content+="mirrors:"$'\n'$block
  fi
  write_config "$K3S_REGISTRIES" "$content" "$block"
  unit=$(k3s_unit)
  if [ -z "$unit" ]; then
    echo "k3s: $K3S_REGISTRIES mirrors $REGISTRY to $ENDPOINT; k3s is not running and reads it when it starts"
    return
  fi
  restart_or_roll_back "$unit"
  echo "k3s: $K3S_REGISTRIES mirrors $REGISTRY to $ENDPOINT; $unit restarted, CRI plugin ok"
}

# --- containerd --------------------------------------------------------------------------------------------

# `containerd config dump` of a file: the configuration containerd would run with (imports merged,
# defaults filled in, version migrated). Fails with containerd's error.
dump() {
  local err status=0
  err=$(mktemp)
  containerd --config "$1" config dump 2>"$err" || status=$?
  [ "$status" -eq 0 ] || grep -v 'level=warning' "$err" >&2
  rm -f "$err"
  return "$status"
}

# The config text with config_path set to FOLDER in the registry table. Either the value of an existing key
# is replaced, or the key is added under the table's header, or a new table is appended at the end.
set_config_path() {
  local listing=$1 version=$2 header=$3 table=$4 folder=$5 line
  local assignment="config_path = \"$folder\""
  if [ ! -f "$CONTAINERD_CONFIG" ]; then
    printf 'version = %s\n\n[%s.registry]\n  %s\n' "$version" "$header" "$assignment"
    return
  fi
  line=$(awk -F '\t' -v t="$table" '$1 == t && $2 == "config_path" { n = $4 } END { print n }' <<<"$listing")
  if [ -n "$line" ]; then
    awk -v n="$line" -v dir="$folder" 'NR == n { $0 = substr($0, 1, index($0, "=")) " \"" dir "\"" } { print }' \
      "$CONTAINERD_CONFIG"
    return
  fi
  line=$(awk -F '\t' -v t="$table" '$1 == t && $2 == "" { print $4; exit }' <<<"$listing")
  if [ -n "$line" ]; then
    awk -v n="$line" -v a="$assignment" '{ print } NR == n { match($0, /^[ \t]*/); print substr($0, 1, RLENGTH) "  " a }' \
      "$CONTAINERD_CONFIG"
    return
  fi
  printf '%s\n\n[%s.registry]\n  %s\n' "$(cat "$CONTAINERD_CONFIG")" "$header" "$assignment"
}

# Only hosts.toml can have been written when a config edit is refused: put it back (no restart needed).
refuse() {
  [ -z "${CANDIDATE:-}" ] || rm -f "$CANDIDATE"
  undo_registry >/dev/null
  die "$1"
}

# The dump of the edited config must load, carry the change, leave every other setting as it was, and
# never set config_path and mirrors together.
check_edit() {
  local before=$1 candidate=$2 form=$3 hosts_dir=$4 after foreign config_path mirrors
  after=$(dump "$candidate") || refuse "the edited $CONTAINERD_CONFIG would not load (above); no configuration was changed"
  after=$(toml_listing <<<"$after")
  foreign=$(foreign_changes "$before" "$after")
  [ -z "$foreign" ] ||
    refuse "editing $CONTAINERD_CONFIG would change settings that are not ours; no configuration was changed:"$'\n'"$foreign"
  config_path=$(effective_config_path "$after")
  mirrors=$(mirror_hosts <<<"$after")
  if [ -n "$config_path" ] && [ -n "$mirrors" ]; then
    refuse "the edited $CONTAINERD_CONFIG would set both config_path and registry.mirrors, which stops the CRI plugin"
  fi
  if [ "$form" = config_path ] && [ "$config_path" != "$hosts_dir" ]; then
    refuse "config_path in the edited $CONTAINERD_CONFIG reads '$config_path', not $hosts_dir (does an imported file set it?)"
  fi
  if [ "$form" = mirror ] && ! has_endpoint "$(our_mirror_endpoints "$after")"; then
    refuse "the edited $CONTAINERD_CONFIG does not mirror $REGISTRY to $ENDPOINT (does an imported file set the mirrors?)"
  fi
}

configure_containerd() {
  local major version header table listing before config_path mirrors endpoints form hosts_dir=''
  local new_config='' block='' candidate what restarted="no restart needed"
  major=$(containerd --version 2>/dev/null | awk '{ print $3 }')
  [ -n "$major" ] || die "containerd is not on PATH: is this a Kubernetes node that runs containerd?"
  major=${major#v}
  major=${major%%.*}
  if [ -f "$CONTAINERD_CONFIG" ]; then
    listing=$(toml_listing "$CONTAINERD_CONFIG")
    version=$(toml_get "" version <<<"$listing")
    version=${version:-1}
    before=$(dump "$CONTAINERD_CONFIG") ||
      die "containerd cannot read $CONTAINERD_CONFIG (above); fix it first. Nothing was changed"
  else
    listing=''
    version=2
    [ "$major" -lt 2 ] || version=3
    candidate=$(mktemp)
    printf 'version = %s\n' "$version" >"$candidate"
    before=$(dump "$candidate") || die "containerd config dump fails even on an empty configuration"
    rm -f "$candidate"
  fi
  case "$version" in
    1) table="plugins|cri|registry" header="plugins.cri" ;;
    2) table="plugins|io.containerd.grpc.v1.cri|registry" header='plugins."io.containerd.grpc.v1.cri"' ;;
    3) table="plugins|io.containerd.cri.v1.images|registry" header='plugins."io.containerd.cri.v1.images"' ;;
    *) die "$CONTAINERD_CONFIG has config version $version, which containerd $major.x does not read" ;;
  esac
  before=$(toml_listing <<<"$before")
  config_path=$(effective_config_path "$before")
  mirrors=$(mirror_hosts <<<"$before")

  if [ -n "$mirrors" ]; then
    form=mirror
    what="a registry.mirrors entry in $CONTAINERD_CONFIG (the node uses mirrors: $(echo "$mirrors" | paste -sd ' '))"
    endpoints=$(our_mirror_endpoints "$before")
    if [ -z "$endpoints" ]; then
      new_config=$(content_of "$CONTAINERD_CONFIG")
      block=$'\n'"[$header.registry.mirrors.\"$REGISTRY\"]"$'\n'"  $MIRROR_TOML"$'\n'
      [[ "$new_config" == *$'\n' ]] || block=$'\n'$block
      new_config+=$block
    elif ! has_endpoint "$endpoints"; then
      die "$CONTAINERD_CONFIG already mirrors $REGISTRY to $endpoints; remove that entry, or point registryHost elsewhere"
    fi
  elif [ -n "$config_path" ] && { [ "$major" -lt 2 ] || [ "$config_path" = "${config_path%%:*}" ]; }; then
    form=hosts
    hosts_dir=${config_path%%:*}
    [[ "$hosts_dir" == /* ]] || die "config_path $config_path is not an absolute folder"
    what="$hosts_dir/$REGISTRY/hosts.toml (config_path is set)"
  else
    form=config_path
    if [ -n "$config_path" ]; then
      # containerd 2.x pulling through its transfer service reads a list as one folder and ignores every
      # hosts.toml in it (containerd#12808): keep only the list's first folder.
      hosts_dir=${config_path%%:*}
      what="config_path narrowed from $config_path to $hosts_dir (containerd 2.x reads no hosts.toml through a list)"
    else
      hosts_dir=$CERTS_DIR
      what="config_path = $hosts_dir in $CONTAINERD_CONFIG"
    fi
    case "$hosts_dir" in
      /*[\"\\]* | [!/]*) die "the hosts folder $hosts_dir must be an absolute path without quotes or backslashes" ;;
    esac
    what+=" and $hosts_dir/$REGISTRY/hosts.toml"
    new_config=$(set_config_path "$listing" "$version" "$header" "$table" "$hosts_dir")$'\n'
  fi

  if [ -n "$hosts_dir" ] && ! write_file "$STATE_DIR" "$hosts_dir/$REGISTRY/hosts.toml" "$HOSTS_TOML"; then
    note "$hosts_dir/$REGISTRY/hosts.toml is up to date"
  fi
  if [ -z "$new_config" ]; then
    rely_on_config
  else
    command -v systemctl >/dev/null ||
      refuse "there is no systemctl on this node to restart containerd with; no configuration was changed"
    command -v "${CTR_CMD[0]}" >/dev/null ||
      refuse "${CTR_CMD[0]} is not on PATH to check containerd with; no configuration was changed"
    # Beside the config, for imports relative to its folder; a config that does not exist imports nothing.
    if [ -d "$(dirname "$CONTAINERD_CONFIG")" ]; then
      CANDIDATE="$CONTAINERD_CONFIG.istio-proxy-debug.new"
    else
      CANDIDATE=$(mktemp)
    fi
    printf '%s' "$new_config" >"$CANDIDATE"
    check_edit "$before" "$CANDIDATE" "$form" "$hosts_dir"
    rm -f "$CANDIDATE"
    write_config "$CONTAINERD_CONFIG" "$new_config" "$block"
    restart_or_roll_back containerd
    restarted="containerd restarted, CRI plugin ok"
  fi
  echo "containerd $major.x, config version $version: pulls $REGISTRY over plain HTTP through $what; $restarted"
}

if command -v k3s >/dev/null; then
  configure_k3s
else
  configure_containerd
fi
