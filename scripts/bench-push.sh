#!/usr/bin/env bash
# Benchmark: pushing a bundle's images to a registry standing in for ECR (docker-registry
# with htpasswd AWS:<token>, ECR's control plane from moto), ours against
# `skopeo copy --all oci:BUNDLE:ROLE docker://…` of the same images to a fresh registry; and
# a second, no-op run of each. ROUNDS rounds, each on fresh registries and a fresh
# moto, alternating which tool goes first, after a warm-up round of each; the medians and
# every round are printed.
#
#   scripts/bench-push.sh [TOTAL_MIB] [ROUNDS]      (defaults 1200 and 6; an even number, so
#                                                     each tool goes first as often)
#
# The stand-in registries store in memory (/dev/shm) by default, so the machine's disk and its
# write-back are not part of what is timed; BENCH_REGISTRY_STORAGE=disk keeps them on disk
# (the README gives both figures).
total_mib=${1:-1200}
rounds=$(( (${2:-6} + 1) / 2 * 2 ))
storage=${BENCH_REGISTRY_STORAGE:-memory}
source "$(dirname "$0")/bench-lib.sh"
case "$storage" in
  memory) stores=$(mktemp -d -p /dev/shm dify-bundle-bench.XXXXXX); scratch+=("$stores") ;;
  disk) stores=$work ;;
  *) echo "BENCH_REGISTRY_STORAGE is memory or disk, not $storage" >&2; exit 2 ;;
esac
start_registry "$total_mib"
"$bin" build --insecure-registry "$host" --recipe "$recipe" --out "$work/bundle" 2>/dev/null

token=123456789012-auth-token
data_plane() {  # data_plane NAME → starts a registry with htpasswd AWS:$token, prints host:port
  local port; port=$(free_port)
  htpasswd -Bbn AWS "$token" > "$work/$1.htpasswd"
  printf 'version: 0.1\nlog: {level: error, accesslog: {disabled: true}}\nstorage: {filesystem: {rootdirectory: %s}}\nhttp: {addr: 127.0.0.1:%s}\nauth: {htpasswd: {realm: ecr, path: %s}}\n' \
    "$stores/$1" "$port" "$work/$1.htpasswd" > "$work/$1.yml"
  docker-registry serve "$work/$1.yml" >/dev/null 2>&1 &
  echo $! > "$work/$1.pid"
  track "$(cat "$work/$1.pid")"
  wait_port "$port"
  echo "127.0.0.1:$port"
}
stop() {  # stop NAME… → stops those servers and removes what they stored
  local name
  for name in "$@"; do
    kill "$(cat "$work/$name.pid")" 2>/dev/null || true
    wait "$(cat "$work/$name.pid")" 2>/dev/null || true
    rm -rf "${stores:?}/$name"
  done
}
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true

install() { "$bin" install --isolated --yes --allow-unsigned --bundle "$work/bundle" --ecr-endpoint "http://$registry" 2>/dev/null >/dev/null; }
skopeo_all() {
  for role in api web sandbox plugin-daemon; do
    skopeo copy --quiet --all --dest-tls-verify=false --dest-creds "AWS:$token" \
      "oci:$work/bundle:$role" "docker://$registry/dify/dify-$role:1.0"
  done
}
# Each timing starts with the machine quiet (nothing left to write back) and with the other
# tool's registry stopped and its storage freed: on this VM, memory the guest never touched
# since it was handed back to the host costs a registry writing 1.1 GB into it up to 2.5
# CPU-seconds of kernel time, so a tool timed while the other's 1.1 GB was still held ran
# 30-50% slower, whichever tool it was.
settle() { sync; sleep "${BENCH_SETTLE:-3}"; }
time_ours() {  # → ours, again: a first install, then a second, no-op one
  registry=$(data_plane "ours$round")
  local moto_port; moto_port=$(free_port)
  moto_server -H 127.0.0.1 -p "$moto_port" >/dev/null 2>&1 &
  echo $! > "$work/moto$round.pid"
  track "$(cat "$work/moto$round.pid")"
  wait_port "$moto_port"
  export AWS_ENDPOINT_URL=http://127.0.0.1:$moto_port
  settle; t=$(date +%s.%N); install; ours=$(seconds_since "$t")
  settle; t=$(date +%s.%N); install; again=$(seconds_since "$t")
  stop "ours$round" "moto$round"
}
time_skopeo() {  # → theirs, theirs_again: a first copy, then the same again (nothing to send)
  registry=$(data_plane "skopeo$round")
  settle; t=$(date +%s.%N); skopeo_all; theirs=$(seconds_since "$t")
  settle; t=$(date +%s.%N); skopeo_all; theirs_again=$(seconds_since "$t")
  stop "skopeo$round"
}

# One round of each first, not counted: the first runs on a fresh machine write into memory
# the guest has not touched yet and ran 5-10% slower.
round=0; time_ours; time_skopeo
ours_runs=(); theirs_runs=(); again_runs=(); theirs_again_runs=()
for round in $(seq "$rounds"); do
  if (( round % 2 )); then time_ours; time_skopeo; else time_skopeo; time_ours; fi
  printf 'round %d: install %.2f s, skopeo %.2f s, ratio %.2fx; again: install %.2f s, skopeo %.2f s\n' \
    "$round" "$ours" "$theirs" "$(echo "$theirs / $ours" | bc -l)" "$again" "$theirs_again"
  ours_runs+=("$ours"); theirs_runs+=("$theirs"); again_runs+=("$again"); theirs_again_runs+=("$theirs_again")
done
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2}'; }
ours=$(median "${ours_runs[@]}"); theirs=$(median "${theirs_runs[@]}"); again=$(median "${again_runs[@]}")
theirs_again=$(median "${theirs_again_runs[@]}")

printf 'bundle:                       %d MiB\n' $(( $(du -sb "$work/bundle" | cut -f1) >> 20 ))
printf 'median of %d rounds, registries storing on %s\n' "$rounds" "$storage"
printf 'install (verify + push):      %.2f s\n' "$ours"
printf 'skopeo copy --all (4 images): %.2f s\n' "$theirs"
printf 'ratio skopeo/ours:            %.2fx\n' "$(echo "$theirs / $ours" | bc -l)"
printf 'second, no-op install:        %.2f s\n' "$again"
printf 'second skopeo copy --all:     %.2f s\n' "$theirs_again"
printf 'no-op ratio skopeo/ours:      %.2fx\n' "$(echo "$theirs_again / $again" | bc -l)"
