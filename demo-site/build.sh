#!/usr/bin/env bash
# Installs the demo's npm dependencies and the packed vdev-web tarball (as any JS app would:
# `npm install <tarball>`), then builds the static site into demo-site/dist.
# Needs the tarball from wasm-web/scripts/build.sh (wasm-web/pkg/vdev-web-*.tgz) or VDEV_WEB_TGZ.
set -euo pipefail
site="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$site/.." && pwd)"
tgz="${VDEV_WEB_TGZ:-$(ls -t "$root"/wasm-web/pkg/vdev-web-*.tgz 2>/dev/null | head -n 1)}"
if [ -z "$tgz" ] || [ ! -f "$tgz" ]; then
  echo "error: no vdev-web tarball: run bash wasm-web/scripts/build.sh first" >&2
  exit 1
fi
cd "$site"
if [ ! -x node_modules/.bin/vite ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
# --no-save: the tarball changes with every SDK build, so it is not pinned in package-lock.json.
npm install --no-save --no-audit --no-fund --loglevel=error "$tgz"
node_modules/.bin/vite build --logLevel warn
echo "demo site built: $site/dist (vdev-web from $(basename "$tgz"))"
