#!/usr/bin/env bash
# envoySource prebuilt: downloads the debug Envoy that istio/proxy's CI (scripts/release-binary.sh) publishes
# for commit SHA — envoy-debug-SHA.tar.gz (usr/local/bin/envoy), its .sha256 and envoy-debug-SHA.dwp (its split
# DWARF) — from BASE_URL into DEST_DIR/SHA as envoy and envoy.dwp (envoy-symbol and envoy-symbol.dwp for the
# release's symbols), side by side where lldb looks for the package. Runs where the workspace is mounted (fed on stdin to `… bash -s`).
#
# - One pass: the tar.gz streams through the hash and tar; only the ELF lands on disk, under a temporary name.
# - Never trusted half-written: a file gets its final name only once verified (the tar.gz against the .sha256;
#   the .dwp against its size and, where the server states one, its MD5). A cut-off .dwp stays as a hidden
#   .partial that the next run resumes (If-Range: a changed object restarts it); a bad one is removed.
# - Cached by SHA: when both files are there, nothing is requested at all.
# - Progress while a file downloads: a line on stderr every few seconds (Pulumi shows a command's output line by
#   line, so no carriage-return bar), and one when its transfer ends.
#
# Then reads what the debugger needs from the files themselves and prints it on stdout, one key=value per line:
# elf, dwp, buildId, compDirs (the compilation directories of the ELF's units, the most used first),
# sandboxRoots (bazel sandbox execution roots recorded in the debug info) and textDigest (the SHA-256 of the ELF's
# .text, elf-facts.sh, fed before this). Progress and errors go to stderr.
#
# ARTIFACT names the build (envoy-debug by default; envoy-symbol, the unstripped twin of a release's Envoy, for
# attachTo). With MISSING_OK=true a build the bucket does not have is no error: it prints only missing=<why>.
set -euo pipefail

: "${BASE_URL:?}" "${SHA:?}" "${DEST_DIR:?}" "${ARTIFACT:=envoy-debug}" "${MISSING_OK:=false}"

die() {
  echo "fetch-prebuilt-envoy: $*" >&2
  exit 1
}

[[ $SHA =~ ^[0-9a-f]{40}$ ]] || die "SHA=$SHA is not a commit id"
for tool in curl tar readelf grep; do
  command -v "$tool" >/dev/null || die "$tool is missing where the download runs: install it"
done

name="$ARTIFACT-$SHA"
dir="$DEST_DIR/$SHA"
# The debug build is envoy, as in the image; the release's symbols are named so that lldb, which knows the running
# executable as envoy too, loads the file rather than the running one when it is added beside it.
elf="$dir/$([ "$ARTIFACT" = envoy-debug ] && echo envoy || echo "$ARTIFACT")"
dwp="$elf.dwp"
# Stall, not slowness, is what fails a transfer: less than 1 KB/s for a minute.
curl_options=(--silent --show-error --location --connect-timeout 30 --speed-limit 1024 --speed-time 60)

# The fastest digest and inflater at hand: OpenSSL's SHA-256 uses the CPU's SHA extensions, coreutils' does not.
digest() {
  if command -v openssl >/dev/null; then openssl dgst "-$1" -r | cut -d' ' -f1; else "${1}sum" | cut -d' ' -f1; fi
}
if command -v pigz >/dev/null; then inflate=(--use-compress-program=pigz); else inflate=(--gzip); fi

# A line every progress_seconds: a GB takes minutes on a slow link, and Pulumi shows nothing else meanwhile.
progress_seconds=5
progress_fd=
progress_pid=

