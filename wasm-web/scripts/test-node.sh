#!/usr/bin/env bash
# Runs the Node.js tests of the npm package (wasm-web/node-tests, Node's own test runner) the
# way an app meets the package: the tarball build.sh packed is installed with `npm install
# <tarball>` into a fresh folder, the tests (and the examples, which one test runs) are copied
# next to it and import "vdev-web" from there. They start vdev-platform (debug build) themselves on ephemeral loopback ports.
# Needs: a packed package in wasm-web/pkg (scripts/build.sh), node 20 or later, npm.
# Extra arguments go to `node --test` (e.g. --test-name-pattern=TLS).
set -euo pipefail

web_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
root="$(cd "$web_dir/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"

tarball="$(ls "$web_dir"/pkg/vdev-web-*.tgz 2>/dev/null | head -n 1)"
if [ -z "$tarball" ]; then
    echo "error: no packed package in wasm-web/pkg: run wasm-web/scripts/build.sh first" >&2
    exit 1
fi
echo "== vdev-web on Node.js $(node --version): building vdev-platform"
cargo build -p vdev-platform
export VDEV_PLATFORM_BIN="$CARGO_TARGET_DIR/debug/vdev-platform"

app="$(mktemp -d -t vdev-node-app.XXXXXX)"
trap 'rm -rf "$app"' EXIT
(cd "$app" && npm init -y >/dev/null && npm install --silent --no-audit --no-fund "$tarball")
cp "$web_dir"/node-tests/*.mjs "$web_dir"/examples/*.mjs "$app/"
cd "$app"
node --test --test-concurrency=1 --test-timeout=300000 "$@" ./*.test.mjs
