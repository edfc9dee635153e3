#!/usr/bin/env bash
# The browser figures (tests/bench/browser.mjs) with their set-up: the optimised vdev-platform, the
# npm packages of tests/e2e (its harness helpers, playwright-core) and demo-site (the static
# server), this folder's MQTT.js and playwright-core, and the packed vdev-web tarball installed
# here as an app would (`npm install <tarball>`; built by wasm-web/scripts/build.sh when missing).
#   bash tests/bench/browser.sh [--quick] [--repetitions N] [--out FILE.json] [--profile-drain FILE]
set -euo pipefail
bench="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$bench/../.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"

npm_ci_if_stale() {
  (cd "$1" && if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    npm ci --no-audit --no-fund --loglevel=error
  fi)
}

# Every figure runs against the optimised Platform, so that its ingest is not what caps them
# (the debug build's was: issue 19). The quick run only checks the harness and reuses the test
# command's debug build. VDEV_PLATFORM_BIN tells lib.mjs which binary to start.
if [[ " $* " == *" --quick "* ]]; then
  cargo build -p vdev-platform --manifest-path "$root/Cargo.toml"
  export VDEV_PLATFORM_BIN="$CARGO_TARGET_DIR/debug/vdev-platform"
else
  cargo build --release -p vdev-platform --manifest-path "$root/Cargo.toml"
  export VDEV_PLATFORM_BIN="$CARGO_TARGET_DIR/release/vdev-platform"
fi
ls "$root"/wasm-web/pkg/vdev-web-*.tgz >/dev/null 2>&1 || bash "$root/wasm-web/scripts/build.sh"
tgz="${VDEV_WEB_TGZ:-$(ls -t "$root"/wasm-web/pkg/vdev-web-*.tgz | head -n 1)}"
npm_ci_if_stale "$root/tests/e2e"
npm_ci_if_stale "$root/demo-site"
npm_ci_if_stale "$bench"
# --no-save: the tarball changes with every SDK build, so it is not pinned in package-lock.json.
(cd "$bench" && npm install --no-save --no-audit --no-fund --loglevel=error "$tgz")
node "$bench/browser.mjs" "$@"
