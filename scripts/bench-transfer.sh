#!/usr/bin/env bash
# Benchmark: carrying a bundle. Upload and download against one moto_server S3, ours against
# `aws s3 cp --recursive` of the bundle directory; then pack and verify-parts throughput
# against the single-core sha256 limit for the same bytes.
#
#   scripts/bench-transfer.sh [TOTAL_MIB]      (default 600)
total_mib=${1:-600}
source "$(dirname "$0")/bench-lib.sh"
start_registry "$total_mib"
"$bin" build --insecure-registry "$host" --recipe "$recipe" --out "$work/bundle" 2>/dev/null

port=$(free_port)
moto_server -H 127.0.0.1 -p "$port" >/dev/null 2>&1 &
track $!
wait_port "$port"
export AWS_ENDPOINT_URL=http://127.0.0.1:$port AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench \
  AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
aws s3 mb s3://bench >/dev/null

bytes=$(du -sb "$work/bundle" | cut -f1)
t=$(date +%s.%N); "$bin" upload --allow-unsigned ${UPLOAD_FLAGS:-} "$work/bundle" s3://bench/ours 2>/dev/null; up_ours=$(seconds_since "$t")
t=$(date +%s.%N); "$bin" upload --allow-unsigned "$work/bundle" s3://bench/ours 2>/dev/null; up_again=$(seconds_since "$t")
t=$(date +%s.%N); aws s3 cp --recursive --quiet "$work/bundle" s3://bench/theirs; up_aws=$(seconds_since "$t")
t=$(date +%s.%N); "$bin" download --allow-unsigned s3://bench/ours/bundles/bench "$work/down-ours" 2>/dev/null; down_ours=$(seconds_since "$t")
t=$(date +%s.%N); aws s3 cp --recursive --quiet s3://bench/theirs "$work/down-aws"; down_aws=$(seconds_since "$t")

t=$(date +%s.%N); "$bin" pack --allow-unsigned "$work/bundle" --split-size 200MiB --out "$work/media" 2>/dev/null; pack=$(seconds_since "$t")
t=$(date +%s.%N); "$bin" verify --allow-unsigned "$work/media" 2>/dev/null; verify_parts=$(seconds_since "$t")
t=$(date +%s.%N); find "$work/bundle/blobs" -type f -print0 | xargs -0 cat | openssl dgst -sha256 >/dev/null; hash=$(seconds_since "$t")

mib=$((bytes >> 20))
printf 'bundle:                     %d MiB\n' "$mib"
printf 'upload     ours %6.2f s   aws s3 cp %6.2f s   ratio %.2fx   (second upload: %.2f s)\n' "$up_ours" "$up_aws" "$(echo "$up_aws / $up_ours" | bc -l)" "$up_again"
printf 'download   ours %6.2f s   aws s3 cp %6.2f s   ratio %.2fx\n' "$down_ours" "$down_aws" "$(echo "$down_aws / $down_ours" | bc -l)"
printf 'pack           %6.2f s (%4.0f MiB/s)\n' "$pack" "$(echo "$mib / $pack" | bc -l)"
printf 'verify parts   %6.2f s (%4.0f MiB/s)\n' "$verify_parts" "$(echo "$mib / $verify_parts" | bc -l)"
printf 'sha256 1 core  %6.2f s (%4.0f MiB/s)\n' "$hash" "$(echo "$mib / $hash" | bc -l)"
