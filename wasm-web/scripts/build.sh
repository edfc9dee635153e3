#!/usr/bin/env bash
# Builds the npm package `vdev-web` into wasm-web/pkg (or --out-dir DIR):
#   release build of the binding crate tuned for size (opt-level "z", LTO, one codegen unit,
#   panic=abort), wasm-bindgen-cli --target web (the `Core` class: glue `vdev_web_core.js`),
#   wasm-opt -Os (with one safe assumption, below) from the npm package `binaryen` (Debian's wasm-opt 108 breaks the module, see
#   docs/architecture.md, "Toolchain notes") into `vdev_web_bg.wasm`, then the JavaScript host (wasm-web/js: index.js and
#   the modules it imports) and the glue bundled into ONE ES module `vdev_web.js` by the npm
#   package `esbuild` and minified by the npm package `terser` (about 190 bytes gzipped smaller
#   than esbuild's own minifier on this bundle), the hand-written types js/vdev_web.d.ts,
#   package.json (ESM, exports, types), the README and the licence texts (LICENSE-MIT and
#   LICENSE-APACHE from the repository root), `npm pack`, and the gzipped size of wasm + JS.
#
# The glue loads `new URL("<out-name>_bg.wasm", import.meta.url)` by default; it is made to
# name `vdev_web_bg.wasm` (the file the package ships, next to vdev_web.js), so `init()` without
# arguments finds it. esbuild keeps `import.meta.url`, and bundlers such as Vite see the
# `new URL(..., import.meta.url)` and emit the wasm as an asset.
#
# The Brotli encoder is not in the bundle (it would make it about five times larger): it is the
# separate opt-in module `vdev-web/brotli` (the crate wasm-web/brotli, its host js-brotli/),
# built here the same way into `vdev_brotli.js` and `vdev_brotli_bg.wasm`.
# Options: --no-wasm-opt    skip wasm-opt
#          --no-minify      bundle without minifying (readable JavaScript)
#          --out-dir DIR    where the package goes (default wasm-web/pkg)
# Needs: rustup target wasm32-unknown-unknown, wasm-bindgen-cli 0.2.130, node + npm, gzip.
set -euo pipefail

