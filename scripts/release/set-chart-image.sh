#!/usr/bin/env bash
# Points a copy of the chart at the released image, pinned by digest, before it is packaged:
#
#   scripts/release/set-chart-image.sh CHART_DIR REPOSITORY sha256:DIGEST
#
# Rewrites image.repository and image.digest in CHART_DIR/values.yaml (comments and everything
# else stay as they are), so `helm install` of the published chart runs the exact image that was
# signed, with no --set. Run it on a copy: the repository's chart keeps its local defaults.
# Fails unless both keys were found exactly once in the top-level image: block.
set -euo pipefail

if [[ $# -ne 3 ]]; then
  echo "usage: $0 CHART_DIR REPOSITORY sha256:DIGEST" >&2
  exit 2
fi
values="$1/values.yaml"
repository="$2"
digest="$3"
if [[ ! $repository =~ ^[a-z0-9]([a-z0-9._/-]*[a-z0-9])?(:[0-9]+)?(/[a-z0-9._-]+)*$ ]]; then
  echo "'$repository' is not an image repository (lowercase, no tag)" >&2
  exit 2
fi
if [[ ! $digest =~ ^sha256:[0-9a-f]{64}$ ]]; then
  echo "'$digest' is not a sha256 digest" >&2
  exit 2
fi
if [[ ! -w $values ]]; then
  echo "cannot write $values" >&2
  exit 2
fi

tmp="$(mktemp)"
trap 'rm -f "$tmp"' EXIT
awk -v repository="$repository" -v digest="$digest" '
  /^[^[:space:]#]/ { in_image = ($0 ~ /^image:[[:space:]]*$/) }
  in_image && /^  repository:/ { print "  repository: " repository; r++; next }
  in_image && /^  digest:/     { print "  digest: \"" digest "\""; d++; next }
  { print }
  END { if (r != 1 || d != 1) { printf "values.yaml: the image: block has %d repository: and %d digest: lines, not one each\n", r, d > "/dev/stderr"; exit 1 } }
' "$values" > "$tmp"
cat "$tmp" > "$values"
