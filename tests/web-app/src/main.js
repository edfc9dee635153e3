// Starts one device from the fragment's instance, token and deviceId, sends one message and
// shows its outcome: what an app bundling vdev-web from npm does, no more.
import init, { DeviceClient } from "vdev-web";

const params = new URLSearchParams(location.hash.slice(1));
const show = (id, text) => (document.getElementById(id).textContent = text);

try {
  await init();
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
  const sequence = await sender.sendMessage(JSON.stringify({ hello: "from a Vite app" }));
  show("sequence", String(sequence));
} catch (e) {
  show("error", String(e.message ?? e));
}
