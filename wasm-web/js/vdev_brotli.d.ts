// `vdev-web/brotli`: the Brotli encoder a device uses for streams that ask for compression.
import type { BrotliEncoder, InitInput } from "./vdev_web.js";

/**
 * Loads the Brotli encoder and resolves to it, for `DeviceClient.start({ brotli })`. In
 * browsers it fetches `vdev_brotli_bg.wasm` next to this module (`import.meta.url`) unless a
 * URL, response, bytes or module is given; on Node.js it is Node's own encoder.
 *
 * ```js
 * import init, { DeviceClient } from "vdev-web";
 * import loadBrotli from "vdev-web/brotli";
 * await init();
 * const client = await DeviceClient.start({ ...options, brotli: await loadBrotli() });
 * const sender = client.createStreamSender({ compression: "fastest" });
 * ```
 */
export default function loadBrotli(
    module_or_path?: { module_or_path: InitInput | Promise<InitInput> } | InitInput | Promise<InitInput>,
): Promise<BrotliEncoder>;