# "envoy-debug-<sha>.dwp: 412 MB of 1.9 GB (21 %), 103 MB/s": LABEL, the bytes there, the total (empty when the
# server stated none), and the rate of the NEW bytes this run received in MICROSECONDS.
progress_line() {
  awk -v label="$1" -v bytes="$2" -v total="$3" -v new="$4" -v us="$5" '
    function size(b) {
      return b >= 1e9 ? sprintf("%.1f GB", b / 1e9) : b >= 1e6 ? sprintf("%d MB", b / 1e6) : sprintf("%d kB", b / 1e3)
    }
    BEGIN {
      line = label ": " size(bytes)
      if (total + 0 > 0) line = line sprintf(" of %s (%d %%)", size(total), 100 * bytes / total)
      if (us > 0) line = line ", " size(new * 1e6 / us) "/s"
      print line
    }'
}

# Until its stdin closes: every progress_seconds, and once at the end, LABEL's progress on stderr, from the
# "bytes total" that COMMAND prints; BASE bytes were there before (a resumed .partial).
report_progress() {
  local label=$1 base=$2 began status bytes total now
  shift 2
  began=${EPOCHREALTIME/[^0-9]/}
  while true; do
    # Nothing is ever written: the read ends by its timeout (status above 128) or by the end of the transfer.
    read -r -t "$progress_seconds" && continue
    status=$?
    read -r bytes total <<<"$("$@")"
    now=${EPOCHREALTIME/[^0-9]/}
    progress_line "$label" "${bytes:-0}" "$total" $((${bytes:-0} - base)) $((now - began)) >&2
    ((status > 128)) || break
  done
}

# The reporter reads a pipe that only this script (and the transfer's processes) hold open: closed by
# stop_progress, or by the kernel should the script die, so it never outlives the download. It does not hold the
# download's lock (fd 9) either.
start_progress() {
  exec {progress_fd}> >(report_progress "$@" 9>&-)
  progress_pid=$!
}
stop_progress() {
  [ -n "$progress_fd" ] || return 0
  exec {progress_fd}>&-
  wait "$progress_pid" || true
  progress_fd=
}
trap stop_progress EXIT

build_id_of() {
  LC_ALL=C readelf -n "$1" 2>/dev/null | awk '/Build ID:/ { print $3; exit }'
}

not_published() {
  if [ "$MISSING_OK" = true ]; then
    echo "$ARTIFACT: none for istio/proxy commit $SHA: $1 ($2)" >&2
    echo "missing=$1 ($2)"
    exit 0
  fi
  die "no prebuilt debug Envoy for istio/proxy commit $SHA: $1 ($2). Istio publishes one only for the commits" \
    "its CI built (a release's own commit, not a fork's or a local one): set envoySource to build to compile" \
    "it, or prebuiltBaseUrl to a mirror that has it"
}

# A small file into a variable; a missing one (HTTP 404, or no such file) is named as not published.
fetch_small() {
  local url=$1 body status
  body=$(mktemp)
  status=$(curl "${curl_options[@]}" --retry 3 --output "$body" --write-out '%{http_code}' "$url") || {
    local code=$?
    rm -f "$body"
    [ "$code" = 37 ] && not_published "$url" "no such file"
    die "cannot fetch $url (curl exit $code)"
  }
  if [ "$status" = 404 ]; then rm -f "$body" && not_published "$url" "HTTP 404"; fi
  if [[ $status == [45]* ]]; then rm -f "$body" && die "cannot fetch $url: HTTP $status"; fi
  cat "$body"
  rm -f "$body"
}

# "bytes total" of the tar.gz in transfer: dd's last count (its records end in a carriage return), and the last
# response's Content-Length (after redirects), if any yet.
elf_received() {
  local bytes total
  bytes=$(tr '\r' '\n' <"$1/received" 2>/dev/null | awk '/ bytes / { n = $1 } END { print n + 0 }')
  total=$(tr -d '\r' <"$1/headers" 2>/dev/null |
    awk -F': *' '/^HTTP\// { n = "" } tolower($1) == "content-length" { n = $2 } END { print n }')
  echo "$bytes $total"
}

