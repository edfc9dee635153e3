#!/usr/bin/env bash
# Builds the npm package `vdev-web` into wasm-web/pkg (or --out-dir DIR):
#   release build tuned for size (opt-level "z", LTO, one codegen unit, panic=abort),
#   wasm-bindgen-cli --target web (ES module + TypeScript types), wasm-opt -Oz from the npm
#   package `binaryen` (Debian's wasm-opt 108 breaks the module, see DESIGN.md §6), the JS glue
#   minified with the npm package `terser` (what a browser loads; the .d.ts keeps the types),
#   package.json (ESM, exports, types), `npm pack`, and the gzipped size of wasm + JS glue.
#
# Brotli compression is left out by default: its encoder alone makes the bundle ~3.4 times
# larger (see the sizes printed at the end); `compression` options then send payloads as they are.
# Options: --with-brotli    include Brotli compression of payloads
#          --no-wasm-opt    skip wasm-opt
#          --no-minify      keep wasm-bindgen's JS glue as it is (readable, ~3 KB more gzipped)
#          --out-dir DIR    where the package goes (default wasm-web/pkg)
# Needs: rustup target wasm32-unknown-unknown, wasm-bindgen-cli 0.2.130, node + npm, gzip.
set -euo pipefail

web_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
root="$(cd "$web_dir/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
out_dir="$web_dir/pkg"
features=(--no-default-features)
wasm_opt=1
minify=1
binaryen_version="132.0.0"
terser_version="5.44.1"
while [ $# -gt 0 ]; do
    case "$1" in
        --with-brotli) features=() ;;
        --no-wasm-opt) wasm_opt=0 ;;
        --no-minify) minify=0 ;;
        --out-dir) out_dir="$(mkdir -p "$2" && cd "$2" && pwd)"; shift ;;
        *) echo "error: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done

expected_bindgen="0.2.130"
if ! wasm-bindgen --version 2>/dev/null | grep -q " $expected_bindgen\$"; then
    echo "error: wasm-bindgen-cli $expected_bindgen is needed: cargo install wasm-bindgen-cli --version $expected_bindgen" >&2
    exit 1
fi

echo "== cargo build (profile web-release: size-tuned)"
# The workspace's web-release profile is the release profile (LTO, codegen-units = 1,
# panic = "abort") with opt-level "z": a little speed traded for size, which is what a web
# bundle wants (a profile of its own, so other release builds keep their artifacts).
cargo build -p vdev-web --profile web-release --target wasm32-unknown-unknown "${features[@]}"
wasm="$CARGO_TARGET_DIR/wasm32-unknown-unknown/web-release/vdev_web.wasm"

echo "== wasm-bindgen --target web"
rm -rf "$out_dir"
mkdir -p "$out_dir"
wasm-bindgen --target web --out-dir "$out_dir" --out-name vdev_web "$wasm"

tools="$CARGO_TARGET_DIR/web-tools"
if [ ! -x "$tools/node_modules/.bin/wasm-opt" ] || [ ! -x "$tools/node_modules/.bin/terser" ]; then
    echo "== npm install binaryen@$binaryen_version (wasm-opt), terser@$terser_version"
    mkdir -p "$tools"
    npm install --silent --no-audit --no-fund --prefix "$tools" \
        "binaryen@$binaryen_version" "terser@$terser_version"
fi

if [ "$wasm_opt" = 1 ]; then
    echo "== wasm-opt -Oz"
    # Features the Rust wasm32 target emits by default, and that wasm-bindgen's glue expects.
    "$tools/node_modules/.bin/wasm-opt" -Oz \
        --enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext \
        --enable-mutable-globals --enable-reference-types --enable-multivalue \
        "$out_dir/vdev_web_bg.wasm" -o "$out_dir/vdev_web_bg.opt.wasm"
    mv "$out_dir/vdev_web_bg.opt.wasm" "$out_dir/vdev_web_bg.wasm"
fi

if [ "$minify" = 1 ]; then
    echo "== terser (JS glue)"
    # Exported names and the wasm import names (object keys) are kept; locals are shortened.
    "$tools/node_modules/.bin/terser" "$out_dir/vdev_web.js" --module --compress --mangle \
        -o "$out_dir/vdev_web.min.js"
    mv "$out_dir/vdev_web.min.js" "$out_dir/vdev_web.js"
fi

version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -n 1)"
cat >"$out_dir/package.json" <<JSON
{
  "name": "vdev-web",
  "version": "$version",
  "description": "vdev device SDK for browsers: provisioning, a durable IndexedDB outbox and MQTT over WebSocket",
  "license": "MIT OR Apache-2.0",
  "type": "module",
  "main": "./vdev_web.js",
  "module": "./vdev_web.js",
  "types": "./vdev_web.d.ts",
  "exports": {
    ".": {
      "types": "./vdev_web.d.ts",
      "default": "./vdev_web.js"
    },
    "./vdev_web_bg.wasm": "./vdev_web_bg.wasm"
  },
  "files": [
    "vdev_web.js",
    "vdev_web.d.ts",
    "vdev_web_bg.wasm",
    "vdev_web_bg.wasm.d.ts",
    "README.md"
  ],
  "sideEffects": false
}
JSON

cp "$web_dir/README.md" "$out_dir/README.md"

echo "== npm pack"
(cd "$out_dir" && npm pack --silent >/dev/null)

gz() { gzip -9 -c "$1" | wc -c; }
wasm_gz="$(gz "$out_dir/vdev_web_bg.wasm")"
js_gz="$(gz "$out_dir/vdev_web.js")"
echo "== size ($([ ${#features[@]} -eq 0 ] && echo "with" || echo "without") brotli, wasm-opt $([ "$wasm_opt" = 1 ] && echo "-Oz" || echo "skipped"), JS $([ "$minify" = 1 ] && echo "minified" || echo "not minified"))"
printf '  vdev_web_bg.wasm  %8d bytes, %7d gzipped\n' "$(wc -c <"$out_dir/vdev_web_bg.wasm")" "$wasm_gz"
printf '  vdev_web.js       %8d bytes, %7d gzipped\n' "$(wc -c <"$out_dir/vdev_web.js")" "$js_gz"
printf '  total gzipped     %8d bytes (%d KB)\n' "$((wasm_gz + js_gz))" "$(((wasm_gz + js_gz + 1023) / 1024))"
echo "  package: $(ls "$out_dir"/vdev-web-*.tgz)"
