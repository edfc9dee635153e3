#!/usr/bin/env bash
# Installs vite and the packed vdev-web tarball (`npm install <tarball>`, as an app would) and
# runs `vite build` into tests/web-app/dist. Tarball: VDEV_WEB_TGZ or wasm-web/pkg/vdev-web-*.tgz.
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
node_modules/.bin/vite build --logLevel warn
test -f dist/index.html && ls dist/assets/*.wasm >/dev/null
echo "web app built: $app/dist (vdev-web from $(basename "$tgz"))"
