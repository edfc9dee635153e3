// MQTT connections on Node.js: plain TCP (`node:net`; the core asks for it only on loopback)
// and TLS (`node:tls`, the system's certificate authorities plus the app's `ca`), shaped like
// the browser's WebSocket for the driver; MQTT over WebSocket with the global `WebSocket`
// (Node.js 22 and later) through the browser's own code (io.js).

import { isIP, connect as connectTcp } from "node:net";
import { connect as connectTls, rootCertificates } from "node:tls";
import { openSocket } from "./io.js";

/**
 * Opens the connection a `connect` output names. `on.open()`, `on.data(bytes)` and
 * `on.closed(reason)` hear what happens until `closeSocket` silences the handle. `ca`: the
 * app's certificate authorities (PEM), trusted besides the system's.
 * @param {{ url?: string, host?: string, port?: number, tls?: boolean }} output
 * @param {{ open(): void, data(bytes: Uint8Array): void, closed(reason: string): void }} on
 * @param {string | Uint8Array | undefined} ca
 */
export function openConnection(output, on, ca) {
  if (output.url) {
    if (!globalThis.WebSocket) {
      throw `MQTT over WebSocket needs Node.js 22 or later (this is ${process.version}); use transport "tls" or "tcp"`;
    }
    return openSocket(output.url, on);
  }
  const { host = "", port = 0, tls = false } = output;
  const what = `${tls ? "tls" : "tcp"} ${host}:${port}`;
  const socket = tls
    ? connectTls({
        host,
        port,
        // SNI takes host names only.
        servername: isIP(host) ? undefined : host,
        ca: ca === undefined ? undefined : [...rootCertificates, Buffer.from(ca).toString()],
      })
    : connectTcp({ host, port });
  socket.setNoDelay(true);
  const handle = {
    /** @type {(() => void) | null} */ onopen: on.open,
    /** @type {((bytes: Uint8Array) => void) | null} */ onmessage: on.data,
    /** @type {((reason: string) => void) | null} */ onclose: on.closed,
    send: (/** @type {Uint8Array} */ bytes) => socket.write(bytes),
    close: () => socket.destroy(),
  };
  socket.once(tls ? "secureConnect" : "connect", () => handle.onopen?.());
  socket.on("data", (data) => handle.onmessage?.(new Uint8Array(data.buffer, data.byteOffset, data.byteLength)));
  /** @type {Error | undefined} */
  let failure;
  socket.on("error", (error) => (failure = error));
  socket.on("close", () => handle.onclose?.(failure ? `${what}: ${failure.message}` : `${what} closed by the gateway`));
  return handle;
}
