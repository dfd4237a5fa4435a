#!/usr/bin/env bash
# Downloads the wheels the plugin tests serve as a package index on 127.0.0.1 (tests/plugins.rs)
# into DIR, as PyPI serves them: every file named in tests/fixtures/plugin-index.sha256, checked
# against its sha256 there. Does nothing when DIR already holds them all, intact.
#
# The set is what the tests' resolutions take, fixed once: Python 3.12 wheels for x86_64 Linux
# (the daemon targets manylinux_2_28 and this machine's glibc) of everything the plugins install,
# plus one wheel of each package only other platforms install (its metadata, for the universal
# re-lock). Regenerate it by running the tests' `dify-bundle plugin wheelhouse` commands against
# PyPI and listing `sha256sum files/*.whl` of their wheelhouses.
set -euo pipefail
dir=${1:?usage: scripts/plugin-index.sh DIR}
manifest="$(cd "$(dirname "$0")/.." && pwd)/tests/fixtures/plugin-index.sha256"

intact() { (cd "$dir" 2>/dev/null && sha256sum --quiet --strict -c "$manifest" >/dev/null 2>&1); }
if intact; then
  exit 0
fi
mkdir -p "$dir"
reqs=$(mktemp -d)
trap 'rm -rf "$reqs"' EXIT
# One pip call takes one version of a project: the k-th file of a project goes to call k. Each
# requirement carries the file's hash, so pip picks exactly that file and checks its bytes.
awk -v dir="$reqs" '{
  split($2, part, "-"); k = ++seen[part[1]]
  print part[1] "==" part[2] " --hash=sha256:" $1 > (dir "/" k ".txt")
}' "$manifest"
# Every platform and ABI tag the files carry (pure wheels fit any platform).
tags=()
while read -r tag; do tags+=("$tag"); done < <(awk '{
  name = $2; sub(/\.whl$/, "", name); n = split(name, part, "-")
  print "--abi=" part[n - 1]
  m = split(part[n], platform, ".")
  for (i = 1; i <= m; i++) if (platform[i] != "any") print "--platform=" platform[i]
}' "$manifest" | sort -u)
for requirements in "$reqs"/*.txt; do
  python3 -m pip download -q --no-deps --only-binary=:all: --require-hashes \
    --python-version 3.12 --implementation cp "${tags[@]}" -d "$dir" -r "$requirements"
done
if ! intact; then
  (cd "$dir" && sha256sum --quiet --strict -c "$manifest") || true
  echo "scripts/plugin-index.sh: $dir does not hold every wheel of $manifest" >&2
  exit 1
fi
