#!/usr/bin/env bash
# Benchmark: `dify-bundle build` against `skopeo copy` of each image into one OCI layout
# (what a user would otherwise do), on the same images in a local docker-registry.
# Prints both times, the ratio, peak RSS, and the single-core sha256 time for those bytes.
#
#   scripts/bench-build.sh [TOTAL_MIB]      (default 1200)
set -euo pipefail
cd "$(dirname "$0")/.."
total_mib=${1:-1200}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/dify-bundle/target}
cargo build --release --quiet --bin dify-bundle --example bench_fixtures
bin=$CARGO_TARGET_DIR/release/dify-bundle

work=$(mktemp -d)
registry_pid=
cleanup() { [ -n "$registry_pid" ] && kill "$registry_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
host=127.0.0.1:$port
cat > "$work/registry.yml" <<YML
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $work/registry}}
http: {addr: $host}
YML
docker-registry serve "$work/registry.yml" >/dev/null 2>&1 &
registry_pid=$!
for _ in $(seq 100); do (echo > /dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done

"$CARGO_TARGET_DIR/release/examples/bench_fixtures" "$host" "$total_mib"
cat > "$work/recipe.toml" <<TOML
name = "bench"
dify_version = "0.0.0-bench"
[[images]]
role = "api"
image = "$host/bench/dify-api:1.0"
[[images]]
role = "web"
image = "$host/bench/dify-web:1.0"
[[images]]
role = "sandbox"
image = "$host/bench/dify-sandbox:1.0"
[[images]]
role = "plugin-daemon"
image = "$host/bench/dify-plugin-daemon:1.0"
TOML

sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
start=$(date +%s.%N)
/usr/bin/time -f '%M' -o "$work/rss" "$bin" build --insecure-registry "$host" \
  --recipe "$work/recipe.toml" --out "$work/ours" 2>"$work/ours.log"
ours=$(echo "$(date +%s.%N) - $start" | bc)

start=$(date +%s.%N)
for name in dify-api dify-web dify-sandbox dify-plugin-daemon; do
  skopeo copy --quiet --src-tls-verify=false "docker://$host/bench/$name:1.0" "oci:$work/skopeo:$name"
done
theirs=$(echo "$(date +%s.%N) - $start" | bc)

bytes=$(du -sb "$work/ours/blobs" | cut -f1)
start=$(date +%s.%N)
# openssl uses the CPU's SHA extensions, as our hashing does: the fastest one core can go.
find "$work/ours/blobs" -type f -print0 | xargs -0 cat | openssl dgst -sha256 >/dev/null
hash=$(echo "$(date +%s.%N) - $start" | bc)

printf 'bundle bytes:            %d MiB\n' $((bytes >> 20))
printf 'dify-bundle build:       %.2f s\n' "$ours"
printf 'skopeo copy (4 images):  %.2f s\n' "$theirs"
printf 'ratio skopeo/ours:       %.2fx\n' "$(echo "$theirs / $ours" | bc -l)"
printf 'peak RSS dify-bundle:    %d MiB\n' $(( $(cat "$work/rss") / 1024 ))
printf 'sha256, one core:        %.2f s (%.0f MiB/s)\n' "$hash" "$(echo "$bytes / 1048576 / $hash" | bc -l)"
