#!/usr/bin/env bash
# Benchmark: pushing a bundle's images to a registry standing in for ECR (docker-registry
# with htpasswd AWS:<token>, ECR's control plane from moto), ours against
# `skopeo copy --all oci:BUNDLE:ROLE docker://…` of the same images to a fresh registry; and
# the time of a second, no-op install.
#
#   scripts/bench-push.sh [TOTAL_MIB]      (default 1200)
total_mib=${1:-1200}
source "$(dirname "$0")/bench-lib.sh"
start_registry "$total_mib"
"$bin" build --insecure-registry "$host" --recipe "$recipe" --out "$work/bundle" 2>/dev/null

token=123456789012-auth-token
data_plane() {  # data_plane NAME → starts a registry with htpasswd AWS:$token, prints host:port
  local port; port=$(free_port)
  htpasswd -Bbn AWS "$token" > "$work/$1.htpasswd"
  printf 'version: 0.1\nlog: {level: error, accesslog: {disabled: true}}\nstorage: {filesystem: {rootdirectory: %s}}\nhttp: {addr: 127.0.0.1:%s}\nauth: {htpasswd: {realm: ecr, path: %s}}\n' \
    "$work/$1" "$port" "$work/$1.htpasswd" > "$work/$1.yml"
  docker-registry serve "$work/$1.yml" >/dev/null 2>&1 &
  track $!
  wait_port "$port"
  echo "127.0.0.1:$port"
}
ours_registry=$(data_plane ours)
skopeo_registry=$(data_plane skopeo)
moto_port=$(free_port)
moto_server -H 127.0.0.1 -p "$moto_port" >/dev/null 2>&1 &
track $!
wait_port "$moto_port"
export AWS_ENDPOINT_URL=http://127.0.0.1:$moto_port AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench \
  AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true

install() { "$bin" install --isolated --yes --allow-unsigned --bundle "$work/bundle" --ecr-endpoint "http://$ours_registry" 2>/dev/null; }
t=$(date +%s.%N); install; ours=$(seconds_since "$t")
t=$(date +%s.%N); install; again=$(seconds_since "$t")
t=$(date +%s.%N)
for role in api web sandbox plugin-daemon; do
  skopeo copy --quiet --all --dest-tls-verify=false --dest-creds "AWS:$token" \
    "oci:$work/bundle:$role" "docker://$skopeo_registry/dify/dify-$role:1.0"
done
theirs=$(seconds_since "$t")

printf 'bundle:                       %d MiB\n' $(( $(du -sb "$work/bundle" | cut -f1) >> 20 ))
printf 'install (verify + push):      %.2f s\n' "$ours"
printf 'skopeo copy --all (4 images): %.2f s\n' "$theirs"
printf 'ratio skopeo/ours:            %.2fx\n' "$(echo "$theirs / $ours" | bc -l)"
printf 'second, no-op install:        %.2f s\n' "$again"
