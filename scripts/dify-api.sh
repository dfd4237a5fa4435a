#!/usr/bin/env bash
# Test setup: the real Dify API 1.13.3 (../shared/fixtures/dify/dify-1.13.3-api.tar.gz, or
# $DIFY_API_TARBALL) unpacked into ~/.cache/dify-bundle/dify-1.13.3 and `uv sync --frozen`ed
# from its own uv.lock, once per machine (~2.3 GB venv, ~0.8 GB uv cache). The tests that run
# it (tests/common/dify.rs) only use what this made: they send nothing beyond 127.0.0.1.
set -euo pipefail
version=1.13.3
cache="$HOME/.cache/dify-bundle"
root="$cache/dify-$version"
[ -f "$root/.synced" ] && exit 0

name="dify-$version-api.tar.gz"
tarball=${DIFY_API_TARBALL:-}
if [ -z "$tarball" ]; then
  dir=$(cd "$(dirname "$0")/.." && pwd)
  while [ "$dir" != / ]; do
    dir=$(dirname "$dir")
    if [ -f "$dir/shared/fixtures/dify/$name" ]; then tarball="$dir/shared/fixtures/dify/$name"; break; fi
  done
fi
[ -n "$tarball" ] || { echo "$name not found in ../shared/fixtures/dify: set DIFY_API_TARBALL to it" >&2; exit 1; }

if [ ! -d "$root/api" ]; then
  # Unpacked beside, then renamed into place whole: a half-unpacked tree is never taken for
  # a complete one.
  partial="$cache/dify-$version.partial-$$"
  mkdir -p "$partial"
  tar -xzf "$tarball" -C "$partial"
  mv "$partial/dify-$version" "$root"
  rm -rf "$partial"
fi

python=${DIFY_PYTHON:-}
[ -n "$python" ] || python=$(UV_PYTHON_DOWNLOADS=never uv python find 3.12 2>/dev/null || true)
[ -n "$python" ] || python=$(ls "$HOME"/.pyenv/versions/3.12*/bin/python3.12 2>/dev/null | sort | tail -1)
[ -n "$python" ] || { echo "no Python 3.12: set DIFY_PYTHON, or run: uv python install 3.12" >&2; exit 1; }
started=$(date +%s)
(cd "$root/api" && UV_CACHE_DIR="$cache/uv-cache" uv sync --quiet --frozen --no-dev --python "$python")
touch "$root/.synced"
echo "dify api $version: uv sync took $(( $(date +%s) - started )) s"
