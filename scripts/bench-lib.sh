# Shared by the benchmark scripts: a local docker-registry filled with Dify-shaped images.
# Sourced, not run. Sets: work, host, bin, recipe.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/dify-bundle/target}
cargo build --release --quiet --bin dify-bundle --example bench_fixtures
bin=$CARGO_TARGET_DIR/release/dify-bundle
work=$(mktemp -d)
pids=()
# Servers started inside a command substitution run in a subshell, whose `pids` is lost:
# every server's pid is also written to $work/pids, and cleanup stops both lists.
track() { pids+=("$1"); echo "$1" >> "$work/pids"; }
# Directories outside $work (in memory, under /dev/shm) that cleanup removes too.
scratch=()
cleanup() {
  local p
  for p in "${pids[@]}" $(cat "$work/pids" 2>/dev/null); do kill "$p" 2>/dev/null || true; done
  rm -rf "$work" "${scratch[@]}"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (echo > "/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }

# serve_registry: an empty registry without auth; sets host
serve_registry() {
  local port; port=$(free_port)
  host=127.0.0.1:$port
  printf 'version: 0.1\nlog: {level: error, accesslog: {disabled: true}}\nstorage: {filesystem: {rootdirectory: %s}}\nhttp: {addr: %s}\n' \
    "$work/registry" "$host" > "$work/registry.yml"
  docker-registry serve "$work/registry.yml" >/dev/null 2>&1 &
  track $!
  wait_port "$port"
}

# start_registry MIB: a registry with MIB of images; writes $work/recipe.toml
start_registry() {
  serve_registry
  "$CARGO_TARGET_DIR/release/examples/bench_fixtures" "$host" "$1" >/dev/null
  recipe=$work/recipe.toml
  {
    printf 'name = "bench"\ndify_version = "0.0.0-bench"\n'
    for role in api web sandbox plugin-daemon; do
      printf '[[images]]\nrole = "%s"\nimage = "%s/bench/dify-%s:1.0"\n' "$role" "$host" "$role"
    done
  } > "$recipe"
}

seconds_since() { echo "$(date +%s.%N) - $1" | bc; }
