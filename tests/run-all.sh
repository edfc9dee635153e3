#!/usr/bin/env bash
# Every test of the project, from a fresh machine: installs what is missing, then builds and tests.
# This is the README's test command and what CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

# One run from a clean clone gains nothing from incremental compilation, which would add 2 GB
# of caches to the target directory (set CARGO_INCREMENTAL=1 to keep it).
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

# Installs what is missing: Rust targets and components, Debian packages, wasm-bindgen-cli.
bash tests/setup.sh

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

# Each browser step adds "<engine> <version> <passed> <failed>" lines here; the end sums them.
export VDEV_BROWSER_RESULTS="${CARGO_TARGET_DIR:-$PWD/target}/browser-results.txt"
mkdir -p "$(dirname "$VDEV_BROWSER_RESULTS")"
: >"$VDEV_BROWSER_RESULTS"

step "browser SDK: IndexedDB store, JS API and a real Platform in headless Chromium, Firefox and WebKit"
bash wasm-web/scripts/test.sh

step "browser SDK: npm package (size-tuned build, gzipped size), its smoke test, its types; tsc over the JS host"
bash wasm-web/scripts/build.sh
python3 wasm-web/scripts/smoke.py wasm-web/pkg
bash tests/web-app-types/run.sh wasm-web/pkg/vdev-web-*.tgz
bash wasm-web/js-check/run.sh

step "Node.js: the same npm package installed from its tarball, against a real Platform (TLS, TCP, SIGKILL, damage, 100 devices)"
bash wasm-web/scripts/test-node.sh

step "browser end-to-end: the demo and a Vite app in Chromium (Playwright), Firefox and WebKit (WebDriver)"
bash tests/e2e/run.sh

step "benchmarks, quick mode: every figure is produced (the numbers mean nothing here)"
bash tests/bench/run.sh --quick

step "browsers: every suite and end-to-end test, one line per engine"
awk '{ key = $1 " " $2; if (!(key in passed)) order[++n] = key; passed[key] += $3; failed[key] += $4 }
     END { for (i = 1; i <= n; i++) printf "browser %s: %d passed, %d failed\n", order[i], passed[order[i]], failed[order[i]] }' \
  "$VDEV_BROWSER_RESULTS"
