#!/usr/bin/env bash
# Builds the portable release binary: x86_64 Linux, glibc 2.17 and newer (RHEL 7+, Amazon
# Linux 2, Ubuntu 14.04+), linked by zig through cargo-zigbuild — both from PyPI, so it works
# wherever the package registries are reachable. Writes dist/dify-bundle-VERSION-x86_64-linux
# and its .sha256, then checks the glibc symbol versions it needs.
#
# aarch64: the Rust standard library for aarch64-unknown-linux-gnu must be installed
# (`rustup target add aarch64-unknown-linux-gnu`); pass TARGETS="x86_64 aarch64" then.
set -euo pipefail
cd "$(dirname "$0")/.."

tools="$HOME/.cache/dify-bundle/release-tools"
if [ ! -x "$tools/bin/cargo-zigbuild" ]; then
  python3 -m venv "$tools"
  "$tools/bin/pip" install -q ziglang==0.17.1 cargo-zigbuild==0.24.1
fi
export PATH="$tools/bin:$PATH"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/dify-bundle/target-release}
export DIFY_BUNDLE_COMMIT=${DIFY_BUNDLE_COMMIT:-$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)}

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
mkdir -p dist
for arch in ${TARGETS:-x86_64}; do
  target="$arch-unknown-linux-gnu"
  cargo zigbuild --release --locked --target "$target.2.17"
  out="dist/dify-bundle-$version-$arch-linux"
  cp "$CARGO_TARGET_DIR/$target/release/dify-bundle" "$out.tmp"
  mv "$out.tmp" "$out"
  (cd dist && sha256sum "$(basename "$out")" > "$(basename "$out").sha256")
  echo "built $out ($(du -h "$out" | cut -f1)), sha256 $(cut -d' ' -f1 "$out.sha256")"
  # The newest GLIBC_ symbol version it needs (tests/release.rs checks the same with
  # DIFY_BUNDLE_RELEASE_BINARY=$out cargo test --test release).
  newest=$(readelf --version-info --wide "$out" | sed -n '/Version needs section/,$p' \
    | grep -o 'GLIBC_[0-9]*\.[0-9]*' | sed 's/GLIBC_//' | sort -t. -k1,1n -k2,2n | tail -1)
  echo "$out needs glibc $newest"
  if [ "$(printf '%s\n2.17\n' "$newest" | sort -t. -k1,1n -k2,2n | tail -1)" != "2.17" ]; then
    echo "error: $out needs glibc $newest, newer than 2.17" >&2
    exit 1
  fi
done
