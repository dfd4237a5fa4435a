#!/usr/bin/env bash
# Benchmark: the plugin wheelhouse of the real agent plugin (requirements.txt) for CPython 3.12
# on x86_64 glibc 2.28 — resolve, download, index — against `pip download` of the same
# requirements for the same target. Both start with empty caches. Needs PyPI.
#
#   scripts/bench-plugins.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/dify-bundle/target}
cargo build --release --quiet --bin dify-bundle
bin=$CARGO_TARGET_DIR/release/dify-bundle
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
plugin=tests/fixtures/plugins/langgenius-agent_0.0.14.difypkg

start=$(date +%s.%N)
UV_CACHE_DIR="$work/uv-cache" "$bin" plugin wheelhouse "$plugin" --out "$work/house" \
  --python 3.12 --platform x86_64-manylinux_2_28 --cache-dir "$work/cache" 2>"$work/ours.log"
ours=$(echo "$(date +%s.%N) - $start" | bc)

unzip -p "$plugin" requirements.txt > "$work/requirements.txt"
start=$(date +%s.%N)
python3 -m pip download --quiet --no-cache-dir --disable-pip-version-check --only-binary :all: \
  --python-version 3.12 --implementation cp --abi cp312 \
  --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux1_x86_64 --platform manylinux_2_5_x86_64 \
  -d "$work/pip" -r "$work/requirements.txt"
theirs=$(echo "$(date +%s.%N) - $start" | bc)

printf 'wheels:                                 ours %d, pip %d\n' "$(ls "$work/house/files" | wc -l)" "$(ls "$work/pip" | wc -l)"
printf 'dify-bundle plugin wheelhouse:          %.2f s (%s, index included)\n' "$ours" "$(du -sh "$work/house" | cut -f1)"
printf 'pip download (no index):                %.2f s\n' "$theirs"
printf 'ratio pip/ours:                         %.2fx\n' "$(echo "$theirs / $ours" | bc -l)"
