// Starts one device from the fragment's instance, token and deviceId, sends one message and one
// compressed message and shows their outcomes: what an app bundling vdev-web from npm does. Every bundler's entry
// runs this same code; only how the wasm is found may differ (see main.js, main-esbuild.js).
import init, { DeviceClient } from "vdev-web";
import loadBrotli from "vdev-web/brotli";

// Each recipe defines __VDEV_BUNDLER__ (Vite's `define`, webpack's DefinePlugin, esbuild's
// `define`), so the page and its message say which bundler built what the browser runs.
const bundler = __VDEV_BUNDLER__;

/**
 * `wasm`, `brotliWasm`: what `init` and `loadBrotli` get; undefined lets each module find its
 * wasm beside itself.
 */
export async function runApp(wasm, brotliWasm) {
  const params = new URLSearchParams(location.hash.slice(1));
  const show = (id, text) => (document.getElementById(id).textContent = text);
  /** @type {string[]} */
  const outcomes = [];
  show("bundler", bundler);
  try {
    await init(wasm);
    // The opt-in Brotli encoder: a second wasm module, which the bundler must emit too.
    const brotli = await loadBrotli(brotliWasm);
    const client = await DeviceClient.start({
      brotli,
      instance: params.get("instance"),
      provisioningToken: params.get("token"),
      deviceId: params.get("deviceId"),
      database: `vdev-web-app:${params.get("deviceId")}`,
      onProvisioningOperation: (operation) => show("code", operation.verificationCode),
      onConnectionStateChanged: (state) => show("state", state),
      onMessageOutcome: (outcome) => outcomes.push(`${outcome.sequence} ${outcome.status}`) && show("outcome", outcomes.join(", ")),
    });
    const sender = client.createStreamSender({ streamGroup: "web-app", stream: "hello" });
    const sequence = await sender.sendMessage(JSON.stringify({ hello: "from a bundled app", bundler }));
    // A reading long and repetitive enough that Brotli shrinks it: it must arrive encoded.
    const zipped = client.createStreamSender({ streamGroup: "web-app", stream: "zipped", compression: "fastest" });
    await zipped.sendMessage(JSON.stringify({ bundler, readings: Array(100).fill("temperature=21.5") }));
    show("sequence", String(sequence));
  } catch (e) {
    show("error", String(e.message ?? e));
  }
}
