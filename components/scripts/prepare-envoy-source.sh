#!/usr/bin/env bash
# envoySource prebuilt: checks out the Envoy source the prebuilt ELF was compiled from, so lldb can show
# Envoy's own files. Runs where the workspace is mounted (fed on stdin to `… bash -s`). The commit, its
# repository and the name bazel gave it (external/<name>) come from istio/proxy's WORKSPACE in SOURCE_DIR:
# ENVOY_SHA, ENVOY_ORG, ENVOY_REPO and the http_archive that downloads them. Only that commit is fetched
# (a shallow fetch, into one checkout in ENVOY_DIR), and it is put on a branch named after the Istio release;
# as in the istio/proxy checkout, nothing is ever deleted or overwritten: a switch that would lose local
# changes fails and leaves the tree as it was.
# Prints commit=, repository= and external= (the path prefix of Envoy's files in the debug info) on stdout.
set -euo pipefail

: "${SOURCE_DIR:?}" "${ENVOY_DIR:?}" "${SOURCE_TAG:?}"
# ENVOY_REPOSITORY: optional, a mirror of the repository the WORKSPACE names.

die() {
  echo "prepare-envoy-source: $*" >&2
  exit 1
}

workspace="$SOURCE_DIR/WORKSPACE"
[ -f "$workspace" ] || die "$workspace is missing: istio/proxy's WORKSPACE pins the Envoy commit its build compiles"

# A top-level assignment of the WORKSPACE, e.g. ENVOY_SHA = "d45eace…".
pinned() {
  sed -n -E "s/^$1[[:space:]]*=[[:space:]]*\"([^\"]*)\"[[:space:]]*$/\\1/p" "$workspace" | head -n 1
}
envoy_sha=$(pinned ENVOY_SHA)
envoy_org=$(pinned ENVOY_ORG)
envoy_repo=$(pinned ENVOY_REPO)
[[ $envoy_sha =~ ^[0-9a-f]{40}$ ]] || die "$workspace pins no ENVOY_SHA = \"<40 hex digits>\""
# The repository name bazel gives the http_archive that downloads ENVOY_SHA: its files are external/<name>/….
external_name=$(awk '
  /^http_archive\(/ { inside = 1; name = ""; pins = 0; next }
  inside && /^[[:space:]]*name[[:space:]]*=/ { name = $0; sub(/^[^"]*"/, "", name); sub(/".*$/, "", name) }
  inside && /ENVOY_SHA/ { pins = 1 }
  inside && /^\)/ { if (pins && name != "") { print name; exit } inside = 0 }
' "$workspace")
[ -n "$external_name" ] || die "$workspace has no http_archive(name = …) that downloads ENVOY_SHA"
if [ -n "${ENVOY_REPOSITORY:-}" ]; then
  url=$ENVOY_REPOSITORY
else
  if [ -z "$envoy_org" ] || [ -z "$envoy_repo" ]; then
    die "$workspace pins no ENVOY_ORG and ENVOY_REPO: set envoyRepository"
  fi
  url="https://github.com/$envoy_org/$envoy_repo.git"
fi

mkdir -p "$ENVOY_DIR"
cd "$ENVOY_DIR"
if [ ! -e .git ]; then
  [ -z "$(ls -A)" ] || die "$ENVOY_DIR exists, is not empty and is not a git checkout; move it away"
  git -c init.defaultBranch=main init -q
fi
if ! git cat-file -e "$envoy_sha^{commit}" 2>/dev/null; then
  echo "fetching Envoy $envoy_sha from $url" >&2
  git fetch -q --depth 1 "$url" "$envoy_sha" >&2 ||
    die "cannot fetch Envoy commit $envoy_sha from $url: set envoyRepository to a mirror that has it"
fi

branch="istio-$SOURCE_TAG"
current=$(git symbolic-ref -q HEAD || true)
if [ "$current" != "refs/heads/$branch" ]; then
  if git rev-parse -q --verify "refs/heads/$branch" >/dev/null; then
    switch=(git switch -q "$branch")
  else
    switch=(git switch -q -c "$branch" "$envoy_sha")
  fi
  echo "checking out Envoy $envoy_sha as $branch" >&2
  "${switch[@]}" >&2 ||
    die "cannot check out $branch without losing local changes in $ENVOY_DIR; commit or stash them, then run pulumi up again"
fi

printf 'commit=%s\nrepository=%s\nexternal=%s\n' "$envoy_sha" "$url" "external/$external_name"
