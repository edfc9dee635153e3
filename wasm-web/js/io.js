// Network I/O of the driver: MQTT over WebSocket and the core's HTTP requests with `fetch`. The
// core has checked every URL it hands over (its cleartext rule); so that nothing else is ever
// reached, `fetch` follows no redirect. Everything goes through the global object, so the same code
// runs in a page and in a worker.

/** @import { Output } from "./vdev_web_core.js" */

/**
 * A readable description of a thrown value (an `Error`, a `DOMException`, anything else).
 * @param {any} error
 * @returns {string}
 */
export const describe = (error) =>
  error && error.name && error.message !== undefined ? `${error.name}: ${error.message}` : String(error);

/**
 * Opens the MQTT WebSocket to `url` (subprotocol `mqtt`, binary frames). `on.open()`,
 * `on.data(bytes)` and `on.closed(reason)` hear what happens until `closeSocket`. Throws a
 * reason string when the socket cannot even be created. (The core checked the URL.)
 * @param {string} url
 * @param {{ open(): void, data(bytes: Uint8Array): void, closed(reason: string): void }} on
 */
export function openSocket(url, on) {
  let socket;
  try {
    socket = new WebSocket(url, "mqtt");
  } catch (error) {
    throw `cannot open ${url}: ${describe(error)}`;
  }
  socket.binaryType = "arraybuffer";
  socket.onopen = on.open;
  socket.onmessage = (event) =>
    event.data instanceof ArrayBuffer
      ? on.data(new Uint8Array(event.data))
      : on.closed("the gateway sent a text frame; mqtt needs binary frames");
  // An `error` event is always followed by `close`, which carries the details.
  socket.onclose = (event) =>
    on.closed(`websocket closed (code ${event.code}${event.reason ? `: ${event.reason}` : ""})`);
  return socket;
}

/**
 * Closes a socket and silences it: the core has already forgotten the connection.
 * @param {WebSocket} socket
 */
export function closeSocket(socket) {
  socket.onopen = socket.onmessage = socket.onclose = null;
  socket.close();
}

/**
 * The body of `response`, read as it arrives; a body longer than `limit` bytes is cancelled
 * past it, so that a URL streaming without end cannot fill the memory (the core sees from what
 * was read that the answer is too long).
 * @param {Response} response
 * @param {number} limit
 * @returns {Promise<Uint8Array<ArrayBuffer>>}
 */
async function readAtMost(response, limit) {
  if (!response.body) return new Uint8Array();
  const reader = response.body.getReader();
  /** @type {Uint8Array[]} */
  const chunks = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    size += value.byteLength;
    if (size > limit) {
      // The core sees the answer is too long; the rest is never read.
      reader.cancel().catch(() => {});
      break;
    }
  }
  const body = new Uint8Array(size);
  let at = 0;
  for (const chunk of chunks) {
    body.set(chunk, at);
    at += chunk.byteLength;
  }
  return body;
}

/**
 * Performs an `http` output of the core: resolves to `{ status, retryAfter, body }` or rejects
 * with a reason (network failure, an answer longer than the core takes, or the request's
 * deadline, where it is aborted: the core gives up on it then anyway). A redirect is not
 * followed: it resolves with status 0, the core's word for a redirect whose status the browser
 * hides (an opaque redirect).
 * @param {Extract<Output, { kind: "http" }>} request
 * @param {number} now
 */
export async function perform(request, now) {
  const controller = new AbortController();
  const abort = setTimeout(() => controller.abort(), Math.max(0, request.deadline - now));
  try {
    const response = await fetch(request.url, {
      method: request.method,
      headers: request.headers,
      body: request.body.length ? request.body : undefined,
      signal: controller.signal,
      redirect: "manual",
    });
    if (response.type === "opaqueredirect") return { status: 0, retryAfter: undefined, body: new Uint8Array() };
    const body = await readAtMost(response, request.maxResponseBytes);
    return { status: response.status, retryAfter: response.headers.get("retry-after") ?? undefined, body };
  } catch (error) {
    throw describe(error);
  } finally {
    clearTimeout(abort);
  }
}
