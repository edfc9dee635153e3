// The module `vdev_brotli_core.js` as js-brotli/brotli.js sees it: wasm-bindgen's glue of the
// encoder crate (wasm-web/brotli/src/lib.rs), which scripts/build.sh generates next to a copy
// of brotli.js at build time. tsconfig.brotli.json's `rootDirs` lets `./vdev_brotli_core.js`
// resolve to this file.

import type { InitInput } from "../../js/vdev_web.js";

/** Brotli-encodes `payload` at `quality` (0 to 11); throws on a quality out of range. */
export function encode(payload: Uint8Array, quality: number): Uint8Array;

/** Instantiates the encoder's wasm module (wasm-bindgen's `--target web` default export). */
export default function __wbg_init(
    moduleOrPath?: { module_or_path: InitInput | Promise<InitInput> } | InitInput | Promise<InitInput>,
): Promise<{ readonly memory: WebAssembly.Memory }>;
