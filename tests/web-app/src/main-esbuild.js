// The entry for esbuild, which leaves `new URL("vdev_web_bg.wasm", import.meta.url)` as it is
// (the URL would point beside the bundle, where esbuild put no wasm): the app imports the wasm
// itself, esbuild's `file` loader copies it into the output and gives its name relative to the
// bundle, and `init` gets that URL. The same for the opt-in Brotli module's wasm and `loadBrotli`.
import wasmFile from "vdev-web/vdev_web_bg.wasm";
import brotliWasmFile from "vdev-web/vdev_brotli_bg.wasm";
import { runApp } from "./app.js";

runApp(new URL(wasmFile, import.meta.url), new URL(brotliWasmFile, import.meta.url));
