// `vdev-web/brotli` in browsers: the Brotli encoder an app lends its device when it wants
// compressed streams. A module of its own (`vdev_brotli.js` and `vdev_brotli_bg.wasm`), so that
// an app that never compresses never downloads the encoder. `scripts/build.sh` puts the
// wasm-bindgen glue of the `vdev-web-brotli` crate next to this file as `vdev_brotli_core.js`.
import instantiate, { encode } from "./vdev_brotli_core.js";

/** One encoder per page: devices started with it share it. */
const ENCODER = Object.freeze({ encode });

/**
 * Fetches and instantiates the encoder (`vdev_brotli_bg.wasm` next to this file by default, or
 * the URL, response, bytes or module given) and resolves to it, for `start({ brotli })`.
 * @param {any} [moduleOrPath]
 */
export default async function loadBrotli(moduleOrPath) {
  await instantiate(moduleOrPath);
  return ENCODER;
}
