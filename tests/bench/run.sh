#!/usr/bin/env bash
# The benchmark command: every figure beside its anchors, measured in one run on this machine,
# written as a Markdown table and a JSON file (paths printed at the end).
#   bash tests/bench/run.sh           full run (the browser part alone takes about half an hour)
#   bash tests/bench/run.sh --quick   tiny counts: checks that every figure is produced (about a
#                                     minute); its numbers mean nothing
# Expects the test command's set-up (tests/setup.sh: Rust targets, wasm-bindgen-cli, Chromium).
set -euo pipefail
cd "$(dirname "$0")/../.."

quick=()
profile=()
if [ "${1:-}" = "--quick" ]; then
  quick=(--quick)
  # The quick run checks the harness: reuse the test build instead of an optimised one.
  profile=(--profile test)
fi
target=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
mkdir -p "$target/bench"

# The browser figures in Chromium (enqueue rate, drain rate, memory with a backlog), with their
# set-up: the npm package (also figure 1), MQTT.js 5.16 and playwright-core from tests/bench.
bash tests/bench/browser.sh "${quick[@]}" --out "$target/bench/browser.json"

# The Node.js figures (enqueue and drain rate of the same package on Node.js beside MQTT.js on
# Node.js over TCP), with the packages browser.sh installed here, against the Platform build
# browser.sh made (optimised, or debug in the quick run).
if [ "${#quick[@]}" = 0 ]; then
  export VDEV_PLATFORM_BIN="$target/release/vdev-platform"
else
  export VDEV_PLATFORM_BIN="$target/debug/vdev-platform"
fi
node tests/bench/node.mjs "${quick[@]}" --out "$target/bench/node.json"

# The native figures, merged with the browser ones into one table. The package selection is the
# test command's (`--workspace --exclude vdev-web`), so the quick run reuses its build.
VDEV_BENCH_MQTT_JS="$PWD/tests/bench/node_modules/mqtt/dist/mqtt.min.js" \
VDEV_BENCH_BROWSER_JSON="$target/bench/browser.json" \
VDEV_BENCH_NODE_JSON="$target/bench/node.json" \
  cargo bench --workspace --exclude vdev-web --bench figures "${profile[@]}" -- "${quick[@]}" --out "$target/bench"
