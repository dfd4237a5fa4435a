#!/usr/bin/env bash
# Figures: a full bundle of the newer built-in recipe against a delta since the older one,
# on stand-ins of their images (examples/bench_fixtures.rs `RELEASES`: layer by layer as the
# Dockerfiles make them, sized as the real ones are estimated), at PERCENT of those sizes.
# Prints what `pack` writes for each, and the share the delta saves.
#
#   scripts/bench-delta.sh [PERCENT]      (default 100)
percent=${1:-100}
source "$(dirname "$0")/bench-lib.sh"
serve_registry
"$CARGO_TARGET_DIR/release/examples/bench_fixtures" "$host" delta "$percent" | grep -v '^pushed' 

recipe() {  # recipe NAME VERSION TAG
  {
    printf 'name = "%s"\ndify_version = "%s"\n' "$1" "$2"
    for role in api web sandbox plugin-daemon; do
      printf '[[images]]\nrole = "%s"\nimage = "%s/bench/dify-%s:%s"\n' "$role" "$host" "$role" "$3"
    done
  } > "$work/$1.toml"
}
recipe dify-1.13.3 1.13.3 old
recipe dify-1.17.1 1.17.1 new
recipe dify-1.17.2 1.17.2 patch
build() { "$bin" build --no-installer --insecure-registry "$host" --recipe "$work/$1.toml" --out "$work/$2" "${@:3}" 2>/dev/null >/dev/null; }
build dify-1.13.3 old
build dify-1.17.1 new
build dify-1.17.1 new-delta --since "$work/old"
build dify-1.17.2 patch
build dify-1.17.2 patch-delta --since "$work/new"
pack() { "$bin" pack --allow-unsigned "$work/$1" --out "$work/$1-media" 2>/dev/null >/dev/null; du -sb "$work/$1-media" | cut -f1; }
line() {  # line LABEL FULL DELTA
  printf '%-30s full %5d MiB   delta %5d MiB   delta/full %5.1f%%\n' "$1" $(($2 >> 20)) $(($3 >> 20)) \
    "$(echo "100 * $3 / $2" | bc -l)"
}
printf 'stand-ins at %d%% of the estimated sizes (linux/amd64), as packed:\n' "$percent"
line '1.13.3 -> 1.17.1 (the recipes)' "$(pack new)" "$(pack new-delta)"
line '1.17.1 -> a patch (api, web)' "$(pack patch)" "$(pack patch-delta)"
