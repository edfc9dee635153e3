#!/usr/bin/env bash
# Every test of the project, from a fresh machine: installs what is missing, then builds and tests.
# This is the README's test command and what CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "toolchain targets"
installed_targets=$(rustup target list --installed)
for target in wasm32-unknown-unknown wasm32-wasip2; do
  grep -qx "$target" <<<"$installed_targets" || rustup target add "$target"
done
rustup component list --installed | grep -q '^rustfmt' || rustup component add rustfmt
rustup component list --installed | grep -q '^clippy' || rustup component add clippy

step "system packages"
# mosquitto-clients: an independent MQTT peer; libssl-dev + pkg-config: the official SDK's OpenSSL;
# chromium + chromium-driver: the browser tests (node, npm and python3 come with the machine).
missing=()
for pkg in mosquitto-clients libssl-dev pkg-config chromium chromium-driver; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

step "wasm-bindgen-cli 0.2.130 (must equal the wasm-bindgen crate)"
if ! wasm-bindgen --version 2>/dev/null | grep -q ' 0\.2\.130$'; then
  # Without --locked: its lockfile wants a crate version the registry here lacks.
  cargo install wasm-bindgen-cli --version 0.2.130
fi

step "formatting and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo clippy -p vdev-web --target wasm32-unknown-unknown --all-targets -- -D warnings
cargo clippy -p vdev-wasi --target wasm32-wasip2 --all-targets -- -D warnings

step "the core builds for the browser and WASI targets"
cargo build -p vdev-core --target wasm32-unknown-unknown
cargo build -p vdev-core --target wasm32-wasip2

step "the WASI components (library and command), which the wasmtime host tests load"
cargo build -p vdev-wasi --target wasm32-wasip2 --release

step "tests (unit, property, simulation: VDEV_SIM_SEEDS=${VDEV_SIM_SEEDS:-10000})"
# vdev-web's tests run in the browser, below.
cargo test --workspace --exclude vdev-web

step "browser SDK: IndexedDB store, JS API and a real Platform in headless Chromium"
bash wasm-web/scripts/test.sh

step "browser SDK: npm package (size-tuned build, gzipped size) and its smoke test"
bash wasm-web/scripts/build.sh
python3 wasm-web/scripts/smoke.py wasm-web/pkg

step "benchmarks, quick mode: every figure is produced (the numbers mean nothing here)"
bash tests/bench/run.sh --quick
