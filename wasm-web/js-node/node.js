// The package's entry on Node.js (the `node` condition of its `exports`): the same API as the
// browser entry (js/index.js) over the same driver (js/device.js), with what Node.js has instead
// of a browser's: the wasm module read from the package's own file, the outbox in a directory
// (dir_store.js, in the format and with the recovery rules of the core's `file_outbox`, which
// the WASI component uses too), one process per directory (lock.js) and MQTT over TCP, TLS or
// WebSocket (net.js). `scripts/build.sh` bundles it with the Node.js build of the wasm module
// (`--features node`) into `vdev_node.js` next to `vdev_node_bg.wasm`.
import { readFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import instantiate, { initSync as instantiateSync, Core } from "./vdev_node_core.js";
import { provideCore } from "./client.js";
import { SoleOwner } from "./owner.js";

/** The wasm module the package ships next to this file. */
const WASM = new URL("vdev_node_bg.wasm", import.meta.url);

const ready = (/** @type {any} */ output) => {
  provideCore((options) => new Core(options), /** @type {any} */ (SoleOwner));
  return output;
};

/**
 * Instantiates the wasm module: the package's own file by default (read from disk, never
 * fetched), or the module or bytes given.
 * @param {any} [moduleOrPath]
 */
export default async function init(moduleOrPath) {
  return ready(await instantiate({ module_or_path: moduleOrPath ?? (await readFile(WASM)) }));
}

/**
 * Instantiates the wasm module at once: the package's own file by default.
 * @param {any} [module]
 */
export function initSync(module) {
  return ready(instantiateSync({ module: module ?? readFileSync(WASM) }));
}

export { DeviceClient, StreamSender } from "./client.js";
export { VdevError } from "./errors.js";
