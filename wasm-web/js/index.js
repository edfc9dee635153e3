// The entry of the npm package `vdev-web`: joins the hand-written host (client.js and the modules
// it imports) to the wasm-bindgen binding of vdev-core (`Core`) and exports the public API.
// `scripts/build.sh` puts wasm-bindgen's glue next to this file as `vdev_web_core.js` (it does
// not exist in this folder) and bundles all of it into one minified `pkg/vdev_web.js`; the
// glue's default wasm URL is `vdev_web_bg.wasm` next to that bundle.
import instantiate, { initSync as instantiateSync, Core } from "./vdev_web_core.js";
import { provideCore } from "./client.js";

// The host gets the `Core` maker once the module is instantiated, so that a `DeviceClient.start`
// before `init()` says so instead of failing inside the glue.
const ready = (/** @type {import("./vdev_web.js").InitOutput} */ output) => {
  provideCore((options) => new Core(options));
  return output;
};

/**
 * Fetches and instantiates the wasm module (`vdev_web_bg.wasm` next to this file by default).
 * @param {Parameters<typeof instantiate>[0]} [moduleOrPath]
 */
export default function init(moduleOrPath) {
  return instantiate(moduleOrPath).then(ready);
}

/**
 * Instantiates the wasm module from its bytes or a compiled module.
 * @param {Parameters<typeof instantiateSync>[0]} module
 */
export function initSync(module) {
  return ready(instantiateSync(module));
}

export { DeviceClient, StreamSender } from "./client.js";
export { VdevError } from "./errors.js";
