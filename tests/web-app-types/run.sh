#!/usr/bin/env bash
# Type test of the npm package vdev-web: app.ts uses the whole public API and a set of wrong
# usages marked `@ts-expect-error`, checked with `tsc --strict --noEmit` (typescript pinned in
# package.json) against
#   - the hand-written types wasm-web/js/vdev_web.d.ts (no argument),
#   - a built package's vdev_web.d.ts (`run.sh wasm-web/pkg`), or
#   - the packed tarball installed here as an app installs it (`run.sh wasm-web/pkg/vdev-web-*.tgz`):
#     "vdev-web" then resolves through the package's package.json (exports, types).
# Also fails if the types say `any` outside comments.
#   bash tests/web-app-types/run.sh [PKG_DIR | FILE.d.ts | TARBALL.tgz]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
target="${1:-$root/wasm-web/js/vdev_web.d.ts}"
[ -e "$target" ] || { echo "error: no such file or folder: $target" >&2; exit 1; }
target="$(cd "$(dirname "$target")" && pwd)/$(basename "$target")"
tarball=""
case "$target" in
  *.tgz) tarball="$target" ;;
  *) [ -d "$target" ] && target="$target/vdev_web.d.ts" ;;
esac

cd "$here"
if [ ! -x node_modules/.bin/tsc ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi

# tsconfig.json maps "vdev-web" to wasm-web/js/vdev_web.d.ts; a config of the moment maps it to
# the file under test, or (tarball) maps nothing, so node_modules/vdev-web is found as an app
# finds it. Paths in it are absolute, so it may live outside this folder.
if [ -n "$tarball" ]; then
  npm install --no-save --no-audit --no-fund --loglevel=error "$tarball"
  target="$here/node_modules/vdev-web/$(node -p 'require(process.argv[1]).types' "$here/node_modules/vdev-web/package.json")"
  paths='{}'
else
  paths="{ \"vdev-web\": [\"$target\"], \"vdev-web/brotli\": [\"$(dirname "$target")/vdev_brotli.d.ts\"] }"
fi
[ -f "$target" ] || { echo "error: no types at $target" >&2; exit 1; }
if grep -vE '^[[:space:]]*(\*|//|/\*)' "$target" | grep -wn 'any'; then
  echo "error: $target says 'any' (above)" >&2
  exit 1
fi
config="$(mktemp --suffix=.json)"
trap 'rm -f "$config"' EXIT
cat >"$config" <<JSON
{
  "extends": "$here/tsconfig.json",
  "compilerOptions": { "paths": $paths },
  "files": ["$here/app.ts"]
}
JSON
node_modules/.bin/tsc -p "$config" --strict --noEmit
echo "web-app-types: app.ts type-checks against ${tarball:-$target} (tsc $(node_modules/.bin/tsc --version | sed 's/^Version //'))"
