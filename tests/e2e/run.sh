#!/usr/bin/env bash
# The browser end-to-end tests: the demo as a person uses it (tests/e2e/demo.test.mjs, through
# demo-site/run.sh) and one app bundled by Vite, webpack and esbuild (tests/e2e/web-app.test.mjs),
# in each engine of VDEV_E2E_ENGINES (default "chromium firefox webkit"): Debian's Chromium
# through playwright-core, Firefox ESR and WebKitGTK through their WebDriver servers
# (webdriver.mjs).
# Builds what they need: the Platform, the demo site and the bundled apps from the packed vdev-web
# tarball (built by wasm-web/scripts/build.sh when missing, or always with --build-wasm).
# Screenshots go to VDEV_E2E_SCREENSHOTS/<engine> (default target/e2e-screenshots).
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
step "e2e: the Platform, the demo site and the bundled apps from the packed vdev-web"
cargo build -p vdev-platform --manifest-path "$root/Cargo.toml"
bash "$root/demo-site/build.sh"
bash "$root/tests/web-app/build.sh"
cd "$root/tests/e2e"
if [ ! -d node_modules/playwright-core ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi

# One line per engine, as the browser suites print: "e2e <engine> <version>: N passed, M failed",
# added to VDEV_BROWSER_RESULTS when set (tests/run-all.sh sums each engine's lines at the end).
work="$(mktemp -d -t vdev-e2e.XXXXXX)"
# shellcheck source=../browsers.sh
source "$root/tests/browsers.sh"
cleanup() {
  [ -n "$xvfb_pid" ] && kill "$xvfb_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
status=0
for engine in ${VDEV_E2E_ENGINES:-chromium firefox webkit}; do
  engine_env=(VDEV_E2E_ENGINE="$engine")
  case "$engine" in
    chromium) how="Playwright" ;;
    firefox) how="geckodriver (WebDriver)" ;;
    webkit)
      how="WebKitWebDriver (WebDriver) under a private Xvfb"
      start_private_xvfb "$work"
      engine_env+=(DISPLAY="$xvfb_display")
      ;;
    *) echo "error: unknown engine $engine (chromium, firefox, webkit)" >&2; exit 1 ;;
  esac
  rm -rf "$VDEV_E2E_SCREENSHOTS/$engine"
  step "e2e in $engine through $how (screenshots under $VDEV_E2E_SCREENSHOTS/$engine)"
  tap="$work/$engine.tap"
  env "${engine_env[@]}" node --test --test-concurrency=1 \
    --test-reporter=spec --test-reporter-destination=stdout \
    --test-reporter=tap --test-reporter-destination="$tap" \
    demo.test.mjs web-app.test.mjs || status=1
  passed="$(sed -n 's/^# pass //p' "$tap" | tail -n 1)"
  failed="$(sed -n 's/^# fail //p' "$tap" | tail -n 1)"
  version="$(browser_version "$engine")"
  echo "e2e $engine $version: ${passed:-0} passed, ${failed:-0} failed"
  if [ -n "${VDEV_BROWSER_RESULTS:-}" ]; then
    echo "$engine $version ${passed:-0} ${failed:-0}" >>"$VDEV_BROWSER_RESULTS"
  fi
done
exit "$status"
