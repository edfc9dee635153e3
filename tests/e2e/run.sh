#!/usr/bin/env bash
# The browser end-to-end tests in Debian's Chromium (playwright-core): the demo as a person uses
# it (tests/e2e/demo.test.mjs, through demo-site/run.sh) and the tiny Vite app of issue 4
# (tests/e2e/web-app.test.mjs). Builds what they need: the Platform, the demo site and the web
# app from the packed vdev-web tarball (built by wasm-web/scripts/build.sh when missing, or
# always with --build-wasm). Screenshots go to VDEV_E2E_SCREENSHOTS (default target/e2e-screenshots).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
export VDEV_E2E_SCREENSHOTS="${VDEV_E2E_SCREENSHOTS:-$CARGO_TARGET_DIR/e2e-screenshots}"
build_wasm=0
[ "${1:-}" = "--build-wasm" ] && build_wasm=1
step() { printf '\n==> %s\n' "$*"; }

if [ "$build_wasm" = 1 ] || ! ls "$root"/wasm-web/pkg/vdev-web-*.tgz >/dev/null 2>&1; then
  step "vdev-web package"
  bash "$root/wasm-web/scripts/build.sh"
fi
step "e2e: the Platform, the demo site and the Vite app from the packed vdev-web"
cargo build -p vdev-platform --manifest-path "$root/Cargo.toml"
bash "$root/demo-site/build.sh"
bash "$root/tests/web-app/build.sh"
cd "$root/tests/e2e"
if [ ! -d node_modules/playwright-core ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi

step "e2e: Playwright in Chromium (screenshots under $VDEV_E2E_SCREENSHOTS)"
rm -rf "$VDEV_E2E_SCREENSHOTS/demo"
node --test --test-concurrency=1 --test-reporter=spec demo.test.mjs web-app.test.mjs
