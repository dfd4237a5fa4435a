#!/usr/bin/env bash
# Benchmark: `dify-bundle build` against `skopeo copy` of each image into one OCI layout
# (what a user would otherwise do), on the same images in a local docker-registry.
# Prints both times, the ratio, peak RSS, and the single-core sha256 time for those bytes.
#
#   scripts/bench-build.sh [TOTAL_MIB]      (default 1200)
total_mib=${1:-1200}
source "$(dirname "$0")/bench-lib.sh"
start_registry "$total_mib"

sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
start=$(date +%s.%N)
/usr/bin/time -f '%M' -o "$work/rss" "$bin" build --insecure-registry "$host" \
  --no-installer --recipe "$work/recipe.toml" --out "$work/ours" 2>"$work/ours.log"
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