fetch_elf() {
  local url="$BASE_URL/$name.tar.gz" expected work statuses got
  expected=$(fetch_small "$BASE_URL/$name.sha256" | awk '{ print $1; exit }')
  [[ $expected =~ ^[0-9a-f]{64}$ ]] || die "$name.sha256 at $BASE_URL holds no sha256 digest"
  work=$(mktemp -d "$dir/.envoy.partial.XXXXXX")
  mkfifo "$work/stream"
  mkdir "$work/tree"
  echo "downloading $url" >&2
  # tar reads the stream from the FIFO while the digest reads it from the pipe; whatever tar leaves unread
  # (padding after the archive) is drained so the digest sees every byte.
  { tar -x "${inflate[@]}" -f - -C "$work/tree" --no-same-owner 2>"$work/tar.err"
    echo $? >"$work/tar.status"; cat >/dev/null; } <"$work/stream" &
  local reader=$!
  # The progress: the bytes dd counts on their way through, of the Content-Length curl dumps as it arrives.
  start_progress "$name.tar.gz" 0 elf_received "$work"
  set +o pipefail
  curl "${curl_options[@]}" --fail --dump-header "$work/headers" "$url" |
    LC_ALL=C dd bs=1M status=progress 2>"$work/received" | tee "$work/stream" | digest sha256 >"$work/sha256"
  statuses=("${PIPESTATUS[@]}")
  set -o pipefail
  stop_progress
  wait "$reader" || true
  got=$(cat "$work/sha256")
  if [ "${statuses[0]}" != 0 ]; then
    rm -rf "$work"
    # curl said why above (an HTTP status, a broken connection).
    die "$name.tar.gz: the transfer failed (curl exit ${statuses[0]}); nothing was kept, run pulumi up again"
  fi
  if [ "$got" != "$expected" ]; then
    rm -rf "$work"
    die "$name.tar.gz: its sha256 is $got, but $name.sha256 says $expected: the download is corrupt or" \
      "truncated; nothing was kept, run pulumi up again"
  fi
  if [ "$(cat "$work/tar.status")" != 0 ] || [ ! -f "$work/tree/usr/local/bin/envoy" ]; then
    cat "$work/tar.err" >&2
    rm -rf "$work"
    die "$name.tar.gz passed its checksum but holds no usr/local/bin/envoy"
  fi
  if [ -z "$(build_id_of "$work/tree/usr/local/bin/envoy")" ]; then
    rm -rf "$work"
    die "$name.tar.gz: its envoy has no GNU build-id note, so lldb could not match the image's stripped copy" \
      "to it; nothing was kept"
  fi
  chmod 0755 "$work/tree/usr/local/bin/envoy"
  mv -f "$work/tree/usr/local/bin/envoy" "$elf"
  rm -rf "$work"
}

# The .dwp's size and checksum as the server states them: Content-Length, ETag, and the MD5 that Google
# Cloud Storage gives in x-goog-hash (or a Content-MD5), hex.
dwp_metadata() {
  local url=$1 headers status
  headers=$(curl "${curl_options[@]}" --retry 3 --head --output /dev/null --dump-header - "$url") || {
    local code=$?
    [ "$code" = 37 ] && not_published "$url" "no such file"
    die "cannot fetch $url (curl exit $code)"
  }
  # After redirects, the last response's headers.
  headers=$(tr -d '\r' <<<"$headers" | awk '/^HTTP\// { block = "" } { block = block $0 "\n" } END { printf "%s", block }')
  status=$(awk 'NR == 1 && /^HTTP\// { print $2 }' <<<"$headers")
  [ "$status" = 404 ] && not_published "$url" "HTTP 404"
  [[ ${status:-200} == [45]* ]] && die "cannot fetch $url: HTTP $status"
  local size etag md5
  size=$(awk -F': *' 'tolower($1) == "content-length" { print $2 }' <<<"$headers" | tail -n 1)
  etag=$(awk -F': *' 'tolower($1) == "etag" { print $2 }' <<<"$headers" | tail -n 1)
  md5=$(awk -F': *' 'tolower($1) == "x-goog-hash" || tolower($1) == "content-md5" { print $2 }' <<<"$headers" |
    tr ',' '\n' | sed -n -E 's/^ *(md5=)?([A-Za-z0-9+\/]{22}==) *$/\2/p' | head -n 1)
  [ -z "$md5" ] || md5=$(base64 -d <<<"$md5" | od -An -v -tx1 | tr -d ' \n')
  printf 'url=%s\nsize=%s\netag=%s\nmd5=%s\n' "$url" "$size" "$etag" "$md5"
}

