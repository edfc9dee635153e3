// The entry of the npm package `vdev-web`: joins the hand-written host (client.js and the modules
// it imports) to the wasm-bindgen binding of vdev-core (`Core`) and exports the public API.
// `scripts/build.sh` puts wasm-bindgen's glue next to this file as `vdev_web_core.js` (it does
// not exist in this folder) and bundles all of it into one minified `pkg/vdev_web.js`; the
// glue's default wasm URL is `vdev_web_bg.wasm` next to that bundle.
import init, { initSync, Core } from "./vdev_web_core.js";
import { provideCore } from "./client.js";

provideCore((options) => new Core(options));

export default init;
export { initSync };
export { DeviceClient, StreamSender } from "./client.js";