web_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
root="$(cd "$web_dir/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
out_dir="$web_dir/pkg"
wasm_opt=1
minify=1
binaryen_version="132.0.0"
esbuild_version="0.28.2"
terser_version="5.44.1"
while [ $# -gt 0 ]; do
    case "$1" in
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

tools="$CARGO_TARGET_DIR/web-tools"
installed_version() {
    node -p "require(process.argv[1]).version" "$tools/node_modules/$1/package.json" 2>/dev/null || true
}
if [ "$(installed_version binaryen)" != "$binaryen_version" ] \
    || [ "$(installed_version esbuild)" != "$esbuild_version" ] \
    || [ "$(installed_version terser)" != "$terser_version" ]; then
    echo "== npm install binaryen@$binaryen_version (wasm-opt), esbuild@$esbuild_version, terser@$terser_version"
    mkdir -p "$tools"
    npm install --silent --no-audit --no-fund --save-exact --prefix "$tools" \
        "binaryen@$binaryen_version" "esbuild@$esbuild_version" "terser@$terser_version"
fi

echo "== cargo build (profile web-release: size-tuned)"
# The workspace's web-release profile is the release profile (LTO, codegen-units = 1,
# panic = "abort") with opt-level "z": a little speed traded for size, which is what a web
# bundle wants (a profile of its own, so other release builds keep their artifacts).
# `trap-on-panic`: no `std` in the module, and a panic traps without formatting a message
# nobody would see (SIZE.md).
cargo build -p vdev-web --profile web-release --target wasm32-unknown-unknown \
    --features trap-on-panic
wasm="$CARGO_TARGET_DIR/wasm32-unknown-unknown/web-release/vdev_web.wasm"

# The bundle's inputs: wasm-bindgen's output and a copy of js/ side by side, so index.js
# imports the glue as "./vdev_web_core.js". A directory of its own per build (two builds with
# different --out-dir may run at once), removed at exit.
build_dir="$(mktemp -d "$CARGO_TARGET_DIR/vdev-web-build.XXXXXX")"
trap 'rm -rf "$build_dir"' EXIT

# wasm-bindgen's glue loads `new URL('<generated>.wasm', import.meta.url)` by default; the
# package ships that module as `<shipped>.wasm`, next to the bundle: the glue must say so.
ship_glue_wasm_as() {
    local glue="$1" generated="$2" shipped="$3"
    local default_url="new URL('$generated.wasm', import.meta.url)"
    if [ "$(grep -cF "$default_url" "$glue")" != 1 ]; then
        echo "error: wasm-bindgen's glue no longer builds its default wasm URL as $default_url" >&2
        exit 1
    fi
    sed -i "s|new URL('$generated\.wasm', import\.meta\.url)|new URL('$shipped.wasm', import.meta.url)|" "$glue"
}
# Features the Rust wasm32 target emits by default, and that wasm-bindgen's glue expects.
wasm_features=(--enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext
    --enable-mutable-globals --enable-reference-types --enable-multivalue)

echo "== wasm-bindgen --target web"
wasm-bindgen --target web --out-dir "$build_dir" --out-name vdev_web_core "$wasm"
ship_glue_wasm_as "$build_dir/vdev_web_core.js" vdev_web_core_bg vdev_web_bg
# js-check types the host against hand-written glue types: they must have lib.rs's methods.
python3 "$web_dir/scripts/check_glue_types.py" "$build_dir/vdev_web_core.d.ts" \
    "$web_dir/js-check/glue/vdev_web_core.d.ts"

rm -rf "$out_dir"
mkdir -p "$out_dir"
if [ "$wasm_opt" = 1 ]; then
    echo "== wasm-opt -Os"
    # -Os after rustc's opt-level "z" is smaller here than -Oz (212 bytes gzipped), and
    # --low-memory-unused lets constant addresses fold into load and store offsets (328 bytes):
    # it says no address below 1 KiB is reached by wrapping pointer arithmetic, which Rust never
    # does (rustc lays the stack first, growing down from 1 MiB toward 0, the data above it). A
    # function with one caller is inlined into it only up to 30 bytes (-ocimfs, unlimited by
    # default): the module grows 2% but gzips 2.4% smaller, its large bodies staying apart
    # instead of repeated inside each exported shim (20 to 30 measured best; wasm-web/SIZE.md).
    "$tools/node_modules/.bin/wasm-opt" -Os -ocimfs=30 --low-memory-unused \
        "${wasm_features[@]}" \
        "$build_dir/vdev_web_core_bg.wasm" -o "$out_dir/vdev_web_bg.wasm"
else
    cp "$build_dir/vdev_web_core_bg.wasm" "$out_dir/vdev_web_bg.wasm"
fi

echo "== esbuild (index.js + js/ + glue -> vdev_web.js)"
for source in "$web_dir"/js/*.js; do
    if [ "$(basename "$source")" = vdev_web_core.js ]; then
        echo "error: js/vdev_web_core.js would hide wasm-bindgen's glue of that name" >&2
        exit 1
    fi
    cp "$source" "$build_dir/"
done
# esnext: the host is plain modern JavaScript and is shipped as written (no syntax lowering);
# an app's bundler lowers it if it targets older browsers.
"$tools/node_modules/.bin/esbuild" "$build_dir/index.js" --bundle --format=esm \
    --platform=browser --target=esnext --charset=utf8 --legal-comments=none \
    --log-level=warning --outfile="$build_dir/bundle.js"
if [ "$minify" = 1 ]; then
    echo "== terser (vdev_web.js)"
    # The exports and the wasm import names (object keys) are kept; locals are shortened.
    "$tools/node_modules/.bin/terser" "$build_dir/bundle.js" --module --compress passes=2 \
        --mangle -o "$out_dir/vdev_web.js"
else
    cp "$build_dir/bundle.js" "$out_dir/vdev_web.js"
fi
if ! grep -qE 'new URL\("vdev_web_bg\.wasm", ?import\.meta\.url\)' "$out_dir/vdev_web.js"; then
    echo "error: the bundle does not load vdev_web_bg.wasm next to itself by default" >&2
    exit 1
fi
cp "$web_dir/js/vdev_web.d.ts" "$out_dir/vdev_web.d.ts"

# `vdev-web/brotli`: the encoder crate through the same steps (wasm-bindgen, wasm-opt -Oz, one
# minified ES module that loads `vdev_brotli_bg.wasm` next to itself by default), and on
# Node.js an entry that lends node:zlib's encoder (not bundled: it imports Node's own module).
echo "== cargo build -p vdev-web-brotli (the opt-in Brotli encoder)"
cargo build -p vdev-web-brotli --profile web-release --target wasm32-unknown-unknown
brotli_build="$build_dir/brotli"
mkdir -p "$brotli_build"
wasm-bindgen --target web --out-dir "$brotli_build" --out-name vdev_brotli_core \
    "$CARGO_TARGET_DIR/wasm32-unknown-unknown/web-release/vdev_web_brotli.wasm"
ship_glue_wasm_as "$brotli_build/vdev_brotli_core.js" vdev_brotli_core_bg vdev_brotli_bg
if [ "$wasm_opt" = 1 ]; then
    "$tools/node_modules/.bin/wasm-opt" -Oz \
        "${wasm_features[@]}" \
        "$brotli_build/vdev_brotli_core_bg.wasm" -o "$out_dir/vdev_brotli_bg.wasm"
else
    cp "$brotli_build/vdev_brotli_core_bg.wasm" "$out_dir/vdev_brotli_bg.wasm"
fi
cp "$web_dir/js-brotli/brotli.js" "$brotli_build/"
"$tools/node_modules/.bin/esbuild" "$brotli_build/brotli.js" --bundle --format=esm \
    --platform=browser --target=esnext --charset=utf8 --legal-comments=none \
    --log-level=warning --outfile="$brotli_build/bundle.js"
if [ "$minify" = 1 ]; then
    "$tools/node_modules/.bin/terser" "$brotli_build/bundle.js" --module --compress passes=2 \
        --mangle -o "$out_dir/vdev_brotli.js"
else
    cp "$brotli_build/bundle.js" "$out_dir/vdev_brotli.js"
fi
if ! grep -qE 'new URL\("vdev_brotli_bg\.wasm", ?import\.meta\.url\)' "$out_dir/vdev_brotli.js"; then
    echo "error: vdev_brotli.js does not load vdev_brotli_bg.wasm next to itself by default" >&2
    exit 1
fi
cp "$web_dir/js-brotli/brotli_node.js" "$out_dir/vdev_brotli_node.js"
cp "$web_dir/js/vdev_brotli.d.ts" "$out_dir/vdev_brotli.d.ts"

# The Node.js build: the same host with js-node/ (the outbox in a directory, TCP and TLS, the
# wasm module read from the package's own file), over a wasm module built with the `node`
# feature (the core's file outbox and its own Brotli encoder: size matters less on a server). Not
# minified: stack traces stay readable. The package's `exports` send Node.js here.
echo "== cargo build --features node (the Node.js build)"
cargo build -p vdev-web --profile web-release --target wasm32-unknown-unknown --features node
node_build="$build_dir/node"
mkdir -p "$node_build"
wasm-bindgen --target web --out-dir "$node_build" --out-name vdev_node_core "$wasm"
python3 "$web_dir/scripts/check_glue_types.py" "$node_build/vdev_node_core.d.ts" \
    "$web_dir/js-check/glue/vdev_node_core.d.ts" "$web_dir/js-check/glue/vdev_web_core.d.ts"
if [ "$wasm_opt" = 1 ]; then
    echo "== wasm-opt -O2 (the Node.js build: speed before size)"
    "$tools/node_modules/.bin/wasm-opt" -O2 \
        "${wasm_features[@]}" \
        "$node_build/vdev_node_core_bg.wasm" -o "$out_dir/vdev_node_bg.wasm"
else
    cp "$node_build/vdev_node_core_bg.wasm" "$out_dir/vdev_node_bg.wasm"
fi
for source in "$web_dir"/js/*.js "$web_dir"/js-node/*.js; do
    cp "$source" "$node_build/"
done
"$tools/node_modules/.bin/esbuild" "$node_build/node.js" --bundle --format=esm \
    --platform=node --target=node20 --charset=utf8 --legal-comments=none \
    --log-level=warning --outfile="$out_dir/vdev_node.js"

version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -n 1)"
cat >"$out_dir/package.json" <<JSON
{
  "name": "vdev-web",
  "version": "$version",
  "description": "vdev device SDK for browsers and Node.js: provisioning, a durable outbox (IndexedDB or a directory) and MQTT",
  "license": "MIT OR Apache-2.0",
  "type": "module",
  "main": "./vdev_web.js",
  "module": "./vdev_web.js",
  "types": "./vdev_web.d.ts",
  "exports": {
    ".": {
      "types": "./vdev_web.d.ts",
      "node": "./vdev_node.js",
      "browser": "./vdev_web.js",
      "default": "./vdev_web.js"
    },
    "./vdev_web_bg.wasm": "./vdev_web_bg.wasm",
    "./brotli": {
      "types": "./vdev_brotli.d.ts",
      "node": "./vdev_brotli_node.js",
      "browser": "./vdev_brotli.js",
      "default": "./vdev_brotli.js"
    },
    "./vdev_brotli_bg.wasm": "./vdev_brotli_bg.wasm"
  },
  "files": [
    "vdev_web.js",
    "vdev_web.d.ts",
    "vdev_web_bg.wasm",
    "vdev_node.js",
    "vdev_node_bg.wasm",
    "vdev_brotli.js",
    "vdev_brotli.d.ts",
    "vdev_brotli_bg.wasm",
    "vdev_brotli_node.js",
    "README.md",
    "LICENSE-MIT",
    "LICENSE-APACHE"
  ],
  "engines": {
    "node": ">=20"
  },
  "sideEffects": false
}
JSON

cp "$web_dir/README.md" "$out_dir/README.md"
# The licence texts the "license" field names; smoke.py checks that the tarball carries them.
cp "$root/LICENSE-MIT" "$root/LICENSE-APACHE" "$out_dir/"

echo "== npm pack"
(cd "$out_dir" && npm pack --silent >/dev/null)

gz() { gzip -9 -c "$1" | wc -c; }
wasm_gz="$(gz "$out_dir/vdev_web_bg.wasm")"
js_gz="$(gz "$out_dir/vdev_web.js")"
echo "== size (wasm-opt $([ "$wasm_opt" = 1 ] && echo "-Os -ocimfs=30" || echo "skipped"), JS $([ "$minify" = 1 ] && echo "minified" || echo "not minified"))"
printf '  vdev_web_bg.wasm  %8d bytes, %7d gzipped\n' "$(wc -c <"$out_dir/vdev_web_bg.wasm")" "$wasm_gz"
printf '  vdev_web.js       %8d bytes, %7d gzipped\n' "$(wc -c <"$out_dir/vdev_web.js")" "$js_gz"
printf '  total gzipped     %8d bytes (%s KB)\n' "$((wasm_gz + js_gz))" "$(awk -v b="$((wasm_gz + js_gz))" 'BEGIN { printf "%.1f", b / 1024 }')"
printf '  opt-in vdev-web/brotli: vdev_brotli_bg.wasm %d gzipped, vdev_brotli.js %d gzipped\n' \
    "$(gz "$out_dir/vdev_brotli_bg.wasm")" "$(gz "$out_dir/vdev_brotli.js")"
echo "  package: $(ls "$out_dir"/vdev-web-*.tgz)"