# "bytes total" of the .dwp in transfer: the .partial's size, of the size the server stated.
dwp_received() {
  echo "$(stat -c %s "$1" 2>/dev/null || echo 0) $2"
}

# Downloads the .dwp to a hidden .partial (resuming one of the same object), checks it and gives it its name.
# Prints nothing on success; an interrupted transfer keeps the .partial and fails, a bad file is removed.
fetch_dwp() {
  local url="$BASE_URL/$name.dwp" part="$dir/.envoy.dwp.partial" metadata offset status got size etag md5
  metadata=$(dwp_metadata "$url")
  size=$(sed -n 's/^size=//p' <<<"$metadata")
  etag=$(sed -n 's/^etag=//p' <<<"$metadata")
  md5=$(sed -n 's/^md5=//p' <<<"$metadata")
  # A partial download resumes only if it is of this very object; anything else starts over.
  if [ -f "$part" ] && [ "$(cat "$part.metadata" 2>/dev/null)" = "$metadata" ]; then
    offset=$(stat -c %s "$part")
  else
    rm -f "$part"
    printf '%s\n' "$metadata" >"$part.metadata"
    offset=0
  fi
  if [ -n "$size" ] && [ "$offset" -gt "$size" ]; then rm -f "$part" && offset=0; fi
  local resume=()
  if [ "$offset" -gt 0 ]; then
    echo "resuming $url at byte $offset" >&2
    # If-Range: should the object have changed since the HEAD, the server sends all of it and curl stops.
    resume=(--continue-at "$offset")
    [ -z "$etag" ] || resume+=(--header "If-Range: $etag")
  else
    echo "downloading $url" >&2
  fi
  start_progress "$name.dwp" "$offset" dwp_received "$part" "$size"
  # The digest covers the kept prefix (read back once) and the rest as it arrives.
  set +o pipefail
  {
    [ "$offset" = 0 ] || head -c "$offset" "$part"
    curl "${curl_options[@]}" --fail "${resume[@]}" "$url" | tee -a "$part"
    echo "${PIPESTATUS[0]}" >"$part.status"
  } | digest md5 >"$part.md5"
  set -o pipefail
  stop_progress
  status=$(cat "$part.status")
  got=$(cat "$part.md5")
  rm -f "$part.status" "$part.md5"
  discard() {
    rm -f "$part" "$part.metadata"
    die "$@"
  }
  case "$status" in
    0) ;;
    33) discard "$name.dwp changed on the server during the download; run pulumi up again to fetch it whole" ;;
    22) discard "cannot fetch $url: HTTP error (curl exit 22)" ;;
    *)
      die "$name.dwp: the transfer broke off after $(stat -c %s "$part") of ${size:-?} bytes (curl exit $status);" \
        "run pulumi up again to resume it"
      ;;
  esac
  local have
  have=$(stat -c %s "$part")
  if [ -n "$size" ] && [ "$have" != "$size" ]; then
    discard "$name.dwp: received $have bytes, but $url has $size; nothing was kept, run pulumi up again"
  fi
  if [ -n "$md5" ] && [ "$got" != "$md5" ]; then
    discard "$name.dwp: its MD5 is $got, but the server states $md5: the download is corrupt; nothing was kept," \
      "run pulumi up again"
  fi
  LC_ALL=C readelf -S "$part" 2>/dev/null | grep -q '\.debug_info\.dwo' ||
    discard "$name.dwp holds no .debug_info.dwo section: it is not a DWARF package; nothing was kept"
  mv -f "$part" "$dwp"
  rm -f "$part.metadata"
}

