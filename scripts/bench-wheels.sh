#!/usr/bin/env bash
# Benchmark: resolving, downloading and baking the default sandbox packages (boto3, numpy)
# for CPython 3.14 on x86_64 glibc 2.36, against `pip download` of the same set for the same
# target. Both start with empty caches. Needs PyPI.
#
#   scripts/bench-wheels.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/dify-bundle/target}
cargo build --release --quiet --bin dify-bundle --example bench_fixtures
bin=$CARGO_TARGET_DIR/release/dify-bundle

work=$(mktemp -d)
registry_pid=
cleanup() { [ -n "$registry_pid" ] && kill "$registry_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
host=127.0.0.1:$port
printf 'version: 0.1\nlog: {level: error, accesslog: {disabled: true}}\nstorage: {filesystem: {rootdirectory: %s}}\nhttp: {addr: %s}\n' \
  "$work/registry" "$host" > "$work/registry.yml"
docker-registry serve "$work/registry.yml" >/dev/null 2>&1 &
registry_pid=$!
for _ in $(seq 100); do (echo > /dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
"$CARGO_TARGET_DIR/release/examples/bench_fixtures" "$host" sandbox >/dev/null
printf 'name = "bench"\ndify_version = "0"\n[sandbox]\nrequirements = ["boto3", "numpy"]\n[[images]]\nrole = "sandbox"\nimage = "%s/bench/dify-sandbox:python"\n' \
  "$host" > "$work/recipe.toml"

UV_CACHE_DIR="$work/uv-cache" "$bin" build --json --insecure-registry "$host" --recipe "$work/recipe.toml" \
  --cache-dir "$work/cache" --out "$work/bundle" 2>"$work/ours.log" > "$work/ours.json"
ours=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["sandbox_seconds"])' "$work/ours.json")
layer=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["wheel_sets"][0]["layer_size"] >> 20)' "$work/ours.json")
wheels=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["wheel_sets"][0]["wheels"]))' "$work/ours.json")

start=$(date +%s.%N)
python3 -m pip download --quiet --no-cache-dir --disable-pip-version-check --only-binary :all: \
  --python-version 3.14 --implementation cp --abi cp314 \
  --platform manylinux_2_36_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
  -d "$work/pip" boto3 numpy
theirs=$(echo "$(date +%s.%N) - $start" | bc)

printf 'wheels:                                   %d (%s)\n' "$wheels" "$(ls "$work/pip" | tr '\n' ' ')"
printf 'dify-bundle resolve+download+bake layer:  %.2f s (layer %d MiB)\n' "$ours" "$layer"
printf 'pip download (no install):                %.2f s\n' "$theirs"
printf 'ratio pip/ours:                           %.2fx\n' "$(echo "$theirs / $ours" | bc -l)"
