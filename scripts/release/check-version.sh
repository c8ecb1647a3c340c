#!/usr/bin/env bash
# Checks that a release tag names the version the repository says it is, and prints that version.
#
#   scripts/release/check-version.sh v1.2.3          (or refs/tags/v1.2.3)
#
# The tag must be v + a SemVer version (1.2.3 or 1.2.3-rc.1; no +build part, which OCI tags
# cannot carry). Cargo.toml's package version, the crate's entry in Cargo.lock (a release build
# uses --locked, which refuses a stale lock file), and the chart's version and appVersion in
# deploy/helm/ecr-token-webhook/Chart.yaml must all equal it. Every mismatch is reported, then
# the script exits 1; a malformed tag or unreadable file exits 2. Prints only the version on
# stdout, so `version="$(scripts/release/check-version.sh "$tag")"` works.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
chart_yaml="$root/deploy/helm/ecr-token-webhook/Chart.yaml"

if [[ $# -ne 1 ]]; then
  echo "usage: $0 TAG   (for example v1.2.3)" >&2
  exit 2
fi
tag="${1#refs/tags/}"
semver='^v(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?$'
if [[ ! $tag =~ $semver ]]; then
  echo "tag '$tag' is not v followed by a SemVer version such as v1.2.3 or v1.2.3-rc.1" >&2
  exit 2
fi
version="${tag#v}"

for f in "$root/Cargo.toml" "$root/Cargo.lock" "$chart_yaml"; do
  if [[ ! -r $f ]]; then
    echo "cannot read $f" >&2
    exit 2
  fi
done

# A TOML string value of `key` in the table `[section]` (first match; "" when absent).
toml_value() {
  awk -v section="$2" -v key="$3" '
    /^[[:space:]]*\[/ {
      line = $0
      sub(/[[:space:]]*(#.*)?$/, "", line)
      in_section = (line == "[" section "]")
      next
    }
    in_section && $0 ~ "^[[:space:]]*" key "[[:space:]]*=" {
      if (match($0, /"[^"]*"/)) { print substr($0, RSTART + 1, RLENGTH - 2); exit }
    }
  ' "$1"
}

# The version of package `name` in Cargo.lock ("" when absent).
lock_version() {
  awk -v name="$2" '
    /^\[\[package\]\]/ { current = ""; next }
    /^name = "/ { current = $3; gsub(/"/, "", current); next }
    /^version = "/ && current == name { v = $3; gsub(/"/, "", v); print v; exit }
  ' "$1"
}

# A top-level scalar of a YAML file, quotes and trailing comment removed ("" when absent).
yaml_top_scalar() {
  awk -v key="$2" '
    $0 ~ "^" key ":" {
      v = substr($0, length(key) + 2)
      sub(/^[[:space:]]+/, "", v)
      if (v ~ /^"/) { sub(/^"/, "", v); sub(/".*$/, "", v) }
      else if (v ~ /^\047/) { sub(/^\047/, "", v); sub(/\047.*$/, "", v) }
      else { sub(/[[:space:]]+#.*$/, "", v); sub(/[[:space:]]+$/, "", v) }
      print v
      exit
    }
  ' "$1"
}

crate="$(toml_value "$root/Cargo.toml" package name)"
declare -A found=(
  ["Cargo.toml [package] version"]="$(toml_value "$root/Cargo.toml" package version)"
  ["Cargo.lock version of ${crate:-?}"]="$(lock_version "$root/Cargo.lock" "$crate")"
  ["Chart.yaml version"]="$(yaml_top_scalar "$chart_yaml" version)"
  ["Chart.yaml appVersion"]="$(yaml_top_scalar "$chart_yaml" appVersion)"
)

status=0
for what in "Cargo.toml [package] version" "Cargo.lock version of ${crate:-?}" \
            "Chart.yaml version" "Chart.yaml appVersion"; do
  if [[ ${found[$what]} != "$version" ]]; then
    echo "$what is '${found[$what]}', the tag $tag says '$version'" >&2
    status=1
  fi
done
if [[ $status -ne 0 ]]; then
  echo 'bump the versions (cargo update --workspace refreshes Cargo.lock), commit, then tag' >&2
  exit 1
fi
echo "$version"
