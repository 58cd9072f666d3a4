#!/usr/bin/env bash
# check-breaking.sh (make check-breaking): buf breaking of proto/ against
# the last release tag (v*), or against the previous commit while there is no
# tag; BREAKING_AGAINST=<git ref> names another. A shallow clone (as CI may
# make) is unshallowed first, so the tag or the parent commit is there.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${BREAKING_AGAINST:-}" ] && [ "$(git rev-parse --is-shallow-repository)" = true ]; then
	git fetch -q --unshallow --tags || true
	if [ "$(git rev-parse --is-shallow-repository)" = true ]; then
		echo "check-breaking: this is a shallow clone and fetching its history failed; clone with full history or set BREAKING_AGAINST to a commit it has" >&2
		exit 1
	fi
fi

ref=${BREAKING_AGAINST:-}
if [ -z "$ref" ]; then
	ref=$(git describe --tags --abbrev=0 --match 'v[0-9]*' 2>/dev/null || true)
fi
if [ -z "$ref" ]; then
	if ! git rev-parse -q --verify 'HEAD~1^{commit}' >/dev/null; then
		echo "check-breaking: no release tag and no previous commit: nothing to compare against"
		exit 0
	fi
	ref=HEAD~1
fi
commit=$(git rev-parse -q --verify "$ref^{commit}") || { echo "check-breaking: $ref is not a commit of this repository" >&2; exit 1; }

against=$(mktemp -d)
trap 'rm -rf "$against"' EXIT
git archive "$commit" buf.yaml proto | tar -x -C "$against"
echo "check-breaking: proto/ against $ref ($(git rev-parse --short "$commit"))"
buf breaking --against "$against"
