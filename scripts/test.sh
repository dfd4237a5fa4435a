#!/usr/bin/env bash
# Installs what the tests need (apt and pip packages), then runs every check and test.
# The tests start their own servers (docker-registry, token server) on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
# postgresql, redis-server, openssl: the real Dify API's database, broker and test CA
# (tests/common/dify.rs).
apt_packages=(docker-registry skopeo minisign apache2-utils bc postgresql redis-server redis-tools openssl)
missing=()
for p in "${apt_packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
pip_packages=('moto[server]==5.2.5' awscrt cfn-lint==1.51.0 uv cryptography pyyaml)
export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1
python3 -m pip install -q "${pip_packages[@]}" \
  || python3 -m pip install -q --break-system-packages "${pip_packages[@]}"

# The real uv wheel the build's pinned fetch is tested against (src/python/uv.rs).
test_wheels="$HOME/.cache/dify-bundle/test-wheels"
if [ ! -f "$test_wheels/uv-0.13.9-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl" ]; then
  python3 -m pip download -q --no-deps --only-binary=:all: --platform manylinux2014_x86_64 \
    --python-version 3.11 -d "$test_wheels" uv==0.13.9
fi

# The package index the sandbox tests resolve against on 127.0.0.1, as a PyPI mirror would
# serve it: real wheels for this machine's python3 (tests/sandbox.rs).
if [ ! -f "$test_wheels/sandbox-index/.complete" ]; then
  python3 -m pip download -q --only-binary=:all: -d "$test_wheels/sandbox-index" \
    numpy==2.2.6 tabulate==0.10.0
  touch "$test_wheels/sandbox-index/.complete"
fi
# The package index the plugin tests resolve against on 127.0.0.1 (tests/plugins.rs): ~50 MB of
# real wheels for Python 3.12, pinned with their sha256 in tests/fixtures/plugin-index.sha256.
scripts/plugin-index.sh "$test_wheels/plugin-index"

# The real Dify API 1.13.3 (tests/common/dify.rs) runs on Python 3.12, as its uv.lock was made;
# its venv (~2.3 GB) and uv cache (~0.8 GB) live in ~/.cache/dify-bundle, made here once.
if ! uv python find 3.12 >/dev/null 2>&1 && ! ls "$HOME"/.pyenv/versions/3.12*/bin/python3.12 >/dev/null 2>&1; then
  uv python install 3.12
fi
scripts/dify-api.sh

# checkov pins an older botocore than moto and awscli want: a venv of its own, pinned.
checkov_venv="$HOME/.cache/dify-bundle/checkov-3.3.30"
if [ ! -x "$checkov_venv/bin/checkov" ]; then
  python3 -m venv "$checkov_venv"
  "$checkov_venv/bin/pip" install -q checkov==3.3.30
fi
export CHECKOV="$checkov_venv/bin/checkov"

rustup component add rustfmt clippy >/dev/null 2>&1 || true
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/dify-bundle/target}
# No incremental cache: it doubles the target dir and a fresh CI clone never reuses it.
export CARGO_INCREMENTAL=0
# Say how much room the build has: a full disk is the usual cause of an odd link error.
df -h "$(dirname "$CARGO_TARGET_DIR")" 2>/dev/null | tail -1 || true
cargo fmt --check
cargo clippy --all-targets --quiet -- -D warnings
cargo test --all-targets
