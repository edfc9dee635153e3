#!/usr/bin/env bash
# The benchmark command: every figure beside its anchors, measured in one run on this machine,
# written as a Markdown table and a JSON file (paths printed at the end).
#   bash tests/bench/run.sh           full run (minutes)
#   bash tests/bench/run.sh --quick   tiny counts: checks that every figure is produced (seconds)
# Expects the test command's set-up (Rust targets, wasm-bindgen-cli, node/npm) to be in place.
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

# The npm package whose gzipped size is figure 1.
[ -f wasm-web/pkg/vdev_web_bg.wasm ] || bash wasm-web/scripts/build.sh

# The anchor of figure 1: MQTT.js's browser bundle from its npm package, pinned.
tools="$target/bench-tools"
mqtt_js="$tools/node_modules/mqtt/dist/mqtt.min.js"
if [ ! -f "$mqtt_js" ]; then
  mkdir -p "$tools"
  printf '{ "private": true }\n' >"$tools/package.json"
  (cd "$tools" && npm install --no-audit --no-fund --no-package-lock mqtt@5.16.0)
fi

VDEV_BENCH_MQTT_JS="$mqtt_js" cargo bench -p vdev-tests --bench figures "${profile[@]}" -- \
  "${quick[@]}" --out "$target/bench"