# With MISSING_OK, a build the bucket does not have ends the script here, with missing= (in this shell: the checks
# inside the fetches run in command substitutions).
missing_from_the_bucket() {
  local file url status
  for file in "$name.sha256" "$name.dwp"; do
    url="$BASE_URL/$file"
    status=$(curl "${curl_options[@]}" --retry 3 --head --output /dev/null --write-out '%{http_code}' "$url") || {
      local code=$?
      [ "$code" = 37 ] && not_published "$url" "no such file"
      die "cannot fetch $url (curl exit $code)"
    }
    [ "$status" = 404 ] && not_published "$url" "HTTP 404"
  done
  return 0
}
if [ "$MISSING_OK" = true ] && { [ ! -f "$elf" ] || [ ! -f "$dwp" ]; }; then missing_from_the_bucket; fi

mkdir -p "$dir"
# Two runs at once (two stacks sharing a cache) take turns; the second finds the files there.
exec 9>"$dir/.lock"
flock 9
# What a run that was killed mid-transfer left of a tar.gz's extraction: never used, only removed.
rm -rf "$dir"/.envoy.partial.*
[ -f "$elf" ] || fetch_elf
[ -f "$dwp" ] || fetch_dwp

build_id=$(build_id_of "$elf")
# The skeleton units' compilation directories (bazel's /proc/self/cwd, or a CI's own execution root): the
# prefixes the source map must cover, the one most units record first (a breakpoint set by path reaches a unit
# only through the first prefix mapped to its folder). readelf reads DWARF 5 skeleton units in Debian's binutils
# 2.40 (2.35.2 calls them corrupt) and is kept from chasing the .dwo files they name; where it cannot, an
# llvm-dwarfdump, which every lldb package brings along, reads them.
comp_dirs_by_readelf() {
  LC_ALL=C readelf --debug-dump=info,no-follow-links --dwarf-depth=1 "$1" 2>/dev/null |
    sed -n -E 's/^.*DW_AT_comp_dir[[:space:]]*:[[:space:]]*(\([^)]*\):[[:space:]]*)?(.*[^[:space:]])[[:space:]]*$/\2/p' ||
    true
}
comp_dirs_by_dwarfdump() {
  local tool
  tool=$(compgen -c llvm-dwarfdump | sort -V | tail -n 1)
  [ -n "$tool" ] || return 0
  "$tool" --debug-info --recurse-depth=0 "$1" 2>/dev/null |
    sed -n -E 's/^.*DW_AT_comp_dir[[:space:]]*\("(.*)"\)$/\1/p' || true
}
comp_dirs=$(comp_dirs_by_readelf "$elf")
[ -n "$comp_dirs" ] || comp_dirs=$(comp_dirs_by_dwarfdump "$elf")
[ -n "$comp_dirs" ] || die "found no DW_AT_comp_dir in $elf's units: it is no debug build, or neither readelf" \
  "($(readelf --version | head -n 1)) nor an llvm-dwarfdump here reads DWARF 5 skeleton units; install" \
  "a newer binutils (2.40 reads them), or llvm"
comp_dirs=$(sort <<<"$comp_dirs" | uniq -c | sort -k1,1nr -k2 | sed -E 's/^[[:space:]]*[0-9]+ //' | tr '\n' ' ')
sandbox_roots=$(cat "$elf" "$dwp" |
  LC_ALL=C grep -a -o -E '/[^[:space:][:cntrl:]"]*/sandbox/[a-z-]+/[0-9]+/execroot/[A-Za-z0-9_.-]+' |
  sort -u | tr '\n' ' ' || true)
printf 'elf=%s\ndwp=%s\nbuildId=%s\ncompDirs=%s\nsandboxRoots=%s\ntextDigest=%s\n' \
  "$elf" "$dwp" "$build_id" "${comp_dirs% }" "${sandbox_roots% }" "$(elf_text_digest "$elf")"
