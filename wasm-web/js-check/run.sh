#!/usr/bin/env bash
# Static check of the JavaScript host wasm-web/js/*.js (and the Node.js host js-node/*.js,
# with @types/node, and the opt-in encoder's entries js-brotli/*.js): `tsc --noEmit` with `checkJs` and
# `strict` (typescript pinned in package.json, the version tests/web-app-types uses) over the
# JSDoc types written in the host, so that an undefined name, a wrong property or a wrong number
# of arguments fails before any browser runs. Calls on the wasm `Core` are checked against
# glue/vdev_web_core.d.ts (hand-written after src/lib.rs; scripts/build.sh checks its methods
# and parameters against the declarations wasm-bindgen generates), the callbacks' arguments against
# js/vdev_web.d.ts. Twice: with a page's globals (tsconfig.json) and with a worker's
# (tsconfig.worker.json). Needs node + npm only, no build.
#   bash wasm-web/js-check/run.sh
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"
if [ ! -x node_modules/.bin/tsc ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error >/dev/null
fi
# The second pass runs once the first is clean, so an error is not listed twice; each says which.
node_modules/.bin/tsc -p tsconfig.json ||
  { echo "js-check: failed with a page's globals (tsconfig.json)" >&2; exit 1; }
node_modules/.bin/tsc -p tsconfig.worker.json ||
  { echo "js-check: failed with a worker's globals (tsconfig.worker.json)" >&2; exit 1; }
node_modules/.bin/tsc -p tsconfig.node.json ||
  { echo "js-check: failed over the Node.js host (tsconfig.node.json)" >&2; exit 1; }
node_modules/.bin/tsc -p tsconfig.brotli.json ||
  { echo "js-check: failed over the opt-in encoder's entries (tsconfig.brotli.json)" >&2; exit 1; }
echo "js-check: wasm-web/js/*.js type-check (page and worker globals) wasm-web/js-node/*.js (Node's) and wasm-web/js-brotli/*.js, tsc $(node_modules/.bin/tsc --version | sed 's/^Version //')"
