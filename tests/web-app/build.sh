#!/usr/bin/env bash
# Installs the bundlers (package-lock.json: vite, webpack, esbuild, pinned) and the packed
# vdev-web tarball (`npm install <tarball>`, as an app would), then bundles the same app three
# ways: `vite build` into dist/vite, webpack 5 and esbuild (build.mjs) into dist/webpack and
# dist/esbuild. Vite's dev server, the fourth way, serves the same sources (started by
# tests/e2e/web-app.test.mjs). Tarball: VDEV_WEB_TGZ or wasm-web/pkg/vdev-web-*.tgz.
set -euo pipefail
app="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$app/../.." && pwd)"
tgz="${VDEV_WEB_TGZ:-$(ls -t "$root"/wasm-web/pkg/vdev-web-*.tgz 2>/dev/null | head -n 1)}"
[ -n "$tgz" ] && [ -f "$tgz" ] || { echo "error: no vdev-web tarball: run bash wasm-web/scripts/build.sh" >&2; exit 1; }
cd "$app"
if [ ! -x node_modules/.bin/vite ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
npm install --no-save --no-audit --no-fund --loglevel=error "$tgz"
# The dev server's pre-bundled dependencies: made again from the vdev-web just installed, whatever
# Vite's cache key makes of a --no-save install.
rm -rf node_modules/.vite
# A bundler that fails must leave no page behind for the test to pass on.
rm -rf dist
node_modules/.bin/vite build --logLevel warn
node build.mjs
# Two wasm modules each: the package's and the opt-in Brotli encoder's (vdev-web/brotli).
for out in vite/assets webpack esbuild; do
  test -f "dist/${out%/assets}/index.html" && [ "$(ls "dist/$out"/*.wasm 2>/dev/null | wc -l)" = 2 ] \
    || { echo "error: dist/${out%/assets} has no index.html or not the two wasm modules" >&2; exit 1; }
done
echo "web app built by vite, webpack and esbuild: $app/dist (vdev-web from $(basename "$tgz"))"
