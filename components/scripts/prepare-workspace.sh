#!/usr/bin/env bash
# S1: prepares the workspace, on the developer host or in the builder pod. The istio/proxy tree is cloned
# when absent and put on a branch named after the tag (as the walkthrough's git checkout tags/T -b T does);
# the cache and registry folders are created so Docker does not create them root-owned. Nothing is ever deleted or overwritten:
# a checkout that would lose local changes fails and leaves the tree as it was.
# Prints the checked-out commit, then the builder image the checkout pins (an empty line if it pins none), on
# stdout; everything else goes to stderr.
set -euo pipefail

: "${SOURCE_DIR:?}" "${SOURCE_REPOSITORY:?}" "${SOURCE_TAG:?}" "${CACHE_DIR:?}"
# REGISTRY_DIR: on the host only; in the cluster the registry pod's mount makes its folder.

die() {
  echo "prepare-workspace: $*" >&2
  exit 1
}

mkdir -p "$CACHE_DIR" ${REGISTRY_DIR:+"$REGISTRY_DIR"}

if [ ! -e "$SOURCE_DIR/.git" ]; then
  if [ -e "$SOURCE_DIR" ] && [ -n "$(ls -A "$SOURCE_DIR")" ]; then
    die "$SOURCE_DIR exists, is not empty and is not a git checkout; move it away or point workDir elsewhere"
  fi
  echo "cloning $SOURCE_REPOSITORY into $SOURCE_DIR" >&2
  git clone "$SOURCE_REPOSITORY" "$SOURCE_DIR" >&2
fi

cd "$SOURCE_DIR"
if ! git rev-parse -q --verify "refs/tags/$SOURCE_TAG^{commit}" >/dev/null; then
  echo "fetching tag $SOURCE_TAG" >&2
  git fetch origin "refs/tags/$SOURCE_TAG:refs/tags/$SOURCE_TAG" >&2 ||
    die "tag $SOURCE_TAG is not in $SOURCE_REPOSITORY; check istioVersion"
fi

# The branch has the tag's name, so compare full refs: a short name would be ambiguous.
current=$(git symbolic-ref -q HEAD || true)
if [ "$current" != "refs/heads/$SOURCE_TAG" ]; then
  if git rev-parse -q --verify "refs/heads/$SOURCE_TAG" >/dev/null; then
    switch=(git switch "$SOURCE_TAG")
  else
    switch=(git switch -c "$SOURCE_TAG" "refs/tags/$SOURCE_TAG")
  fi
  echo "checking out $SOURCE_TAG (was ${current:-a detached HEAD})" >&2
  "${switch[@]}" >&2 ||
    die "cannot check out $SOURCE_TAG without losing local changes in $SOURCE_DIR; commit or stash them, then run pulumi up again"
fi

git rev-parse HEAD

# The builder image, as `make` in the checkout names it: setup_env.sh's IMG from its own defaults (registry,
# project, IMAGE_VERSION) and Makefile.overrides.mk's IMAGE_NAME. Only plain assignments are evaluated, in an
# empty environment, so nothing of this machine (and no command of the file) goes into the name.
image_name=$(sed -n 's/^IMAGE_NAME[[:space:]]*?=[[:space:]]*\([^[:space:]]*\).*/\1/p' Makefile.overrides.mk 2>/dev/null |
  head -n1 || true)
# shellcheck disable=SC2016 # the patterns are literal: lines with a command substitution are left out
assignments=$(grep -E '^(TOOLS_REGISTRY_PROVIDER|PROJECT_ID|IMG)=|^[[:space:]]*IMAGE_VERSION=' \
  common/scripts/setup_env.sh 2>/dev/null | grep -v -e '\$(' -e '`' || true)
# shellcheck disable=SC2016 # expanded by the inner bash, in its empty environment
env -i IMAGE_NAME="${image_name:-build-tools}" ASSIGNMENTS="$assignments" /bin/bash -c \
  'eval "$ASSIGNMENTS"; if [ -n "${IMAGE_VERSION:-}" ]; then printf "%s\n" "${IMG:-}"; else echo; fi'
