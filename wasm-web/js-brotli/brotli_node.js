// `vdev-web/brotli` on Node.js: the device of the Node.js build has its own Brotli encoder, so
// an app needs none; this entry lets code shared with a browser import `vdev-web/brotli` there
// too, and lends Node's own encoder (node:zlib) when it does.
import { brotliCompressSync, constants } from "node:zlib";

const ENCODER = Object.freeze({
  /**
   * @param {Uint8Array} payload
   * @param {number} quality
   */
  encode(payload, quality) {
    return new Uint8Array(
      brotliCompressSync(payload, {
        params: {
          [constants.BROTLI_PARAM_QUALITY]: quality,
          [constants.BROTLI_PARAM_SIZE_HINT]: payload.length,
        },
      }),
    );
  },
});

/**
 * Resolves to Node's Brotli encoder, for `start({ brotli })` (the argument, a wasm module's
 * location in browsers, is not needed here).
 * @param {unknown} [_moduleOrPath]
 */
export default async function loadBrotli(_moduleOrPath) {
  return ENCODER;
}
