// Starts one device from the fragment's instance, token and deviceId, sends one message and
// shows its outcome: what an app bundling vdev-web from npm does, no more. Every bundler's entry
// runs this same code; only how the wasm is found may differ (see main.js, main-esbuild.js).
import init, { DeviceClient } from "vdev-web";

// Each recipe defines __VDEV_BUNDLER__ (Vite's `define`, webpack's DefinePlugin, esbuild's
// `define`), so the page and its message say which bundler built what the browser runs.
const bundler = __VDEV_BUNDLER__;

/** `wasm`: what `init` gets; undefined lets the package find its wasm beside itself. */
export async function runApp(wasm) {
  const params = new URLSearchParams(location.hash.slice(1));
  const show = (id, text) => (document.getElementById(id).textContent = text);
  show("bundler", bundler);
  try {
    await init(wasm);
    const client = await DeviceClient.start({
      instance: params.get("instance"),
      provisioningToken: params.get("token"),
      deviceId: params.get("deviceId"),
      database: `vdev-web-app:${params.get("deviceId")}`,
      onProvisioningOperation: (operation) => show("code", operation.verificationCode),
      onConnectionStateChanged: (state) => show("state", state),
      onMessageOutcome: (outcome) => show("outcome", `${outcome.sequence} ${outcome.status}`),
    });
    const sender = client.createStreamSender({ streamGroup: "web-app", stream: "hello" });
    const sequence = await sender.sendMessage(JSON.stringify({ hello: "from a bundled app", bundler }));
    show("sequence", String(sequence));
  } catch (e) {
    show("error", String(e.message ?? e));
  }
}
